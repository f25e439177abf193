"""Embedding and captioning a collection on a Ray cluster (a local one of 2 CPU workers) equals one process."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.core.captions.blip2 import CaptionSettings, caption_folder, load_blip2
from atelier.core.curator import ray_collection
from atelier.core.curator.clip_model import load_clip
from atelier.core.curator.image_index import index_folder
from atelier.core.curator.ray_collection import Cluster, RayUnavailable, caption_collection, embed_collection
from atelier.core.shared.progress import Cancelled, SilentProgress

from helpers import synthetic_picture, tiny_blip2_folder, tiny_clip_folder

ROOT = Path(__file__).resolve().parents[1]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (CI installs it)")
TWO = Cluster(workers=2)
SAMPLED = CaptionSettings(max_new_tokens=4, min_new_tokens=4, num_beams=1, sampling=True, seed=7)  # seeds matter


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    (root / "clip").mkdir()
    (root / "blip2").mkdir()
    return {"clip": tiny_clip_folder(root / "clip"), "blip2": tiny_blip2_folder(root / "blip2")}


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """11 readable pictures (one a copy of another, one in a sub-folder, one Korean name) and one truncated."""
    folder = tmp_path / "컬렉션"
    (folder / "sub").mkdir(parents=True)
    for kind in range(9):
        name = "바다 풍경.png" if kind == 4 else f"work_{kind:02d}.{'jpg' if kind % 3 == 0 else 'png'}"
        Image.fromarray(synthetic_picture(kind, seed=kind, size=40 + 4 * kind)).save(folder / name)
    Image.fromarray(synthetic_picture(2, seed=99, size=48)).save(folder / "sub" / "deep.png")
    shutil.copy(folder / "work_01.png", folder / "copy_of_01.png")
    data = (folder / "work_02.png").read_bytes()
    (folder / "broken.png").write_bytes(data[: len(data) // 2])  # the header reads; decoding fails on a worker
    return folder


def _nothing_under(path: Path) -> bool:
    return not path.exists() or not any(path.rglob("*"))


@needs_ray
def test_ray_embeddings_equal_index_folder_and_fill_its_store(ray_cluster, models: dict[str, Path],
                                                              collection: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    progress = SilentProgress(12)
    index = embed_collection(models["clip"], collection, store, TWO, batch_size=3, recursive=True, progress=progress)
    clip = load_clip(models["clip"])
    single = index_folder(clip, collection, None, recursive=True)
    assert [p.name for p in index.files] == [p.name for p in single.files] and len(index.files) == 11
    assert "바다 풍경.png" in {p.name for p in index.files}
    torch.testing.assert_close(index.embeddings, single.embeddings, atol=1e-5, rtol=1e-4)
    assert [Path(s.path).name for s in index.skipped] == ["broken.png"]
    assert (index.encoded, index.cached, progress.done) == (10, 0, 12)  # the copy shares its original's vector
    # the command line, again: everything comes from the store, nothing runs on the workers
    assert main(["embed", str(collection), "--recursive", "--clip", str(models["clip"]), "--cache", str(store),
                 "--output", str(tmp_path / "output"), "--ray", "--workers", "2", "--batch-size", "3"]) == 0
    assert "11 picture(s): 0 encoded, 10 from cache" in capsys.readouterr().out
    later = index_folder(clip, collection, store, recursive=True)  # the single-process path reads the same store
    assert (later.encoded, later.cached) == (0, 10)
    torch.testing.assert_close(later.embeddings, single.embeddings, atol=1e-5, rtol=1e-4)


class _CancelOnceDone(SilentProgress):
    """Cancel pressed once ``steps`` pictures are done (however many a returning batch holds)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def check_cancel(self) -> None:
        if self.done >= self.steps:
            raise Cancelled("user pressed cancel")


