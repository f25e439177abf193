"""Reading weight files safely and saying exactly how a state dict differs from what a network needs."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks (weight files run to gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of the weights themselves (names, dtypes, shapes and bytes), for models that come without a file."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        # flattened first: a 0-d tensor (BatchNorm's counter) cannot be viewed as bytes
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class IncompleteFile(FileNotFoundError):
    """An empty or cut-short weights file: as good as missing (an interrupted save or copy)."""


def check_complete(path: Path, what: str) -> None:
    """Raise ``IncompleteFile`` naming ``path`` when a weights file is empty, or a ``.safetensors`` file shorter
    than its own header says (a killed save or an unfinished copy): it reads as missing, not as damaged weights."""
    import struct

    size = path.stat().st_size
    need = 1
    if path.suffix.lower() == ".safetensors" and size > 0:
        need = 8  # the header's length, then the header, then the tensors' bytes
        if size >= 8:
            with open(path, "rb") as handle:
                header_len = struct.unpack("<Q", handle.read(8))[0]
                if header_len > 100_000_000:  # safetensors' own limit: not a safetensors file at all
                    return
                need += header_len
                if size >= need:
                    try:
                        header = json.loads(handle.read(need - 8))
                        need += max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                                    default=0)
                    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                        return  # malformed rather than cut short: the reader says so
    if size < need:
        state = "is empty (0 bytes)" if size == 0 else f"is cut short ({size} of {need} bytes)"
        raise IncompleteFile(f"{what} {str(path)!r} {state}: a save or copy was interrupted. Delete it and train or "
                             "copy it again.")


def read_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt`` state dict read with ``weights_only``."""
    if path.is_file():
        check_complete(path, what)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, refused globals, truncated files: all mean "not this file"
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} is not a state dict of tensors ({what})")
    return dict(state)


def mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """'' when ``state`` has exactly the keys and shapes of ``expected``, else which keys are missing,
    unexpected or of another shape (the first few of each)."""
    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(state[k].shape)} not {tuple(expected[k].shape)}" for k in expected
                   if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = [f"{len(missing)} missing ({few(missing)})" if missing else "",
                f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
                f"{len(wrong_shape)} with another shape ({few(wrong_shape)})" if wrong_shape else ""]
    return "; ".join(p for p in problems if p)


def read_tagged(path: Path, kind: str, what: str, how: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and tensors of a safetensors file the pack wrote with ``atelier_kind == kind``; a missing file, or
    any other file, is an error naming ``what`` it should be and ``how`` to get one."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no {what} file {str(path)!r}")
    check_complete(path, what)
    try:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
    except Exception as exc:  # a truncated or foreign file: all mean "not this file"
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc}") from exc
    if meta.get("atelier_kind") != kind:
        raise ValueError(f"{str(path)!r} is not an Atelier {what} ({how})")
    return meta, read_weights(path, what)


def load_exactly(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``module`` when it has exactly its keys and shapes, else say what differs."""
    problem = mismatch(module.state_dict(), state)
    if problem:
        raise ValueError(f"{str(path)!r} does not fit its own settings: {problem}")
    module.load_state_dict(state)


def metadata_strings(values: dict[str, object]) -> dict[str, str]:
    """Metadata as safetensors wants it: every value a string (JSON for anything but str)."""
    return {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in values.items()}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write beside ``path`` under a hidden temporary name, then rename into place."""
    tmp = _write_temp(path, tensors, metadata)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_temp(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """The finished file under a hidden temporary name beside ``path`` (``.<name>.<pid>.<random>.part``, which
    ComfyUI's model lists never show), with the mode the umask gives an ordinary file (safetensors makes 0600)."""
    from safetensors.torch import save_file

    from .output_paths import as_umask_allows, temp_path

    if not all(isinstance(v, str) for v in metadata.values()):
        raise TypeError("safetensors metadata values must all be strings")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path.parent, path.name)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        _sort_header(tmp)
        as_umask_allows(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _sort_header(path: Path) -> None:
    """Rewrite the JSON header with its keys sorted, in place: safetensors orders metadata by a per-process hash,
    so one seed's run would otherwise give files that differ in bytes (the header keeps its length)."""
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        raw = handle.read(size)
        header = json.loads(raw)
        if "__metadata__" in header:
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:  # never: the same keys and values, written as compactly as safetensors does
            return
        handle.seek(8)
        handle.write(text + b" " * (size - len(text)))  # the format pads its header with spaces


def _claim(tmp: Path, path: Path) -> bool:
    """Give the finished ``tmp`` the name ``path`` unless that name is taken (then False, ``tmp`` untouched).
    A hard link takes a name without ever replacing one; where a file system has none, Windows' rename
    refuses to replace, and elsewhere an exclusive create reserves the name the rename then fills."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:  # no hard links here (FAT, some network shares)
        if os.name == "nt":
            try:
                os.rename(tmp, path)
            except FileExistsError:
                return False
            return True
        try:
            with open(path, "x"):
                pass
        except FileExistsError:
            return False
        os.replace(tmp, path)
        return True
    tmp.unlink()
    return True


def save_new_file(folder: Path, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, object],
                  what: str = "name") -> Path:
    """Write ``<name>.safetensors`` into ``folder`` under a safe name that never replaces an existing file
    (``name_2``, ``name_3``... when it is taken). The file is finished under a hidden temporary name first,
    so a kill never leaves an empty or partial file under a model's name; what killed runs left is removed."""
    from .output_paths import remove_stale, safe_name

    stem = safe_name(name, what)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder, ".*.safetensors.*.part")
    tmp = _write_temp(folder / f"{stem}.safetensors", tensors, metadata_strings(metadata))
    try:
        number = 1
        while not _claim(tmp, path := folder / (f"{stem}.safetensors" if number == 1
                                                 else f"{stem}_{number}.safetensors")):
            number += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
