"""Pictures to a vision transformer's input: the resize, crop and normalisation its processor config asks for.

Done on tensors, a batch at a time, instead of transformers' per-picture Pillow processors; the
numbers come from the model folder's ``preprocessor_config.json``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PixelSpec:
    size: int  # the shorter edge after resizing (``square``: both edges)
    crop: int  # centre crop to ``crop`` x ``crop`` (ignored for ``square``)
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    square: bool = False  # resize straight to size x size (BLIP), no crop

    def describe(self) -> str:
        return json.dumps([self.size, self.crop, self.mean, self.std, self.square])


def _edge(value: object, fallback: int) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("shortest_edge", "height", "width"):
            if isinstance(value.get(key), int):
                return int(value[key])
    return fallback


def read_pixel_spec(folder: Path, image_size: int, square: bool = False) -> PixelSpec:
    """The spec in ``folder/preprocessor_config.json``; CLIP's defaults at ``image_size`` without one."""
    path = folder / "preprocessor_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    size = _edge(config.get("size"), image_size)
    crop = _edge(config.get("crop_size"), size) if config.get("do_center_crop", True) else size
    mean = tuple(float(v) for v in config.get("image_mean", OPENAI_CLIP_MEAN))
    std = tuple(float(v) for v in config.get("image_std", OPENAI_CLIP_STD))
    return PixelSpec(size, crop, mean, std, square)  # type: ignore[arg-type]


def to_pixels(images: Sequence[torch.Tensor] | torch.Tensor, spec: PixelSpec) -> torch.Tensor:
    """``[H, W, 3]`` pictures in 0..1 (any sizes) to one normalised ``[B, 3, S, S]`` batch."""
    out = []
    for image in images:
        planar = image.permute(2, 0, 1).unsqueeze(0).float()
        height, width = planar.shape[-2:]
        if spec.square:
            target = (spec.size, spec.size)
        else:
            scale = spec.size / min(height, width)
            target = (max(spec.crop, round(height * scale)), max(spec.crop, round(width * scale)))
        if target != (height, width):
            planar = F.interpolate(planar, size=target, mode="bicubic", antialias=True, align_corners=False)
        if not spec.square:
            top, left = (planar.shape[-2] - spec.crop) // 2, (planar.shape[-1] - spec.crop) // 2
            planar = planar[..., top:top + spec.crop, left:left + spec.crop]
        out.append(planar.clamp(0.0, 1.0))
    batch = torch.cat(out)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (batch - mean) / std


def check_image_batch(images: torch.Tensor) -> None:
    """A clear error for anything but a non-empty ComfyUI IMAGE batch ``[B, H, W, 3]``."""
    if images.dim() != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError(f"expected an IMAGE batch [B, H, W, 3] with at least one picture, got shape "
                         f"{list(images.shape)}")


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[H, W, 3]`` scaled to fit ``size`` x ``size`` and padded with black, so pictures of any size batch."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new = (max(1, round(height * scale)), max(1, round(width * scale)))
    planar = F.interpolate(image.permute(2, 0, 1)[None].float(), size=new, mode="bilinear", antialias=True,
                           align_corners=False)[0]
    out = torch.zeros(3, size, size)
    top, left = (size - new[0]) // 2, (size - new[1]) // 2
    out[:, top:top + new[0], left:left + new[1]] = planar.clamp(0, 1)
    return out.permute(1, 2, 0)
