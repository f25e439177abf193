"""The bridge inside a (stand-in) ComfyUI: folders, extra_model_paths.yaml entries, progress, cancel."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from atelier.nodes import bridge


@pytest.fixture
def fake_comfy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    state = types.SimpleNamespace(updates=[], interrupted=False)
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    # as ComfyUI leaves it after reading extra_model_paths.yaml with an entry for our key
    fp.folder_names_and_paths = {"atelier_fid": (["/mnt/shared/fid"], set())}
    fp.get_output_directory = lambda: str(tmp_path / "out")
    fp.get_input_directory = lambda: str(tmp_path / "in")
    fp.get_folder_paths = lambda key: fp.folder_names_and_paths[key][0]
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total: int) -> None:
            self.total = total

        def update(self, n: int) -> None:
            state.updates.append(n)

    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")

    def throw() -> None:
        if state.interrupted:
            raise RuntimeError("Processing interrupted")

    mm.throw_exception_if_processing_interrupted = throw
    comfy = types.ModuleType("comfy")
    comfy.utils, comfy.model_management = utils, mm
    for name, module in (("folder_paths", fp), ("comfy", comfy), ("comfy.utils", utils),
                         ("comfy.model_management", mm)):
        monkeypatch.setitem(sys.modules, name, module)
    state.fp = fp
    return state


def test_model_folders_keep_user_paths_first(fake_comfy: types.SimpleNamespace, tmp_path: Path) -> None:
    assert bridge.in_comfyui()
    key = bridge.register_model_folder("fid", {".pth"})
    bridge.register_model_folder("fid", {".pth"})  # idempotent
    paths, exts = fake_comfy.fp.folder_names_and_paths[key]
    assert paths == ["/mnt/shared/fid", str(tmp_path / "models" / "atelier" / "fid")] and exts == {".pth"}
    assert bridge.model_folders(key)[0] == Path("/mnt/shared/fid")
    bridge.register_model_folder("style", {".safetensors"})
    assert fake_comfy.fp.folder_names_and_paths["atelier_style"][0] == [str(tmp_path / "models/atelier/style")]


def test_folders_come_from_comfyui(fake_comfy: types.SimpleNamespace, tmp_path: Path) -> None:
    bridge.set_output_directory(tmp_path / "ignored")
    try:
        assert bridge.output_directory() == tmp_path / "out"
        assert bridge.resolve_input_folder("atelier/originals") == tmp_path / "in" / "atelier" / "originals"
    finally:
        bridge._output_override = None


def test_progress_and_cancel_go_through_comfyui(fake_comfy: types.SimpleNamespace) -> None:
    p = bridge.progress(3)
    p.advance(2)
    p.check_cancel()
    assert fake_comfy.updates == [2]
    fake_comfy.interrupted = True
    with pytest.raises(RuntimeError, match="interrupted"):
        p.check_cancel()


def test_a_missing_model_file_names_comfyuis_folders_and_following_it_finds_the_file(
        fake_comfy: types.SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared" / "fid"
    fake_comfy.fp.folder_names_and_paths["atelier_fid"] = ([str(shared)], set())  # from extra_model_paths.yaml
    key = bridge.register_model_folder("fid", {".pth"})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        bridge.find_model_file(key, "weights.pth", "FID weights", "put it in one of those folders")
    message = str(info.value)
    assert str(shared) in message and str(tmp_path / "models" / "atelier" / "fid") in message
    assert "the working directory" in message
    shared.mkdir(parents=True)
    (shared / "weights.pth").write_bytes(b"x")  # as the message says: into the first folder it names
    assert bridge.find_model_file(key, "weights.pth", "FID weights", "") == shared / "weights.pth"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "other.pth").write_bytes(b"x")
    assert bridge.find_model_file(key, "mine/other.pth", "FID weights", "") == tmp_path / "mine" / "other.pth"
