"""Plots drawn with Pillow (no plotting library), for a node's IMAGE output and a PNG on disk: a loss curve, panels
of named curves, the valence-arousal circle and a bar chart."""
from __future__ import annotations

import math
from typing import Any

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


def bar_chart(labels: list[str], values: list[float], title: str, font: Any = None, width: int = 720,
              bar: int = 22, label_width: int = 300) -> Image.Image:
    """Horizontal bars, one per label in the order given, from a zero line (values may be negative), each with its
    value; ``font`` draws the labels and title (pass one with the labels' glyphs, Korean included)."""
    height = 40 + len(labels) * (bar + 6) + 12
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 8), title, fill="black", font=font)
    lo, hi = min([0.0, *values]), max([0.0, *values])
    span = hi - lo or 1.0
    left, right = label_width + 16, width - 72
    zero = left + (0.0 - lo) / span * (right - left)
    for i, (label, value) in enumerate(zip(labels, values)):
        top = 40 + i * (bar + 6)
        shown = label
        while len(shown) > 2 and draw.textlength(shown, font=font) > label_width:
            shown = shown[:-2] + "…"  # one character fewer, with an ellipsis
        draw.text((8, top + 3), shown, fill="black", font=font)
        end = left + (value - lo) / span * (right - left)
        draw.rectangle((min(zero, end), top, max(zero, end), top + bar), fill=(20, 70, 160))
        draw.text((max(zero, end) + 6, top + 3), f"{value:.3f}", fill="black", font=font)
    draw.line((zero, 36, zero, height - 8), fill=(120, 120, 120))
    return img


SERIES_COLOURS = ((20, 70, 160), (200, 80, 30), (40, 140, 60), (150, 40, 150), (120, 120, 120))


def line_charts(panels: list[tuple[str, dict[str, list[float]]]], x_label: str = "epoch", width: int = 640,
                panel_height: int = 240) -> Image.Image:
    """Panels stacked top to bottom, each ``(title, {series name: values})`` drawn as lines against 1..N with a
    legend; non-finite values are left out."""
    img = Image.new("RGB", (width, panel_height * len(panels)), "white")
    draw = ImageDraw.Draw(img)
    for index, (title, series) in enumerate(panels):
        left, right, top, bottom = 56, width - 16, index * panel_height + 28, (index + 1) * panel_height - 28
        draw.text((left, top - 20), title, fill="black")
        draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
        finite = [v for values in series.values() for v in values if math.isfinite(v)]
        length = max((len(values) for values in series.values()), default=0)
        if not finite:
            draw.text((left + 8, top + 8), "nothing measured yet", fill="black")
            continue
        lo, hi = min(finite), max(finite)
        span = hi - lo or 1.0
        for frac in (0.0, 0.5, 1.0):
            draw.text((4, bottom - frac * (bottom - top) - 6), f"{lo + frac * span:.3g}", fill="black")
        draw.text((left, bottom + 6), f"1  ({x_label})", fill="black")
        draw.text((right - 24, bottom + 6), str(length), fill="black")
        for number, (name, values) in enumerate(series.items()):
            colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
            n = max(1, length - 1)
            points = [(left + i / n * (right - left), bottom - (v - lo) / span * (bottom - top))
                      for i, v in enumerate(values) if math.isfinite(v)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
            draw.text((left + 8 + 150 * number, top + 4), f"- {name}", fill=colour)
    return img


def to_image_tensor(img: Image.Image) -> torch.Tensor:
    """A Pillow image as a ComfyUI IMAGE ``[1, H, W, 3]``."""
    import numpy as np

    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


def valence_arousal_circle(steps: list[tuple[str, float]], points: list[tuple[str, float, float, tuple[int, int, int]]],
                           size: int = 480) -> Image.Image:
    """The unit circle of the valence (x) - arousal (y) plane with each step's name at its angle (degrees
    counter-clockwise from valence 1), and each point (name, valence, arousal, colour) marked and named in a legend."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    centre, radius = size / 2, size * 0.33

    def xy(valence: float, arousal: float) -> tuple[float, float]:
        return centre + valence * radius, centre - arousal * radius

    draw.ellipse((centre - radius, centre - radius, centre + radius, centre + radius), outline=(120, 120, 120))
    draw.line((*xy(-1.1, 0), *xy(1.1, 0)), fill=(200, 200, 200))
    draw.line((*xy(0, -1.1), *xy(0, 1.1)), fill=(200, 200, 200))
    draw.text((10, size - 10), "x: valence (unpleasant to pleasant), y: arousal (low to high)", fill=(90, 90, 90),
              anchor="lb")
    for name, angle in steps:
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        draw.line((*xy(0.95 * cos, 0.95 * sin), *xy(1.05 * cos, 1.05 * sin)), fill=(120, 120, 120))
        anchor = ("l" if cos > 0.3 else "r" if cos < -0.3 else "m") + ("b" if sin > 0.3 else "t" if sin < -0.3 else "m")
        draw.text(xy(1.12 * cos, 1.12 * sin), name, fill="black", anchor=anchor)
    for i, (name, valence, arousal, colour) in enumerate(points):
        x, y = xy(valence, arousal)
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=colour, outline="black")
        draw.ellipse((10, 10 + 16 * i, 20, 20 + 16 * i), fill=colour, outline="black")
        draw.text((26, 9 + 16 * i), f"{name} ({valence:.2f}, {arousal:.2f})", fill="black")
    return img
