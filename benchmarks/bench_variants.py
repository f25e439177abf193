"""Nine variants of 16 images at 512x512: the pack's batched path against a per-image Pillow loop.

Both start from the same ComfyUI IMAGE batch (float ``[B, H, W, 3]``) and end with a Pillow RGB
image of every variant, ready to save as PNG (saving costs both the same and is left out). The
reference is the usual way a script or node is written: per image, to PIL, then one
self-contained Pillow function per variant. Timings interleave the two, and the ratio of medians is
reported. ``--write`` times the whole job instead: the same variants written as PNG files (level
4) by the Pillow loop, one after another, against the pack's multiply (which encodes on a thread
pool while it renders). Run: ``python benchmarks/bench_variants.py [--device cuda] [--write]``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atelier_cli import load_pack  # noqa: E402

load_pack()
from atelier.core.dataset import multiply, variants  # noqa: E402

SETTINGS = variants.VariantSettings()
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "originals"


def _saturation(pil: Image.Image, offset: float) -> Image.Image:
    h, s, v = pil.convert("HSV").split()
    shift = round(offset * 255)
    return Image.merge("HSV", (h, s.point(lambda x: min(255, max(0, x + shift))), v)).convert("RGB")


REFERENCE = {
    "brightness_down": lambda im: ImageEnhance.Brightness(im).enhance(SETTINGS.brightness_down),
    "brightness_up": lambda im: ImageEnhance.Brightness(im).enhance(SETTINGS.brightness_up),
    "gray_scale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "horizontal_flip": ImageOps.mirror,
    "rotation_plus": lambda im: im.rotate(SETTINGS.angle, resample=Image.BILINEAR),
    "rotation_minus": lambda im: im.rotate(-SETTINGS.angle, resample=Image.BILINEAR),
    "saturation_down": lambda im: _saturation(im, SETTINGS.saturation_down),
    "saturation_up": lambda im: _saturation(im, SETTINGS.saturation_up),
    "vertical_flip": ImageOps.flip,
}


def pillow_loop(images: torch.Tensor) -> list[Image.Image]:
    out = []
    for image in images:
        pil = Image.fromarray(np.clip(255.0 * image.cpu().numpy() + 0.5, 0, 255).astype(np.uint8))
        out.extend(fn(pil) for fn in REFERENCE.values())
    return out


def ours(images: torch.Tensor) -> list[Image.Image]:
    rendered = variants.render(images, variants.KINDS, SETTINGS)
    return [picture for pictures in rendered.values() for picture in pictures]


def pillow_loop_writing(images: torch.Tensor, folder: Path) -> None:
    for i, pil in enumerate(pillow_loop(images)):
        pil.save(folder / f"{i}.png", compress_level=4)


def ours_writing(images: torch.Tensor, folder: Path) -> None:
    originals = [multiply.Original(image, f"image_{i}") for i, image in enumerate(images)]
    multiply.multiply(originals, folder, variants.KINDS, SETTINGS, include_original=False, device=images.device)


def sample_batch(batch: int, size: int) -> torch.Tensor:
    pictures = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*")) if p.suffix != ".txt"]
    frames = [np.asarray(pictures[i % len(pictures)].resize((size, size), Image.BICUBIC)) for i in range(batch)]
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="time writing the PNG files too")
    args = parser.parse_args()
    images = sample_batch(args.batch, args.size)
    on_device = images.to(args.device)
    scratch = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    if args.write:
        def reference(x: torch.Tensor) -> None:
            pillow_loop_writing(x, Path(tempfile.mkdtemp(dir=scratch)))

        def candidate(x: torch.Tensor) -> None:
            ours_writing(x, Path(tempfile.mkdtemp(dir=scratch)))
    else:
        reference, candidate = pillow_loop, ours
    try:
        candidate(on_device), reference(images)  # warm-up
        times: dict[str, list[float]] = {"pillow_loop": [], "atelier": []}
        for _ in range(args.repeats):
            for name, fn, x in (("pillow_loop", reference, images), ("atelier", candidate, on_device)):
                start = time.perf_counter()
                fn(x)
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "what": f"9 variants, {args.batch} images {args.size}x{args.size}"
                + (", PNG files written" if args.write else ""),
        "device": str(on_device.device), "torch_threads": torch.get_num_threads(),
        "pillow_loop_s": round(med["pillow_loop"], 4), "atelier_s": round(med["atelier"], 4),
        "speedup": round(med["pillow_loop"] / med["atelier"], 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
