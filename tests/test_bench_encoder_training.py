"""benchmarks/bench_encoder_training.py at its tiny size on the CPU: both training loops run on the same random
dual encoder and pairs, labelling runs with both encoders, every figure is printed, and without a CUDA GPU the
real-encoder part says it measured nothing."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_encoder_training.py"


def test_the_tiny_benchmark_prints_its_ratios_and_says_what_it_did_not_measure(tmp_path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--threads", "1", "--steps", "4"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for side in ("reference", "ours"):
        assert re.search(rf"^{side}: +\d+\.\d ms/step, peak \d+ MiB$", out, re.M), out
    ratios = re.search(r"^ratio ours/reference: step time (\d+\.\d\d)x, peak memory (\d+\.\d\d)x$", out, re.M)
    assert ratios and all(float(r) > 0 for r in ratios.groups()), out
    assert re.search(r"^labelling: dual encoder \d+\.\d pictures/s, CLIP \d+\.\d pictures/s \(ratio", out, re.M)
    assert out.rstrip().endswith("real fine-tune: nothing measured: no CUDA GPU on this machine "
                                 "(run with --device cuda --model FOLDER)")
