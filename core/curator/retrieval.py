"""Text-to-image retrieval over embedded pictures, its MRR@K and recall@K evaluation, and sentences scored
against one picture (the thesis's Table 5: each sentence's cosine and its probability among the sentences)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .vector_search import SearchOptions, VectorSearch, top_k_search


def top_k(query: torch.Tensor, images: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The ``k`` pictures nearest a unit query embedding ``[D]``: ``(row, cosine)``, best first, a tie in row
    order. One query is always searched exactly (FAISS flat inner product)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores, rows, _ = top_k_search(images, query.reshape(1, -1), k)
    return list(zip(rows[0].tolist(), scores[0].tolist()))


def rank_search(queries: torch.Tensor, images: torch.Tensor, targets: list[int], k: int | None = None,
                options: SearchOptions | None = None) -> tuple[list[int], VectorSearch]:
    """1-based rank of each query's target picture among all pictures (ties count against the target), and the
    search that found them. With ``k``, only the best ``k + 1`` pictures of each query are searched: ranks up
    to ``k`` are exact (for that search) and a target further down gets ``k + 1``, all that MRR@K and recall@K
    need. Many queries over more than ``options.exact_limit`` pictures use an approximate index."""
    if queries.shape[0] != len(targets):
        raise ValueError(f"{queries.shape[0]} queries but {len(targets)} targets")
    depth = images.shape[0] if k is None else min(k + 1, images.shape[0])
    scores, rows, search = top_k_search(images, queries, depth, options)
    out = []
    for row_scores, row_found, target in zip(scores, rows, targets):
        where = np.nonzero(row_found == target)[0]
        # the target's score as this search computed it; every picture scoring as high is in the list, unless
        # the list is full of them, and then the target is beyond k anyway
        rank = int((row_scores >= row_scores[where[0]]).sum()) if where.size else depth + 1
        out.append(rank if k is None or rank <= k else k + 1)
    return out, search


def ranks(queries: torch.Tensor, images: torch.Tensor, targets: list[int], k: int | None = None,
          options: SearchOptions | None = None) -> list[int]:
    """The ranks of ``rank_search``."""
    return rank_search(queries, images, targets, k, options)[0]


def score_ranks(scores: torch.Tensor, targets: list[int]) -> list[int]:
    """1-based rank of each row's target column in ``scores [Q, N]`` (higher is better; ties count against)."""
    target_scores = scores[torch.arange(len(targets)), torch.tensor(targets)]
    return (scores >= target_scores[:, None]).sum(dim=1).tolist()


@dataclass(frozen=True)
class RetrievalScores:
    k: int
    mrr: float  # mean of 1/rank, counting 0 where the target is not in the top k
    recall: float  # share of queries whose target is in the top k
    queries: int

    def report(self) -> str:
        return f"MRR@{self.k} {self.mrr:.4f}, recall@{self.k} {self.recall:.4f} over {self.queries} queries"


def evaluate(rank_list: list[int], k: int) -> RetrievalScores:
    """MRR@K and recall@K from 1-based ranks."""
    if not rank_list:
        raise ValueError("no (text, image) pairs to evaluate")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    hits = [r for r in rank_list if r <= k]
    return RetrievalScores(k, sum(1.0 / r for r in hits) / len(rank_list), len(hits) / len(rank_list), len(rank_list))


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """``(text, picture name)`` pairs from a CSV with ``text`` and ``image`` columns or JSON lines
    ``{"text": ..., "image": ...}``; the picture is named relative to the folder searched."""
    import csv
    import json

    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read pairs file {str(path)!r}: {exc}") from exc
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(lines)
        if not {"text", "image"} <= set(reader.fieldnames or []):
            raise ValueError(f"pairs CSV {str(path)!r} needs 'text' and 'image' columns")
        rows = list(reader)
    else:
        rows = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"pairs file {str(path)!r}, line {number}: not JSON: {exc.msg}") from None
    pairs = []
    for number, row in enumerate(rows, start=1):
        text, image = str(row.get("text") or "").strip(), str(row.get("image") or "").strip()
        if not text or not image:
            raise ValueError(f"pairs file {str(path)!r}, pair {number}: needs a non-empty 'text' and 'image'")
        pairs.append((text, image))
    return pairs


def pair_rows(named: list[tuple[str, str]], files: list[Path], root: Path) -> list[tuple[str, int]]:
    """``(text, picture name)`` pairs as ``(text, row of files)``; a name not among ``files`` is an error."""
    rows = {path.relative_to(root).as_posix(): row for row, path in enumerate(files)}
    missing = [image for _, image in named if image not in rows]
    if missing:
        raise ValueError(f"{len(missing)} pair(s) name pictures that are not readable in {str(root)!r}: "
                         f"{', '.join(missing[:5])}")
    return [(text, rows[image]) for text, image in named]


def read_sentences(text: str) -> list[str]:
    """One sentence per line, blank lines left out; none at all is an error."""
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise ValueError("no sentences: write one sentence per line (Korean or English)")
    return sentences


@dataclass(frozen=True)
class SentenceScores:
    """Sentences scored against one picture, in the order given."""

    sentences: tuple[str, ...]
    cosine: tuple[float, ...]
    probability: tuple[float, ...]  # softmax over the sentences at the model's logit scale (CLIP's zero-shot form)

    def order(self) -> list[int]:
        """Indices of the sentences, best first (ties keep the order given)."""
        return sorted(range(len(self.sentences)), key=lambda i: -self.cosine[i])

    def table(self) -> str:
        rows = [f"{rank}\t{self.cosine[i]:.4f}\t{self.probability[i]:.4f}\t{self.sentences[i]}"
                for rank, i in enumerate(self.order(), start=1)]
        return "\n".join(["rank\tcosine\tprobability\tsentence", *rows])

    def record(self) -> list[dict[str, Any]]:
        return [{"rank": rank, "sentence": self.sentences[i], "cosine": round(self.cosine[i], 6),
                 "probability": round(self.probability[i], 6)} for rank, i in enumerate(self.order(), start=1)]


def score_sentences(image: torch.Tensor, texts: torch.Tensor, sentences: list[str],
                    logit_scale: float) -> SentenceScores:
    """Scores of unit sentence embeddings ``texts [S, D]`` against one unit picture embedding ``image [D]``."""
    cosine = texts.float() @ image.float()
    probability = torch.softmax(cosine.double() * logit_scale, dim=0)
    return SentenceScores(tuple(sentences), tuple(cosine.tolist()), tuple(probability.tolist()))
