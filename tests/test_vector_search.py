"""FAISS search: below the exact limit the same near-duplicate clusters, top-K lists and ranks as the blocked exact
search it replaced (kept here as the reference), ties included; above it an IVF index within the memory budget
whose measured recall is reported."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from atelier.core.curator import retrieval
from atelier.core.curator.curate import near_duplicate_clusters, near_duplicates
from atelier.core.curator.vector_search import SearchOptions, VectorSearch, plan_search, threshold_pairs

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_vector_search.py"


@pytest.fixture(scope="module")
def old() -> ModuleType:
    """The benchmark, which keeps the search FAISS replaced as its reference."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_vector_search
    finally:
        sys.path.remove(str(BENCH.parent))
    return bench_vector_search


# ------------------------------------------------------------- test sets

def random_set(count: int, dim: int, seed: int) -> torch.Tensor:
    """Random directions with near-duplicates at many distances (noise from 0.01 to 0.6 of the length)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.normalize(torch.randn(count, dim, generator=g), dim=-1)
    copies = base[: count // 3] + torch.rand(count // 3, 1, generator=g) * 0.6 * torch.randn(count // 3, dim,
                                                                                           generator=g) / dim ** 0.5
    mixed = torch.cat([base, copies])
    return mixed[torch.randperm(mixed.shape[0], generator=g)] * (0.5 + torch.rand(mixed.shape[0], 1, generator=g))


def duplicate_set(seed: int) -> torch.Tensor:
    """Groups of exact copies (one of 40, more than a first k-NN list holds), copies at other lengths, rows tied at
    an exactly representable cosine (0.6), and singletons."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(30, 24, generator=g)
    rows = [base[0].repeat(40, 1), base[1:6].repeat(3, 1), base[6:12] * torch.tensor([[2.0]]), base[6:12], base[12:]]
    axes = torch.zeros(3, 24)
    axes[0, 0], axes[1, 0], axes[1, 1], axes[2, 1] = 1.0, 0.6, 0.8, 1.0  # cosines exactly 0.6 and 0.8: ties
    mixed = torch.cat([*rows, axes, axes])
    return mixed[torch.randperm(mixed.shape[0], generator=g)]


# ------------------------------------------------------------- exact: today's answers

# 1.0 is left out: copies score 1 within a float32 rounding, and which side of 1.0 that falls on depends on the
# order in which a BLAS sums (the old search's answer there changed with the matrix library too)
@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.9, 0.95, 0.99, 0.9999])
def test_exact_clusters_equal_the_blocked_search_on_random_and_duplicate_sets(old: ModuleType,
                                                                              threshold: float) -> None:
    for embeddings in (random_set(1500, 48, 0), duplicate_set(1)):
        clusters, search = near_duplicates(embeddings, threshold, block=256)
        assert clusters == old.blocked_clusters(embeddings, threshold)
        assert search.plan.exact and search.describe().startswith("exact search (FAISS flat inner product)")
    embeddings = duplicate_set(2)
    assert max(len(c) for c in near_duplicate_clusters(embeddings, 0.999)) >= 40  # k-NN lists grew past 16
    for block in (1, 7, 100):
        assert near_duplicate_clusters(embeddings, 0.6, block=block) == old.blocked_clusters(embeddings, 0.6)


def test_exact_top_k_equals_the_full_sort_ties_in_row_order(old: ModuleType) -> None:
    """Each place holds the picture the old search put there: the same score (two scores a float32 rounding apart
    may swap: the matrix libraries sum in different orders) and equal scores (copies) in row order."""
    for images in (torch.nn.functional.normalize(random_set(900, 32, 3), dim=-1),
                   torch.nn.functional.normalize(duplicate_set(4), dim=-1)):
        g = torch.Generator().manual_seed(5)
        for query in [*torch.nn.functional.normalize(torch.randn(6, images.shape[1], generator=g), dim=-1),
                      images[0], images[17]]:
            for k in (1, 5, 50, images.shape[0] + 3):
                found = retrieval.top_k(query, images, k)
                before = old.full_top_k(query[None], images, k).values[0].tolist()
                scores = images @ query
                rows = [row for row, _ in found]
                assert len(rows) == len(set(rows)) == len(before)
                assert scores[rows].tolist() == pytest.approx(before, abs=1e-6)
                assert [s for _, s in found] == pytest.approx(before, abs=1e-6)
                for a, b in zip(rows, rows[1:]):
                    if torch.equal(images[a], images[b]):
                        assert a < b  # copies: a tie, in row order
    images = torch.nn.functional.normalize(duplicate_set(4), dim=-1)
    copies = [row for row in range(images.shape[0]) if torch.equal(images[row], images[0])]
    assert [row for row, _ in retrieval.top_k(images[0], images, len(copies))] == copies


def test_exact_ranks_equal_the_full_score_matrix_ties_included(old: ModuleType) -> None:
    images = torch.nn.functional.normalize(duplicate_set(6), dim=-1)
    g = torch.Generator().manual_seed(7)
    targets = torch.randint(0, images.shape[0], (300,), generator=g).tolist()
    queries = torch.nn.functional.normalize(images[targets] + 0.3 * torch.randn(300, images.shape[1], generator=g),
                                            dim=-1)
    queries[:40] = images[targets[:40]]  # a query equal to its target, whose copies tie with it
    expected = old.full_ranks(queries, images, targets)
    assert max(expected) > 10 and any(r > 1 for r in expected[:40])
    assert retrieval.ranks(queries, images, targets) == expected
    for k in (1, 3, 10):
        found, search = retrieval.rank_search(queries, images, targets, k)
        assert found == [r if r <= k else k + 1 for r in expected] and search.plan.exact
        assert retrieval.evaluate(found, k) == retrieval.evaluate(expected, k)


