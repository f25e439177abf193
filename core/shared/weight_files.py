"""Weight files that cannot be used: one clear error naming the file and what to do, instead of a traceback.

A copy or download that did not finish leaves an empty or cut-short file; a pickle may hold objects
that ``torch.load(weights_only=True)`` rightly refuses. ``check_weight_file`` finds the first two from
the files' headers before anything loads; ``reading`` turns what a loader raises on the rest into the
same error.
"""
from __future__ import annotations

import contextlib
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6 is a zip archive
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# what torch and safetensors say about a file that ends early or is not what its header claims
_DAMAGE_WORDS = ("zip archive", "unexpected EOF", "corrupted", "truncated", "deserializing header")


class WeightFileError(ValueError):
    """A weight file that is empty, cut short, damaged, or a pickle holding more than tensors."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def damaged(path: Path, what: str, how: str, detail: str) -> WeightFileError:
    return WeightFileError(f"cannot read {what} {str(path)!r}: it is damaged or incomplete ({detail}), probably a copy "
                           f"or download that did not finish; {how}")


def check_weight_file(path: Path, what: str, how: str) -> None:
    """Raise WeightFileError when ``path`` is empty, a safetensors file shorter than its header says, or a zip-format
    torch file without its end. Reads headers only, so it is cheap before a load of gigabytes."""
    size = path.stat().st_size
    if size == 0:
        raise damaged(path, what, how, "it is empty, 0 bytes")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt"):  # checks that the data covers what the header lists
                pass
        except Exception as exc:  # safetensors raises its own error class for every header problem
            raise damaged(path, what, how, _first_line(exc)) from exc
        return
    with open(path, "rb") as handle:
        magic = handle.read(len(ZIP_MAGIC))
    if magic == ZIP_MAGIC and not zipfile.is_zipfile(path):
        raise damaged(path, what, how, f"a zip archive of {size} bytes without its directory at the end")


def check_weight_files(folder: Path, what: str, how: str) -> None:
    """``check_weight_file`` for every weight file directly in a model folder."""
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES:
            check_weight_file(path, what, how)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from (a reader may wrap torch's error in its own)."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__


@contextlib.contextmanager
def reading(path: Path, what: str, how: str, safe_copy: str) -> Iterator[None]:
    """Inside: a weight file (or a folder of them) is being read. A pickle ``weights_only`` refuses, or a file that
    ends early, becomes a WeightFileError naming ``path``; ``safe_copy`` says where a safetensors copy comes from.
    Any other error passes through as it is."""
    try:
        yield
    except Exception as exc:
        causes = list(_causes(exc))
        if any(isinstance(c, pickle.UnpicklingError) and "Weights only load failed" in str(c) for c in causes):
            raise WeightFileError(
                f"cannot read {what} {str(path)!r}: it is a pickle that holds more than plain tensors, and Atelier "
                f"does not unpickle such files (that could run any code in them). Use a safetensors copy instead "
                f"({safe_copy}), or convert the file to safetensors where you trust it") from exc
        if any(isinstance(c, (EOFError, zipfile.BadZipFile, pickle.UnpicklingError))
               or type(c).__name__ == "SafetensorError" or any(w in str(c) for w in _DAMAGE_WORDS) for c in causes):
            raise damaged(path, what, how, _first_line(causes[-1])) from exc
        raise
