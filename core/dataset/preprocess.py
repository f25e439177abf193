"""Preprocessing: resize, pad and centre-crop, in that order, per image or per batch.

- resize ``shorter_edge`` / ``longer_edge`` scales that edge to ``size`` keeping the aspect
  ratio (the other edge rounds to the nearest pixel); ``exact`` stretches to ``width x height``.
  Downscaling is antialiased, as Pillow's ``resize`` is.
- pad ``to_size`` centres the picture on a ``width x height`` canvas (edges already larger are
  left alone); ``square`` pads the shorter edge up to the longer one. The padding colour is a
  constant or the picture's most frequent colour ("resize and fill").
- crop ``center`` cuts a ``width x height`` window from the middle (edges already smaller are
  left alone); the window starts at ``(W - width) // 2``, ``(H - height) // 2``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..shared.colors import RGB, most_frequent_color

RESIZE_MODES = ("none", "shorter_edge", "longer_edge", "exact")
PAD_MODES = ("none", "to_size", "square")
CROP_MODES = ("none", "center")
FILTERS = ("bicubic", "bilinear", "area", "nearest-exact")


@dataclass(frozen=True)
class PreprocessSpec:
    resize: str = "none"
    size: int = 512
    width: int = 512
    height: int = 512
    pad: str = "none"
    pad_color: RGB | None = (0.0, 0.0, 0.0)  # None: the picture's most frequent colour
    crop: str = "none"
    filter: str = "bicubic"

    def __post_init__(self) -> None:
        for name, value, allowed in (("resize", self.resize, RESIZE_MODES), ("pad", self.pad, PAD_MODES),
                                     ("crop", self.crop, CROP_MODES), ("filter", self.filter, FILTERS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
        for name in ("size", "width", "height"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 pixel")

    @property
    def is_identity(self) -> bool:
        return self.resize == "none" and self.pad == "none" and self.crop == "none"

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        if self.resize == "exact":
            return self.width, self.height
        if self.resize == "none":
            return width, height
        edge = min(width, height) if self.resize == "shorter_edge" else max(width, height)
        scale = self.size / edge
        return max(1, round(width * scale)), max(1, round(height * scale))

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The ``(width, height)`` an image of this size comes out with, known before decoding it."""
        w, h = self.resized_size(width, height)
        if self.pad == "to_size":
            w, h = max(w, self.width), max(h, self.height)
        elif self.pad == "square":
            w = h = max(w, h)
        if self.crop == "center":
            w, h = min(w, self.width), min(h, self.height)
        return w, h


def resize(images: torch.Tensor, width: int, height: int, filter: str = "bicubic") -> torch.Tensor:
    """``[B, H, W, C]`` to ``[B, height, width, C]``; antialiased when shrinking."""
    if images.shape[1:3] == (height, width):
        return images
    nchw = images.permute(0, 3, 1, 2)
    if filter in ("bicubic", "bilinear"):
        out = F.interpolate(nchw, size=(height, width), mode=filter, align_corners=False, antialias=True)
    else:
        out = F.interpolate(nchw, size=(height, width), mode=filter)
    return out.clamp_(0.0, 1.0).permute(0, 2, 3, 1)


def pad(images: torch.Tensor, width: int, height: int, color: RGB | torch.Tensor) -> torch.Tensor:
    """Centre ``[B, H, W, C]`` on a ``width x height`` canvas of ``color`` (one, or ``[B, C]``)."""
    b, h, w, c = images.shape
    if (h, w) == (height, width):
        return images
    fill = torch.as_tensor(color, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, c)
    canvas = fill.expand(b, height, width, c).clone()
    top, left = (height - h) // 2, (width - w) // 2
    canvas[:, top : top + h, left : left + w] = images
    return canvas


def center_crop(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    _, h, w, _ = images.shape
    top, left = (h - height) // 2, (w - width) // 2
    return images[:, top : top + height, left : left + width]


def preprocess(images: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """Apply ``spec`` to a ``[B, H, W, 3]`` batch (every image has the same size, so the same plan)."""
    _, h, w, _ = images.shape
    rw, rh = spec.resized_size(w, h)
    out = resize(images, rw, rh, spec.filter)
    if spec.pad != "none":
        pw, ph = (max(rw, spec.width), max(rh, spec.height)) if spec.pad == "to_size" else (max(rw, rh),) * 2
        color = spec.pad_color
        if color is None:
            color = torch.tensor([most_frequent_color(image) for image in out])
        out = pad(out, pw, ph, color)
    if spec.crop == "center":
        _, h, w, _ = out.shape
        out = center_crop(out, min(w, spec.width), min(h, spec.height))
    return out
