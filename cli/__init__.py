"""Headless entry point: the pack's jobs without the ComfyUI UI (run through atelier_cli.py), one module per part.

    python atelier_cli.py multiply FOLDER --output OUT [--variants ...] [--random N --seed S [--recipe R.json]]
    python atelier_cli.py convert FOLDER --output OUT      # png copies ("tif to png")
    python atelier_cli.py train FOLDER --model SD15_CHECKPOINT_OR_FOLDER --loras LORAS --run RUN [options]
    python atelier_cli.py style ORIGINALS --content-folder PHOTOS --encoder VGG --decoder DECODER --output OUT [options]
    python atelier_cli.py train-decoder CONTENT STYLES --encoder VGG --out-dir ADAIN_FOLDER --run RUN [options]
    python atelier_cli.py virtual-data ORIGINALS --model SD15 --adapter ADAPTER --clip CLIP --change TEXT ...
    python atelier_cli.py fid REAL GENERATED [--kid-subset 50]
    python atelier_cli.py label|curate|caption|describe|retrieve|evaluate-retrieval FOLDER ...  # cli/collection.py
    python atelier_cli.py encoder-train FOLDER --clip CLIP [--pairs pairs.csv] ...     # cli/curator_training.py
    python atelier_cli.py analyse FOLDER [--clip CLIP] [--adain-encoder ...] [--detector ...] # cli/analyses.py
    python atelier_cli.py text-train|text-sample|text-story|story-strip|story-panels ...       # cli/story.py
    python atelier_cli.py audio-train|adapter-train|audio-encode ...                            # cli/audio.py

train, train-decoder, adapter-train and encoder-train also take ``--gpus N`` (data-parallel through torchrun,
training/distributed.py) and ``--events PATH`` (progress as JSON lines, core/shared/progress_events.py).

The parser is built without importing torch or any model library (``--help`` answers at once): option defaults
and choices are read from the source of the core modules that own them (``declared``), and every job imports
what it needs when it runs. Numeric options are range-checked as they are parsed (``number``).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.shared.output_paths import safe_name, safe_subfolder
from . import analyses, audio, collection, curator_training, dataset, lora, metrics, story, style, style_diffusion
from .common import RESUMABLE, _flags, _Parser, add_comfyui_option, cli_spelling, launch_group, use_models_of

_PARTS = (dataset, lora, style, style_diffusion, metrics, collection, curator_training, analyses, story, audio)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atelier", description="Atelier's jobs, headless. '<command> --help' lists a "
                     "command's options.", epilog=f"Ctrl-C stops a job; {', '.join(sorted(RESUMABLE))} resume "
                     "when the same command runs again with the same --run folder.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for part in _PARTS:
        part.add_parsers(sub)
    add_comfyui_option(sub)
    return parser


def _check_up_front(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what would only fail after long work: names, sub-folders, options that do nothing."""
    if getattr(args, "name", None) is not None:
        safe_name(args.name, "--name")
    if getattr(args, "subfolder", None) is not None:
        safe_subfolder(Path(args.output), args.subfolder)
    for folder in (getattr(args, "out_dir", None), getattr(args, "loras", None)):  # where a trained file goes
        if folder is not None:
            from ..core.dataset.image_files import check_writable

            check_writable(Path(folder))
    if args.command == "multiply" and args.recipe is not None:
        if not args.random:
            parser.error("--recipe is drawn from for random variants only: give --random N (variants per "
                         "original) with it")
        dataset.recipe_option(args.recipe)
    if args.command == "text-train" and args.compare_unconditioned and not args.conditioning:
        parser.error("--compare-unconditioned compares the generator with and without the works' features: give "
                     "--conditioning (a catalogue) too")
    if args.command == "describe" and args.writer == "seqgan" and not args.text_model:
        parser.error("--writer seqgan needs --text-model: a text model trained with text-train --conditioning on "
                     "Describe Folder's curation.jsonl records")
    if args.command == "virtual-data" and args.adapter is None and args.lora is None:
        parser.error("give --adapter (the diffusion form: each original's image embedding steers SD 1.5) or --lora "
                     "(the first-LoRA form: an SD already fine-tuned on the originals), or both")


JOBS: dict[str, Callable[[argparse.Namespace], int]] = {k: v for part in _PARTS for k, v in part.JOBS.items()}


def main(argv: Sequence[str] | None = None) -> int:
    from ..core.shared.progress import close_bars

    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))  # this process's rank when torchrun started it
    try:
        _check_up_front(parser, args)
        use_models_of(args)
        if getattr(args, "gpus", 1) > 1:
            return launch_group(args, argv)
        return JOBS[args.command](args)
    except KeyboardInterrupt:
        close_bars()
        if rank == 0:
            print("stopped; run the same command to resume" if args.command in RESUMABLE else "stopped",
                  file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # the engine's errors say what to do; no traceback
        from ..training.distributed import reported_by_launcher

        close_bars()
        if reported_by_launcher(exc):  # said once, by rank 0 or by the launcher naming the rank that died
            return 2
        who = f"atelier (rank {rank})" if rank else "atelier"
        print(f"{who}: {cli_spelling(str(exc), _flags(parser, args.command))}", file=sys.stderr)
        return 2
