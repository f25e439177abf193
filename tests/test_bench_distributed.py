"""benchmarks/bench_distributed.py at a tiny size, so it cannot rot: 1 process against 2 gloo processes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_distributed.py"


def test_the_benchmark_runs_at_a_tiny_size_and_prints_its_ratio() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--resolution", "64", "--steps", "3",
                           "--warmup", "1", "--threads", "2"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "CPU, global batch 4, model tiny, 64 px, 2 threads in all"
    assert re.fullmatch(r"1 process \(2 threads\): \d+\.\d ms/step", lines[1])
    assert re.fullmatch(r"2 processes \(gloo, 1 thread each\): \d+\.\d ms/step", lines[2])
    ratio = float(re.fullmatch(r"ratio 2 processes / 1 process: (\d+\.\d\d)", lines[3]).group(1))
    assert ratio > 0
