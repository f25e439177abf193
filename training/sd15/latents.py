"""Training data for the LoRA trainer: aspect-ratio buckets, cached VAE latents, caption conditioning.

Each picture goes to the bucket (a width x height of multiples of ``step`` with about the
training resolution's area) whose aspect ratio is nearest its own, is scaled to cover it and
centre-cropped. Pictures smaller than their bucket are upscaled and listed in ``warnings``
(or refused with ``upscale=False``). Latents are encoded once, before training, so the VAE can
leave the GPU; in a process group each rank encodes its share and they are gathered on every rank.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ...core.dataset.augment import derive_seed
from ...core.dataset.preprocess import center_crop, resize
from ...core.shared.progress import Progress, SilentProgress
from .. import distributed


@dataclass
class Bucket:
    latents: torch.Tensor  # [n, 4, h, w], times the VAE scaling factor
    conditioning: torch.Tensor  # [n, tokens, dim]
    index: torch.Tensor  # [n], each latent's position in the pictures given to build()


@dataclass
class TrainData:
    buckets: list[Bucket]
    unconditional: torch.Tensor  # [tokens, dim], the empty prompt: caption dropout and uncaptioned sets
    caption_dropout: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.buckets or sum(b.latents.shape[0] for b in self.buckets) == 0:
            raise ValueError("no training images")
        for b in self.buckets:
            if b.conditioning.shape[0] != b.latents.shape[0]:
                raise ValueError("one conditioning per latent is needed")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError("caption_dropout must lie in 0..1")

    @property
    def sizes(self) -> torch.Tensor:
        return torch.tensor([b.latents.shape[0] for b in self.buckets], dtype=torch.float64)


def bucket_sizes(resolution: int, step: int = 64, max_aspect: float = 2.0) -> list[tuple[int, int]]:
    """``(width, height)`` buckets of about ``resolution**2`` pixels, aspect ratios up to ``max_aspect``."""
    sizes = set()
    for width in range(step, 4 * resolution + 1, step):
        height = (resolution * resolution // width) // step * step
        if height >= step and max(width / height, height / width) <= max_aspect:
            sizes.add((width, height))
    return sorted(sizes)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


def fit_to_bucket(image: torch.Tensor, bucket: tuple[int, int]) -> torch.Tensor:
    """Scale ``[H, W, 3]`` to cover the bucket, then centre-crop to it."""
    h, w = image.shape[:2]
    scale = max(bucket[0] / w, bucket[1] / h)
    scaled = resize(image[None], max(bucket[0], round(w * scale)), max(bucket[1], round(h * scale)))
    return center_crop(scaled, *bucket)[0]


def caption_for(caption: str | None, trigger: str, use_captions: bool) -> str:
    """The prompt an image trains with: trigger word first, then its caption (if captions are used). A caption
    that already begins with the trigger (virtual data captioned 'sks_style, ...') does not get it twice."""
    trigger, caption = trigger.strip(), (caption or "").strip() if use_captions else ""
    if trigger and caption.split(",")[0].strip() == trigger:
        return caption
    return ", ".join(part for part in (trigger, caption) if part)


@torch.no_grad()
def build(images: list[torch.Tensor], prompts: list[str], vae: Any, encode_prompts, resolution: int,
          step: int = 64, upscale: bool = True, caption_dropout: float = 0.0, seed: int = 0,
          progress: Progress | None = None) -> TrainData:
    """Bucket, encode and cache everything the training loop needs.

    ``encode_prompts(list[str]) -> [N, tokens, dim]`` turns prompts into conditioning.
    """
    if not images:
        raise ValueError("no training images")
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
    sizes = bucket_sizes(resolution, step)
    plan: dict[tuple[int, int], list[int]] = {}
    warnings = []
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        bucket = nearest_bucket(w, h, sizes)
        if w < bucket[0] or h < bucket[1]:
            if not upscale:
                raise ValueError(f"image {i + 1} is {w}x{h}, smaller than its {bucket[0]}x{bucket[1]} bucket at "
                                 f"resolution {resolution}; use larger images, a lower resolution or allow upscaling")
            warnings.append(f"image {i + 1} ({w}x{h}) upscaled to its {bucket[0]}x{bucket[1]} bucket")
        plan.setdefault(bucket, []).append(i)
    progress = progress or SilentProgress(len(images))
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    scaling = float(getattr(vae.config, "scaling_factor", 0.18215))
    bucket_of = {i: bucket for bucket, members in plan.items() for i in members}
    mine = {}
    for i in distributed.share(len(images)):  # in a process group each rank encodes its share, then all share all
        progress.check_cancel()
        pixels = fit_to_bucket(images[i], bucket_of[i]).permute(2, 0, 1)[None] * 2.0 - 1.0
        dist = vae.encode(pixels.to(device, dtype)).latent_dist
        # each picture's own seeded draw, so the latents do not depend on which rank encodes which picture
        noise = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(derive_seed(seed, "latent", i)))
        mine[i] = (dist.mean + dist.std * noise.to(device, dist.mean.dtype)).float().cpu() * scaling
        progress.advance()
    every = distributed.gather_dict(mine)
    progress.advance(len(images) - len(mine))
    buckets = [Bucket(torch.cat([every[i] for i in members]), encode_prompts([prompts[i] for i in members]),
                      torch.tensor(members)) for members in plan.values()]
    return TrainData(buckets, encode_prompts([""])[0], caption_dropout, warnings)
