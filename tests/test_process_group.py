"""A training command in a separate process group (training/process_group.py), with tests/group_child.py as the
command: two CPU ranks under the real torch.distributed.run, rank 0 writing the events of ``--events``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import psutil
import pytest

from atelier.core.shared.progress import Cancelled
from atelier.training import process_group as pg

CHILD = Path(__file__).resolve().parent / "group_child.py"
TWO_CPU = pg.Placement(cpu_processes=2)


class Recorder:
    """A host's progress: records every call in order; cancels (as the host's button) after ``cancel_after``
    advances, listing this test's whole process tree at that moment."""

    def __init__(self, cancel_after: int = 0) -> None:
        self.calls: list[tuple[str, object]] = []
        self.cancel_after = cancel_after
        self.advanced = 0
        self.tree: list[psutil.Process] = []

    def advance(self, steps: int = 1) -> None:
        self.advanced += steps
        self.calls.append(("advance", steps))

    def check_cancel(self) -> None:
        if self.cancel_after and self.advanced >= self.cancel_after:
            self.tree = psutil.Process().children(recursive=True)
            raise Cancelled("cancelled by the test")

    def status(self, text: str) -> None:
        self.calls.append(("status", text))

    def preview(self, image: object) -> None:
        self.calls.append(("preview", int(np.asarray(image)[0, 0, 0])))


def _run(tmp_path: Path, progress: Recorder, *args: str, total: int = 4, grace_s: float = 2.0) -> pg.GroupResult:
    return pg.run(CHILD, list(args), TWO_CPU, tmp_path / "group" / "events.jsonl", progress, total, grace_s)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_events_reach_the_progress_in_order(tmp_path: Path) -> None:
    progress = Recorder()
    out = _run(tmp_path, progress, "--steps", "4", total=8)  # the child's 4 units on a bar of 8
    assert progress.calls == [("advance", 2), ("advance", 2), ("status", "loss 0.5000"), ("preview", 20),
                              ("advance", 2), ("advance", 2), ("status", "loss 0.2500"), ("preview", 40)]
    assert out.result == {"lora": str(tmp_path / "group" / "fake.safetensors"), "steps": 4}
    assert out.world_size == 2 and out.losses == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    assert [p.name for p in out.previews] == ["preview_002.png", "preview_004.png"]


def test_cancel_ends_the_ranks_and_their_children(tmp_path: Path) -> None:
    progress = Recorder(cancel_after=2)
    with pytest.raises(Cancelled):
        _run(tmp_path, progress, "--steps", "2000", "--grandchild", total=2000)
    rank0, grandchild = (int(p) for p in next(t for k, t in progress.calls if k == "status").split()[1:])
    seen = {p.pid for p in progress.tree}
    # the launcher, two ranks and one grandchild each (which ignore SIGTERM) were running when the user cancelled
    assert {rank0, grandchild} <= seen and len(seen) >= 5, progress.tree
    assert [p.pid for p in progress.tree if _running(p.pid)] == []
    assert progress.advanced < 2000


def test_an_error_event_is_raised_with_its_message(tmp_path: Path) -> None:
    with pytest.raises(pg.GroupError, match="stopped with an error: the loss is NaN at step 3; 검사 the pictures"):
        _run(tmp_path, Recorder(), "--steps", "6", "--error-at", "3")


def test_a_crash_is_raised_with_the_tail_of_stderr(tmp_path: Path) -> None:
    shown = r"exited with code 1\nlast lines of rank 0.s stderr(.|\n)*RuntimeError: fake crash at step 2$"
    with pytest.raises(pg.GroupError, match=shown):
        _run(tmp_path, Recorder(), "--steps", "4", "--crash-at", "2")


@pytest.mark.parametrize("text, message", [
    ("0,0", "names a GPU twice"), ("a,b", "not a list of GPU indices"), ("cpu:0", "takes a number of processes"),
    ("cpu:two", "takes a number of processes")])
def test_bad_placements_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pg.parse_placement(text)


def test_placements_parse() -> None:
    assert pg.parse_placement(" ") is None
    assert pg.parse_placement("0, 1") == pg.Placement(gpus=(0, 1))
    assert pg.parse_placement("CPU:2") == TWO_CPU and TWO_CPU.processes == 2


