"""Panels that follow the story: each story line retrieves the closest picture of a folder in a CLIP's shared
image-text space, and that picture, cropped to the panel size, guides the panel (an img2img start).

The folder is embedded through the curator's cached index (``core/curator/image_index``), so a folder searched
once answers every later story at once; the lines are embedded by the same model's text tower, whatever language
it reads (a multilingual dual encoder takes Korean lines as they are).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..curator.image_index import FolderIndex, index_folder
from ..curator.retrieval import top_k
from ..dataset.image_files import list_images, load_image
from ..dataset.preprocess import center_crop, resize
from ..shared.progress import Progress


@dataclass(frozen=True)
class PanelGuide:
    line: str
    file: Path
    score: float  # cosine similarity of the line's and the picture's embeddings


@dataclass
class PanelGuides:
    pictures: torch.Tensor  # [N, height, width, 3] in 0..1, one per line, in story order
    guides: list[PanelGuide]
    index: FolderIndex

    def report(self) -> str:
        """One line per panel (number, cosine, file name, story line), then what the indexing did."""
        rows = [f"{n}\t{g.score:.4f}\t{g.file.name}\t{g.line}" for n, g in enumerate(self.guides, start=1)]
        return "\n".join(rows + [self.index.report()])

    def records(self) -> list[dict[str, Any]]:
        return [{"panel": n, "line": g.line, "file": str(g.file), "score": g.score}
                for n, g in enumerate(self.guides, start=1)]


def story_lines(texts: Sequence[str]) -> list[str]:
    """The sentences of a story given as a list (Continue Story's ``lines``) or as texts of one sentence per line;
    blank lines are dropped."""
    return [line.strip() for text in texts for line in text.splitlines() if line.strip()]


def choose_pictures(queries: torch.Tensor, images: torch.Tensor, distinct: bool) -> list[tuple[int, float]]:
    """``(row, cosine)`` of the picture nearest each unit query ``[Q, D]`` among unit image embeddings ``[N, D]``.

    ``distinct``: lines take pictures in story order, each the nearest one no earlier line has taken (a greedy
    choice: the first panels get their best match, later ones the best left)."""
    if distinct and queries.shape[0] > images.shape[0]:
        raise ValueError(f"{queries.shape[0]} story lines but only {images.shape[0]} readable picture(s): with "
                         "distinct on every line needs a picture of its own; add pictures or turn distinct off")
    taken: set[int] = set()
    chosen = []
    for query in queries:
        ranked = top_k(query, images, len(taken) + 1 if distinct else 1)  # enough to pass every taken one
        row, score = next((r, s) for r, s in ranked if r not in taken)
        chosen.append((row, score))
        if distinct:
            taken.add(row)
    return chosen


def fill_crop(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``[H, W, 3]`` scaled to cover ``width`` x ``height`` (aspect kept) and centre-cropped to it."""
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    scaled = resize(image[None], max(width, round(w * scale)), max(height, round(h * scale)))
    return center_crop(scaled, width, height)[0]


def check_request(lines: Sequence[str], size: tuple[int, int], distinct: bool, pictures: int) -> None:
    """Clear errors before any picture is embedded."""
    if not lines:
        raise ValueError("no story lines: give one sentence per line (such as Continue Story's lines)")
    if min(size) < 1:
        raise ValueError(f"panel size must be at least 1 x 1 pixels, got {size[0]} x {size[1]}")
    if distinct and len(lines) > pictures:
        raise ValueError(f"{len(lines)} story lines but only {pictures} picture file(s): with distinct on every line "
                         "needs a picture of its own; add pictures or turn distinct off")


def panel_guides(clip: Any, lines: Sequence[str], source: str | os.PathLike[str] | list[Path],
                 cache_dir: str | os.PathLike[str] | None, size: tuple[int, int], distinct: bool = False,
                 batch_size: int = 32, recursive: bool = False, progress: Progress | None = None) -> PanelGuides:
    """Each line's nearest picture of ``source`` (a folder or its listed files), cropped to ``size``
    (width, height) so the guides batch as one IMAGE. ``lines`` are sentences, or texts of one sentence per
    line (blank ones dropped). ``clip`` is any whole CLIP or dual encoder with
    ``embed_texts``/``embed_images``/``fingerprint``/``pixels``/``dim``; ``progress`` counts the pictures
    embedded and notices a cancel before each batch."""
    lines = story_lines(lines)
    files = list_images(source, recursive) if isinstance(source, (str, os.PathLike)) else list(source)
    check_request(lines, size, distinct, len(files))
    index = index_folder(clip, files, cache_dir, batch_size, progress=progress)
    chosen = choose_pictures(clip.embed_texts(lines), index.embeddings, distinct)
    width, height = size
    pictures = torch.stack([fill_crop(load_image(index.files[row]), width, height) for row, _ in chosen])
    guides = [PanelGuide(line, index.files[row], score) for line, (row, score) in zip(lines, chosen)]
    return PanelGuides(pictures, guides, index)
