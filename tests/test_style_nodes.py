"""The style nodes as ComfyUI calls them, with tiny AdaIN files in models/atelier/adain."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from atelier.core.dataset.folder_dataset import load_folder
from atelier.nodes.augmentation import DatasetInfo
from atelier.nodes.style import (
    AtelierLoadAdaIN,
    AtelierStyleAugment,
    AtelierStylize,
    AtelierTrainAdaINDecoder,
    parse_weights,
)

from helpers import SAMPLES, as_batch, node_defaults, photo, tiny_adain_files


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> Path:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("ATELIER_INPUT_DIR", str(tmp_path / "input"))
    folder = tmp_path / "models" / "atelier" / "adain"
    tiny_adain_files(folder)
    styles = tmp_path / "input" / "atelier" / "styles"
    styles.mkdir(parents=True)
    for name in ("coffee.webp", "rocket.png"):
        shutil.copy(SAMPLES / name, styles / name)
    return folder


def _load():
    return AtelierLoadAdaIN().load("vgg_normalised.pth", "decoder.pth")[0]


def test_the_loader_lists_the_folder_and_names_a_missing_file(models: Path) -> None:
    choices = AtelierLoadAdaIN.INPUT_TYPES()["required"]["decoder"][0]
    assert "decoder.pth" in choices and "vgg_normalised.pth" in choices
    assert _load().channels == 32
    with pytest.raises(FileNotFoundError, match=r"'other\.pth' is not in .*atelier/adain"):
        AtelierLoadAdaIN().load("vgg_normalised.pth", "other.pth")


def test_stylize_two_styles_with_a_mask(models: Path) -> None:
    content = as_batch(photo("chelsea.jpg", (70, 50)), photo("astronaut.tif", (70, 50)))
    styles = as_batch(photo("coffee.webp", (48, 48)), photo("rocket.png", (48, 48)))
    mask = torch.zeros(1, 50, 70)
    mask[:, :, :35] = 1
    node = AtelierStylize()
    values = node_defaults(AtelierStylize)
    (out,) = node.run(_load(), content, styles, **{**values, "style_weights": "1, 3"}, mask=mask)
    assert out.shape == content.shape and out.dtype == torch.float32
    (single,) = node.run(_load(), content, styles[:1], **values)
    assert not torch.allclose(out, single)
    with pytest.raises(ValueError, match="numbers separated by commas"):
        node.run(_load(), content, styles, **{**values, "style_weights": "a lot"})
    assert parse_weights(" 0.7; 0.3 ") == [0.7, 0.3] and parse_weights("") is None


def test_style_augmentation_writes_a_dataset_the_lora_trainer_reads(models: Path, output_dir: Path) -> None:
    images = as_batch(photo("chelsea.jpg", (64, 48)), photo("astronaut.tif", (64, 48)))
    info = DatasetInfo(["cat", "astronaut"], ["a cat", None], ["cat.jpg", "astronaut.tif"])
    values = node_defaults(AtelierStyleAugment, subfolder="atelier/styled", direction="restyle_originals")
    preview, folder, files, report = AtelierStyleAugment().run(_load(), images, **values, dataset=info)
    assert report == "wrote 6 images (4 virtual): 2 content pictures in the style of 2 style pictures"
    folder = Path(folder)
    assert folder == output_dir / "atelier" / "styled" / "v001" and files == 2 + 2 * 2
    names = sorted(p.name for p in folder.glob("*.png"))
    assert names == ["astronaut.png", "astronaut__style_coffee.png", "astronaut__style_rocket.png", "cat.png",
                     "cat__style_coffee.png", "cat__style_rocket.png"]
    assert (folder / "cat__style_rocket.txt").read_text(encoding="utf-8") == "a cat\n"
    assert not (folder / "astronaut__style_coffee.txt").exists()
    records = [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    styled = [r for r in records if r["variant"].startswith("style_")]
    assert {(r["content"], r["style"]) for r in styled} == {(c, s) for c in ("cat", "astronaut")
                                                           for s in ("coffee", "rocket")}
    assert all(r["parameters"]["alpha"] == 1.0 and r["parameters"]["method"] == "adain" for r in styled)
    assert preview.shape == (2, 48, 64, 3)  # the first original's two stylized copies
    assert len(load_folder(folder).images) == 6  # what Atelier Train LoRA reads
    # a seeded sample of the pairs, into the next version
    _, again, count, _ = AtelierStyleAugment().run(_load(), images, **{**values, "pairs": 3, "seed": 5,
                                                                      "include_original": False}, dataset=info)
    assert Path(again).name == "v002" and count == 3


def _content_folder(root: Path) -> Path:
    content = root / "input" / "atelier" / "content"
    content.mkdir(parents=True)
    for name in ("chelsea.jpg", "rocket.png"):
        shutil.copy(SAMPLES / name, content / name)
    (content / "chelsea.txt").write_text("a cat", encoding="utf-8")
    return content


def test_style_augmentation_paints_the_content_folder_in_the_originals_style(models: Path, output_dir: Path,
                                                                             tmp_path: Path) -> None:
    _content_folder(tmp_path)
    images = as_batch(photo("coffee.webp", (48, 48)), photo("astronaut.tif", (48, 48)))
    info = DatasetInfo(["작품", "moon"], ["작품 하나", None], ["작품.png", "moon.png"])
    values = node_defaults(AtelierStyleAugment, trigger="sks_style")  # a fresh node: in_originals_style
    assert values["direction"] == "in_originals_style" and values["content_folder"] == "atelier/content"
    preview, folder, files, report = AtelierStyleAugment().run(_load(), images, **values, dataset=info)
    folder = Path(folder)
    assert report == "wrote 6 images (4 virtual): 2 content pictures in the style of 2 originals"
    assert sorted(p.name for p in folder.glob("*.png")) == [
        "chelsea__in_moon.png", "chelsea__in_작품.png", "moon.png", "rocket__in_moon.png", "rocket__in_작품.png",
        "작품.png"]
    assert (folder / "chelsea__in_작품.txt").read_text(encoding="utf-8") == "sks_style, a cat\n"
    assert (folder / "rocket__in_moon.txt").read_text(encoding="utf-8") == "sks_style\n"
    assert (folder / "작품.txt").read_text(encoding="utf-8") == "작품 하나\n"
    chelsea = load_folder(SAMPLES).images[1].image
    assert preview.shape == (2, *chelsea.shape)  # the first content picture in each original's style
    # the whole set as one style, weighted; a weight list of another length is refused before any work
    mixed = {**values, "whole_set": True, "style_weights": "3, 1", "include_original": False}
    _, folder2, count, report = AtelierStyleAugment().run(_load(), images, **mixed, dataset=info)
    assert count == 2 and report.endswith("2 originals, mixed as one")
    assert (Path(folder2) / "rocket__in_all_originals.png").exists()
    with pytest.raises(ValueError, match=r"1 style weight\(s\) for 2 original\(s\)"):
        AtelierStyleAugment().run(_load(), images, **{**mixed, "style_weights": "1"}, dataset=info)
    with pytest.raises(ValueError, match="turn on 'whole_set'"):
        AtelierStyleAugment().run(_load(), images, **{**values, "style_weights": "1, 2"}, dataset=info)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["v001", "v002"]


def test_style_augmentation_content_folder_errors_and_skips(models: Path, output_dir: Path, tmp_path: Path) -> None:
    from test_bad_inputs_training import truncated

    images = as_batch(photo("coffee.webp", (48, 48)))
    empty = tmp_path / "input" / "atelier" / "content"
    empty.mkdir(parents=True)
    with pytest.raises(ValueError, match=f"content_folder: image folder '{empty}' holds no image.*photographs"):
        AtelierStyleAugment().run(_load(), images, **node_defaults(AtelierStyleAugment))
    with pytest.raises(ValueError, match="give a content_folder"):
        AtelierStyleAugment().run(_load(), images, **node_defaults(AtelierStyleAugment, content_folder=" "))
    truncated(empty / "부서진.jpg", "JPEG")
    with pytest.raises(ValueError, match="content_folder: no readable image in .*부서진.jpg"):
        AtelierStyleAugment().run(_load(), images, **node_defaults(AtelierStyleAugment))
    assert not (output_dir / "atelier" / "styled").exists()  # refused before any work
    shutil.copy(SAMPLES / "rocket.png", empty / "rocket.png")
    *_, count, report = AtelierStyleAugment().run(_load(), images, **node_defaults(AtelierStyleAugment))
    lines = report.splitlines()
    assert count == 2 and lines[0] == "wrote 2 images (1 virtual): 1 content pictures in the style of 1 originals"
    assert len(lines) == 2 and lines[1].startswith("skipped 부서진.jpg: ") and "truncated" in lines[1]


def test_style_augmentation_needs_styles(models: Path) -> None:
    images = as_batch(photo("chelsea.jpg", (64, 48)))
    values = node_defaults(AtelierStyleAugment, style_folder="missing", direction="restyle_originals")
    with pytest.raises(ValueError, match="style_folder: image folder .*missing' does not exist"):
        AtelierStyleAugment().run(_load(), images, **values)
    with pytest.raises(ValueError, match="RGBA"):
        AtelierStyleAugment().run(_load(), images, **values, styles=torch.rand(1, 32, 32, 4))


def test_train_decoder_saves_into_the_adain_folder_and_resumes(models: Path, output_dir: Path) -> None:
    values = node_defaults(AtelierTrainAdaINDecoder, content_folder=str(SAMPLES), steps=3, batch_size=2,
                           resize_to=48, crop=32, checkpoint_every=2, preview_every=2, name="my style")
    model, path, curve, report = AtelierTrainAdaINDecoder().train(**values)
    assert report == "trained 3 steps"
    assert Path(path) == models / "my_style.safetensors" and curve.shape[-1] == 3
    runs = list((output_dir / "atelier" / "adain_runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "loss.png").exists()
    assert "my_style.safetensors" in AtelierLoadAdaIN.INPUT_TYPES()["required"]["decoder"][0]
    loaded = AtelierLoadAdaIN().load("vgg_normalised.pth", "my_style.safetensors")[0]
    x = torch.randn(1, 32, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(x), model.decode(x))
    _, second, _, _ = AtelierTrainAdaINDecoder().train(**values)  # queued again: the finished run is reused
    assert Path(second).name == "my_style_2.safetensors" and len(list(runs[0].parent.iterdir())) == 1
    with pytest.raises(ValueError, match="holds no image|does not exist"):
        AtelierTrainAdaINDecoder().train(**{**values, "style_folder": "nowhere"})


def test_train_decoder_reports_the_pictures_it_skipped(models: Path, output_dir: Path, tmp_path: Path) -> None:
    from test_bad_inputs_training import mixed_folder

    content = mixed_folder(tmp_path / "input" / "atelier" / "mixed")
    values = node_defaults(AtelierTrainAdaINDecoder, content_folder="atelier/mixed", steps=2, batch_size=2,
                           resize_to=48, crop=32, preview_every=0)
    *_, report = AtelierTrainAdaINDecoder().train(**values)
    lines = report.splitlines()
    assert lines[0] == "trained 2 steps" and len(lines) == 3
    assert lines[1].startswith("skipped broken.jpg: cannot decode") and lines[2].startswith("skipped cut.png: ")
    assert (content / "broken.jpg").exists()  # skipped, never touched


def test_style_augmentation_lists_the_style_pictures_it_skipped(models: Path, tmp_path: Path) -> None:
    from test_bad_inputs_training import truncated

    truncated(tmp_path / "input" / "atelier" / "styles" / "스타일.jpg", "JPEG")
    images = as_batch(photo("chelsea.jpg", (64, 48)))
    values = node_defaults(AtelierStyleAugment, direction="restyle_originals")
    *_, count, report = AtelierStyleAugment().run(_load(), images, **values)
    lines = report.splitlines()
    assert count == 3 and lines[0] == "wrote 3 images (2 virtual): 1 content pictures in the style of 2 style pictures"
    assert len(lines) == 2 and lines[1].startswith("skipped 스타일.jpg: ") and "truncated" in lines[1]
