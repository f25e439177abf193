"""Finding a transformers model folder on disk: a path, a folder under a model folder, or a Hugging Face cache entry.

Nothing is ever downloaded: a model that is not on disk is an error saying where to put it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .weight_files import check_weight_files, reading

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# what a transformers model needs from its Hugging Face repository: configs, tokenizer files and safetensors weights
# (not the pickle, TensorFlow, Flax or ONNX copies many repositories also hold)
DOWNLOAD_FILES = ("*.json", "*.txt", "*.safetensors")


class HoldsModel:
    """Where a loaded transformers network (the subclass's ``model``) lives, and in what precision."""

    model: Any

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


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


def locate(name: str, folders: Sequence[Path], found: Callable[[Path], bool]) -> Path | None:
    """Where ``name`` is on disk, or None: an absolute path as given; else ``name`` in the first of ``folders``
    that has it, or its last part there (an ``org/model`` id is downloaded to a folder named ``model``); else
    ``name`` as a path relative to the working directory. ``found`` says whether a candidate will do."""
    text = name.strip()
    if not text:
        return None
    path = Path(text).expanduser()
    if path.is_absolute():
        return path if found(path) else None
    names = [text] + ([path.name] if path.name != text else [])
    for folder in folders:
        for candidate in names:
            if found(folder / candidate):
                return folder / candidate
    return path.resolve() if found(path) else None


def places(folders: Sequence[Path]) -> str:
    """The folders searched, and the working directory, for an error message."""
    return ", ".join([repr(str(f)) for f in folders] + [f"the working directory ({str(Path.cwd())!r})"])


def download_command(repo_id: str, folder: Path, files: Sequence[str] = DOWNLOAD_FILES) -> str:
    """The ``hf download`` command that fetches only a transformers model's config, tokenizer and
    safetensors weights from ``repo_id`` into ``folder``."""
    patterns = " ".join(f'--include "{f}"' for f in files)
    return f'hf download {repo_id} {patterns} --local-dir "{folder}"'


def find_model_folder(name: str, folders: Sequence[Path], what: str, example_repo: str) -> Path:
    """The folder ``name`` means: an absolute path, a sub-folder of one of ``folders`` (by its name or, for an
    ``org/name`` id, by its last part), a path relative to the working directory, or an ``org/name`` entry of
    the Hugging Face cache. Raises ModelFolderError naming every place looked in and a command that puts the
    model where the next lookup finds it."""
    text = name.strip()
    if not text:
        raise ModelFolderError(f"no {what} model chosen: give a folder name in {places(folders)} or a Hugging Face "
                               f"id such as {example_repo!r} that is in the local cache")
    found = locate(text, folders, Path.is_dir)
    if found is not None:
        return found
    is_repo_id = text.count("/") == 1 and not Path(text).expanduser().is_absolute()
    if is_repo_id:
        snapshot = _hub_snapshot(text)
        if snapshot is not None:
            return snapshot
    short = Path(text).name
    command = download_command(text if is_repo_id else example_repo, (folders[0] if folders else Path.cwd()) / short)
    raise ModelFolderError(
        f"{what} model {text!r} is not on disk: looked for a folder named {text!r}"
        + (f" or {short!r}" if short != text else "") + f" in {places(folders)}"
        + (f", and for {text!r} in the Hugging Face cache" if is_repo_id else "")
        + f". Put the model folder there, for example with `{command}`; "
        "Atelier never downloads models by itself."
    )


@contextlib.contextmanager
def loading_weights(folder: Path, what: str, example_repo: str) -> Iterator[None]:
    """Around ``from_pretrained``: an empty or cut-short weight file in ``folder`` is named before loading, and a
    damaged file or a pickle ``.bin`` that ``weights_only`` refuses while loading is named with what to do."""
    how = f"copy the whole model folder again, for example with `{download_command(example_repo, folder)}`"
    check_weight_files(folder, f"{what} weights", how)
    pickles = sorted(folder.glob("*.bin"))
    safe_copy = (f"`{download_command(example_repo, folder, ('*.safetensors',))}` puts {example_repo}'s in the "
                 "folder, and they are read in place of the .bin files")
    with reading(pickles[0] if len(pickles) == 1 else folder, f"{what} weights", how, safe_copy):
        yield


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
