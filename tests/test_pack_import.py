"""Importing the pack pulls in no heavy library: ComfyUI imports every pack at start-up, and one that loads
transformers or librosa there slows every start. (How long the import takes is measured by
``benchmarks/bench_import.py``, not asserted here: a wall time depends on the machine and its load.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("transformers", "diffusers", "peft", "bitsandbytes", "librosa", "scipy", "skimage", "sklearn", "soundfile",
         "av", "faiss", "accelerate", "safetensors")

PROBE = """
import importlib.util, json, sys
import torch, numpy, PIL.Image  # ComfyUI has these loaded before custom nodes
spec = importlib.util.spec_from_file_location("comfyui_atelier", sys.argv[1] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[1]])
module = importlib.util.module_from_spec(spec)
sys.modules["comfyui_atelier"] = module
spec.loader.exec_module(module)
print(json.dumps({"modules": sorted({m.split(".")[0] for m in sys.modules}), "nodes": len(module.NODE_CLASS_MAPPINGS)}))
"""


def test_pack_imports_under_any_name_without_heavy_libraries() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert sorted(set(report["modules"]) & set(HEAVY)) == []
    assert report["nodes"] >= 5
