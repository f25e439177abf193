"""benchmarks/bench_sound_video.py on a CPU, at a small size: it measures the batched path against the per-frame
loop (the same conditionings), the memory and the flicker, and without a CUDA GPU its --gpu part says so and it
exits 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_sound_video.py"


def test_the_benchmark_measures_and_without_a_gpu_says_so(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--seconds", "3", "--long-seconds", "4", "--gpu"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["speed"]["frames"] == 30 and results["speed"]["largest_difference"] < 1e-4
    assert results["memory"]["frames"] == 40 and results["memory"]["peak_added_mb"] >= 0
    for kind in ("steady_strength", "following_loudness"):
        steps = [results["flicker"][kind][k] for k in ("0s", "0.25s", "0.5s", "1s")]
        assert steps == sorted(steps, reverse=True), (kind, steps)
    steady = results["flicker"]["steady_strength"]
    assert steady["1s"] < 0.5 * steady["0s"]
    assert results["gpu"] == "nothing measured on a GPU: no CUDA GPU on this machine"
