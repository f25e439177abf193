"""A user's catalogue of (work, curator text) pairs, for the SeqGAN conditioned on a work (claim 22).

The minimal format: JSON lines, one work a line, ``{"features": [numbers...], "text": "the curator's text"}``,
every line with as many features (the work's fused analysis vector). A folder is read as every ``curation.jsonl``
in it and its sub-folders (Describe Folder's records), each record giving ``features`` and its ``text`` (or, for
those records, its ``paragraph``). A damaged line is an error naming the file and the line.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

CATALOGUE_NAME = "curation.jsonl"


@dataclass(frozen=True)
class Catalogue:
    texts: list[str]
    features: torch.Tensor  # [N, cond_dim] float32


def _record(entry: object, where: str, width: int | None) -> tuple[str, list[float]]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a JSON object with 'features' and 'text' is needed")
    text = entry.get("text", entry.get("paragraph"))
    features = entry.get("features")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: no 'text' (the curator's text of the work)")
    if not isinstance(features, list) or not features or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in features):
        raise ValueError(f"{where}: 'features' must be a non-empty list of finite numbers (the work's analysis "
                         "vector)")
    if width is not None and len(features) != width:
        raise ValueError(f"{where}: {len(features)} features, where the lines before have {width}: every work "
                         "needs the same analyses")
    return text.strip(), [float(v) for v in features]


def read_catalogue(path: Path) -> Catalogue:
    """The (features, text) pairs of a ``.jsonl`` file, or of every ``curation.jsonl`` under a folder."""
    if path.is_dir():
        files = sorted(path.rglob(CATALOGUE_NAME))
        if not files:
            raise FileNotFoundError(f"no {CATALOGUE_NAME} in {str(path)!r} or its sub-folders: give a JSON-lines "
                                    "file of {\"features\": [...], \"text\": ...} or a folder of them")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no catalogue {str(path)!r}: give a JSON-lines file of "
                                "{\"features\": [...], \"text\": ...} or a folder holding curation.jsonl files")
    texts: list[str] = []
    rows: list[list[float]] = []
    for file in files:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read catalogue {str(file)!r}: {exc}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{str(file)!r}, line {number}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
            text, features = _record(entry, where, len(rows[0]) if rows else None)
            texts.append(text)
            rows.append(features)
    if not texts:
        raise ValueError(f"catalogue {str(path)!r} holds no work")
    return Catalogue(texts, torch.tensor(rows, dtype=torch.float32))
