"""Training checkpoints as safetensors plus JSON: tensors of any nested state, the rest as JSON.

Written to a temporary folder and renamed over the previous checkpoint, so a crash mid-write
leaves the last good one in place; the next run clears what a killed save left, and sets aside
(with a note naming it) a checkpoint that cannot be read instead of stopping on it.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..core.shared.output_paths import as_umask_allows
from ..core.shared.state_dicts import read_weights

_TENSOR = "__tensor__"
_FILES = ("tensors.safetensors", "state.json")


class CheckpointUnreadable(ValueError):
    """A checkpoint folder whose files are missing, empty, truncated or not what ``save`` writes."""


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
        for name in _FILES:  # on disk before the rename, so a power cut cannot leave a renamed empty file
            with open(work / name, "r+b") as handle:
                os.fsync(handle.fileno())
        old = _old(folder)
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(work, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _old(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.old")


def load(folder: Path) -> dict[str, Any]:
    """The state saved as ``folder``; CheckpointUnreadable naming the file when it cannot be read."""
    try:
        tensors = read_weights(folder / "tensors.safetensors", "checkpoint tensors")
    except (ValueError, OSError) as exc:  # damaged, or empty and cut short (IncompleteFile)
        raise CheckpointUnreadable(str(exc)) from exc
    path = folder / "state.json"
    try:
        skeleton = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(skeleton, dict) or not isinstance(skeleton.get("fingerprint"), str):
            raise ValueError("not a checkpoint's state")
        return {name: _join(state, tensors) for name, state in skeleton.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:  # truncated, empty, missing or foreign
        raise CheckpointUnreadable(f"cannot read {str(path)!r}: {exc}") from exc


def saved_step(folder: Path) -> int | None:
    """The step the checkpoint in ``folder`` holds (or the previous one a killed save kept), read without
    changing anything; None when neither can be read."""
    for candidate in (folder, _old(folder)):
        try:
            return int(load(candidate)["step"])
        except CheckpointUnreadable:
            continue
    return None


def _set_aside(folder: Path) -> Path:
    aside = folder.with_name(f"{folder.name.lstrip('.')}.unreadable")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(folder, aside)
    return aside


def load_matching(folder: Path, expected: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder``, if any; one made with other settings is an error.

    First clears what a killed save left: its unfinished work folders, and the previous checkpoint kept
    during the swap (put back when the kill came between the two renames, else used only when the newer
    one cannot be read). An unreadable checkpoint is set aside as ``<folder>.unreadable`` with a warning,
    and the run starts from the previous one or from step 0.
    """
    for work in folder.parent.glob(f".{glob.escape(folder.name)}.partial-*"):
        shutil.rmtree(work, ignore_errors=True)
    old = _old(folder)
    state = None
    for candidate in (folder, old):
        if not candidate.exists():
            continue
        try:
            state = load(candidate)
        except CheckpointUnreadable as exc:
            aside = _set_aside(candidate)
            fallback = "the checkpoint saved before it" if candidate == folder and old.exists() else "step 0"
            warnings.warn(f"the training checkpoint {str(candidate)!r} cannot be read ({exc}); it was moved to "
                          f"{str(aside)!r} (delete it when you no longer need it), and this run starts from "
                          f"{fallback}", stacklevel=2)
            continue
        if candidate == old:
            os.replace(old, folder)
        break
    shutil.rmtree(old, ignore_errors=True)
    if state is not None and state["fingerprint"] != expected:
        raise ValueError(f"{folder} was made with other settings; use a new run folder or the same settings")
    return state


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


