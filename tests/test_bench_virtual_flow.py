"""benchmarks/bench_virtual_flow.py where no GPU is: its options parse, it finds an SD 1.5 file by its header alone,
and without a CUDA GPU it says so and exits 0 having measured nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_virtual_flow.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_virtual_flow
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return bench_virtual_flow


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    (tmp_path / "models").mkdir()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--comfyui", str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nothing measured: no CUDA GPU on this machine")
    assert f"no SD 1.5 checkpoint file ({tmp_path / 'models' / 'checkpoints'}" in done.stdout
    helped = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=600)
    assert helped.returncode == 0 and "--content" in helped.stdout and "--adapter-steps" in helped.stdout


def test_options_and_the_sd15_file_found_by_its_header(bench, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from atelier.nodes import bridge

    from helpers import tiny_sd15_parts, to_ldm_checkpoint

    args = bench.parse_args(["--steps", "5", "--change", "at night", "--content", "photos"])
    assert (args.steps, args.change, args.content, args.samples, args.adapter) == (5, ["at night"], "photos", 1, None)
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in to_ldm_checkpoint(tiny_sd15_parts()).items()}
    save_file({k: v for k, v in state.items() if not k.startswith("first_stage_model.")},
              str(checkpoints / "a_unet_only.safetensors"))  # no VAE: not a whole SD 1.5
    (checkpoints / "b_broken.safetensors").write_bytes(b"\x00" * 4)
    save_file(state, str(checkpoints / "c_tiny_sd15.safetensors"))
    monkeypatch.setattr(bridge, "_comfyui_override", tmp_path)
    found, searched = bench.find_sd15(bench.parse_args([]))
    assert found == checkpoints / "c_tiny_sd15.safetensors" and searched[0] == checkpoints
    assert bench.find_sd15(bench.parse_args(["--model", "x.safetensors"]))[0] == Path("x.safetensors")
