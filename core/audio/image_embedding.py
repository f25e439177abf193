"""The frozen image-embedding space that sound is aligned to and that the adapter draws from.

Any image encoder that gives one projected vector per picture will do: a transformers CLIP (the
pack's Load CLIP) or ComfyUI's CLIP_VISION (wrapped by the bridge). The space is that vector scaled
to unit length; ``mean_norm`` keeps the raw length so an embedding can be handed back as a raw
``image_embeds``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..shared.progress import Progress


@dataclass
class ImageEmbedder:
    name: str  # recorded in trained files, so a mismatch can be named
    dim: int
    raw: Callable[[torch.Tensor], torch.Tensor]  # [B, H, W, 3] in 0..1 -> raw image_embeds [B, D] float32 CPU


def clip_embedder(clip) -> ImageEmbedder:  # clip: core.clip_model.ClipModel
    return ImageEmbedder(clip.name, clip.dim, lambda images: clip.embed_images(images, normalize=False))


@dataclass
class ImageEmbeddings:
    unit: torch.Tensor  # [N, D], the space
    mean_norm: float  # mean length of the raw embeddings


def embed_pictures(embedder: ImageEmbedder, pictures: Sequence[torch.Tensor] | torch.Tensor, batch_size: int = 32,
                   progress: Progress | None = None) -> ImageEmbeddings:
    """Embed ``[H, W, 3]`` pictures (any sizes) in batches; progress advances once per picture."""
    raw = []
    for start in range(0, len(pictures), batch_size):
        if progress is not None:
            progress.check_cancel()
        chunk = pictures[start:start + batch_size]
        same_size = isinstance(chunk, torch.Tensor) or len({tuple(p.shape) for p in chunk}) == 1
        batch = [chunk if isinstance(chunk, torch.Tensor) else torch.stack(list(chunk))] if same_size else \
            [p[None] for p in chunk]
        raw += [embedder.raw(b).float() for b in batch]
        if progress is not None:
            progress.advance(len(chunk))
    if not raw:
        raise ValueError("no pictures to embed")
    raw_all = torch.cat(raw)
    if raw_all.shape[1] != embedder.dim:
        raise ValueError(f"{embedder.name!r} gave {raw_all.shape[1]}-d embeddings, not the {embedder.dim} it declares")
    return ImageEmbeddings(F.normalize(raw_all, dim=-1), float(raw_all.norm(dim=-1).mean()))