@needs_ray
def test_a_cancel_between_batches_stops_and_keeps_what_came_back(ray_cluster, models: dict[str, Path],
                                                                 collection: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    progress = _CancelOnceDone(3)
    with pytest.raises(Cancelled):
        embed_collection(models["clip"], collection, store, TWO, batch_size=2, recursive=True, progress=progress)
    assert 3 <= progress.done < 12
    later = index_folder(load_clip(models["clip"]), collection, store, recursive=True)
    assert later.cached >= 2 and later.encoded >= 1  # what came back before the cancel is in the store
    import ray

    for _ in range(120):  # the stopped run's workers leave (asynchronously) and free both CPUs of the cluster
        if ray.available_resources().get("CPU") == 2:
            break
        time.sleep(0.5)
    assert ray.available_resources().get("CPU") == 2


@needs_ray
def test_ray_captions_equal_caption_folder(ray_cluster, models: dict[str, Path], collection: Path,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (collection / "work_05.txt").write_text("kept as it is\n", encoding="utf-8")
    alone = shutil.copytree(collection, tmp_path / "alone")  # the same collection for the single process
    blip = load_blip2(models["blip2"])
    expected = caption_folder(blip, alone, SAMPLED, trigger="sks", batch_size=3, recursive=True)
    progress = SilentProgress(12)
    report = caption_collection(models["blip2"], collection, SAMPLED, TWO, trigger="sks", batch_size=3,
                                recursive=True, progress=progress)
    assert report.captions == expected.captions and len(report.captions) == 10
    assert "바다 풍경.png" in report.captions and report.captions["바다 풍경.png"].startswith("sks")
    assert [Path(s.path).name for s in report.skipped] == ["broken.png"] and progress.done == 12
    for name in [*report.captions, "work_05.png"]:
        stem = Path(name).with_suffix(".txt")
        assert (collection / stem).read_text(encoding="utf-8") == (alone / stem).read_text(encoding="utf-8")
    assert len({*report.captions.values()}) > 1  # the tiny model does not say the same thing of every picture
    assert main(["caption", str(collection), "--recursive", "--blip2", str(models["blip2"]), "--ray"]) == 0
    assert "wrote 0 caption(s), kept 11 existing" in capsys.readouterr().out  # the command line keeps them all


def test_without_ray_the_command_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, models: dict[str, Path],
                                                        collection: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as on an install without it
    with pytest.raises(RayUnavailable, match=r'Ray is not installed: pip install "ray\[data\]"'):
        embed_collection(models["clip"], collection, tmp_path / "store", TWO)
    assert _nothing_under(tmp_path / "store")
    out = tmp_path / "output"
    assert main(["embed", str(collection), "--clip", str(models["clip"]), "--output", str(out), "--ray"]) == 2
    assert 'pip install "ray[data]"' in capsys.readouterr().err
    assert main(["caption", str(collection), "--blip2", str(models["blip2"]), "--ray", "--workers", "2"]) == 2
    assert 'pip install "ray[data]"' in capsys.readouterr().err
    assert _nothing_under(out) and not list(collection.glob("*.txt"))


def test_embed_without_ray_fills_the_store_in_one_process(models: dict[str, Path], collection: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "output"
    assert main(["embed", str(collection), "--clip", str(models["clip"]), "--output", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "10 picture(s): 9 encoded, 0 from cache, 1 with the same content as another" in printed
    assert "skipped broken.png" in printed and str(out / "atelier" / "clip_cache") in printed
    later = index_folder(load_clip(models["clip"]), collection, out / "atelier" / "clip_cache")
    assert (later.encoded, later.cached) == (0, 9)  # not recursive: sub/deep.png is not in it


@needs_ray
def test_a_ray_address_where_nothing_answers_is_a_clear_error_and_nothing_is_written(
        models: dict[str, Path], collection: Path, tmp_path: Path) -> None:
    # a fresh process: this one may hold the test cluster, which a run joins instead of starting its own
    out = tmp_path / "output"
    run = subprocess.run([sys.executable, str(ROOT / "atelier_cli.py"), "embed", str(collection), "--clip",
                          str(models["clip"]), "--output", str(out), "--ray", "127.0.0.1:9"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "no Ray cluster answers at '127.0.0.1:9'" in run.stderr and "ray start --head" in run.stderr
    assert _nothing_under(out)


@needs_ray
def test_asking_for_gpus_the_cluster_lacks_is_refused_before_anything_is_written(
        ray_cluster, models: dict[str, Path], collection: Path, tmp_path: Path) -> None:
    with pytest.raises(RayUnavailable, match=r"asks for 1 GPU\(s\) and the Ray cluster has 0: give "
                       r"--gpus-per-worker 0 or less"):  # Ray itself would wait for them for ever
        embed_collection(models["clip"], collection, tmp_path / "store", Cluster(workers=2, gpus_per_worker=1))
    assert _nothing_under(tmp_path / "store")
    with pytest.raises(RuntimeError, match="8bit runs through bitsandbytes on a CUDA GPU"):
        caption_collection(models["blip2"], collection, SAMPLED, TWO, precision="8bit")
    assert not list(collection.rglob("*.txt"))


def test_a_worker_failure_ends_the_run_with_the_workers_own_message() -> None:
    class Dataset:  # as Ray Data reports a worker whose model failed to load: its traceback, the error last
        def iter_batches(self, **_: object):
            yield {"digest": ["a"]}
            raise RuntimeError("The actor died because of an error raised in its creation task\n  File x, line 1\n"
                               "WeightFileError: cannot read CLIP weights 'model.safetensors': it is damaged\n")

    batches = ray_collection._batches(Dataset())
    assert next(batches) == {"digest": ["a"]}
    with pytest.raises(RuntimeError, match=r"^a Ray worker failed, so the run stopped \(what came back before is "
                       r"kept\): WeightFileError: cannot read CLIP weights 'model.safetensors': it is damaged$"):
        next(batches)


def test_cluster_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1"):
        Cluster(workers=0).check()
    with pytest.raises(ValueError, match="gpus_per_worker"):
        Cluster(gpus_per_worker=-1).check()
    assert (Cluster().device, Cluster(gpus_per_worker=0.5).device) == ("cpu", "cuda")
