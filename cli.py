"""Headless entry point: the pack's jobs without the ComfyUI UI (run through atelier_cli.py).

    python atelier_cli.py multiply FOLDER --output OUT [--variants ...] [--random N --seed S]
    python atelier_cli.py convert FOLDER --output OUT      # png copies ("tif to png")
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .core import augment, multiply, variants
from .core.colors import parse_color
from .core.folder_dataset import load_folder
from .core.image_files import DEFAULT_MAX_MEGAPIXELS, ImageFolderError, list_images
from .core.output_paths import safe_subfolder
from .core.preprocess import CROP_MODES, FILTERS, PAD_MODES, RESIZE_MODES, PreprocessSpec
from .nodes import bridge


def _add_loading(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder of originals (with optional <stem>.txt captions)")
    p.add_argument("--output", default="output", help="output root folder (default: ./output)")
    p.add_argument("--subfolder", default="atelier/augmented", help="inside the output root; gets vNNN folders")
    p.add_argument("--recursive", action="store_true", help="also read sub-folders")
    p.add_argument("--resize", choices=RESIZE_MODES, default="none")
    p.add_argument("--size", type=int, default=512, help="edge length for shorter_edge/longer_edge")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--pad", choices=PAD_MODES, default="none")
    p.add_argument("--pad-color", default="#000000", help="'#rrggbb', 'r,g,b' or 'most_frequent'")
    p.add_argument("--crop", choices=CROP_MODES, default="none")
    p.add_argument("--filter", choices=FILTERS, default="bicubic")
    p.add_argument("--alpha-background", default="#ffffff", help="colour transparent pixels are composited on")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS)
    p.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier's jobs, headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("multiply", help="write each original plus its named variants, captions and a manifest")
    _add_loading(m)
    s = variants.VariantSettings()
    m.add_argument("--variants", default=",".join(variants.KINDS),
                   help="comma-separated variants (ids or names such as rotation_+45); empty for none")
    m.add_argument("--no-original", action="store_true", help="do not write the originals themselves")
    m.add_argument("--brightness-down", type=float, default=s.brightness_down)
    m.add_argument("--brightness-up", type=float, default=s.brightness_up)
    m.add_argument("--saturation-down", type=float, default=s.saturation_down)
    m.add_argument("--saturation-up", type=float, default=s.saturation_up)
    m.add_argument("--angle", type=float, default=s.angle)
    m.add_argument("--fill-color", default="#000000")
    m.add_argument("--random", type=int, default=0, help="extra random variants per original")
    m.add_argument("--recipe", help="JSON file of an augmentation recipe for --random (fields of AugmentSpec)")
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("convert", help="write the folder's pictures as PNG copies (tif to png), preprocessed")
    _add_loading(c)
    c.set_defaults(subfolder="atelier/png")
    return parser


def _recipe(path: str | None) -> augment.AugmentSpec:
    if path is None:
        return augment.AugmentSpec(hflip=0.5, rotation=augment.Range(0.5, -15, 15),
                                   brightness=augment.Range(0.5, 0.8, 1.2), saturation=augment.Range(0.5, -0.15, 0.15))
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    ranges = {k: augment.Range(**v) for k, v in raw.items() if isinstance(v, dict)}
    rest = {k: (tuple(v) if k == "fill" else v) for k, v in raw.items() if not isinstance(v, dict)}
    return augment.AugmentSpec(**rest, **ranges)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        pad_color = None if args.pad_color == "most_frequent" else parse_color(args.pad_color)
        spec = PreprocessSpec(args.resize, args.size, args.width, args.height, args.pad, pad_color, args.crop,
                              args.filter)
        bridge.set_output_directory(args.output)
        parent = safe_subfolder(bridge.output_directory(), args.subfolder)
        if args.command == "multiply":
            settings = variants.VariantSettings(args.brightness_down, args.brightness_up, args.saturation_down,
                                                args.saturation_up, args.angle, parse_color(args.fill_color))
            kinds = variants.parse_kinds([v for v in args.variants.split(",") if v.strip()], settings)
            random = multiply.RandomVariants(_recipe(args.recipe), args.random, args.seed) if args.random else None
            include_original = not args.no_original
        else:
            settings, kinds, random, include_original = variants.VariantSettings(), [], None, True
        files = list_images(args.folder, args.recursive)
        data = load_folder(args.folder, spec, parse_color(args.alpha_background), args.recursive,
                           args.max_megapixels, progress=bridge.progress(len(files), "loading"))
        originals = [multiply.Original(i.image, i.stem, i.caption, str(i.path)) for i in data.images]
        written = multiply.multiply(originals, parent, kinds, settings, include_original, random,
                                    bridge.compute_device(args.device), bridge.progress(len(originals), args.command))
    except (ImageFolderError, ValueError, OSError) as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    for skipped in data.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    print(f"wrote {len(written.files)} images from {len(originals)} originals to {written.folder}")
    print(f"manifest: {written.manifest}")
    return 0
