"""A vertical, webtoon-style strip: panel pictures of any sizes stacked top to bottom at one width,
with gutters between them, margins around, and an optional caption under each panel."""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..shared.colors import RGB

MIN_PANEL_WIDTH = 16

# CJK-capable fonts first: they cover Latin too, so mixed captions share one face.
FONT_NAMES = (
    "NotoSansCJK-Regular.ttc",
    "NotoSansCJKkr-Regular.otf",
    "NotoSansKR-Regular.ttf",
    "NotoSansKR-Regular.otf",
    "NanumGothic.ttf",
    "malgun.ttf",
    "AppleSDGothicNeo.ttc",
    "msyh.ttc",
    "DejaVuSans.ttf",
    "Arial.ttf",
    "arial.ttf",
)


@dataclass(frozen=True)
class StripLayout:
    width: int = 800  # panels are resized to width - 2 * margin, aspect ratio kept
    gutter: int = 24  # between one panel block (panel + its caption) and the next
    margin: int = 32  # around everything
    background: RGB = (1.0, 1.0, 1.0)
    caption_size: int = 24  # font size in pixels; 0: no captions even if given
    caption_color: RGB = (0.0, 0.0, 0.0)
    caption_gap: int = 8  # between a panel and its caption
    font: str = ""  # a .ttf/.otf path; empty: a system font that covers the captions, else Pillow's default

    @property
    def panel_width(self) -> int:
        return self.width - 2 * self.margin

    def check(self) -> None:
        for name in ("width", "gutter", "margin", "caption_size", "caption_gap"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)}; it cannot be negative")
        if self.panel_width < MIN_PANEL_WIDTH:
            raise ValueError(
                f"width {self.width} leaves {self.panel_width} pixels for panels after two margins of {self.margin}; "
                f"make the width at least {2 * self.margin + MIN_PANEL_WIDTH} or the margin smaller"
            )
        for name in ("background", "caption_color"):
            color = getattr(self, name)
            if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
                raise ValueError(f"{name} {color!r} is not three values in 0..1")
        if self.font and not Path(self.font).expanduser().is_file():
            raise ValueError(f"font {self.font!r} is not a file; give a .ttf/.otf path or leave it empty")


def _font_folders() -> list[Path]:
    windows = os.environ.get("WINDIR", "C:\\Windows")
    return [
        Path("/usr/share/fonts"),
        Path("/usr/local/share/fonts"),
        Path.home() / ".local/share/fonts",
        Path.home() / ".fonts",
        Path("/Library/Fonts"),
        Path("/System/Library/Fonts"),
        Path(windows) / "Fonts",
    ]


@functools.lru_cache(maxsize=1)
def _system_fonts() -> tuple[Path, ...]:
    """The installed fonts among FONT_NAMES, in that order of preference."""
    found: dict[str, Path] = {}
    for folder in _font_folders():
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.name in FONT_NAMES:
                    found.setdefault(path.name, path)
    return tuple(found[name] for name in FONT_NAMES if name in found)


@functools.lru_cache(maxsize=32)
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:
        raise ValueError(f"font {path!r} cannot be read: {exc}") from exc


def _glyph(font: ImageFont.FreeTypeFont, ch: str) -> tuple[tuple[int, int, int, int], bytes]:
    box = font.getbbox(ch)
    image = Image.new("L", (max(1, box[2] - box[0]), max(1, box[3] - box[1])))
    ImageDraw.Draw(image).text((-box[0], -box[1]), ch, font=font, fill=255)
    return box, image.tobytes()


def _covers(path: Path, text: str) -> bool:
    """Whether every visible character of ``text`` has a glyph in the font, i.e. does not draw as the
    font's "missing glyph" box (Pillow has no public cmap lookup; U+FFFF is never in a font)."""
    font = _truetype(str(path), 16)
    missing = _glyph(font, "\uffff")
    return all(_glyph(font, ch) != missing for ch in set(text) if ch.isprintable() and not ch.isspace())


@functools.lru_cache(maxsize=32)
def find_font(text: str) -> Path | None:
    """The first installed font of FONT_NAMES that draws every character of ``text``; ``None`` if none does."""
    return next((path for path in _system_fonts() if _covers(path, text)), None)


def font_for(text: str, size: int, path: str = "") -> ImageFont.FreeTypeFont:
    """The font at ``path``, else a system font covering ``text`` (Korean included), else Pillow's built-in one."""
    path = path or str(find_font(text) or "")
    if path:
        return _truetype(str(Path(path).expanduser()), size)
    # Pillow >= 10.1 built with FreeType (every wheel) gives a scalable FreeTypeFont here
    return ImageFont.load_default(size)  # type: ignore[return-value]


def load_font(layout: StripLayout, text: str) -> ImageFont.FreeTypeFont:
    """The caption font: ``layout.font``, else a system font covering ``text``, else Pillow's built-in one."""
    return font_for(text, layout.caption_size, layout.font)


