"""Near-duplicate clusters and top-K retrieval through FAISS against the blocked exact search they replaced.

    python benchmarks/bench_vector_search.py [--sizes 100000 1000000] [--dim 768] [--queries 1000]
        [--reference-rows 8192] [--threshold 0.95] [--k 10] [--exact-limit 100000] [--memory-mb 4096]

The embeddings are synthetic, shaped like a collection's CLIP embeddings: unit vectors gathered around 2,000
subjects, a twentieth of them near-copies of another (cosine about 0.97). Each measurement runs in a fresh
process over the same vectors (a .npy file), so its peak memory (peak resident set less the vectors) is its own.

  * dedup, reference: the old blocked exact search (rows @ all.T in blocks of 2048, >= threshold, union-find).
    Above ``--reference-rows`` rows it runs on that many rows and its time is scaled to all rows (said).
  * dedup, ours: ``near_duplicates`` (exact FAISS flat search up to --exact-limit vectors, IVF above), with the
    pair recall of the approximate index measured against brute force on 1,000 sampled rows.
  * top-K, reference: the old evaluation path, every query against every picture (``queries @ images.T``)
    and ``torch.topk``; ours: ``top_k_search``; recall@K of ours against the reference's lists.
Ratios are reference / ours (time) and ours / reference (memory).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from atelier_cli import load_pack  # noqa: E402

load_pack()

from atelier.core.curator.curate import clusters_of, near_duplicates  # noqa: E402
from atelier.core.curator.vector_search import SearchOptions, top_k_search  # noqa: E402

SUBJECTS = 2000
BLOCK = 2048


# ------------------------------------------------------------- the search FAISS replaced, as it was

def blocked_pairs(embeddings: torch.Tensor, threshold: float, rows: int | None = None,
                  block: int = BLOCK) -> list[tuple[int, int]]:
    """The old near-duplicate search: pairs (a, b), a < b, with cosine >= threshold, from blocks of rows
    against all rows (only the first ``rows`` rows as queries when given)."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    pairs = []
    for start in range(0, unit.shape[0] if rows is None else rows, block):
        similar = (unit[start:start + block] @ unit.T) >= threshold
        pairs += [(a + start, b) for a, b in similar.nonzero().tolist() if a + start < b]
    return pairs


def blocked_clusters(embeddings: torch.Tensor, threshold: float, block: int = BLOCK) -> list[list[int]]:
    """The old ``near_duplicate_clusters``: its pairs joined by the same union-find."""
    return clusters_of(blocked_pairs(embeddings, threshold, block=block), embeddings.shape[0])


