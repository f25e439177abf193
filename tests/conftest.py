"""Shared fixtures: the pack imported as ``atelier`` and a private output folder."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # helpers.py
from atelier_cli import load_pack  # noqa: E402

load_pack()


@pytest.fixture
def output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from atelier.nodes import bridge

    out = tmp_path / "output"
    monkeypatch.setattr(bridge, "_output_override", out)
    return out