def caption_lines(text: str, font: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; explicit line breaks are kept, and a word wider than the
    width (or Korean/Chinese/Japanese text without spaces) is broken between characters."""
    lines: list[str] = []
    for paragraph in text.splitlines():
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:
                if line and font.getlength(line + ch) > max_width:
                    lines.append(line)
                    line = ""
                line += ch
        if line:
            lines.append(line)
    return lines


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def _captions_or_none(captions: Sequence[str | None] | None, count: int, layout: StripLayout) -> list[str]:
    """One stripped caption per panel ("" for none); all empty when captions are off."""
    if captions is None:
        return [""] * count
    if len(captions) != count:
        raise ValueError(f"{len(captions)} captions for {count} panels; give one per panel (empty for none)")
    if layout.caption_size == 0:
        return [""] * count
    return [(c or "").strip() for c in captions]


def panel_rects(
    sizes: list[tuple[int, int]], captions: Sequence[str | None] | None, layout: StripLayout
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]], int]:
    """Where everything goes, in pixels, before drawing: panel boxes ``(x, y, w, h)`` after resizing
    (``sizes`` are the panels' ``(width, height)``), caption boxes ``(x, y, w, h)`` with ``h`` = lines x line
    height (a zero-height box at the panel's bottom for no caption), and the strip's total height."""
    layout.check()
    if not sizes:
        raise ValueError("no panels: give at least one picture")
    texts = _captions_or_none(captions, len(sizes), layout)
    width = layout.panel_width
    font = load_font(layout, "".join(texts)) if any(texts) else None
    panels: list[tuple[int, int, int, int]] = []
    boxes: list[tuple[int, int, int, int]] = []
    y = layout.margin
    for (w, h), text in zip(sizes, texts):
        height = max(1, math.floor(h * width / w + 0.5))
        panels.append((layout.margin, y, width, height))
        y += height
        if font is not None and text:
            lines = len(caption_lines(text, font, width))
            boxes.append((layout.margin, y + layout.caption_gap, width, lines * _line_height(font)))
            y += layout.caption_gap + boxes[-1][3]
        else:
            boxes.append((layout.margin, y, width, 0))
        y += layout.gutter
    return panels, boxes, y - layout.gutter + layout.margin


def _as_picture(panel: torch.Tensor, index: int) -> torch.Tensor:
    picture = panel[0] if panel.ndim == 4 and panel.shape[0] == 1 else panel
    if picture.ndim != 3 or picture.shape[-1] != 3 or picture.shape[0] < 1 or picture.shape[1] < 1:
        raise ValueError(f"panel {index} has shape {tuple(panel.shape)}; expected one [H, W, 3] or [1, H, W, 3] image")
    return picture.detach().to("cpu", torch.float32)


def _caption_mask(lines: list[str], font: ImageFont.FreeTypeFont, size: tuple[int, int]) -> torch.Tensor:
    """Text coverage 0..1 of shape [h, w]; drawing into the box clips anything that would spill out of it."""
    mask = Image.new("L", size)
    draw = ImageDraw.Draw(mask)
    for i, line in enumerate(lines):
        draw.text((0, i * _line_height(font)), line, font=font, fill=255)
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)


def make_strip(
    panels: Sequence[torch.Tensor], captions: Sequence[str | None] | None = None, layout: StripLayout = StripLayout()
) -> torch.Tensor:
    """The strip as ``[H_total, width, 3]`` float32 0..1. ``panels`` are ``[H, W, 3]`` (or ``[1, H, W, 3]``)
    images of any sizes; ``captions``, one per panel (``None`` or "" for none), go left-aligned under each."""
    pictures = [_as_picture(p, i) for i, p in enumerate(panels)]
    rects, boxes, height = panel_rects([(p.shape[1], p.shape[0]) for p in pictures], captions, layout)
    strip = torch.tensor(layout.background, dtype=torch.float32).expand(height, layout.width, 3).clone()
    for picture, (x, y, w, h) in zip(pictures, rects):
        resized = F.interpolate(picture.permute(2, 0, 1)[None], size=(h, w), mode="bicubic", antialias=True)
        strip[y : y + h, x : x + w] = resized[0].permute(1, 2, 0).clamp(0.0, 1.0)  # bicubic overshoots at edges
    texts = _captions_or_none(captions, len(pictures), layout)
    if any(texts):
        font = load_font(layout, "".join(texts))
        color = torch.tensor(layout.caption_color, dtype=torch.float32)
        for text, (x, y, w, h) in zip(texts, boxes):
            if h:
                alpha = _caption_mask(caption_lines(text, font, w), font, (w, h))[..., None]
                strip[y : y + h, x : x + w] = strip[y : y + h, x : x + w] * (1.0 - alpha) + color * alpha
    return strip
