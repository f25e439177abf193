"""A loss curve drawn with Pillow (no plotting library), for a node's IMAGE output and a PNG on disk."""
from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def loss_curve(losses: list[float], width: int = 640, height: int = 360, title: str = "training loss") -> Image.Image:
    """Raw loss (light) and its smoothed curve (dark) against the step, on a white canvas with axes."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 56, width - 16, 28, height - 32
    draw.text((left, 8), f"{title}  ({len(losses)} steps)", fill="black")
    draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
    finite = [v for v in losses if math.isfinite(v)]
    if not finite:
        draw.text((left + 8, top + 8), "no finite loss yet", fill="black")
        return img
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    for frac in (0.0, 0.5, 1.0):
        y = bottom - frac * (bottom - top)
        draw.text((4, y - 6), f"{lo + frac * span:.3g}", fill="black")
    draw.text((left, bottom + 8), "1", fill="black")
    draw.text((right - 24, bottom + 8), str(len(losses)), fill="black")

    def points(values: list[float]) -> list[tuple[float, float]]:
        n = max(1, len(values) - 1)
        return [(left + i / n * (right - left), bottom - (v - lo) / span * (bottom - top))
                for i, v in enumerate(values) if math.isfinite(v)]

    if len(finite) > 1:
        draw.line(points(losses), fill=(170, 200, 235), width=1)
        draw.line(points(smooth(losses)), fill=(20, 70, 160), width=2)
    return img


def to_image_tensor(img: Image.Image) -> torch.Tensor:
    """A Pillow image as a ComfyUI IMAGE ``[1, H, W, 3]``."""
    import numpy as np

    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]
