"""Training checkpoints as safetensors plus JSON: tensors of any nested state, the rest as JSON.

Written to a temporary folder and renamed over the previous checkpoint, so a crash mid-write
leaves the last good one in place.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..core.output_paths import as_umask_allows

_TENSOR = "__tensor__"


def _split(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """Replace every tensor of a nested dict/list by a reference, collecting the tensors."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(value, dict):
        return {"__dict__": [[_split(k, tensors, f"{path}.k{i}"), _split(v, tensors, f"{path}.{i}")]
                             for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, (list, tuple)):
        return {"__list__": [_split(v, tensors, f"{path}.{i}") for i, v in enumerate(value)],
                "tuple": isinstance(value, tuple)}
    return value


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        if "__dict__" in value:
            return {_join(k, tensors): _join(v, tensors) for k, v in value["__dict__"]}
        if "__list__" in value:
            items = [_join(v, tensors) for v in value["__list__"]]
            return tuple(items) if value["tuple"] else items
    return value


def save(folder: Path, states: dict[str, Any]) -> None:
    """Write ``states`` (name -> nested state with tensors) as ``folder``, replacing it atomically."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    as_umask_allows(work)  # mkdtemp makes 0700 whatever the umask
    try:
        tensors: dict[str, torch.Tensor] = {}
        skeleton = {name: _split(state, tensors, name) for name, state in states.items()}
        save_file(tensors, str(work / "tensors.safetensors"))
        as_umask_allows(work / "tensors.safetensors")  # safetensors makes 0600
        (work / "state.json").write_text(json.dumps(skeleton), encoding="utf-8")
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(work, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def load(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    old = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and old.exists():  # a crash between the two renames
        os.replace(old, folder)
    tensors = load_file(str(folder / "tensors.safetensors"))
    skeleton = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    return {name: _join(state, tensors) for name, state in skeleton.items()}


def require(checks: list[tuple[bool, str]]) -> None:
    """A settings dataclass's checks, ``(ok, message)``: the first that fails raises ValueError."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def fingerprint(config: Any, free: tuple[str, ...] = ("steps", "checkpoint_every")) -> str:
    """What a checkpoint must match to be resumed: a settings dataclass without the fields that may change
    between a run and its resumption (by default the length of the run)."""
    relevant = {k: v for k, v in asdict(config).items() if k not in free}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def load_matching(folder: Path, expected: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder``, if any; one made with other settings is an error."""
    if not folder.exists() and not folder.with_name(f".{folder.name}.old").exists():
        return None
    state = load(folder)
    if state["fingerprint"] != expected:
        raise ValueError(f"{folder} was made with other settings; use a new run folder or the same settings")
    return state
