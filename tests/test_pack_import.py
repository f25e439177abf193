"""Importing the pack is cheap and pulls in no heavy library: ComfyUI times every pack at start-up."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json, sys, time
import torch, numpy, PIL.Image  # ComfyUI has these loaded before custom nodes
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("comfyui_atelier", sys.argv[1] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[1]])
module = importlib.util.module_from_spec(spec)
sys.modules["comfyui_atelier"] = module
spec.loader.exec_module(module)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"transformers", "diffusers", "peft", "bitsandbytes",
                                                         "librosa", "scipy", "skimage"})
print(json.dumps({"seconds": time.perf_counter() - start, "heavy": heavy, "nodes": len(module.NODE_CLASS_MAPPINGS)}))
"""


def test_pack_imports_under_any_name_quickly_without_heavy_libraries() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["heavy"] == []
    assert report["nodes"] >= 5
    assert report["seconds"] < 0.3
