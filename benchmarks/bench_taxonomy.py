"""Parsing a taxonomy of 2,500 and of 10,000 labels: seconds each and their ratio (4 for linear work, 16
for a square law; 10,000 labels once took two minutes). The labels form one chain of parents (the
deepest hierarchy), each with a synonym, one in ten folded into another label that lists it.
Run: ``python benchmarks/bench_taxonomy.py [--sizes 2500,10000] [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from atelier_cli import load_pack  # noqa: E402

load_pack()
from atelier.core.curator.taxonomy import parse_taxonomy  # noqa: E402

from helpers import many_labels  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2500,10000", help="label counts, comma-separated (default 2500,10000)")
    parser.add_argument("--repeats", type=int, default=3, help="parses per size; the median counts (default 3)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    seconds = {}
    for n in sizes:
        text = many_labels(n)
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            parse_taxonomy(text, f"{n}.yaml")
            runs.append(time.perf_counter() - start)
        seconds[n] = statistics.median(runs)
    report = {"seconds": {str(n): round(s, 3) for n, s in seconds.items()}}
    if len(sizes) == 2:
        report["ratio"] = round(seconds[sizes[1]] / seconds[sizes[0]], 2)
        report["labels_ratio"] = round(sizes[1] / sizes[0], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
