"""Dataset commands: multiply (originals plus named and random variants) and convert (PNG copies)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..core.shared.output_paths import safe_subfolder
from .common import add_numbers, declared, number


def _add_loading(p: argparse.ArgumentParser) -> None:
    pre = "core.dataset.preprocess"
    p.add_argument("folder", help="folder of originals (with optional <stem>.txt captions)")
    p.add_argument("--output", default="output", help="output root folder")
    p.add_argument("--subfolder", default="atelier/augmented", help="inside the output root; gets vNNN folders")
    p.add_argument("--recursive", action="store_true", help="also read sub-folders")
    p.add_argument("--resize", choices=declared(pre, "RESIZE_MODES"), default="none", help="how to resize")
    add_numbers(p, int, 1, size=(512, "edge length for shorter_edge/longer_edge"),
                width=(512, "width for --resize exact and --pad to_size"),
                height=(512, "height for --resize exact and --pad to_size"))
    p.add_argument("--pad", choices=declared(pre, "PAD_MODES"), default="none", help="how to pad")
    p.add_argument("--pad-color", default="#000000", help="'#rrggbb', 'r,g,b' or 'most_frequent'")
    p.add_argument("--crop", choices=declared(pre, "CROP_MODES"), default="none", help="centre crop to the size")
    p.add_argument("--filter", choices=declared(pre, "FILTERS"), default="bicubic", help="resampling filter")
    p.add_argument("--alpha-background", default="#ffffff", help="colour transparent pixels are composited on")
    p.add_argument("--max-megapixels", type=number(float, above=0),
                   default=declared("core.dataset.image_files", "DEFAULT_MAX_MEGAPIXELS"),
                   help="larger pictures are skipped as possible decompression bombs")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("multiply", help="write each original plus its named variants, captions and a manifest",
                       epilog=RECIPE_HELP)
    _add_loading(m)
    s = declared("core.dataset.variants", "VariantSettings")
    m.add_argument("--variants", default=",".join(declared("core.dataset.variants", "KINDS")),
                   help="comma-separated variants (ids or names such as rotation_+45); empty for none")
    m.add_argument("--no-original", action="store_true", help="do not write the originals themselves")
    add_numbers(m, float, 0, brightness_down=(s.brightness_down, "brightness factor of brightness_down"),
                brightness_up=(s.brightness_up, "brightness factor of brightness_up"))
    add_numbers(m, float, -1, 1, saturation_down=(s.saturation_down, "HSV saturation offset of saturation_down"),
                saturation_up=(s.saturation_up, "HSV saturation offset of saturation_up"))
    add_numbers(m, float, -360, 360, angle=(s.angle, "degrees of rotation_+/-, counter-clockwise"))
    m.add_argument("--fill-color", default="#000000", help="colour of the corners a rotation uncovers")
    add_numbers(m, int, 0, random=(0, "extra random variants per original, drawn from --recipe"),
                seed=(0, "seed of the random variants"))
    m.add_argument("--recipe", help="JSON augmentation recipe for --random (format below); without it a mild "
                   "default: flips, small rotations, brightness and saturation")
    c = sub.add_parser("convert", help="write the folder's pictures as PNG copies (tif to png), preprocessed")
    _add_loading(c)
    c.set_defaults(subfolder="atelier/png")


RECIPE_HELP = """\
--recipe: a JSON object drawn from for each random variant (--random N). Every key is optional:
  hflip, vflip, grayscale   number 0..1: probability of the flip / greyscale
  saturation, brightness, rotation, translate, scale, shear
                            {"p": probability 0..1, "low": number, "high": number}: applied with probability p,
                            its amount drawn uniformly from low..high (saturation: offset on HSV S, -1..1;
                            brightness and scale: factors; rotation and shear: degrees; translate: fraction of
                            the size)
  expand                    true/false: grow the canvas so a rotation keeps the corners
  fill                      [r, g, b], 0..1: colour of uncovered corners
  interpolation             "bilinear" or "nearest"
Example (samples/recipe.json): {"hflip": 0.5, "rotation": {"p": 0.5, "low": -15, "high": 15},
  "brightness": {"p": 0.5, "low": 0.8, "high": 1.2}}"""


def recipe_option(path: str | None) -> Any:  # -> core.augment.AugmentSpec
    from ..core.dataset import augment

    if path is None:
        return augment.AugmentSpec(hflip=0.5, rotation=augment.Range(0.5, -15, 15),
                                   brightness=augment.Range(0.5, 0.8, 1.2), saturation=augment.Range(0.5, -0.15, 0.15))
    return augment.read_recipe(path)


def run_multiply(args: argparse.Namespace) -> int:
    """multiply and convert: load (and preprocess) a folder, write it with its variants into a vNNN folder."""
    from ..core.dataset import multiply, variants
    from ..core.dataset.folder_dataset import load_folder
    from ..core.dataset.image_files import list_images
    from ..core.dataset.preprocess import PreprocessSpec
    from ..core.shared.colors import parse_color
    from ..nodes import bridge

    pad_color = None if args.pad_color == "most_frequent" else parse_color(args.pad_color)
    spec = PreprocessSpec(args.resize, args.size, args.width, args.height, args.pad, pad_color, args.crop,
                          args.filter)
    bridge.set_output_directory(args.output)
    parent = safe_subfolder(bridge.output_directory(), args.subfolder)
    if args.command == "multiply":
        settings = variants.VariantSettings(args.brightness_down, args.brightness_up, args.saturation_down,
                                            args.saturation_up, args.angle, parse_color(args.fill_color))
        kinds = variants.parse_kinds([v for v in args.variants.split(",") if v.strip()], settings)
        random = multiply.RandomVariants(recipe_option(args.recipe), args.random, args.seed) if args.random else None
        include_original = not args.no_original
    else:
        settings, kinds, random, include_original = variants.VariantSettings(), [], None, True
    files = list_images(args.folder, args.recursive)
    data = load_folder(args.folder, spec, parse_color(args.alpha_background), args.recursive,
                       args.max_megapixels, progress=bridge.progress(len(files), "loading"))
    originals = [multiply.Original(i.image, i.stem, i.caption, str(i.path)) for i in data.images]
    planned = multiply.plan_size(originals, kinds, include_original, random)
    written = multiply.multiply(originals, parent, kinds, settings, include_original, random,
                                bridge.compute_device(args.device), bridge.progress(planned, args.command))
    for skipped in data.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    print(f"wrote {len(written.files)} images from {len(originals)} originals to {written.folder}")
    print(f"manifest: {written.manifest}")
    return 0


JOBS = {"multiply": run_multiply, "convert": run_multiply}
