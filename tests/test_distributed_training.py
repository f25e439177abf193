"""Data-parallel LoRA training on the CPU: 2 gloo processes against 1 at the same global batch, resuming a
2-process checkpoint in 1 process, a rank killed mid-run, and the JSON-lines progress events; the adapter, decoder
and image-text encoder (its contrastive loss over the gathered global batch) against 1 process too."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from atelier.cli import main
from atelier.core.shared.progress_events import JsonLinesProgress, last_event
from atelier.training import checkpoints

from helpers import SAMPLES, tiny_sd15_folder

ROOT = Path(__file__).resolve().parents[1]
# 2 processes against 1 at the same global batch: the largest difference of any LoRA weight. Measured 9e-8 here
# (float additions in another order; one process with 1 thread instead of 2 differs from itself by 2.5e-7); the
# LoRA's up matrices, which start at zero, reach about 3e-3 in these 3 steps.
TOLERANCE = 1e-5
# the image-text encoder, 2 processes against 1 (6 steps, every weight training, the loss over the gathered global
# batch): the largest difference of any weight measured 1.2e-7 (the weights move about 6e-3); of AdamW's moments,
# relative to each tensor's largest, 1.8e-6 (a wrong gradient factor W = 2 would put them 0.5 apart or more)
ENCODER_TOLERANCE = 1e-5
MOMENT_TOLERANCE = 1e-4
KEY_BIASES = ("attention.self.key.bias", "self_attn.k_proj.bias")


def _train_args(model: Path, tmp: Path, run: str, name: str, steps: int) -> list[str]:
    # a global batch of 3 split 2 + 1, noise offset and min-SNR weighting: every per-picture draw is sliced
    return ["train", str(SAMPLES), "--model", str(model), "--loras", str(tmp / "loras"), "--run", str(tmp / run),
            "--name", name, "--resolution", "64", "--rank", "4", "--steps", str(steps), "--batch-size", "3",
            "--checkpoint-every", "3", "--lr", "1e-3", "--noise-offset", "0.1", "--min-snr-gamma", "5",
            "--seed", "7", "--device", "cpu"]


def _max_difference(a: Path, b: Path) -> float:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    return max((first[k] - second[k]).abs().max().item() for k in first)


def test_two_processes_equal_one_at_the_same_global_batch_and_resume_in_one(tmp_path: Path, capsys) -> None:
    model = tiny_sd15_folder(tmp_path / "model")
    events = tmp_path / "events" / "run.jsonl"
    # torchrun itself, as the README documents it ("--" keeps torchrun from reading the command's --run)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--",
                           "atelier_cli.py", *_train_args(model, tmp_path, "two", "two", 3), "--events", str(events)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # the report comes from rank 0 only
    assert main(_train_args(model, tmp_path, "one", "one", 3)) == 0
    loras = tmp_path / "loras"
    assert _max_difference(loras / "two.safetensors", loras / "one.safetensors") < TOLERANCE
    trained = load_file(str(loras / "one.safetensors"))
    assert max(v.abs().max().item() for k, v in trained.items() if "lora_up" in k) > 100 * TOLERANCE

    # the events rank 0 wrote: one line per event, units of work = 4 pictures + 3 steps
    lines = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"event": "start", "total": 7, "world_size": 2}
    done_counts = [e["done"] for e in lines if e["event"] == "advance"]
    assert done_counts == sorted(done_counts) and done_counts[-1] == 7
    one_losses = checkpoints.load(tmp_path / "one" / "checkpoint")["losses"]
    losses = [e for e in lines if e["event"] == "loss"]
    assert [e["step"] for e in losses] == [1, 2, 3]
    assert [e["loss"] for e in losses] == pytest.approx(one_losses, abs=1e-6)
    assert lines[-1]["event"] == "done" and lines[-1]["result"]["lora"] == str(loras / "two.safetensors")
    assert checkpoints.load(tmp_path / "two" / "checkpoint")["world_size"] == 2

    # both runs continue in one process; the 2-process checkpoint is said, and the runs still agree
    capsys.readouterr()
    assert main(_train_args(model, tmp_path, "two", "two_more", 5)) == 0
    assert "resumed from step 3 (checkpoint from a 2-process run, resumed with 1" in capsys.readouterr().out
    assert main(_train_args(model, tmp_path, "one", "one_more", 5)) == 0
    out = capsys.readouterr().out
    assert "resumed from step 3" in out and "process run" not in out
    assert _max_difference(loras / "two_more.safetensors", loras / "one_more.safetensors") < TOLERANCE


def _ranks(run: Path) -> dict[int, int]:
    """rank -> pid of the training processes of ``run`` (read from /proc: their command line and environment)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = [v[5:] for v in environment if v.startswith(b"RANK=")]
        if str(run).encode() in command and rank:
            found[int(rank[0])] = int(entry.name)
    return found