def full_top_k(queries: torch.Tensor, images: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The old retrieval: every query scored against every picture, then ``torch.topk``."""
    return torch.topk(queries.float() @ images.float().T, min(k, images.shape[0]), dim=1)


def full_ranks(queries: torch.Tensor, images: torch.Tensor, targets: list[int]) -> list[int]:
    """The old ``ranks``: 1-based rank of each target among all pictures, ties counting against it."""
    scores = queries.float() @ images.float().T
    target_scores = scores[torch.arange(len(targets)), torch.tensor(targets)]
    return (scores >= target_scores[:, None]).sum(dim=1).tolist()


# ------------------------------------------------------------- data

def synthetic(count: int, dim: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors around ``SUBJECTS`` centres, one in twenty a near-copy of an earlier one, made in chunks."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(SUBJECTS, dim, generator=g)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        points = centres[torch.randint(0, SUBJECTS, (n,), generator=g)] + 1.2 * torch.randn(n, dim, generator=g)
        out[start:start + n] = torch.nn.functional.normalize(points, dim=-1).numpy()
    copies = torch.randperm(count, generator=g)[: count // 20]
    sources = torch.randint(0, count, (copies.shape[0],), generator=g)
    noisy = torch.from_numpy(out[sources.numpy()]) + 0.25 / dim ** 0.5 * torch.randn(copies.shape[0], dim, generator=g)
    out[copies.numpy()] = torch.nn.functional.normalize(noisy, dim=-1).numpy()
    return out


def queries_for(vectors: np.ndarray, count: int, seed: int = 1) -> torch.Tensor:
    """Queries near the collection's pictures, as a text about them lands (cosine about 0.3 to 0.6)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, vectors.shape[0], (count,), generator=g)
    near = torch.from_numpy(vectors[rows.numpy()]) + 0.08 * torch.randn(count, vectors.shape[1], generator=g)
    return torch.nn.functional.normalize(near, dim=-1)


# ------------------------------------------------------------- one measurement, in its own process

class PeakMemory:
    """The most resident memory this process held above what it held when started, sampled every 5 ms (the
    vectors are loaded before; torch's allocations are invisible to tracemalloc)."""

    def __init__(self) -> None:
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def mb(self) -> float:
        self.peak = max(self.peak, self._rss())
        return (self.peak - self.base) / 2**20


def measure(args: argparse.Namespace) -> dict:
    vectors = torch.from_numpy(np.load(args.data))
    memory = PeakMemory()
    options = SearchOptions(args.exact_limit, args.memory_mb)
    start = time.perf_counter()
    out: dict = {}
    if args.measure == "dedup-reference":
        rows = min(args.reference_rows, vectors.shape[0])
        pairs = blocked_pairs(vectors, args.threshold, rows, args.reference_block)
        out["pairs_in_rows"] = len(pairs)
        out["rows"] = rows
        seconds = time.perf_counter() - start
        out["seconds"] = seconds * vectors.shape[0] / rows
        out["scaled"] = rows < vectors.shape[0]
    elif args.measure == "dedup-ours":
        clusters, search = near_duplicates(vectors, args.threshold, options=options)
        out["seconds"], out["peak_mb"] = time.perf_counter() - start, memory.mb()
        out["clusters"], out["search"] = len(clusters), search.describe()
        out["pair_recall"] = pair_recall(vectors, clusters, args.threshold) if not search.plan.exact else 1.0
    else:
        queries = queries_for(vectors.numpy(), args.queries)
        if args.measure == "topk-reference":
            _, rows = full_top_k(queries, vectors, args.k)
            np.save(args.result, rows.numpy())
        else:
            _, rows, search = top_k_search(vectors, queries, args.k, options)
            np.save(args.result, rows)
            out["search"] = search.describe()
        out["seconds"] = time.perf_counter() - start
    out.setdefault("peak_mb", memory.mb())
    return out


def pair_recall(vectors: torch.Tensor, clusters: list[list[int]], threshold: float, sample: int = 1000) -> float:
    """Share of the true pairs of ``sample`` random rows (brute force) whose two rows share a cluster."""
    g = torch.Generator().manual_seed(7)
    rows = torch.randperm(vectors.shape[0], generator=g)[:sample]
    unit = torch.nn.functional.normalize(vectors[rows].float(), dim=-1)
    similar = (unit @ torch.nn.functional.normalize(vectors.float(), dim=-1).T) >= threshold
    truth = [(int(rows[a]), b) for a, b in similar.nonzero().tolist() if int(rows[a]) != b]
    cluster_of = {row: i for i, members in enumerate(clusters) for row in members}
    found = sum(1 for a, b in truth if a in cluster_of and cluster_of.get(b) == cluster_of[a])
    return found / len(truth) if truth else 1.0


def run_child(args: argparse.Namespace, data: Path, what: str, result: Path) -> dict:
    command = [sys.executable, __file__, "--measure", what, "--data", str(data), "--result", str(result),
               "--threshold", str(args.threshold), "--k", str(args.k), "--queries", str(args.queries),
               "--reference-rows", str(args.reference_rows), "--reference-block", str(args.reference_block),
               "--exact-limit", str(args.exact_limit),
               "--memory-mb", str(args.memory_mb)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def dedup(args: argparse.Namespace, size: int, data: Path, ref_rows: Path, our_rows: Path) -> None:
    ref = run_child(args, data, "dedup-reference", ref_rows)
    ours = run_child(args, data, "dedup-ours", our_rows)
    scaled = f" (timed on {ref['rows']} rows, scaled)" if ref["scaled"] else ""
    if args.reference_block != BLOCK:
        held = BLOCK * size * 5 / 2**20  # float32 scores and bool flags of one block
        scaled += f", in blocks of {args.reference_block} rows (blocks of 2048 hold {held:.0f} MB)"
    print(f"\n{size} vectors: dedup at cosine >= {args.threshold}")
    print(f"  reference, blocked exact: {ref['seconds']:.1f} s{scaled}, peak {ref['peak_mb']:.0f} MB")
    print(f"  ours: {ours['seconds']:.1f} s, peak {ours['peak_mb']:.0f} MB, {ours['clusters']} clusters, "
          f"pair recall {ours['pair_recall']:.4f} on 1000 sampled rows; {ours['search']}")
    print(f"  time ratio {ref['seconds'] / ours['seconds']:.2f}x, "
          f"memory ratio {ours['peak_mb'] / max(ref['peak_mb'], 1):.2f}")


def top_k(args: argparse.Namespace, size: int, data: Path, ref_rows: Path, our_rows: Path) -> None:
    ref = run_child(args, data, "topk-reference", ref_rows)
    ours = run_child(args, data, "topk-ours", our_rows)
    truth, found = np.load(ref_rows), np.load(our_rows)
    recall = np.mean([len(set(t) & set(f)) / len(t) for t, f in zip(truth.tolist(), found.tolist())])
    print(f"{size} vectors: top-{args.k} of {args.queries} queries")
    print(f"  reference, full score matrix: {ref['seconds']:.1f} s, peak {ref['peak_mb']:.0f} MB")
    print(f"  ours: {ours['seconds']:.1f} s, peak {ours['peak_mb']:.0f} MB, recall@{args.k} {recall:.4f}; "
          f"{ours['search']}")
    print(f"  time ratio {ref['seconds'] / ours['seconds']:.2f}x, "
          f"memory ratio {ours['peak_mb'] / max(ref['peak_mb'], 1):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=1000, help="top-K queries")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.95, help="near-duplicate cosine")
    parser.add_argument("--reference-rows", type=int, default=8192,
                        help="the old dedup runs on at most this many rows, its time scaled to all")
    parser.add_argument("--reference-block", type=int, default=BLOCK,
                        help="rows per block of the old dedup (2048 as it was; less where its block x N scores "
                        "do not fit)")
    parser.add_argument("--exact-limit", type=int, default=SearchOptions().exact_limit)
    parser.add_argument("--memory-mb", type=float, default=SearchOptions().memory_mb)
    parser.add_argument("--only", choices=("dedup", "topk"), help="measure only near-duplicates or only top-K")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return
    print(f"{torch.get_num_threads()} thread(s); dim {args.dim}; threshold {args.threshold}; "
          f"{args.queries} queries, k {args.k}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data, ref_rows, our_rows = Path(tmp) / "vectors.npy", Path(tmp) / "ref.npy", Path(tmp) / "ours.npy"
            np.save(data, synthetic(size, args.dim))
            if args.only != "topk":
                dedup(args, size, data, ref_rows, our_rows)
            if args.only != "dedup":
                top_k(args, size, data, ref_rows, our_rows)


if __name__ == "__main__":
    main()
