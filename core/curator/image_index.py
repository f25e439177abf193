"""CLIP embeddings of a folder of pictures, streamed in batches and cached per file content and model.

Memory stays flat however large the folder: only one batch of decoded pictures is held at a time,
and what is kept is one embedding row per picture. Pictures that fail to decode are skipped and
listed, never silently dropped. A second run over the same folder reads every embedding from the
cache and runs the network on nothing.
"""
from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..dataset.image_files import DEFAULT_MAX_MEGAPIXELS, ImageFolderError, Skipped, image_size, list_images, load_image
from ..metrics.feature_cache import FeatureCache
from ..shared.progress import Progress, SilentProgress
from ..shared.state_dicts import file_sha256
from .pixels import PixelSpec

CACHE_FORMAT = "atelier-clip-image-v2"  # v2: JPEGs decoded at a reduced scale
FLUSH_EVERY_S = 30.0  # embeddings are written as a shard at least this often while a folder is indexed


@dataclass
class FolderIndex:
    """The readable pictures of a folder, in order, with their unit CLIP embeddings ``[N, D]``."""

    files: list[Path]
    embeddings: torch.Tensor
    sizes: list[tuple[int, int]]  # (width, height)
    skipped: list[Skipped] = field(default_factory=list)
    encoded: int = 0  # distinct pictures the network ran on in this call (0 when all came from the cache)
    cached: int = 0  # distinct pictures read from the cache
    notes: list[str] = field(default_factory=list)  # what the embedding store found: damaged shards, migration

    def report(self) -> str:
        repeats = len(self.files) - self.encoded - self.cached
        lines = [f"{len(self.files)} picture(s): {self.encoded} encoded, {self.cached} from cache"
                 + (f", {repeats} with the same content as another" if repeats else "")]
        lines += [f"skipped {Path(s.path).name}: {s.reason}" for s in self.skipped]
        lines += self.notes
        return "\n".join(lines)


def decode_or_reason(path: Path, max_megapixels: float, min_side: int) -> torch.Tensor | str:
    """The picture as index_folder decodes it, or why it cannot be."""
    try:
        return load_image(path, max_megapixels=max_megapixels, min_side=min_side)
    except ImageFolderError as exc:
        return str(exc)


def embedding_store(cache_dir: str | os.PathLike[str], pixels: PixelSpec, fingerprint: str) -> FeatureCache:
    """The store of a CLIP's picture embeddings: keyed by its weights, precision and pixel pipeline."""
    return FeatureCache(cache_dir, CACHE_FORMAT + pixels.describe(), fingerprint)


def read_headers(files: list[Path], max_megapixels: float) -> tuple[list[tuple[Path, str, tuple[int, int]]],
                                                                     list[Skipped]]:
    """(path, content hash, size) of the files whose header reads, and the others skipped with the reason;
    cheap, so a bad file is found before any encoding."""
    readable, skipped = [], []
    for path in files:
        try:
            readable.append((path, file_sha256(path), image_size(path, max_megapixels)))
        except ImageFolderError as exc:
            skipped.append(Skipped(str(path), str(exc)))
        except OSError as exc:
            skipped.append(Skipped(str(path), f"cannot be read: {exc}"))
    return readable, skipped


def stored_embeddings(store: FeatureCache, readable: list[tuple[Path, str, tuple[int, int]]],
                      dim: int) -> dict[str, torch.Tensor]:
    """Content hash -> embedding for the readable pictures already in the store (with the network's width)."""
    found: dict[str, torch.Tensor] = {}
    for _, digest, _ in readable:
        if digest not in found and (value := store.get(digest)) is not None and value.shape[0] == dim:
            found[digest] = value
    return found


def folder_index(files: list[Path], readable: list[tuple[Path, str, tuple[int, int]]], skipped: list[Skipped],
                 found: dict[str, torch.Tensor], failed: dict[str, str], encoded: int,
                 notes: list[str] | None = None) -> FolderIndex:
    """The index of what was embedded or found; pictures that failed to decode join ``skipped``."""
    kept = [(path, digest, size) for path, digest, size in readable if digest in found]
    skipped = skipped + [Skipped(str(path), failed[digest]) for path, digest, _ in readable if digest in failed]
    if not kept:
        reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:5])
        raise ImageFolderError(f"no readable picture among {len(files)} file(s): {reasons}")
    embeddings = torch.stack([found[digest] for _, digest, _ in kept])
    return FolderIndex([p for p, _, _ in kept], embeddings, [s for _, _, s in kept], skipped,
                       encoded=encoded, cached=len(found) - encoded, notes=notes or [])


def index_folder(clip: Any, source: str | os.PathLike[str] | list[Path], cache_dir: str | os.PathLike[str] | None,
                 batch_size: int = 32, recursive: bool = False, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                 progress: Progress | None = None) -> FolderIndex:
    """Embed every picture of a folder (or a list of files); unreadable ones are skipped with the reason.

    ``progress`` counts pictures, and a cancel is noticed before every batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    files = list_images(source, recursive) if isinstance(source, (str, os.PathLike)) else list(source)
    progress = progress or SilentProgress(len(files))
    readable, skipped = read_headers(files, max_megapixels)
    found: dict[str, torch.Tensor] = {}
    failed: dict[str, str] = {}
    store = embedding_store(cache_dir, clip.pixels, clip.fingerprint) if cache_dir else None
    # leaving the block (a cancel too) writes what was embedded; a crash loses at most FLUSH_EVERY_S of work
    workers = min(4, os.cpu_count() or 1)
    with store if store is not None else contextlib.nullcontext(), ThreadPoolExecutor(max_workers=workers) as pool:
        if store is not None:
            found = stored_embeddings(store, readable, clip.dim)
        todo = list({digest: path for path, digest, _ in readable if digest not in found}.items())
        progress.advance(len(files) - len(todo))
        flushed = time.monotonic()
        for start in range(0, len(todo), batch_size):
            progress.check_cancel()
            group = todo[start:start + batch_size]
            decoded = list(pool.map(lambda item: decode_or_reason(item[1], max_megapixels, clip.pixels.size), group))
            good = [(digest, image) for (digest, _), image in zip(group, decoded) if isinstance(image, torch.Tensor)]
            failed.update({digest: image for (digest, _), image in zip(group, decoded) if isinstance(image, str)})
            if good:
                values = clip.embed_images([image for _, image in good])
                found.update({digest: value.clone() for (digest, _), value in zip(good, values)})
                if store is not None:
                    store.put_many([digest for digest, _ in good], values)
                    if time.monotonic() - flushed >= FLUSH_EVERY_S:
                        store.flush()
                        flushed = time.monotonic()
            progress.advance(len(group))
    return folder_index(files, readable, skipped, found, failed, encoded=len(todo) - len(failed),
                        notes=store.notes if store is not None else [])


def embed_batch(clip: Any, images: torch.Tensor, batch_size: int = 32,
                progress: Progress | None = None) -> torch.Tensor:
    """Unit embeddings ``[B, D]`` of an IMAGE batch, ``batch_size`` pictures per pass; cancel noticed per pass."""
    progress = progress or SilentProgress(images.shape[0])
    rows = []
    for start in range(0, images.shape[0], batch_size):
        progress.check_cancel()
        rows.append(clip.embed_images(images[start:start + batch_size]))
        progress.advance(min(batch_size, images.shape[0] - start))
    return torch.cat(rows)
