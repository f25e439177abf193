"""Nine variants of 16 images at 512x512: the pack's batched path against a per-image Pillow loop.

Both start from the same ComfyUI IMAGE batch (float ``[B, H, W, 3]``) and end with a Pillow RGB
image of every variant, ready to save as PNG (saving costs both the same and is left out). The
reference is the usual way a script or node is written: per image, to PIL, then one
self-contained Pillow function per variant. Timings interleave the two, and the ratio of medians is
reported. Run: ``python benchmarks/bench_variants.py [--device cuda] [--repeats 7]``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atelier_loader import load_pack  # noqa: E402

load_pack()
from atelier.core import variants  # noqa: E402

SETTINGS = variants.VariantSettings()


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
    planes = variants.render(images, variants.KINDS, SETTINGS)
    return [variants.to_pil(p) for batch in planes.values() for p in batch]


def sample_batch(batch: int, size: int) -> torch.Tensor:
    from skimage import data

    pictures = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    frames = [np.asarray(Image.fromarray(pictures[i % len(pictures)]).resize((size, size), Image.BICUBIC))
              for i in range(batch)]
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    images = sample_batch(args.batch, args.size)
    on_device = images.to(args.device)
    ours(on_device), pillow_loop(images)  # warm-up
    times: dict[str, list[float]] = {"pillow_loop": [], "atelier": []}
    for _ in range(args.repeats):
        for name, fn, x in (("pillow_loop", pillow_loop, images), ("atelier", ours, on_device)):
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "what": f"9 variants, {args.batch} images {args.size}x{args.size}",
        "device": str(on_device.device), "torch_threads": torch.get_num_threads(),
        "pillow_loop_s": round(med["pillow_loop"], 4), "atelier_s": round(med["atelier"], 4),
        "speedup": round(med["pillow_loop"] / med["atelier"], 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
