"""Text-to-image retrieval over embedded pictures, and its MRR@K and recall@K evaluation."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def top_k(query: torch.Tensor, images: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The ``k`` pictures nearest a unit query embedding ``[D]``: ``(row, cosine)``, best first."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = images.float() @ query.float()
    values, rows = torch.topk(scores, min(k, scores.shape[0]))
    return list(zip(rows.tolist(), values.tolist()))


def ranks(queries: torch.Tensor, images: torch.Tensor, targets: list[int]) -> list[int]:
    """1-based rank of each query's target picture among all pictures (ties count against the target)."""
    if queries.shape[0] != len(targets):
        raise ValueError(f"{queries.shape[0]} queries but {len(targets)} targets")
    scores = queries.float() @ images.float().T
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
