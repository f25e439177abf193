"""Multiplying a dataset: names, pixels, captions, manifest, versions, and nothing half-written."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from atelier.core.dataset import augment, multiply, transforms, variants
from atelier.core.shared.progress import Cancelled

from helpers import as_batch, photo, to_u8

NINE = ["brightness_down", "brightness_up", "gray_scale", "horizontal_flip", "rotation_+45", "rotation_-45",
        "saturation_down", "saturation_up", "vertical_flip"]


def _originals() -> list[multiply.Original]:
    cat, coffee = photo("chelsea.jpg", (80, 56)), photo("coffee.webp", (64, 64))
    return [multiply.Original(as_batch(cat)[0], "cat", "a tabby cat", "in/cat.jpg"),
            multiply.Original(as_batch(coffee)[0], "coffee", None, "in/coffee.webp")]


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_writes_original_and_nine_named_variants_with_captions_and_manifest(tmp_path: Path) -> None:
    written = multiply.multiply(_originals(), tmp_path)
    assert written.folder == tmp_path / "v001"
    names = sorted(p.name for p in written.folder.glob("cat*.png"))
    assert names == sorted(["cat.png"] + [f"cat__{v}.png" for v in NINE])
    assert (written.folder / "cat__vertical_flip.txt").read_text() == "a tabby cat\n"
    assert not list(written.folder.glob("coffee*.txt"))  # no caption, no sidecar
    records = [json.loads(line) for line in written.manifest.read_text().splitlines()]
    assert len(records) == 20 == len(list(written.folder.glob("*.png")))
    for r in records:
        assert hashlib.sha256((written.folder / r["file"]).read_bytes()).hexdigest() == r["sha256"]
        assert {"source", "variant", "parameters", "seed", "stem"} <= r.keys()
    by_file = {r["file"]: r for r in records}
    assert by_file["cat__brightness_down.png"]["parameters"] == {"factor": 0.7}
    assert by_file["cat__rotation_-45.png"]["parameters"]["degrees_counter_clockwise"] == -45
    assert by_file["coffee.png"]["source"] == "in/coffee.webp"


def test_variant_pixels_match_the_pillow_reference(tmp_path: Path) -> None:
    written = multiply.multiply(_originals()[:1], tmp_path)
    original = _read(written.folder / "cat.png")
    pil = Image.fromarray(original)
    assert np.array_equal(original, to_u8(_originals()[0].image[None])[0])
    assert np.array_equal(_read(written.folder / "cat__horizontal_flip.png"), np.asarray(ImageOps.mirror(pil)))
    assert np.array_equal(_read(written.folder / "cat__vertical_flip.png"), np.asarray(ImageOps.flip(pil)))
    for name, ref in (("brightness_up", ImageEnhance.Brightness(pil).enhance(1.3)),
                      ("gray_scale", pil.convert("L").convert("RGB")),
                      ("rotation_+45", pil.rotate(45, resample=Image.BILINEAR))):
        d = np.abs(_read(written.folder / f"cat__{name}.png").astype(int) - np.asarray(ref))
        assert np.median(d) <= 1 and d.mean() < 2, name  # rotations differ on the picture/fill seam only


def test_saturation_variants_are_the_hsv_offset_rounded_to_8_bits() -> None:
    x = as_batch(photo("coffee.webp", (64, 64)))
    settings = variants.VariantSettings(saturation_down=-0.3, saturation_up=0.25)
    rendered = variants.render(x, ["saturation_down", "saturation_up"], settings)
    for kind, offset in (("saturation_down", -0.3), ("saturation_up", 0.25)):
        ours = np.asarray(rendered[kind][0]).astype(int)
        ref = to_u8(transforms.adjust_saturation(x, offset))[0].astype(int)
        assert np.abs(ours - ref).max() <= 1 and (ours != ref).mean() < 0.03, kind  # ties at .5 only


def test_subset_magnitudes_and_angle_in_the_names(tmp_path: Path) -> None:
    settings = variants.VariantSettings(brightness_up=1.5, angle=30)
    kinds = variants.parse_kinds(["rotation_+30", "brightness_up"], settings)
    written = multiply.multiply(_originals(), tmp_path, kinds, settings, include_original=False)
    assert sorted(p.name for p in written.folder.glob("cat*.png")) == ["cat__brightness_up.png",
                                                                        "cat__rotation_+30.png"]
    with pytest.raises(ValueError, match="unknown variant 'rotation_\\+45'"):
        variants.parse_kinds(["rotation_+45"], settings)


def test_each_run_is_a_new_version_and_never_overwrites(tmp_path: Path) -> None:
    first = multiply.multiply(_originals(), tmp_path)
    before = {p.name: p.read_bytes() for p in first.folder.iterdir()}
    second = multiply.multiply(_originals(), tmp_path)
    assert (first.folder.name, second.folder.name) == ("v001", "v002")
    assert {p.name: p.read_bytes() for p in first.folder.iterdir()} == before
    assert (second.folder / "cat.png").read_bytes() == before["cat.png"]  # deterministic


def test_random_variants_are_seeded_and_recorded(tmp_path: Path) -> None:
    spec = augment.AugmentSpec(hflip=0.5, rotation=augment.Range(1.0, -20, 20), expand=True)
    random = multiply.RandomVariants(spec, 2, seed=9)
    a = multiply.multiply(_originals(), tmp_path / "a", kinds=(), random=random)
    b = multiply.multiply(_originals(), tmp_path / "b", kinds=(), random=random)
    files = sorted(p.name for p in a.folder.glob("*.png"))
    assert files == ["cat.png", "cat__random_01.png", "cat__random_02.png", "coffee.png", "coffee__random_01.png",
                     "coffee__random_02.png"]
    for name in files:
        assert (a.folder / name).read_bytes() == (b.folder / name).read_bytes()
    record = next(json.loads(x) for x in a.manifest.read_text().splitlines() if "cat__random_02" in x)
    # the recorded seed and recipe reproduce the file on their own
    draws = augment.draw(spec, [record["seed"]])
    image = _originals()[0].image[None]
    h, w = image.shape[1:3]
    again = augment.apply(image, spec, draws, augment.canvas(spec, draws, w, h))
    assert np.array_equal(to_u8(again)[0], _read(a.folder / "cat__random_02.png"))
    assert record["parameters"]["drawn"]["angle"] == pytest.approx(float(draws.angle[0]))


def test_same_stems_are_kept_apart(tmp_path: Path) -> None:
    o = _originals()
    o[1].stem = "cat"
    written = multiply.multiply(o, tmp_path, kinds=["gray_scale"])
    assert sorted(p.name for p in written.folder.glob("*.png")) == sorted(
        ["cat.png", "cat__gray_scale.png", "cat_2.png", "cat_2__gray_scale.png"])


def test_cancel_leaves_no_version_folder_behind(tmp_path: Path) -> None:
    class CancelSecond:
        calls = 0

        def advance(self, steps: int = 1) -> None: ...

        def check_cancel(self) -> None:
            self.calls += 1
            if self.calls == 2:
                raise Cancelled("stop")

    o = _originals()  # two sizes: two groups, cancelled before the second
    with pytest.raises(Cancelled):
        multiply.multiply(o, tmp_path, progress=CancelSecond())
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_and_empty_plans_fail_before_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match="not writable"):
        multiply.multiply(_originals(), blocker / "out")
    with pytest.raises(ValueError, match="nothing to write"):
        multiply.multiply(_originals(), tmp_path, kinds=(), include_original=False)
    with pytest.raises(ValueError, match="no images"):
        multiply.multiply([], tmp_path)


def test_render_is_the_same_on_every_piece_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import atelier.core.shared.batches as tb

    x = torch.rand(5, 40, 30, 3)
    whole = variants.render(x, variants.KINDS, variants.VariantSettings())
    monkeypatch.setattr(tb, "CPU_CHUNK_BYTES", 1)
    pieces = variants.render(x, variants.KINDS, variants.VariantSettings())
    assert all(len(whole[k]) == 5 for k in variants.KINDS)
    for k in variants.KINDS:
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(whole[k], pieces[k])), k
