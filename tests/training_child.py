"""One fresh process that trains tiny models, for test_reproducible_training.py (no pytest, no fixture seeding).

    python training_child.py WORK RUN --host-seed S [--interrupt sigint|kill] [--only NAME ...]

Each trainer trains in ``WORK/<trainer>/<RUN>/`` and, when it finishes, writes ``WORK/<trainer>/<RUN>.safetensors``
(its trained weights, with its history as metadata; the LoRA through the pack's own LoRA writer). Before each
trainer the global generator is put in a state of its own (``--host-seed``), as the host's other work leaves
it, so only the trainer's own seeding can make two runs agree. ``--interrupt`` sends this process a real
SIGINT (Ctrl-C) or SIGKILL right after the optimizer update given in INTERRUPT_AT, in the middle of a
training step. One JSON line per trainer says how it ended and the step its checkpoint then holds.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from atelier_cli import load_pack  # noqa: E402

load_pack()

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from atelier.training import checkpoints  # noqa: E402

# the optimizer update (1-based, counted over all of a trainer's optimizers) during which the interrupt comes
INTERRUPT_AT = {"lora": 2, "cli_lora": 2, "lora_kill": 6, "seqgan": 5, "adain": 2, "aligner": 5, "adapter": 2}

STORIES = ["a small boat leaves the harbour at dawn. the sea is calm and grey.",
           "the old man watches the boats. he waves to his son.",
           "a cat sleeps in the sun. the children laugh in the street.",
           "the moon rises over the quiet village. the lights go out one by one."] * 6


def _lora(run: Path, out: Path) -> None:
    from atelier.core.sd15 import lora_file
    from atelier.training.sd15 import lora_trainer as lt

    from helpers import tiny_data, tiny_unet

    unet = tiny_unet()
    _host()
    config = lt.TrainConfig(rank=4, alpha=4, lr=1e-2, steps=8, checkpoint_every=4, seed=5, dropout=0.1,
                            targets="all_linear", scheduler="cosine", warmup_steps=2)
    result = lt.train_lora(unet, tiny_data(caption_dropout=0.5), config, run)
    lora_file.save_lora(out.parent, out.stem, lora_file.kohya_state_dict(unet), {"losses": result.losses})


def _cli_lora(run: Path, out: Path) -> None:
    """The LoRA job end to end, as ``atelier_cli.py train`` runs it on a diffusers folder."""
    import shutil

    from atelier.cli import main

    from helpers import SAMPLES, tiny_sd15_folder

    model = run.parent / "model"
    if not model.exists():
        tiny_sd15_folder(model)
    _host()
    loras = run.parent / f"{run.name}-loras"
    code = main(["train", str(SAMPLES), "--model", str(model), "--loras", str(loras), "--run", str(run),
                 "--name", "mine", "--resolution", "64", "--steps", "6", "--checkpoint-every", "4", "--rank", "4",
                 "--dropout", "0.1", "--caption-dropout", "0.5", "--seed", "5", "--device", "cpu"])
    if code and INTERRUPTED:  # a command line that reports Ctrl-C itself
        raise KeyboardInterrupt
    if code:
        raise SystemExit(code)
    shutil.copy(loras / "mine.safetensors", out)


def _seqgan(run: Path, out: Path) -> None:
    from atelier.training.story.seqgan_trainer import SeqGANTrainConfig, TextModelSpec, train_text_generator

    config = SeqGANTrainConfig(batch_size=8, mle_epochs=3, dis_rounds=1, adversarial_epochs=1, d_steps=1,
                               d_epochs=1, rollouts=2, negatives=8, checkpoint_every=3, seed=3)
    spec = TextModelSpec(tokenizer="word", max_vocab=200, max_len=14, emb_dim=8, hidden_dim=16)
    _, models, history = train_text_generator(STORIES, spec, config, run)
    tensors = {**{f"g.{k}": v for k, v in models.generator.state_dict().items()},
               **{f"d.{k}": v for k, v in models.discriminator.state_dict().items()}}
    _save(out, tensors, [history.nll, history.d_accuracy, history.reward])


def _adain(run: Path, out: Path) -> None:
    from atelier.core.style import adain_model
    from atelier.training.style import adain_decoder

    from helpers import SAMPLES, tiny_adain_files

    config = adain_decoder.DecoderConfig(steps=4, batch_size=2, crop=32, resize_to=48, lr=1e-3,
                                         checkpoint_every=3, seed=3)
    encoder, _ = tiny_adain_files(run.parent / "weights")
    _host()
    model = adain_model.load_model(encoder, None, config.seed)  # a new decoder, as the node and the CLI make it
    result = adain_decoder.train_decoder(model, SAMPLES, SAMPLES, config, run)
    _save(out, model.decoder.state_dict(), result.losses)


def _aligner(run: Path, out: Path) -> None:
    from atelier.core.audio.features import MelSpec
    from atelier.training.audio.aligner import AlignConfig, AlignData, train_aligner

    mel = MelSpec(window_seconds=0.5, n_mels=16)
    g = torch.Generator().manual_seed(0)
    data = AlignData(torch.randn(12, mel.n_mels, mel.frames, generator=g),
                     torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=1),
                     [f"pair{i}" for i in range(12)], "synthetic", 1.0)
    config = AlignConfig(epochs=3, batch_size=3, val_fraction=0.25, widths=(8, 16), blocks_per_stage=1, mel=mel,
                         seed=2)
    result = train_aligner(data, config, run)
    _save(out, result.embedder.encoder.state_dict(), result.history)


def _adapter(run: Path, out: Path) -> None:
    from atelier.training.sd15.adapter_trainer import AdapterTrainConfig, train_adapter

    from helpers import tiny_data, tiny_unet

    unet = tiny_unet(cross_attention_dim=768)
    _host()
    embeds = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(2)), dim=1)
    config = AdapterTrainConfig(tokens=2, steps=5, batch_size=2, lr=1e-3, checkpoint_every=4, embed_dropout=0.3,
                                seed=4)
    result = train_adapter(unet, tiny_data(dim=768), embeds, config, run)
    _save(out, result.adapter.state_dict(), result.losses)


TRAINERS = {"lora": _lora, "cli_lora": _cli_lora, "seqgan": _seqgan, "adain": _adain, "aligner": _aligner,
            "adapter": _adapter}


def _save(out: Path, tensors: dict[str, torch.Tensor], history: object) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out), {"history": json.dumps(history)})


HOST_SEED = 0
INTERRUPTED = False


def _host() -> None:
    """The global generator as some other work of the host leaves it."""
    torch.manual_seed(HOST_SEED)
    torch.rand(HOST_SEED % 7 + 1)


def _interrupt_after(update: int, signum: int):
    seen = 0

    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        global INTERRUPTED
        nonlocal seen
        seen += 1
        if seen == update:
            INTERRUPTED = True
            os.kill(os.getpid(), signum)

    return register_optimizer_step_post_hook(hook)


def main() -> None:
    global HOST_SEED, INTERRUPTED
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("run")
    parser.add_argument("--host-seed", type=int, required=True)
    parser.add_argument("--interrupt", choices=("sigint", "kill"))
    parser.add_argument("--only", nargs="*", default=list(TRAINERS))
    args = parser.parse_args()
    HOST_SEED = args.host_seed
    torch.set_num_threads(1)  # tiny models: threads only add waiting on a busy machine
    for name in args.only:
        folder = args.work / name
        folder.mkdir(parents=True, exist_ok=True)
        _host()
        hook, INTERRUPTED = None, False
        if args.interrupt:
            signum = signal.SIGINT if args.interrupt == "sigint" else signal.SIGKILL
            hook = _interrupt_after(INTERRUPT_AT[name if args.interrupt == "sigint" else f"{name}_kill"], signum)
        ended, start = "finished", time.process_time()
        try:
            TRAINERS[name](folder / args.run, folder / f"{args.run}.safetensors")
        except KeyboardInterrupt:
            ended = "interrupted"
        finally:
            if hook is not None:
                hook.remove()
        step = checkpoints.load(folder / args.run / "checkpoint")["step"]
        print(json.dumps({"trainer": name, "ended": ended, "checkpoint_step": step,
                          "cpu_seconds": round(time.process_time() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
