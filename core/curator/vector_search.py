"""Nearest neighbours by inner product through FAISS: exact for small collections, an IVF index for big ones.

Up to ``exact_limit`` vectors (or for up to ``2 * nlist`` queries, fewer than building an index costs) the
search is exact: FAISS's flat inner-product search (``faiss.knn``, IndexFlatIP's own kernel, searching the
caller's array without copying it), the same float32 products as a plain matrix product. Above it, an
inverted-file index (IVF, ``nlist`` about ``2 * sqrt(N)`` lists, k-means trained on a seeded sample) stores
the vectors as float32, float16, 8-bit scalars or product-quantised codes, the least lossy form that fits
``memory_mb``; ``nprobe`` (lists visited per query) is doubled until the recall measured against exact
search on a seeded sample of the queries reaches ``target_recall``, and that choice and its measured recall
are reported. GPU FAISS is used when the installed FAISS sees GPUs.

Near-duplicate clusters and retrieval ranks keep exactly their exact-search meaning below the limit: a
pair is linked when its cosine is at least the threshold (k-NN lists grow until they reach below the
threshold, so no pair is missed), and ties count against a query's target.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

EXACT_LIMIT = 100_000  # vectors: up to this many, search is exact
MEMORY_MB = 4096  # what an approximate index may hold
TARGET_RECALL = 0.95
# up to this many queries per list are answered exactly at any size: training the lists' centroids (40 points per
# list, 10 rounds) and assigning every vector cost about as much as 2 * nlist exact queries
FEW_QUERIES_PER_LIST = 2
SAMPLE = 256  # queries whose exact answers measure the approximate index's recall
GPU_MAX_K = 2048  # GPU FAISS's largest k
KMEANS_ITERATIONS = 10  # of the lists' centroids (FAISS's default 25 costs more for little recall)
DEFAULT_PROBE_SHARE = 1 / 32  # lists visited when the sample cannot measure recall


@dataclass(frozen=True)
class SearchOptions:
    exact_limit: int = EXACT_LIMIT
    memory_mb: float = MEMORY_MB
    target_recall: float = TARGET_RECALL
    seed: int = 0  # the training and recall samples

    def check(self) -> None:
        if self.exact_limit < 0:
            raise ValueError(f"exact_limit must be 0 or more vectors, got {self.exact_limit}")
        if self.memory_mb <= 0:
            raise ValueError(f"the search memory budget must be above 0 MB, got {self.memory_mb}")
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target_recall must be above 0 and at most 1, got {self.target_recall}")


@dataclass(frozen=True)
class Plan:
    """How a collection is searched: ``factory`` is FAISS's index_factory string (``Flat``: exact)."""

    count: int
    dim: int
    factory: str
    nlist: int = 0
    index_mb: float = 0.0

    @property
    def exact(self) -> bool:
        return self.factory == "Flat"

    @property
    def lossy(self) -> bool:
        """Whether the index scores compressed vectors (so its scores are recomputed from the vectors)."""
        return not self.exact and not self.factory.endswith(",Flat")


def faiss_module():  # faiss has no type stubs
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("vector search needs FAISS: pip install faiss-cpu (or a GPU build of FAISS)") from exc
    return faiss


def plan_search(count: int, dim: int, queries: int, options: SearchOptions) -> Plan:
    """Exact up to ``exact_limit`` vectors or ``2 * nlist`` queries; above, the least lossy IVF that fits
    ``memory_mb`` (float32, float16, 8-bit or product-quantised codes, plus ids and list centroids)."""
    options.check()
    nlist = 2 ** round(math.log2(2 * math.sqrt(count)))
    if count <= options.exact_limit or queries <= FEW_QUERIES_PER_LIST * nlist:
        return Plan(count, dim, "Flat")
    overhead = count * 8 + nlist * dim * 4  # ids and centroids
    codes = [("Flat", dim * 4), ("SQfp16", dim * 2), ("SQ8", dim)]
    codes += [(f"PQ{m}", m) for m in (64, 32, 16, 8) if dim % m == 0 and m < dim]
    for code, size in codes:
        need = (count * size + overhead) / 2**20
        if need <= options.memory_mb:
            return Plan(count, dim, f"IVF{nlist},{code}", nlist, need)
    least = (count * min(size for _, size in codes) + overhead) / 2**20
    raise ValueError(f"an index of {count} vectors of {dim} values needs at least {least:.0f} MB, more than the "
                     f"search memory budget of {options.memory_mb:g} MB: raise search_memory_mb")


