"""How long importing the pack takes, as ComfyUI does it at start-up (torch, numpy and Pillow already
loaded), in fresh processes; also lists any heavy library the import pulled in.

ComfyUI prints each pack's import time at start-up; this measures ours outside ComfyUI. The test suite
checks only that no heavy library is imported (``tests/test_pack_import.py``): a wall time depends on the
machine and its load. Run: ``python benchmarks/bench_import.py [--runs 7]``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json, sys, time
import torch, numpy, PIL.Image
before = set(sys.modules)
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("comfyui_atelier", sys.argv[1] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[1]])
module = importlib.util.module_from_spec(spec)
sys.modules["comfyui_atelier"] = module
spec.loader.exec_module(module)
seconds = time.perf_counter() - start
added = sorted({m.split(".")[0] for m in set(sys.modules) - before} - {"comfyui_atelier"})
print(json.dumps({"seconds": seconds, "added": added, "nodes": len(module.NODE_CLASS_MAPPINGS)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes to time (default 7)")
    args = parser.parse_args()
    reports = [json.loads(subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], capture_output=True, text=True,
                                         check=True).stdout) for _ in range(args.runs)]
    seconds = [r["seconds"] for r in reports]
    print(json.dumps({"runs": args.runs, "median_s": round(statistics.median(seconds), 4),
                      "min_s": round(min(seconds), 4), "max_s": round(max(seconds), 4),
                      "nodes": reports[0]["nodes"], "top_level_modules_added": reports[0]["added"]}, indent=1))


if __name__ == "__main__":
    main()
