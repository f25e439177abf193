"""Writing an image dataset as a new version folder: PNGs, caption sidecars and a manifest.

A run builds everything in a hidden ``.partial.<pid>.<random>`` folder and renames it to the next
free ``vNNN`` only when every file is written, so a version folder is always complete: a cancel
or an error removes the partial folder and leaves earlier versions untouched, and the next run
removes what a killed one left. Names come from ``output_paths.unique_stems``; a name given twice
is refused, so no file ever replaces another of the same run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..shared.output_paths import new_version_folder, remove_stale, temp_path
from ..shared.progress import Progress
from .image_files import check_writable, encode_png

MANIFEST = "manifest.jsonl"


@dataclass
class WrittenDataset:
    folder: Path
    files: list[Path] = field(default_factory=list)
    records: list[dict[str, object]] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST


class DatasetWriter:
    """Collects files into a partial folder; ``commit`` publishes it as ``parent/vNNN``.

    PNG encoding (zlib, which releases the GIL) dominates a dataset job, so files are made and
    encoded on a small thread pool while the caller renders the next batch; the manifest keeps
    the order in which images were added.
    """

    def __init__(self, parent: Path, workers: int | None = None, progress: Progress | None = None) -> None:
        check_writable(parent)
        self.parent = parent
        remove_stale(parent, ".partial*")  # folders of killed runs (``.partial-*`` from older versions too)
        self._work = temp_path(parent, "partial", suffix="")
        self._work.mkdir()  # an ordinary mkdir: the umask decides who may read the dataset
        self._names: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))
        self._pending: list[Future[dict[str, object]]] = []
        # given a progress, ``wait`` and ``commit`` advance it by one per file written (on the caller's thread)
        self._progress = progress
        self._reported = 0

    def add_image(self, image: Image.Image, name: str, caption: str | None, record: dict[str, object]) -> None:
        """Queue ``image`` to be written as ``<name>.png`` (with ``<name>.txt`` for a caption)."""
        self._claim(name)
        self._pending.append(self._pool.submit(self._write, image, name, caption, record))

    def add_copy(self, source: Path, name: str, caption: str | None, record: dict[str, object]) -> None:
        """Queue an existing picture to be copied byte for byte as ``<name><its suffix>``; ``name`` may hold
        one sub-folder (``landscape/view``)."""
        self._claim(name)
        self._pending.append(self._pool.submit(self._copy, source, name, caption, record))

    def _claim(self, name: str) -> None:
        key = name.casefold()  # Windows and macOS see ``A.png`` and ``a.png`` as one file
        if key in self._names:
            raise ValueError(f"two pictures of this run would both be written as {name!r}: give them distinct "
                             "names (output_paths.unique_stems)")
        self._names.add(key)

    def add_text(self, file: str, text: str) -> None:
        """A text file (a report) written into the version beside the pictures."""
        (self._work / file).write_text(text, encoding="utf-8")

    def _write(self, image: Image.Image, name: str, caption: str | None,
               record: dict[str, object]) -> dict[str, object]:
        data = encode_png(image)
        file = f"{name}.png"
        (self._work / file).write_bytes(data)
        entry = {"file": file, **record, "width": image.width, "height": image.height}
        return self._finish(entry, data, name, caption)

    def _copy(self, source: Path, name: str, caption: str | None, record: dict[str, object]) -> dict[str, object]:
        data = source.read_bytes()
        file = f"{name}{source.suffix.lower()}"
        (self._work / file).parent.mkdir(parents=True, exist_ok=True)
        (self._work / file).write_bytes(data)
        return self._finish({"file": file, **record}, data, name, caption)

    def _finish(self, entry: dict[str, object], data: bytes, name: str, caption: str | None) -> dict[str, object]:
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        if caption is not None:
            caption_file = f"{name}.txt"
            (self._work / caption_file).write_text(caption + "\n", encoding="utf-8")
            entry["caption_file"] = caption_file
        return entry

    def wait(self, keep: int = 0) -> None:
        """Block until at most ``keep`` files are still being written (bounds memory on long runs)."""
        pending = self._pending
        while self._reported < len(pending) and (self._reported < len(pending) - keep
                                                 or pending[self._reported].done()):
            pending[self._reported].result()
            self._reported += 1
            if self._progress is not None:
                self._progress.advance(1)
                self._progress.check_cancel()

    def commit(self) -> WrittenDataset:
        self.wait()
        records = [f.result() for f in self._pending]  # raises the first write error, if any
        self._pool.shutdown()
        lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
        (self._work / MANIFEST).write_text(lines, encoding="utf-8")
        folder = new_version_folder(self.parent)  # reserves the name with an empty folder
        try:
            os.replace(self._work, folder)  # POSIX: the finished folder replaces the empty one at once
        except OSError:  # Windows will not rename over a folder
            folder.rmdir()
            os.replace(self._work, folder)
        return WrittenDataset(folder, [folder / str(r["file"]) for r in records], records)

    def discard(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._work.exists():
            self.discard()


def iter_groups(sizes: list[tuple[int, int]], batch: int) -> Iterator[list[int]]:
    """Indices grouped by image size (first-seen order), in batches of at most ``batch``."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        by_size.setdefault(size, []).append(i)
    for members in by_size.values():
        for start in range(0, len(members), batch):
            yield members[start : start + batch]
