"""Headless commands of audio-embedding conditioning: the two trainings.

    python atelier_cli.py audio-train FOLDER --clip CLIP --out-dir ENCODERS --run RUNS [--epochs 30] [--loss infonce]
    python atelier_cli.py adapter-train FOLDER --model SD15 --clip CLIP --out-dir ADAPTERS --run RUN [--steps 2000]

FOLDER for audio-train holds <stem>.wav/.flac/.mp3 beside <stem>.png/.jpg, or videos. Both resume when the
same command runs again with the same --run folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .core import clip_model
from .nodes import bridge


def _image_encoder(args: argparse.Namespace):  # -> core.image_embedding.ImageEmbedder
    from .cli_collection import load_clip_option
    from .core.image_embedding import clip_embedder

    return clip_embedder(load_clip_option(args))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder")
    p.add_argument("--clip", default=clip_model.DEFAULT_CLIP, help="the frozen image encoder: a CLIP folder, name "
                   "or cached HF id")
    p.add_argument("--precision", default="auto", choices=["auto", "fp16", "bf16", "fp32"])
    p.add_argument("--out-dir", required=True, help="where the trained file goes")
    p.add_argument("--run", required=True, help="run folder for checkpoints; rerun to resume")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def add_parsers(sub: Any) -> None:
    from .cli import add_numbers
    from .core.audio_features import MelSpec
    from .training.adapter_trainer import AdapterTrainConfig
    from .training.audio_aligner import LOSSES, AlignConfig
    from .training.audio_job import AudioJob
    from .training.lora_trainer import PRECISIONS

    a = sub.add_parser("audio-train", help="train an audio encoder into a CLIP image-embedding space")
    _common(a)
    a.add_argument("--name", default="atelier_audio")
    d, m, j = AlignConfig(), MelSpec(), AudioJob("")
    a.add_argument("--loss", choices=LOSSES, default=d.loss)
    a.add_argument("--symmetric", action="store_true")
    a.add_argument("--learn-scale", action="store_true")
    add_numbers(a, int, epochs=d.epochs, batch_size=d.batch_size, seed=d.seed, sample_rate=m.sample_rate,
                n_mels=m.n_mels, top_k=j.top_k, warmup_epochs=j.warmup_epochs)
    add_numbers(a, float, temperature=d.temperature, lr=d.lr, val_fraction=d.val_fraction,
                window_seconds=m.window_seconds, frames_per_second=j.frames_per_second, threshold=j.threshold)
    t = sub.add_parser("adapter-train", help="train the image-embedding adapter on pictures and a frozen SD 1.5")
    _common(t)
    t.add_argument("--model", required=True, help="SD 1.5 checkpoint file or diffusers folder: a name in "
                   "models/checkpoints, or a path")
    t.add_argument("--name", default="atelier_adapter")
    t.add_argument("--no-captions", action="store_true")
    c = AdapterTrainConfig()
    t.add_argument("--mixed-precision", choices=PRECISIONS, default=c.mixed_precision)
    t.add_argument("--gradient-checkpointing", action="store_true")
    add_numbers(t, int, tokens=c.tokens, steps=c.steps, batch_size=c.batch_size, seed=c.seed,
                checkpoint_every=c.checkpoint_every, resolution=512)
    add_numbers(t, float, lr=c.lr, text_dropout=c.text_dropout, embed_dropout=c.embed_dropout)


def run_audio(args: argparse.Namespace) -> int:
    from .core.audio_features import MelSpec
    from .training import audio_job
    from .training.audio_aligner import AlignConfig

    mel = MelSpec(sample_rate=args.sample_rate, window_seconds=args.window_seconds, n_mels=args.n_mels)
    align = AlignConfig(loss=args.loss, symmetric=args.symmetric, learn_scale=args.learn_scale,
                        temperature=args.temperature, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        val_fraction=args.val_fraction, seed=args.seed, mel=mel)
    job = audio_job.AudioJob(args.folder, args.name, align, args.frames_per_second, args.top_k, args.threshold,
                             args.warmup_epochs)
    result = audio_job.run(job, _image_encoder(args), Path(args.out_dir), Path(args.run),
                           bridge.compute_device(args.device),
                           bridge.progress(audio_job.estimated_steps(job), "training"))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for line in audio_job.epoch_lines(result.align.history):
        print(line)
    if result.selected:
        print(f"frames kept: {', '.join(result.selected)}")
    print(f"wrote {result.path}")
    return 0


def run_adapter(args: argparse.Namespace) -> int:
    from .core import sd15_checkpoint
    from .core.folder_dataset import load_folder
    from .training import adapter_job
    from .training.adapter_trainer import AdapterTrainConfig

    config = AdapterTrainConfig(tokens=args.tokens, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                text_dropout=args.text_dropout, embed_dropout=args.embed_dropout,
                                mixed_precision=args.mixed_precision,
                                gradient_checkpointing=args.gradient_checkpointing, seed=args.seed,
                                checkpoint_every=args.checkpoint_every)
    images = _image_encoder(args)
    from .cli import model_file

    parts, _ = sd15_checkpoint.load(model_file(args.model, "checkpoints", "SD 1.5 checkpoint"))
    dataset = load_folder(args.folder)
    result = adapter_job.run(parts, dataset, images, config, args.name, Path(args.out_dir), Path(args.run),
                             args.resolution, not args.no_captions, bridge.compute_device(args.device),
                             bridge.progress(2 * len(dataset.images) + config.steps, "training"))
    for warning in result.warnings:
        print(f"note: {warning}", file=sys.stderr)
    losses = result.result.losses
    if result.result.resumed_from:
        print(f"resumed from step {result.result.resumed_from}")
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
    print(f"wrote {result.path}")
    return 0


JOBS = {"audio-train": run_audio, "adapter-train": run_adapter}
