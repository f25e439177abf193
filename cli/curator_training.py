"""Headless fine-tuning of an image-text encoder (a CLIP or a vision-text dual encoder) on caption-picture pairs.

    python atelier_cli.py encoder-train FOLDER --clip CLIP [--pairs pairs.csv] [--train last_n] [--gpus N] ...

The encoder is a folder name under models/atelier/clip of the ComfyUI folder (--comfyui), a Hugging Face id or
a path; the result is written as a new folder there (or in --out-dir), which --clip then names.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    from .collection import _clip_model
    from .common import add_launch_options, add_numbers, declared

    d = declared("training.curator.encoder_trainer", "EncoderTrainConfig")
    p = sub.add_parser("encoder-train", help="fine-tune a CLIP or dual encoder on (caption, picture) pairs, "
                       "with held-out MRR@1/5/10 before and after")
    p.add_argument("folder", help="pictures with caption sidecars (every line of <stem>.txt, <stem>.en.txt, "
                   "<stem>.ko.txt is a caption), or the folder --pairs names pictures in")
    _clip_model(p)
    p.add_argument("--pairs", default="", help="(caption, picture) pairs instead of the sidecars: a CSV with 'text' "
                   "and 'image' columns or JSON lines {\"text\", \"image\"}; several rows may name one picture")
    p.add_argument("--name", default=declared("training.curator.encoder_job", "DEFAULT_NAME"),
                   help="folder name of the result (name_2 if taken)")
    p.add_argument("--out-dir", help="where the result goes (default: models/atelier/clip of the ComfyUI folder)")
    p.add_argument("--run", default="output/atelier/encoder_runs", help="runs folder for checkpoints; the same "
                   "command run again resumes")
    p.add_argument("--recursive", action="store_true", help="also read sub-folders' pictures and captions")
    p.add_argument("--train", choices=declared("training.curator.encoder_trainer", "PARTS"), default=d.train,
                   help="projections: the projection layers and the temperature only; last_n: plus the last N "
                   "layers of each tower; all: everything")
    p.add_argument("--schedule", choices=declared("training.curator.encoder_trainer", "SCHEDULES"),
                   default=d.schedule, help="after the warm-up: constant, or cosine down to 0")
    p.add_argument("--train-precision", choices=declared("training.curator.encoder_trainer", "PRECISIONS"),
                   default=d.precision, help="fp32, or bf16 autocast over fp32 weights")
    add_numbers(p, int, 1, epochs=(d.epochs, "passes over the training pictures"),
                last_n=(d.last_n, "--train last_n: layers of each tower that train"))
    add_numbers(p, int, 2, batch_size=(d.batch_size, "pictures per step, one caption each"))
    add_numbers(p, int, 0, warmup_steps=(d.warmup_steps, "steps of linear warm-up"),
                seed=(d.seed, "seed of the split, batches, captions and dropout"))
    add_numbers(p, float, above=0, lr=(d.lr, "AdamW learning rate"))
    add_numbers(p, float, 0, weight_decay=(d.weight_decay, "AdamW weight decay"))
    add_numbers(p, float, high=0.9, above=0, val_fraction=(d.val_fraction, "share of pictures held out"))
    add_launch_options(p)


def run_encoder_train(args: argparse.Namespace) -> int:
    from ..nodes import bridge
    from ..nodes.curator import clip_key
    from ..training.curator import encoder_job
    from ..training.curator.encoder_trainer import EncoderTrainConfig
    from .collection import load_clip_option
    from .common import TrainingRun

    config = EncoderTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                                schedule=args.schedule, train=args.train, last_n=args.last_n,
                                val_fraction=args.val_fraction, seed=args.seed, precision=args.train_precision)
    job = encoder_job.EncoderJob(args.folder, args.pairs, args.name, config, args.recursive)
    # a bad folder or pairs file fails before the model loads
    run = TrainingRun(args, lambda: sum(encoder_job.work_costs(encoder_job.read_job_pairs(job), config)),
                      "fine-tuning")
    with run:
        clip = load_clip_option(args)
        out_dir = Path(args.out_dir) if args.out_dir else bridge.model_folders(clip_key())[0]
        result = encoder_job.run(job, clip, out_dir, Path(args.run), run.device, lambda total: run.progress)
    run.finished({"encoder": str(result.path), "mrr@10": result.train.after["mrr@10"], "resumed": result.train.resumed})
    if run.main:
        print(result.report())
        print(f"curves: {result.run_dir / 'curves.png'}", file=sys.stderr)
    return 0


JOBS = {"encoder-train": run_encoder_train}