def _gpus(faiss) -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class VectorSearch:
    """``vectors [N, D]`` searched by inner product as ``plan_search`` decides for ``queries`` queries."""

    def __init__(self, vectors: torch.Tensor | np.ndarray, queries: int, options: SearchOptions | None = None) -> None:
        self.faiss = faiss_module()
        self.options = options or SearchOptions()
        self.vectors = np.ascontiguousarray(torch.as_tensor(vectors).detach().float().cpu().numpy())
        self.plan = plan_search(self.vectors.shape[0], self.vectors.shape[1], queries, self.options)
        self.gpus = _gpus(self.faiss)
        self.nprobe = 0
        self.recall: float | None = None  # measured on the sample; None when exact
        self._resources = None  # GPU FAISS's, made at the first exact search on a GPU
        self._index = None if self.plan.exact else self._build()

    def _build(self):
        faiss = self.faiss
        index = faiss.index_factory(self.plan.dim, self.plan.factory, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(self.options.seed)
        train = min(self.plan.count, 40 * self.plan.nlist)  # FAISS asks for 39 points per list at least
        faiss.extract_index_ivf(index).cp.niter = KMEANS_ITERATIONS
        index.train(self.vectors[np.sort(rng.choice(self.plan.count, train, replace=False))])
        index.add(self.vectors)
        if self.gpus:
            index = faiss.index_cpu_to_all_gpus(index)
        return index

    def _set_nprobe(self, nprobe: int) -> None:
        space = self.faiss.GpuParameterSpace() if self.gpus else self.faiss.ParameterSpace()
        space.set_index_parameter(self._index, "nprobe", nprobe)
        self.nprobe = nprobe

    def search(self, queries: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and rows ``[Q, k]``, best first (rows -1 where fewer than ``k`` were found)."""
        faiss = self.faiss
        queries = np.ascontiguousarray(torch.as_tensor(queries).detach().float().cpu().numpy())
        k = min(k, self.plan.count)
        if self._index is not None:
            scores, rows = self._index.search(queries, k)
            return (self._rescore(queries, rows), rows) if self.plan.lossy else (scores, rows)
        if self.gpus and k <= GPU_MAX_K:
            self._resources = self._resources or faiss.StandardGpuResources()  # one: each reserves GPU memory
            return faiss.knn_gpu(self._resources, queries, self.vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
        return faiss.knn(queries, self.vectors, k, metric=faiss.METRIC_INNER_PRODUCT)

    def _rescore(self, queries: np.ndarray, rows: np.ndarray, block: int = 4096) -> np.ndarray:
        """Exact inner products of each query with its found rows (-inf where none was found), best first."""
        scores = np.full(rows.shape, -np.inf, dtype=np.float32)
        for start in range(0, rows.shape[0], block):
            part = rows[start:start + block]
            found = self.vectors[np.maximum(part, 0)]
            exact = np.einsum("qd,qkd->qk", queries[start:start + block], found)
            scores[start:start + block] = np.where(part >= 0, exact, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")
        rows[:] = np.take_along_axis(rows, order, 1)
        return np.take_along_axis(scores, order, 1)

    def exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.faiss.knn(queries, self.vectors, min(k, self.plan.count), metric=self.faiss.METRIC_INNER_PRODUCT)

    def tune(self, recall: Callable[[VectorSearch], float | None]) -> None:
        """Double ``nprobe`` until ``recall(self)`` (measured on a sample) reaches the target; where the
        sample has nothing to measure (None), visit ``DEFAULT_PROBE_SHARE`` of the lists."""
        if self._index is None:
            return
        nprobe = 1
        while True:
            self._set_nprobe(nprobe)
            self.recall = recall(self)
            if self.recall is None:
                self._set_nprobe(max(1, int(self.plan.nlist * DEFAULT_PROBE_SHARE)))
                return
            if self.recall >= self.options.target_recall or nprobe >= self.plan.nlist:
                return
            nprobe = min(2 * nprobe, self.plan.nlist)

    def sample(self, queries: np.ndarray) -> np.ndarray:
        """Up to ``SAMPLE`` of ``queries`` (seeded), on which recall is measured."""
        rng = np.random.default_rng(self.options.seed + 1)
        count = queries.shape[0]
        return queries[np.sort(rng.choice(count, min(SAMPLE, count), replace=False))]

    def describe(self) -> str:
        where = f" on {self.gpus} GPU(s)" if self.gpus else ""
        if self.plan.exact:
            return f"exact search (FAISS flat inner product) over {self.plan.count} vectors{where}"
        recall = (", recall not measured: nothing to find among the sampled queries" if self.recall is None
                  else f", recall {self.recall:.3f} against exact search on up to {SAMPLE} sampled queries")
        return (f"approximate search (FAISS {self.plan.factory}, nprobe {self.nprobe}, about "
                f"{self.plan.index_mb:.1f} MB{recall}) over {self.plan.count} vectors{where}: above the exact "
                f"limit of {self.options.exact_limit}")


def top_k_search(vectors: torch.Tensor, queries: torch.Tensor, k: int,
                 options: SearchOptions | None = None) -> tuple[np.ndarray, np.ndarray, VectorSearch]:
    """The ``k`` best rows for each query, as scores and rows ``[Q, k]``; ties in row order."""
    search = VectorSearch(vectors, queries.shape[0], options)
    query_array = np.ascontiguousarray(queries.detach().float().cpu().numpy())

    sample = search.sample(query_array)
    truth: list[np.ndarray] = []

    def recall_at_k(s: VectorSearch) -> float:
        truth[:] = truth or [s.exact(sample, k)[1]]
        _, found = s.search(sample, k)
        return float(np.mean([len(set(t) & set(f)) / len(t) for t, f in zip(truth[0].tolist(), found.tolist())]))

    search.tune(recall_at_k)
    scores, rows = search.search(query_array, k)
    order = np.lexsort((rows, -scores), axis=1)  # best first, a tie in row order
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1), search


def _pairs(search: VectorSearch, rows: np.ndarray, threshold: float, exact: bool = False) -> set[tuple[int, int]]:
    """Pairs ``(a, b)``, ``a`` in ``rows`` and ``b`` any other row, scoring at least ``threshold`` with ``a`` as
    the query. Each row's list grows until its last score falls below ``threshold``, so exact search finds
    every pair (GPU FAISS stops at 2048 neighbours: links through the others still join the cluster)."""
    pairs: set[tuple[int, int]] = set()
    count, k = search.plan.count, min(16, search.plan.count)
    while rows.size:
        scores, found = (search.exact if exact else search.search)(search.vectors[rows], k)
        a, b = np.nonzero((scores >= threshold) & (found != rows[:, None]) & (found >= 0))
        pairs.update(zip(rows[a].tolist(), found[a, b].tolist()))
        if k >= count or (search.gpus and not exact and 2 * k > GPU_MAX_K):
            break
        rows, k = rows[scores[:, -1] >= threshold], min(2 * k, count)
    return pairs


def threshold_pairs(vectors: torch.Tensor, threshold: float, options: SearchOptions | None = None,
                    block: int = 2048) -> tuple[list[tuple[int, int]], VectorSearch]:
    """Every pair ``(a, b)``, ``a < b``, whose inner product (``a``'s row of the search) is at least
    ``threshold``, in order; an approximate index is tuned on the pairs of a sample of the rows."""
    search = VectorSearch(vectors, vectors.shape[0], options)

    sample = search.sample(np.arange(search.plan.count))
    truth: list[set[tuple[int, int]]] = []

    def pair_recall(s: VectorSearch) -> float | None:
        truth[:] = truth or [_pairs(s, sample, threshold, exact=True)]
        return len(truth[0] & _pairs(s, sample, threshold)) / len(truth[0]) if truth[0] else None

    search.tune(pair_recall)
    pairs: set[tuple[int, int]] = set()
    for start in range(0, search.plan.count, block):
        rows = np.arange(start, min(start + block, search.plan.count))
        pairs.update((a, b) for a, b in _pairs(search, rows, threshold) if a < b)
    return sorted(pairs), search
