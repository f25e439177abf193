"""(caption, picture) pairs for fine-tuning an image-text encoder, grouped by picture.

From a folder's caption sidecars (every line of ``<stem>.txt``, ``<stem>.en.txt``, ``<stem>.ko.txt``...) or
from a CSV / JSON-lines pairs file (``retrieval.read_pairs``; several rows may name one picture). Every caption
of a picture is a positive for it. Pictures a pairs file names but the folder lacks, and pictures that do not
decode, are listed and left out; the rest are used. Pictures are decoded once, up front, into the encoder's
input size.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...core.curator.pixels import PixelSpec, to_pixels
from ...core.curator.retrieval import read_pairs
from ...core.dataset.image_files import (
    IMAGE_EXTENSIONS,
    ImageFolderError,
    Skipped,
    list_images,
    load_image,
    read_captions,
)
from ...core.shared.progress import Progress


@dataclass
class PairSet:
    root: Path
    pictures: list[Path]  # each picture once
    captions: list[list[str]]  # per picture, at least one
    missing: list[str] = field(default_factory=list)  # pictures a pairs file names that are not in the folder
    uncaptioned: int = 0  # pictures of the folder without any caption (left out)
    unreadable: list[Skipped] = field(default_factory=list)  # pictures that failed to decode (left out)

    @property
    def pairs(self) -> int:
        return sum(len(c) for c in self.captions)

    def digest(self) -> str:
        """Changes when a picture or caption is added, removed or rewritten: what a run folder is keyed by."""
        stamp = [(p.relative_to(self.root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns, c)
                 for p, c in zip(self.pictures, self.captions)]
        return hashlib.sha256(json.dumps(stamp, ensure_ascii=False).encode()).hexdigest()[:16]

    def notes(self) -> list[str]:
        lines = [f"{self.pairs} (caption, picture) pairs over {len(self.pictures)} pictures"]
        if self.missing:
            lines.append(f"{len(self.missing)} picture(s) named in the pairs file are not in {str(self.root)!r} and "
                         f"were left out: {', '.join(self.missing[:10])}{' ...' if len(self.missing) > 10 else ''}")
        if self.uncaptioned:
            lines.append(f"{self.uncaptioned} picture(s) without a caption sidecar were left out")
        lines += [f"left out {s.path}: {s.reason}" for s in self.unreadable]
        return lines


def pairs_from_folder(folder: Path, recursive: bool = False) -> PairSet:
    """Pictures with caption sidecars: each line of ``<stem>.txt`` and of ``<stem>.<language>.txt`` is a caption."""
    pictures, captions, uncaptioned = [], [], 0
    for path in list_images(folder, recursive):
        texts = list(dict.fromkeys(text for text, _ in read_captions(path)))
        if texts:
            pictures.append(path)
            captions.append(texts)
        else:
            uncaptioned += 1
    if not pictures:
        raise ImageFolderError(f"no picture in {str(folder)!r} has a caption: write <stem>.txt beside each picture "
                               "(one caption per line; or <stem>.en.txt and <stem>.ko.txt), or give a pairs file")
    return PairSet(Path(folder), pictures, captions, uncaptioned=uncaptioned)


def pairs_from_file(path: Path, folder: Path) -> PairSet:
    """Pairs from a CSV (``text``, ``image`` columns) or JSON lines, pictures named relative to ``folder``; the
    rows of one picture are gathered, pictures that are not there listed and left out."""
    if not Path(folder).is_dir():
        raise ImageFolderError(f"picture folder {str(folder)!r} does not exist")
    grouped: dict[str, list[str]] = {}
    for text, image in read_pairs(Path(path)):
        texts = grouped.setdefault(image, [])
        if text not in texts:
            texts.append(text)
    found = {name: Path(folder) / name for name in grouped}
    missing = [name for name, p in found.items() if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS]
    kept = [name for name in grouped if name not in missing]
    if not kept:
        raise ImageFolderError(f"none of the {len(grouped)} pictures named in {str(path)!r} is in {str(folder)!r} "
                               f"(first: {', '.join(missing[:3])}); name pictures relative to that folder")
    return PairSet(Path(folder), [found[name] for name in kept], [grouped[name] for name in kept], missing)


def decode(pairs: PairSet, spec: PixelSpec, progress: Progress | None = None) -> torch.Tensor:
    """Every picture at the encoder's input (normalised ``[N, 3, S, S]``, fp16 to halve the memory); pictures that
    fail to decode are dropped from ``pairs`` and listed in ``pairs.unreadable``."""
    kept_pictures, kept_captions, pixels = [], [], []
    for path, captions in zip(pairs.pictures, pairs.captions):
        if progress is not None:
            progress.check_cancel()
        try:
            image = load_image(path)
        except (ImageFolderError, OSError) as exc:
            pairs.unreadable.append(Skipped(str(path), str(exc)))
        else:
            pixels.append(to_pixels([image], spec).half())
            kept_pictures.append(path)
            kept_captions.append(captions)
        if progress is not None:
            progress.advance()
    pairs.pictures, pairs.captions = kept_pictures, kept_captions
    if not pixels:
        raise ImageFolderError(f"no picture in {str(pairs.root)!r} could be read: "
                               + "; ".join(f"{s.path}: {s.reason}" for s in pairs.unreadable[:3]))
    return torch.cat(pixels)