def test_a_gpu_that_is_not_there_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    pg.check_placement(pg.Placement(gpus=(0, 1)))
    with pytest.raises(ValueError, match="GPU 2 is not present; this machine has GPUs 0 to 1"):
        pg.check_placement(pg.Placement(gpus=(1, 2)))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="GPU 0 is not present; this machine has no CUDA GPU; use 'cpu:N'"):
        pg.check_placement(pg.Placement(gpus=(0,)))
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no torch.distributed"):
        pg.check_placement(TWO_CPU)
    monkeypatch.setattr(pg.os, "name", "nt")
    with pytest.raises(ValueError, match="Linux and macOS only; clear 'gpus'"):
        pg.check_placement(TWO_CPU)


def test_chosen_gpus_are_mapped_through_the_hosts_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    assert pg.child_environment(pg.Placement(gpus=(0, 2)))["CUDA_VISIBLE_DEVICES"] == "3,7"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert pg.child_environment(pg.Placement(gpus=(1,)))["CUDA_VISIBLE_DEVICES"] == "1"
    assert pg.child_environment(TWO_CPU)["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


# --- Train LoRA's 'gpus': the command line, the pictures, the checks made before any launch ---------------------

def _job(**train: object):
    from atelier.training.sd15 import lora_job
    from atelier.training.sd15.lora_trainer import TrainConfig

    config = TrainConfig(**{"rank": 4, "alpha": 2.5, "dropout": 0.1, "targets": "kohya_default", "steps": 7,
                            "batch_size": 2, "grad_accum": 3, "lr": 3e-4, "scheduler": "cosine", "warmup_steps": 2,
                            "max_grad_norm": 0.0, "min_snr_gamma": 5.0, "noise_offset": 0.05, "seed": 11,
                            "checkpoint_every": 3, "gradient_checkpointing": True, "train_text_encoder": True,
                            "text_encoder_lr": 2e-5, **train})
    return lora_job.LoraJob(images="", name="한글_lora", trigger="--sks 스타일", use_captions=False,
                            caption_dropout=0.25, resolution=128, upscale_small=False, train=config, sample_every=3,
                            sample_prompts=("a cat", "바다 위의 배", "", "-no sky"), sample_steps=4, sample_seed=11)


def test_the_command_line_carries_every_setting_of_the_job(tmp_path: Path) -> None:
    from dataclasses import asdict

    from atelier.cli import _parser
    from atelier.training.sd15 import lora_group

    job = _job()
    argv = lora_group.command_args(job, tmp_path / "사진", tmp_path / "sd.safetensors", tmp_path / "loras",
                                   tmp_path / "run", TWO_CPU)
    args = _parser().parse_args(argv)
    assert (args.command, args.folder, args.model, args.loras, args.run) == (
        "train", *(str(tmp_path / p) for p in ("사진", "sd.safetensors", "loras", "run")))
    assert (args.name, args.trigger, args.no_captions, args.caption_dropout, args.resolution, args.no_upscale,
            args.sample_every, args.sample_prompt, args.sample_steps, args.device) == (
        job.name, job.trigger, True, 0.25, 128, True, 3, list(job.sample_prompts), 4, "cpu")
    for name, value in asdict(job.train).items():
        assert getattr(args, name) == value, name
    gpu_args = _parser().parse_args(lora_group.command_args(_job(gradient_checkpointing=False), tmp_path,
                                                            tmp_path / "m", tmp_path, tmp_path, pg.Placement((0,))))
    assert gpu_args.device == "auto" and gpu_args.gradient_checkpointing is False


def test_an_image_batch_becomes_a_folder_the_ranks_read_back_exactly(tmp_path: Path) -> None:
    import torch

    from atelier.core.dataset.folder_dataset import batch_dataset, load_folder
    from atelier.training.sd15 import lora_group

    from helpers import as_batch, photo

    batch = as_batch(photo("chelsea.jpg", (48, 32)), photo("rocket.png", (48, 32)))
    pictures, _ = batch_dataset(batch, ["고양이", ""], ["cat", "rocket"])
    folder = lora_group.write_pictures(pictures, tmp_path / "run" / "pictures")
    back = load_folder(folder)
    assert [(i.stem, i.caption) for i in back.images] == [("cat", "고양이"), ("rocket", None)]
    assert torch.equal(torch.stack([i.image for i in back.images]), batch)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["pictures"]  # no partial folder left


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> dict[str, object]:
    """Train LoRA with a checkpoint file in models/checkpoints and the sample pictures in the input folder; the
    bridge's ComfyUI calls replaced (test_lora_node.py does the same for the in-process path)."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from atelier.nodes import bridge

    from helpers import SAMPLES, tiny_sd15_parts, to_ldm_checkpoint

    seen: dict[str, object] = {"progress": Recorder()}
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("ATELIER_INPUT_DIR", str(tmp_path / "input"))
    shutil.copytree(SAMPLES, tmp_path / "input" / "originals", ignore=shutil.ignore_patterns("*.md"))
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in to_ldm_checkpoint(tiny_sd15_parts()).items()},
              str(tmp_path / "models" / "checkpoints" / "tiny_sd15.safetensors"))

    def sd15_weights(model, clip, vae):
        raise AssertionError("the group path must not read ComfyUI's weights")

    def apply_lora(model, clip, path, strength):
        seen["applied"] = (path, strength)
        return "patched model", "patched clip"

    def progress(total, desc=""):
        seen["total"] = total
        return seen["progress"]

    monkeypatch.setattr(bridge, "sd15_weights", sd15_weights)
    monkeypatch.setattr(bridge, "apply_lora", apply_lora)
    monkeypatch.setattr(bridge, "progress", progress)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    seen["runs"] = output_dir / "atelier" / "lora_runs"
    seen["loras"] = tmp_path / "models" / "loras"
    return seen


def _train_lora(**overrides: object):
    from atelier.nodes.lora import AtelierTrainLoRA

    from helpers import node_defaults

    values = node_defaults(AtelierTrainLoRA, folder="originals", steps=2, rank=4, resolution=64, sample_steps=2,
                           mixed_precision="no", gradient_checkpointing=False, trigger="atl", checkpoint_every=1,
                           batch_size=2, gpus="cpu:2", ckpt_name="tiny_sd15.safetensors")
    values.update(overrides)
    return AtelierTrainLoRA().train(object(), object(), object(), **values)


@pytest.mark.parametrize("overrides, message", [
    ({"ckpt_name": "none"}, "cannot share ComfyUI's loaded model: choose in 'ckpt_name'"),
    ({"ckpt_name": "missing.safetensors"}, "checkpoint 'missing.safetensors' is not in .*choose one from"),
    ({"gpus": "0,1"}, "GPU 1 is not present; this machine has GPU 0"),
    ({"gpus": "1;2"}, "not a list of GPU indices"),
    ({"batch_size": 1}, "batch_size 1 is the global batch, split across 2 processes"),
    ({"qlora": True}, "QLoRA .* CUDA GPU only"),
    ({"folder": ""}, "no training images"),
    ({"folder": "missing"}, "does not exist|no readable image"),
])
def test_the_group_path_refuses_before_launching(node, monkeypatch: pytest.MonkeyPatch, overrides, message) -> None:
    monkeypatch.setattr(pg.subprocess, "Popen", lambda *a, **k: pytest.fail("launched"))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        _train_lora(**overrides)
    assert not node["runs"].exists()


def _events_option() -> bool:
    import subprocess
    import sys

    from atelier.training.sd15.lora_group import CLI

    shown = subprocess.run([sys.executable, str(CLI), "train", "--help"], capture_output=True, text=True, check=True)
    return "--events" in shown.stdout


needs_events = pytest.mark.skipif(not _events_option(), reason="atelier_cli.py train has no --events yet (issue 21's "
                                  "data-parallel trainer); these run once it has")


@needs_events
def test_train_lora_in_two_cpu_processes_end_to_end(node) -> None:
    from atelier.core.sd15 import lora_file

    model, clip, path, loss, samples, report = _train_lora(strength=0.7)
    assert (model, clip) == ("patched model", "patched clip") and node["applied"] == (Path(path), 0.7)
    assert Path(path) == node["loras"] / "atelier_lora.safetensors"
    tensors, metadata = lora_file.read_lora(Path(path))
    assert metadata["ss_steps"] == "2" and metadata["ss_num_train_images"] == "4"
    assert any(k.startswith("lora_unet_") for k in tensors)
    assert loss.shape[0] == 1 and samples.shape == (1, 64, 64, 3)
    assert report.startswith("trained data-parallel in 2 processes on the CPU\nLoRA trains ")
    assert "loss " in report and " over 2 steps" in report and f"wrote {path}" in report
    progress = node["progress"]
    assert node["total"] == 4 + 2 and progress.advanced == node["total"]  # 4 pictures encoded, 2 steps
    assert [k for k, _ in progress.calls].count("preview") == 1  # the sample drawn at the end
    (run,) = node["runs"].iterdir()
    assert (run / "checkpoint").exists()


@needs_events
def test_cancelling_train_lora_ends_both_processes(node) -> None:
    node["progress"].cancel_after = 4 + 1  # the pictures encoded and one step trained
    with pytest.raises(Cancelled):
        _train_lora(steps=1000)
    tree = node["progress"].tree
    assert len(tree) >= 3 and [p.pid for p in tree if _running(p.pid)] == []  # the launcher and both ranks
    assert node["progress"].advanced < 4 + 1000
