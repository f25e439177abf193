"""Headless form of the curator's analyses over a folder (the Analyse Folder node's code):

    python atelier_cli.py analyse FOLDER [--clip CLIP] [--taxonomy spaces] [--adain-encoder VGG --adain-decoder DEC
        --templates DIR] [--detector OWLV2] [--group subject] [--metadata metadata.json]

Colour always runs; each other analysis runs when its model is given (emotion and space: --clip; space also a
taxonomy with the space group; style: the AdaIN pair and --templates; objects: --detector with --taxonomy and
--group; intent: --metadata). Prints one line per picture and the path of the analyses.jsonl it wrote.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    from .common import add_numbers, declared

    p = sub.add_parser("analyse", help="colour, emotion, style, objects, intent and space of every picture of a "
                       "folder into its analyses.jsonl (each analysis that has its model)")
    p.add_argument("folder", help="folder of pictures (sub-folders too)")
    p.add_argument("--clip", default=None, help="CLIP for emotion and space: a folder name in models/atelier/clip, "
                   "a Hugging Face id, or a path (none: no emotion, no space)")
    p.add_argument("--taxonomy", default="spaces", help="a shipped taxonomy (artworks, scenes, spaces) or a file: "
                   "its --space-group for space, its --group for the detector")
    p.add_argument("--space-group", default=declared("core.analyses.space", "DEFAULT_GROUP"),
                   help="the taxonomy group of exhibition spaces")
    p.add_argument("--adain-encoder", help="vgg_normalised.pth for style matching: a name in models/atelier/adain, "
                   "or a path (with --adain-decoder and --templates)")
    p.add_argument("--adain-decoder", help="an AdaIN decoder (any; only the encoder is used)")
    p.add_argument("--templates", help="folder of style template pictures, each with a <stem>.txt description")
    p.add_argument("--detector", help="OWLv2 or OWL-ViT: a folder name in models/atelier/detectors, a Hugging Face "
                   "id in the local cache, or a path (with --taxonomy and --group)")
    p.add_argument("--group", default="subject", help="the taxonomy group the detector looks for")
    p.add_argument("--metadata", help="JSON (name -> fields) or CSV with a 'file' column: artist_note and "
                   "expert_review per picture, for intent")
    p.add_argument("--language", default="en", choices=["en", "ko"], help="language of the space names")
    p.add_argument("--precision", default="auto", choices=["auto", "fp16", "bf16", "fp32"], help="models' precision")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    add_numbers(p, int, 0, seed=(0, "seed of the colour palette's k-means"))
    p.add_argument("--output", default="output", help="output root folder (holds the CLIP embedding cache)")


def _check(args: argparse.Namespace) -> None:
    """Options that go together, refused before any model loads."""
    adain = (args.adain_encoder, args.adain_decoder, args.templates)
    if any(adain) and not all(adain):
        raise ValueError("style matching needs --adain-encoder, --adain-decoder and --templates together")
    if not Path(args.folder).is_dir():
        raise ValueError(f"picture folder {args.folder!r} does not exist: give the folder of the pictures to analyse")


def run_analyse(args: argparse.Namespace) -> int:
    from ..core.analyses.folder import analyse_folder
    from ..core.curator.taxonomy import load_taxonomy
    from ..nodes import bridge
    from ..nodes.curator import clip_cache_dir
    from .collection import load_clip_option
    from .common import model_file

    _check(args)
    bridge.set_output_directory(args.output)
    taxonomy = load_taxonomy(args.taxonomy) if (args.clip or args.detector) else None
    clip = load_clip_option(args) if args.clip else None
    adain = None
    if args.adain_encoder:
        from ..core.style.adain_model import load_model

        adain = load_model(model_file(args.adain_encoder, "adain", "encoder file"),
                           model_file(args.adain_decoder, "adain", "decoder file"))
        adain = adain.to(bridge.compute_device(args.device))
    detector = None
    if args.detector:
        from ..core.analyses import objects
        from ..core.shared.hf_folders import find_model_folder
        from ..nodes.analyses import detector_key

        folder = find_model_folder(args.detector, bridge.model_folders(detector_key()), "object detector",
                                   objects.DEFAULT_DETECTOR)
        detector = objects.load_detector(folder, bridge.compute_device(args.device), args.precision)
    result = analyse_folder(args.folder, clip, taxonomy, adain, args.templates, detector, args.group, args.metadata,
                            args.space_group, args.language, args.seed, cache_dir=clip_cache_dir())
    for record in result.records:
        print(result.line(record))
    print(result.report())
    print(f"wrote {result.path}")
    return 0


JOBS = {"analyse": run_analyse}
