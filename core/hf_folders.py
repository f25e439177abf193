"""Finding a transformers model folder on disk: a path, a folder under a model folder, or a Hugging Face cache entry.

Nothing is ever downloaded: a model that is not on disk is an error saying where to put it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class ModelFolderError(FileNotFoundError):
    """A model that is not on disk, or a folder that lacks files it needs; the message says what to do."""


def model_subfolders(folders: Sequence[Path]) -> list[str]:
    """Names of the model folders (those with a ``config.json``) directly inside ``folders``."""
    names = {p.name for folder in folders if folder.is_dir() for p in folder.iterdir() if (p / "config.json").is_file()}
    return sorted(names)


def _hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot of ``repo_id`` in the Hugging Face cache, without touching the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def find_model_folder(name: str, folders: Sequence[Path], what: str, example_repo: str) -> Path:
    """The folder ``name`` means: an existing path, a sub-folder of one of ``folders``, or an
    ``org/name`` entry of the Hugging Face cache. Raises ModelFolderError naming every place looked in."""
    text = name.strip()
    if not text:
        raise ModelFolderError(f"no {what} model chosen: give a folder name in {_places(folders)} or a Hugging Face "
                               f"id such as {example_repo!r} that is in the local cache")
    path = Path(text).expanduser()
    if path.is_absolute() and path.is_dir():
        return path
    for folder in folders:
        if (folder / text).is_dir():
            return folder / text
    if text.count("/") == 1 and not path.is_absolute():
        snapshot = _hub_snapshot(text)
        if snapshot is not None:
            return snapshot
    short = text.rsplit("/", 1)[-1]
    raise ModelFolderError(
        f"{what} model {text!r} is not on disk: looked for a folder of that name in {_places(folders)} and for "
        f"{text!r} in the Hugging Face cache. Put the model folder there, for example with "
        f"`huggingface-cli download {example_repo} --local-dir {folders[0] / short if folders else short}`; "
        "Atelier never downloads models by itself."
    )


def _places(folders: Sequence[Path]) -> str:
    return ", ".join(repr(str(f)) for f in folders) or "(no model folder)"


def check_files(folder: Path, what: str, groups: dict[str, Sequence[str]]) -> None:
    """Each group names files of which at least one must be in ``folder``; the error lists every gap."""
    missing = [f"{need} ({' or '.join(files)})" for need, files in groups.items()
               if not any((folder / f).is_file() for f in files)]
    if missing:
        raise ModelFolderError(f"{what} folder {str(folder)!r} is missing: {'; '.join(missing)}. Copy the whole "
                               "model folder (config, weights, tokenizer and preprocessor files)")


def dtype_argument(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s dtype keyword: ``dtype`` in transformers 5, ``torch_dtype`` before."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def weights_sha256(folder: Path) -> str:
    """SHA-256 naming the weights of a model folder (over each weight file's own hash), to key caches."""
    import hashlib

    from .state_dicts import file_sha256

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".safetensors", ".bin")))
    return hashlib.sha256("|".join(f"{p.name}:{file_sha256(p)}" for p in files).encode()).hexdigest()
