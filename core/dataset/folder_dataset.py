"""A folder of originals read, checked and preprocessed into tensors, with what was skipped and why."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..shared.colors import RGB
from ..shared.progress import Progress, SilentProgress
from .image_files import (
    DEFAULT_MAX_MEGAPIXELS,
    ImageFolderError,
    LoadedImage,
    Skipped,
    image_size,
    list_images,
    load_image,
    read_caption,
)
from .preprocess import PreprocessSpec, preprocess


@dataclass
class FolderDataset:
    images: list[LoadedImage]
    skipped: list[Skipped] = field(default_factory=list)

    def batch(self) -> torch.Tensor:
        """All images as one ``[B, H, W, 3]`` IMAGE batch (they must share a size)."""
        return torch.stack([item.image for item in self.images])

    def report(self) -> str:
        return "\n".join([f"loaded {len(self.images)} image(s)", *skip_lines(self.skipped)])


def skip_lines(skipped: list[Skipped]) -> list[str]:
    """``skipped <name>: <reason>``, one line per file passed over: the wording of every report of skips."""
    return [f"skipped {Path(s.path).name}: {s.reason}" for s in skipped]


def batch_dataset(images: torch.Tensor, captions: list[str], stems: list[str]) -> tuple[FolderDataset, str]:
    """An IMAGE batch (``[B, H, W, 3]``) with one caption and name per picture as a dataset, and a digest of
    its pixels and captions that names it (a rerun on the same pictures finds the same run)."""
    import hashlib
    import json

    loaded = [LoadedImage(Path(stem), images[i].float().contiguous(), captions[i] or None)
              for i, stem in enumerate(stems)]
    digest = hashlib.sha256(images.float().cpu().numpy().tobytes())
    digest.update(json.dumps(captions).encode())
    return FolderDataset(loaded), digest.hexdigest()


def load_folder(
    folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    spec: PreprocessSpec = PreprocessSpec(),
    background: RGB = (1.0, 1.0, 1.0),
    recursive: bool = False,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    same_size: bool = False,
    progress: Progress | None = None,
) -> FolderDataset:
    """Read every image of ``folder`` (or of several folders, in order, as one set); unreadable files are
    skipped and listed.

    Headers are checked first, so a folder with nothing readable, or (with ``same_size``) one
    whose pictures would come out in different sizes, fails before any pixel is decoded.
    """
    folders = [folder] if isinstance(folder, (str, os.PathLike)) else list(folder)
    files = [path for one in folders for path in list_images(one, recursive)]
    named = ", ".join(str(one) for one in folders)  # how errors name them
    skipped: list[Skipped] = []
    readable, out_sizes = [], {}
    for path in files:
        try:
            out_sizes[path] = spec.output_size(*image_size(path, max_megapixels))
            readable.append(path)
        except ImageFolderError as exc:
            skipped.append(Skipped(str(path), str(exc)))
        except OSError as exc:
            skipped.append(Skipped(str(path), f"cannot be read: {exc}"))
    if not readable:
        _raise_nothing_readable(named, skipped)
    if same_size and len(set(out_sizes.values())) > 1:
        examples = {}
        for path, size in out_sizes.items():
            examples.setdefault(size, path.name)
        listed = ", ".join(f"{name} -> {w}x{h}" for (w, h), name in list(examples.items())[:4])
        raise ImageFolderError(
            f"the images of {named!r} come out in {len(examples)} different sizes ({listed}); one IMAGE batch "
            "needs one size: choose resize 'exact', pad 'to_size' or 'square' with crop 'center', or a fixed "
            "width/height"
        )
    progress = progress or SilentProgress(len(readable))
    loaded: list[LoadedImage] = []
    for path in readable:
        progress.check_cancel()
        try:
            image = load_image(path, background, max_megapixels)
            caption = read_caption(path)
        except ImageFolderError as exc:
            skipped.append(Skipped(str(path), str(exc)))
        else:
            if not spec.is_identity:
                image = preprocess(image[None], spec)[0].contiguous()
            loaded.append(LoadedImage(path, image, caption))
        progress.advance()
    if not loaded:
        _raise_nothing_readable(named, skipped)
    return FolderDataset(loaded, skipped)


def _raise_nothing_readable(folder: str | os.PathLike[str], skipped: list[Skipped]) -> None:
    reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    raise ImageFolderError(f"no readable image in {str(folder)!r}: {reasons}{more}")
