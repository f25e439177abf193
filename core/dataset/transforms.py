"""Pixel-wise augmentations of ``[B, H, W, 3]`` float 0..1 batches, on whatever device they live.

Each takes one value for the whole batch or a ``[B]`` tensor of values, one per image, and works
on channels-last ``[B, H, W, 3]`` (ComfyUI's IMAGE) or, with ``dim=1``, planar ``[B, 3, H, W]``:
planar is several times faster on a CPU, where broadcasting over a last axis of 3 vectorises badly.
``peak`` is the value of full intensity: 1 for IMAGE tensors, 255 for floats on the 8-bit scale.
Semantics, each matching a Pillow reference (see tests/test_transforms.py for the tolerances):

- ``grayscale``: ITU-R 601-2 luma ``L = 0.299 R + 0.587 G + 0.114 B`` copied to all three
  channels, what ``Image.convert("L")`` computes.
- ``adjust_brightness``: ``clamp(x * factor)``, what ``ImageEnhance.Brightness(factor)`` does.
- ``adjust_saturation``: an offset on the HSV S channel, ``S' = clamp(S + offset, 0, 1)`` with H
  and V unchanged. Pure greys (S = 0) have no hue and stay grey; a round trip through
  ``Image.convert("HSV")`` would tint them red (hue 0) and quantise the hue to 256 steps.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

LUMA = (0.299, 0.587, 0.114)


def _per_image(value: float | torch.Tensor, images: torch.Tensor) -> torch.Tensor | float:
    if isinstance(value, torch.Tensor):
        return value.to(device=images.device, dtype=images.dtype).reshape(-1, 1, 1, 1)
    return value


def hflip(images: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return images.flip(3 if dim == 1 else 2)


def vflip(images: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return images.flip(2 if dim == 1 else 1)


def luma(images: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """ITU-R 601-2 luma with the channel axis kept at size 1."""
    r, g, b = images.unbind(dim)
    return (r * LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2]).unsqueeze(dim)


def grayscale(images: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return luma(images, dim).expand_as(images).contiguous()


def adjust_brightness(images: torch.Tensor, factor: float | torch.Tensor, dim: int = -1,
                      peak: float = 1.0) -> torch.Tensor:
    return (images * _per_image(factor, images)).clamp_(0.0, peak)


def adjust_saturation(images: torch.Tensor, offset: float | torch.Tensor, dim: int = -1,
                      peak: float = 1.0) -> torch.Tensor:
    value, below, (factor,) = saturation_factors(images, [offset], dim)
    return torch.addcmul(value, below, factor, value=-1.0).clamp_(0.0, peak)


def saturation_factors(images: torch.Tensor, offsets: Sequence[float | torch.Tensor], dim: int = -1
                       ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``(V, V - c, factors)``: each offset's result is ``V - (V - c) * factor``, always within ``[0, V]``.

    With H and V fixed every channel is c = V - V*S*k(H), so a new S' rescales (V - c) by S'/S:
    the same result as RGB -> HSV -> RGB, at a fraction of the arithmetic. With S = d/V
    (d = max - min) the factor is clamp(d + offset*V, 0, V) / d; greys (d = 0) have V - c = 0.
    Several offsets share the per-pixel work.
    """
    value = images.amax(dim, keepdim=True)
    spread = value - images.amin(dim, keepdim=True)
    below = value - images
    divisor = spread.clamp_min(1e-12)
    factors = [torch.minimum((spread + value * _per_image(o, images)).clamp_(min=0.0), value).div_(divisor)
               for o in offsets]
    return value, below, factors