# ------------------------------------------------------------- the choice by size and memory

def test_the_plan_follows_size_queries_and_memory() -> None:
    options = SearchOptions(exact_limit=100_000, memory_mb=4096)
    assert plan_search(100_000, 768, 100_000, options).exact
    assert plan_search(1_000_000, 768, 1, options).exact  # one query: one pass beats building an index
    plan = plan_search(1_000_000, 768, 1_000_000, options)
    assert (plan.factory, plan.nlist) == ("IVF2048,Flat", 2048) and plan.index_mb <= 4096
    squeezed = [plan_search(1_000_000, 768, 10**6, SearchOptions(memory_mb=mb)).factory for mb in (2000, 900, 80)]
    assert squeezed == ["IVF2048,SQfp16", "IVF2048,SQ8", "IVF2048,PQ64"]
    with pytest.raises(ValueError, match="needs at least .* MB, more than the search memory budget of 10 MB: raise "
                                         "search_memory_mb"):
        plan_search(1_000_000, 768, 10**6, SearchOptions(memory_mb=10))
    with pytest.raises(ValueError, match="exact_limit"):
        plan_search(10, 4, 10, SearchOptions(exact_limit=-1))


def clustered(count: int, dim: int, seed: int) -> torch.Tensor:
    """Unit vectors around 50 centres, as embeddings of a collection gather by subject, with near-copies."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(50, dim, generator=g)
    points = centres[torch.randint(0, 50, (count,), generator=g)] + 0.8 * torch.randn(count, dim, generator=g)
    points[count // 2:] = points[: count - count // 2] + 0.15 * torch.randn(count - count // 2, dim, generator=g)
    return torch.nn.functional.normalize(points, dim=-1)


@pytest.mark.parametrize(("memory_mb", "factory"), [(4096, "IVF128,Flat"), (0.3, "IVF128,SQ8")])
def test_above_the_limit_an_ivf_index_finds_the_pairs_it_reports_recall_for(memory_mb: float, factory: str) -> None:
    vectors = clustered(6000, 32, 8)
    options = SearchOptions(exact_limit=1000, memory_mb=memory_mb, target_recall=0.9)
    pairs, search = threshold_pairs(vectors, 0.9, options)
    exact, _ = threshold_pairs(vectors, 0.9, SearchOptions())
    assert not search.plan.exact and search.plan.factory == factory
    assert search.recall is not None and search.recall >= 0.9 and 1 <= search.nprobe < 128
    # every pair found is a true one (8-bit codes' scores are recomputed from the vectors); at most a rounding
    # apart at the threshold
    scores = (vectors @ vectors.T).numpy()
    assert all(scores[a, b] >= 0.9 - 1e-6 for a, b in set(pairs) - set(exact))
    assert len(set(pairs) & set(exact)) >= 0.85 * len(exact) and len(exact) > 2000
    text = search.describe()
    assert f"approximate search (FAISS {factory}" in text and f"recall {search.recall:.3f}" in text
    again, _ = threshold_pairs(vectors, 0.9, options)
    assert again == pairs  # the training sample is seeded


def test_approximate_top_k_recall_is_measured_and_reached(old: ModuleType) -> None:
    images = clustered(5000, 32, 9)
    g = torch.Generator().manual_seed(10)
    queries = torch.nn.functional.normalize(images[:600] + 0.5 * torch.randn(600, 32, generator=g), dim=-1)
    found, search = retrieval.rank_search(queries, images, list(range(600)), 10, SearchOptions(exact_limit=100))
    expected = [r if r <= 10 else 11 for r in old.full_ranks(queries, images, list(range(600)))]
    assert not search.plan.exact and search.recall >= 0.95
    agree = sum(a == b for a, b in zip(found, expected)) / 600
    assert agree >= 0.9
    assert abs(retrieval.evaluate(found, 10).mrr - retrieval.evaluate(expected, 10).mrr) < 0.05


def test_vector_search_takes_numpy_or_torch_and_k_beyond_the_count() -> None:
    vectors = torch.eye(3)
    search = VectorSearch(vectors, 1)
    scores, rows = search.search(vectors[:1].numpy(), 10)
    assert rows[0, 0] == 0 and sorted(rows[0].tolist()) == [0, 1, 2] and scores[0].tolist() == [1.0, 0.0, 0.0]


def test_the_benchmark_runs_at_a_tiny_size() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--sizes", "1200", "--dim", "16", "--queries", "300",
                           "--reference-rows", "500", "--exact-limit", "1000"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "1200 vectors: dedup" in done.stdout and "(timed on 500 rows, scaled)" in done.stdout
    assert "approximate search (FAISS IVF64,Flat" in done.stdout and "recall@10" in done.stdout
    assert done.stdout.count("time ratio") == 2


def test_the_cli_flags_set_the_search() -> None:
    from atelier import cli
    from atelier.cli import collection, common

    args = cli._parser().parse_args(["curate", "f", "--exact-limit", "5", "--search-memory-mb", "100"])
    assert collection.search_options(args) == SearchOptions(exact_limit=5, memory_mb=100.0)
    defaults = cli._parser().parse_args(["evaluate-retrieval", "f"])
    assert collection.search_options(defaults) == SearchOptions()
    flags = common._flags(cli._parser(), "curate")
    assert common.cli_spelling("raise search_memory_mb", flags) == "raise --search-memory-mb"
