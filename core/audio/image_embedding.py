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


PROBE_SIZE = 224  # CLIP's own input size: no encoder resizes the probe, so two wrappers of one model agree


def probe_picture() -> torch.Tensor:
    """A fixed ``[1, 224, 224, 3]`` picture (smooth colour waves, no randomness) whose embedding identifies
    an image encoder: the same model gives the same direction whatever wraps it, another model another."""
    axis = torch.linspace(0.0, 1.0, PROBE_SIZE)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    channels = [0.5 + 0.5 * torch.sin(6.0 * x + 2.0 * y), 0.5 + 0.5 * torch.cos(9.0 * x * y + 1.0),
                (x + y) / 2]
    return torch.stack(channels, dim=-1)[None]


def probe_embedding(embedder: ImageEmbedder) -> torch.Tensor:
    """The unit embedding ``[D]`` of the probe picture: the encoder's fingerprint."""
    return F.normalize(embedder.raw(probe_picture()).float().reshape(-1), dim=0)


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
