"""The node classes exercised directly, as ComfyUI would call them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import atelier
from atelier.core.shared.progress import SilentProgress
from atelier.nodes import augmentation as nodes
from atelier.nodes import bridge

from helpers import SAMPLES, node_defaults


@pytest.fixture
def originals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "input" / "atelier" / "originals"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.md"))
    monkeypatch.setenv("ATELIER_INPUT_DIR", str(tmp_path / "input"))
    return folder


def test_every_node_is_registered_with_a_clear_name_category_and_tooltips() -> None:
    # what the node menu, the tooltips and the help pages (web/docs, made from these) show
    assert atelier.NODE_CLASS_MAPPINGS.keys() == atelier.NODE_DISPLAY_NAME_MAPPINGS.keys()
    for node_id, cls in atelier.NODE_CLASS_MAPPINGS.items():
        name = atelier.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert node_id.startswith("Atelier") and name.startswith("Atelier ") and name.strip() == name, node_id
        assert cls.CATEGORY.startswith("Atelier/") and cls.CATEGORY.strip("/") != "Atelier", node_id
        assert cls.DESCRIPTION.strip() and cls.EXAMPLE.strip(), f"{node_id} needs a DESCRIPTION and an EXAMPLE"
        assert callable(getattr(cls(), cls.FUNCTION))
        outputs = len(cls.RETURN_TYPES)
        assert len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS) == outputs, f"{node_id} outputs unnamed"
        assert all(tip.strip() for tip in cls.OUTPUT_TOOLTIPS) and len(set(cls.RETURN_NAMES)) == outputs, node_id
        inputs = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for name, spec in inputs.get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip", "").strip(), f"{node_id}.{name} has no tooltip"
    names = list(atelier.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert len(set(names)) == len(names)


def test_load_folder_resize_and_fill_then_multiply(originals: Path, output_dir: Path) -> None:
    load = nodes.AtelierLoadImageFolder()
    images, dataset, count, report = load.load(**node_defaults(
        nodes.AtelierLoadImageFolder, folder="atelier/originals", resize="longer_edge", size=128, pad="square",
        pad_fill="most_frequent"))
    assert images.shape == (4, 128, 128, 3) and count == 4 and images.dtype == torch.float32
    assert dataset.stems == ["astronaut", "chelsea", "coffee", "rocket"] and "loaded 4" in report
    preview, folder, files = nodes.AtelierMultiplyDataset().run(
        **node_defaults(nodes.AtelierMultiplyDataset, images=images, dataset=dataset, vertical_flip=False))
    assert files == 4 * 9 and Path(folder) == output_dir / "atelier" / "augmented" / "v001"
    assert preview.shape == (9, 128, 128, 3) and torch.allclose(preview[0], images[0], atol=1 / 255)
    assert (Path(folder) / "chelsea__gray_scale.txt").read_text().startswith("a tabby cat")
    assert not list(Path(folder).glob("*vertical_flip*"))


def test_load_writes_png_copies_when_asked(originals: Path, output_dir: Path) -> None:
    *_, report = nodes.AtelierLoadImageFolder().load(**node_defaults(
        nodes.AtelierLoadImageFolder, folder=str(originals), save_png_copies=True, resize="exact",
        width=64, height=64))
    copies = output_dir / "atelier" / "png" / "v001"
    assert sorted(p.name for p in copies.glob("*.png")) == ["astronaut.png", "chelsea.png", "coffee.png",
                                                             "rocket.png"]
    assert len((copies / "manifest.jsonl").read_text().splitlines()) == 4 and str(copies) in report


def test_load_refuses_mixed_sizes_before_decoding(originals: Path, output_dir: Path) -> None:
    with pytest.raises(ValueError, match="different sizes"):
        nodes.AtelierLoadImageFolder().load(**node_defaults(nodes.AtelierLoadImageFolder, folder=str(originals)))


def test_several_folders_one_per_line_load_as_one_set(originals: Path, tmp_path: Path) -> None:
    # how a workflow trains on a Style Augmentation version and a Virtual Data version together
    second = tmp_path / "input" / "가상"
    second.mkdir()
    shutil.copy(originals / "rocket.png", second / "로켓.png")
    (second / "로켓.txt").write_text("로켓, 가상 데이터", encoding="utf-8")
    values = node_defaults(nodes.AtelierLoadImageFolder, folder=f"atelier/originals\n\n{second}\natelier/originals\n",
                           resize="exact", width=32, height=32)
    images, dataset, count, report = nodes.AtelierLoadImageFolder().load(**values)
    assert count == 5 and images.shape == (5, 32, 32, 3) and "loaded 5" in report
    assert dataset.stems == ["astronaut", "chelsea", "coffee", "rocket", "로켓"]
    assert dataset.captions[-1] == "로켓, 가상 데이터"
    assert torch.equal(images[3], images[4])
    before = nodes.AtelierLoadImageFolder.IS_CHANGED(folder=values["folder"], recursive=False)
    (second / "로켓.txt").write_text("바뀐 캡션", encoding="utf-8")
    assert nodes.AtelierLoadImageFolder.IS_CHANGED(folder=values["folder"], recursive=False) != before
    with pytest.raises(ValueError, match="없는"):
        nodes.AtelierLoadImageFolder().load(**{**values, "folder": f"atelier/originals\n{tmp_path / '없는'}"})


def test_is_changed_follows_the_folder_contents(originals: Path) -> None:
    before = nodes.AtelierLoadImageFolder.IS_CHANGED(folder=str(originals), recursive=False)
    (originals / "chelsea.txt").write_text("another caption")
    assert nodes.AtelierLoadImageFolder.IS_CHANGED(folder=str(originals), recursive=False) != before


@pytest.mark.parametrize("node_id", [k for k, v in atelier.NODE_CLASS_MAPPINGS.items() if hasattr(v, "IS_CHANGED")])
def test_is_changed_takes_a_linked_input_as_none(node_id: str, originals: Path) -> None:
    # ComfyUI calls IS_CHANGED with constants only: every input fed by a link arrives as None, and any input
    # can be linked (a widget converted to an input)
    cls = atelier.NODE_CLASS_MAPPINGS[node_id]
    inputs = cls.INPUT_TYPES()
    names = [*inputs.get("required", {}), *inputs.get("optional", {})]
    values = node_defaults(cls, **({"folder": str(originals)} if "folder" in names else {}))
    for name in names:
        result = cls.IS_CHANGED(**{**values, name: None})
        hash(result)  # ComfyUI compares and stores it
    if node_id == "AtelierLoadImageFolder":  # the folder cannot be read: run every time (NaN never equals itself)
        result = cls.IS_CHANGED(**{**values, "folder": None})
        assert result != result


def test_recipe_and_augment_are_seeded() -> None:
    (recipe,) = nodes.AtelierAugmentRecipe().build(**node_defaults(nodes.AtelierAugmentRecipe, rotation_p=1.0))
    images = torch.rand(3, 32, 48, 3)
    run = nodes.AtelierAugmentImages().run
    (a,), (b,) = run(images, recipe, 7, "cpu"), run(images, recipe, 7, "cpu")
    assert torch.equal(a, b) and a.shape == images.shape and not torch.equal(a, images)


def test_preprocess_node() -> None:
    (out,) = nodes.AtelierPreprocessImages().run(torch.rand(2, 30, 60, 3), **node_defaults(
        nodes.AtelierPreprocessImages, resize="shorter_edge", size=16, crop="center", width=16, height=16))
    assert out.shape == (2, 16, 16, 3)


def test_multiply_bad_inputs_fail_before_any_file(output_dir: Path) -> None:
    node, images = nodes.AtelierMultiplyDataset(), torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match="relative path inside"):
        node.run(**node_defaults(nodes.AtelierMultiplyDataset, images=images, subfolder="../escape"))
    with pytest.raises(ValueError, match="needs a recipe"):
        node.run(**node_defaults(nodes.AtelierMultiplyDataset, images=images, random_variants=2))
    with pytest.raises(ValueError, match="dataset names 1"):
        node.run(**node_defaults(nodes.AtelierMultiplyDataset, images=images,
                             dataset=nodes.DatasetInfo(["a"], [None], ["a.png"])))
    assert not output_dir.exists() or not any(output_dir.rglob("*.png"))


def test_multiply_without_dataset_names_files_and_records_random_seeds(output_dir: Path) -> None:
    (recipe,) = nodes.AtelierAugmentRecipe().build(**node_defaults(nodes.AtelierAugmentRecipe))
    _, folder, files = nodes.AtelierMultiplyDataset().run(**node_defaults(
        nodes.AtelierMultiplyDataset, images=torch.rand(2, 16, 16, 3), random_variants=1, recipe=recipe, seed=4,
        subfolder="sets/mine"))
    assert files == 2 * 11
    names = {p.name for p in Path(folder).glob("*.png")}
    assert {"image_0001.png", "image_0002__random_01.png", "image_0002__saturation_up.png"} <= names
    seeds = [json.loads(x)["seed"] for x in (Path(folder) / "manifest.jsonl").read_text().splitlines()]
    assert sum(s is not None for s in seeds) == 2


def test_multiply_reports_progress_per_file_written(output_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[SilentProgress] = []
    seen: list[int] = []

    class Recorder(SilentProgress):
        def advance(self, steps: int = 1) -> None:
            super().advance(steps)
            seen.append(self.done)

    monkeypatch.setattr(bridge, "progress", lambda total, desc="": bars.append(Recorder(total, desc)) or bars[-1])
    _, _, files = nodes.AtelierMultiplyDataset().run(**node_defaults(
        nodes.AtelierMultiplyDataset, images=torch.rand(2, 16, 16, 3)))  # one batch: once a 0 to 100 % jump
    assert len(bars) == 1 and bars[0].total == files == 2 * 10
    assert seen == list(range(1, files + 1))  # one step per file, never backwards, ending at the total


def test_bridge_outside_comfyui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not bridge.in_comfyui()
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path / "models"))
    assert bridge.register_model_folder("fid", {".pth"}) == "atelier_fid"
    assert bridge.model_folders("atelier_fid") == [tmp_path / "models" / "atelier" / "fid"]
    assert bridge.compute_device("cpu").type == "cpu"
    p = bridge.progress(2)
    p.advance(2)
    p.check_cancel()