def _reached(events: Path, step: int) -> bool:
    lines = events.read_text(encoding="utf-8").splitlines() if events.exists() else []
    return any(e["event"] == "loss" and e["step"] >= step for e in map(json.loads, lines))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the processes through /proc")
@pytest.mark.parametrize("stop", ["kill rank 1", "terminate the launcher"])
def test_a_killed_rank_or_a_cancel_stops_every_process_and_the_last_checkpoint_is_kept(tmp_path: Path,
                                                                                       stop: str) -> None:
    model = tiny_sd15_folder(tmp_path / "model")
    events, run = tmp_path / "events.jsonl", tmp_path / "run"
    args = [*_train_args(model, tmp_path, "run", "killed", 500), "--checkpoint-every", "2", "--gpus", "2",
            "--events", str(events)]
    launcher = subprocess.Popen([sys.executable, "atelier_cli.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _reached(events, 3):  # a checkpoint (step 2) is written by then
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[1][-3000:]
            time.sleep(0.1)
        ranks = _ranks(run)
        assert sorted(ranks) == [0, 1]
        # a rank that dies, or what a watching program does to cancel: SIGTERM to the --gpus command
        os.kill(*((ranks[1], signal.SIGKILL) if stop == "kill rank 1" else (launcher.pid, signal.SIGTERM)))
        out, err = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode == 2, err[-3000:]
    step = checkpoints.load(run / "checkpoint")["step"]
    assert step >= 2 and step % 2 == 0
    what = ("training process rank 1 (of 2) was killed by SIGKILL; the other processes were stopped"
            if stop == "kill rank 1" else "stopped by SIGTERM: the 2 training processes were ended")
    message = f"{what}. The last checkpoint (step {step}) in {run} is intact: run the same command to resume"
    assert message in err
    assert last_event(events)["event"] == "error" and message in last_event(events)["message"]
    assert "Connection closed" not in err  # rank 0 leaves the saying to the launcher
    assert _ranks(run) == {}  # no process is left
    assert not (tmp_path / "loras" / "killed.safetensors").exists()


def test_events_are_whole_json_lines_with_previews_beside_them(tmp_path: Path) -> None:
    path = tmp_path / "진행" / "events.jsonl"
    progress = JsonLinesProgress(path, total=5, world_size=2)
    progress.advance(2)
    progress.status("손실 0.5")
    progress.preview(Image.new("RGB", (8, 8), (255, 0, 0)))
    progress.loss(1, 0.25)
    progress.advance()
    progress.finished({"lora": "x.safetensors"})
    progress.check_cancel()  # nothing to cancel from here: the watching program ends the processes
    text = path.read_text(encoding="utf-8")
    assert "손실" in text  # written as is, not escaped
    events = [json.loads(line) for line in text.splitlines()]
    preview = tmp_path / "진행" / "events.preview-0001.png"
    assert events == [{"event": "start", "total": 5, "world_size": 2}, {"event": "advance", "done": 2, "total": 5},
                      {"event": "status", "text": "손실 0.5"}, {"event": "preview", "path": str(preview)},
                      {"event": "loss", "step": 1, "loss": 0.25}, {"event": "advance", "done": 3, "total": 5},
                      {"event": "done", "result": {"lora": "x.safetensors"}}]
    assert torch.equal(torch.tensor(list(Image.open(preview).getpixel((0, 0)))), torch.tensor([255, 0, 0]))
    progress.error("stopped")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"event": "adv')  # a line still being written is not an event yet
    assert last_event(path) == {"event": "error", "message": "stopped"}
    assert last_event(tmp_path / "none.jsonl") is None


def test_the_embedding_adapter_trains_data_parallel_too(tmp_path: Path, capsys) -> None:
    from helpers import synthetic_picture, tiny_clip_folder

    pictures = tmp_path / "그림"
    pictures.mkdir()
    for kind in range(4):
        Image.fromarray(synthetic_picture(kind, size=64)).save(pictures / f"p{kind}.png")
    args = ["adapter-train", str(pictures), "--model", str(tiny_sd15_folder(tmp_path / "model")), "--clip",
            str(tiny_clip_folder(tmp_path / "clip")), "--out-dir", str(tmp_path / "adapters"), "--steps", "2",
            "--batch-size", "3", "--lr", "1e-3", "--resolution", "64", "--device", "cpu"]
    events = tmp_path / "events.jsonl"
    assert main([*args, "--run", str(tmp_path / "two"), "--name", "two", "--gpus", "2", "--events", str(events)]) == 0
    assert main([*args, "--run", str(tmp_path / "one"), "--name", "one"]) == 0
    adapters = tmp_path / "adapters"
    assert _max_difference(adapters / "two.safetensors", adapters / "one.safetensors") < TOLERANCE
    assert main([*args, "--run", str(tmp_path / "other"), "--name", "other", "--seed", "1"]) == 0
    assert _max_difference(adapters / "other.safetensors", adapters / "one.safetensors") > 100 * TOLERANCE
    assert last_event(events)["result"] == {"adapter": str(adapters / "two.safetensors"), "steps": 2,
                                            "loss": pytest.approx(checkpoints.load(tmp_path / "one" / "checkpoint")[
                                                "losses"][-1], abs=1e-6), "resumed": "", "world_size": 2}


def test_the_adain_decoder_trains_data_parallel_too(tmp_path: Path, capsys) -> None:
    from helpers import tiny_adain_files

    encoder, _ = tiny_adain_files(tmp_path / "adain")
    styles = tmp_path / "styles"
    styles.mkdir()
    (styles / "coffee.webp").write_bytes((SAMPLES / "coffee.webp").read_bytes())
    args = ["train-decoder", str(SAMPLES), str(styles), "--encoder", str(encoder), "--out-dir", str(tmp_path / "out"),
            "--batch-size", "3", "--resize-to", "48", "--crop", "32", "--steps", "2", "--device", "cpu"]
    handlers = {stop: signal.getsignal(stop) for stop in (signal.SIGINT, signal.SIGTERM)}
    assert main([*args, "--run", str(tmp_path / "two"), "--name", "two", "--gpus", "2"]) == 0
    # torchrun's agent ran in this process: its stop handlers are gone again, so Ctrl-C is KeyboardInterrupt
    assert {stop: signal.getsignal(stop) for stop in handlers} == handlers
    assert main([*args, "--run", str(tmp_path / "one"), "--name", "one"]) == 0
    out = tmp_path / "out"
    assert _max_difference(out / "two.safetensors", out / "one.safetensors") < TOLERANCE
    assert checkpoints.load(tmp_path / "two" / "checkpoint")["world_size"] == 2
    # resumed in one process, said as such
    capsys.readouterr()
    assert main([*args[:-4], "--steps", "3", "--device", "cpu", "--run", str(tmp_path / "two"), "--name", "more"]) == 0
    assert "resumed from step 2 (checkpoint from a 2-process run, resumed with 1" in capsys.readouterr().out


def test_an_error_before_training_is_an_event_too(tmp_path: Path, capsys) -> None:
    empty, events = tmp_path / "빈 폴더", tmp_path / "events.jsonl"
    empty.mkdir()
    assert main(["train", str(empty), "--model", str(tmp_path / "model"), "--loras", str(tmp_path / "loras"), "--run",
                 str(tmp_path / "run"), "--device", "cpu", "--events", str(events)]) == 2
    error = last_event(events)
    assert error["event"] == "error" and str(empty) in error["message"]
    assert str(empty) in capsys.readouterr().err


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The saved encoder's weights, less the attention key biases: softmax over the keys ignores what a key bias
    adds (the same to every key of a query), so their gradient is rounding noise alone, which AdamW's
    normalisation turns into lr-sized steps that differ with any change in the order of float additions (4.7e-3
    apart here; 0 in exact arithmetic)."""
    return {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if not k.endswith(KEY_BIASES)}


def _checkpoint(runs: Path) -> Path:
    """The checkpoint of the one run in the runs folder ``runs`` (its folder is named by the settings and data)."""
    [checkpoint] = runs.glob("*/checkpoint")
    return checkpoint


def _moments(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """AdamW's moments by weight name (the trainer's parameter groups: matrices, then the rest)."""
    state = checkpoints.load(_checkpoint(run))
    names = [n for n, v in state["trainable"].items() if v.ndim >= 2] + [
        n for n, v in state["trainable"].items() if v.ndim < 2]
    return {name: state["optimizer"]["state"][i] for i, name in enumerate(names) if not name.endswith(KEY_BIASES)}


def test_the_image_text_encoder_trains_data_parallel_with_the_whole_global_batch_as_negatives(tmp_path: Path,
                                                                                             capsys) -> None:
    from test_encoder_training import class_pictures, dual_encoder

    # BERT's dropout off: with it on, each rank draws the masks of its own rows (the trainer's docstring)
    model = dual_encoder(tmp_path / "dual", dropout=0.0)
    # 18 training pictures, a global batch of 5 split 3 + 2 (padded for the gather), 3 steps an epoch
    args = ["encoder-train", str(class_pictures(tmp_path / "그림")), "--clip", str(model), "--out-dir",
            str(tmp_path / "out"), "--train", "all", "--epochs", "2", "--batch-size", "5", "--lr", "1e-3",
            "--weight-decay", "0", "--val-fraction", "0.25", "--device", "cpu"]
    events = tmp_path / "events.jsonl"
    assert main([*args, "--run", str(tmp_path / "two"), "--name", "two", "--gpus", "2", "--events", str(events)]) == 0
    assert main([*args, "--run", str(tmp_path / "one"), "--name", "one"]) == 0
    out = tmp_path / "out"
    two, one = _tensors(out / "two"), _tensors(out / "one")
    assert two.keys() == one.keys()
    assert max((two[k] - one[k]).abs().max().item() for k in one) < ENCODER_TOLERANCE
    start = _tensors(model)
    assert max((one[k] - start[k]).abs().max().item() for k in one) > 100 * ENCODER_TOLERANCE
    # AdamW's steps hardly change with the gradient's scale: its moments do, so they check the factor 1/W
    moments = [_moments(tmp_path / run) for run in ("two", "one")]
    assert moments[0].keys() == moments[1].keys()
    for name, state in moments[1].items():
        for key in ("exp_avg", "exp_avg_sq"):
            reference = state[key]
            difference = (moments[0][name][key] - reference).abs().max().item()
            assert difference <= MOMENT_TOLERANCE * reference.abs().max().item(), (name, key)
    lines = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["world_size"] == 2
    assert lines[-1]["event"] == "done" and lines[-1]["result"]["encoder"] == str(out / "two")
    assert checkpoints.load(_checkpoint(tmp_path / "two"))["world_size"] == 2

    # the same command in one process reads the 2-process checkpoint: said, and the same encoder written again
    capsys.readouterr()
    assert main([*args, "--run", str(tmp_path / "two"), "--name", "two"]) == 0
    printed = capsys.readouterr().out
    assert "resumed from step 6 (checkpoint from a 2-process run, resumed with 1" in printed
    again = _tensors(out / "two_2")
    assert max((again[k] - two[k]).abs().max().item() for k in two) == 0
