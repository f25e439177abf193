"""Opening and looking up vectors in the sharded embedding store against the per-file cache it replaced.

    python benchmarks/bench_embedding_store.py [--count 1000000] [--per-file-count 20000] [--dim 768]

Ours: ``FeatureCache`` is filled with ``--count`` random vectors (``put_many`` in batches of 1,000, shards
written as the buffer fills and merged as they pile up), then a fresh store is opened and every vector looked
up with ``get``. Reference: the per-file cache of earlier versions (one safetensors file per vector, kept here
as it was), filled with ``--per-file-count`` vectors and looked up the same way; its times per vector are
scaled to ``--count`` (said). Both in the same run, with the number of files each leaves.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from atelier_cli import load_pack  # noqa: E402

load_pack()

from atelier.core.metrics.feature_cache import FeatureCache  # noqa: E402
from atelier.core.shared.state_dicts import write_safetensors  # noqa: E402

BATCH = 1000


class PerFileCache:
    """The cache FeatureCache replaced: ``root/<tag>/<sha256>.safetensors``, one vector each."""

    def __init__(self, root: Path, fmt: str, fingerprint: str) -> None:
        self.fmt, self.fingerprint = fmt, fingerprint
        self.folder = root / hashlib.sha256(f"{fmt}|{fingerprint}".encode()).hexdigest()[:16]

    def get(self, digest: str) -> torch.Tensor | None:
        from safetensors import safe_open

        path = self.folder / f"{digest}.safetensors"
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if (meta.get("format"), meta.get("sha256"), meta.get("model")) != (self.fmt, digest, self.fingerprint):
                    return None
                value = f.get_tensor("features")
        except Exception:
            return None
        if value.dim() != 1 or not torch.isfinite(value).all():
            return None
        return value.float()

    def put(self, digest: str, value: torch.Tensor) -> None:
        try:
            write_safetensors(self.folder / f"{digest}.safetensors",
                              {"features": value.detach().float().cpu().contiguous()},
                              {"format": self.fmt, "sha256": digest, "model": self.fingerprint})
        except OSError as exc:
            warnings.warn(f"could not cache features in {str(self.folder)!r}: {exc}", stacklevel=2)


def digest(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def batches(count: int, dim: int) -> Iterator[tuple[list[str], torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    for start in range(0, count, BATCH):
        n = min(BATCH, count - start)
        yield [digest(i) for i in range(start, start + n)], torch.randn(n, dim, generator=g)


def files_in(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def open_and_look_up(open_store: Callable[[], Any], count: int) -> tuple[float, float]:
    """Seconds to open the store afresh, and to look up every vector in it."""
    start = time.perf_counter()
    store = open_store()
    opened = time.perf_counter() - start
    start = time.perf_counter()
    missing = sum(store.get(digest(i)) is None for i in range(count))
    assert missing == 0, f"{missing} vectors missing"
    return opened, time.perf_counter() - start


def run_ours(root: Path, count: int, dim: int) -> dict[str, float]:
    start = time.perf_counter()
    with FeatureCache(root, "bench", "net") as store:
        for keys, values in batches(count, dim):
            store.put_many(keys, values)
    write = time.perf_counter() - start
    opened, lookup = open_and_look_up(lambda: FeatureCache(root, "bench", "net"), count)
    shards = len(list(store.folder.glob("shard-*.safetensors")))
    return {"write": write, "open": opened, "lookup": lookup, "files": files_in(root), "shards": shards}


def run_reference(root: Path, count: int, dim: int) -> dict[str, float]:
    cache = PerFileCache(root, "bench", "net")
    start = time.perf_counter()
    for keys, values in batches(count, dim):
        for key, value in zip(keys, values):
            cache.put(key, value)
    write = time.perf_counter() - start
    opened, lookup = open_and_look_up(lambda: PerFileCache(root, "bench", "net"), count)
    return {"write": write, "open": opened, "lookup": lookup, "files": files_in(root)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="vectors in the sharded store")
    parser.add_argument("--per-file-count", type=int, default=20_000,
                        help="vectors in the per-file cache (its times are scaled to --count)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--folder", help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        ours = run_ours(Path(tmp) / "sharded", args.count, args.dim)
        ref = run_reference(Path(tmp) / "per_file", args.per_file_count, args.dim)
    scale = args.count / args.per_file_count
    said = f" (measured on {args.per_file_count}, scaled x{scale:g})" if scale != 1 else ""
    print(f"{args.count} vectors of {args.dim} float32 values")
    print(f"  sharded store: write {ours['write']:.1f} s, open {ours['open']:.2f} s, look up all {ours['lookup']:.1f} s"
          f", {ours['files']} files ({ours['shards']} shards and the index)")
    print(f"  per-file cache{said}: write {ref['write'] * scale:.1f} s, look up all {ref['lookup'] * scale:.1f} s, "
          f"{int(ref['files'] * scale)} files")
    total, ref_total = ours["open"] + ours["lookup"], ref["lookup"] * scale
    print(f"  open + look up: {ref_total / total:.1f}x faster; write: {ref['write'] * scale / ours['write']:.1f}x "
          f"faster; {ref['files'] * scale / ours['files']:.0f}x fewer files")


if __name__ == "__main__":
    main()
