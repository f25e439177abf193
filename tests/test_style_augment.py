"""Style augmentation the seed's way: virtual pictures in the originals' style (and the other direction),
their names, captions and manifest, whole-set mixing, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atelier.core.dataset.image_files import ImageFolderError, load_image
from atelier.core.dataset.multiply import Original
from atelier.core.style import adain_model as am
from atelier.core.style.feature_transfer import mean_std
from atelier.core.style.style_augment import AugmentSpec, load_contents, plan, style_augment, summary
from atelier.core.style.stylize import StyleOptions

from helpers import as_batch, photo, synthetic_picture, tiny_adain_files

PHOTOS = ("chelsea.jpg", "astronaut.tif", "coffee.webp", "rocket.png")


def colour_model(base: int = 4) -> am.AdaINModel:
    """An AdaIN pair in the real layout whose relu4_1 features are the picture's colours (3 live channels,
    max-pooled 8x8) and whose decoder upsamples them back: decoding then re-encoding gives back exactly the
    features decoded (up to the 0..1 clip and 8-bit files), so a virtual picture's statistics show which
    style the transfer really put in, by a wide margin, as a trained decoder approximates it."""
    encoder, decoder = am.build_encoder(base), am.build_decoder(base)
    with torch.no_grad():
        for net in (encoder, decoder):
            for layer in net:
                if isinstance(layer, torch.nn.Conv2d):
                    layer.weight.zero_()
                    layer.bias.zero_()
                    centre = layer.kernel_size[0] // 2
                    for c in range(3):
                        layer.weight[c, c, centre, centre] = 1.0
    return am.AdaINModel(encoder, decoder)


def _statistics(model: am.AdaINModel, image: torch.Tensor) -> torch.Tensor:
    """relu4_1 channel means and standard deviations of ``[H, W, 3]``, as AdaIN takes them, in one vector."""
    with torch.no_grad():
        mean, std = mean_std(model.encode(image.permute(2, 0, 1)[None]))
    return torch.cat([mean.flatten(), std.flatten()])


def _photos() -> list[Original]:
    return [Original(as_batch(photo(name, (64, 64)))[0], name.split(".")[0], None, name) for name in PHOTOS]


def _paintings() -> list[Original]:
    """Three "originals" of one artist's hand: saturated stripes, far in colour from the photographs."""
    return [Original(as_batch(synthetic_picture(k, seed=k, size=64))[0], f"work_{k}", f"work {k}", f"work_{k}.png")
            for k in range(3)]


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("direction", ["in_originals_style", "restyle_originals"])
def test_each_virtual_picture_has_the_statistics_of_the_picture_that_gave_the_style(tmp_path: Path,
                                                                                    direction: str) -> None:
    model = colour_model()
    originals, photos = _paintings(), _photos()
    spec = AugmentSpec(direction, include_original=False)
    written = style_augment(model, originals, photos, tmp_path, StyleOptions(alpha=1.0), spec)
    by_name = {p.stem: p for p in [*originals, *photos]}
    styles = originals if direction == "in_originals_style" else photos
    assert len(written.files) == 12
    for file, record in zip(written.files, written.records):
        virtual = _statistics(model, load_image(file))
        to_style, to_content = ((virtual - _statistics(model, by_name[record[side]].image)).norm()
                                for side in ("style", "content"))
        # measured: at most 0.002 (in the originals' style) and 0.09 (restyled); 1 would be half way
        assert to_style < 0.25 * to_content, (file.name, float(to_style), float(to_content))
        nearest = min(styles, key=lambda s: (virtual - _statistics(model, s.image)).norm())
        assert nearest.stem == record["style"]
    contents = photos if direction == "in_originals_style" else originals
    assert {r["content"] for r in written.records} == {c.stem for c in contents}
    # the measure is no foregone conclusion: at alpha 0 (no style) every picture sits by its content instead
    plain = style_augment(model, originals, photos, tmp_path, StyleOptions(alpha=0.0), spec)
    for file, record in zip(plain.files, plain.records):
        virtual = _statistics(model, load_image(file))
        to_style, to_content = ((virtual - _statistics(model, by_name[record[side]].image)).norm()
                                for side in ("style", "content"))
        assert to_content < 0.25 * to_style


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> am.AdaINModel:
    return am.load_model(*tiny_adain_files(tmp_path_factory.mktemp("adain")))


def test_names_captions_and_manifest_say_which_picture_gave_content_and_style(model: am.AdaINModel,
                                                                             tmp_path: Path) -> None:
    originals = _paintings()[:2]
    photos = _photos()[:2]
    photos[0].caption = "a cat on a chair"  # the other photograph has no caption sidecar
    spec = AugmentSpec(trigger="sks_style")
    written = style_augment(model, originals, photos, tmp_path, StyleOptions(), spec)
    folder = written.folder
    assert sorted(p.name for p in folder.glob("*.png")) == [
        "astronaut__in_work_0.png", "astronaut__in_work_1.png", "chelsea__in_work_0.png", "chelsea__in_work_1.png",
        "work_0.png", "work_1.png"]
    assert (folder / "chelsea__in_work_1.txt").read_text(encoding="utf-8") == "sks_style, a cat on a chair\n"
    assert (folder / "astronaut__in_work_0.txt").read_text(encoding="utf-8") == "sks_style\n"
    assert (folder / "work_0.txt").read_text(encoding="utf-8") == "work 0\n"  # the originals keep theirs
    records = {r["file"]: r for r in _records(folder)}
    virtual = records["chelsea__in_work_1.png"]
    assert (virtual["content"], virtual["style"], virtual["variant"]) == ("chelsea", "work_1", "in_work_1")
    assert virtual["parameters"]["direction"] == "in_originals_style"
    assert (virtual["parameters"]["content_source"], virtual["parameters"]["style_source"]) == \
        ("chelsea.jpg", "work_1.png")
    assert records["work_0.png"]["variant"] == "original"
    assert summary(written, originals, photos, spec) == \
        "wrote 6 images (4 virtual): 2 content pictures in the style of 2 originals"
    # without a trigger a content picture without a caption gets no sidecar
    bare = style_augment(model, originals, photos, tmp_path, StyleOptions(), AugmentSpec(include_original=False))
    assert not (bare.folder / "astronaut__in_work_0.txt").exists()
    assert (bare.folder / "chelsea__in_work_0.txt").read_text(encoding="utf-8") == "a cat on a chair\n"
    # the other direction keeps today's names and the originals' captions, trigger or not
    restyled = style_augment(model, originals, photos, tmp_path, StyleOptions(),
                             AugmentSpec("restyle_originals", trigger="sks_style", include_original=False))
    assert sorted(p.name for p in restyled.folder.glob("*.png"))[:2] == ["work_0__style_astronaut.png",
                                                                        "work_0__style_chelsea.png"]
    assert (restyled.folder / "work_1__style_chelsea.txt").read_text(encoding="utf-8") == "work 1\n"


def test_a_capped_count_is_a_seeded_sample_of_the_pairs(model: am.AdaINModel, tmp_path: Path) -> None:
    originals, photos = _paintings(), _photos()
    spec = AugmentSpec(pairs=5, seed=3, include_original=False)
    assert plan(originals, photos, spec) == plan(originals, photos, spec)
    assert plan(originals, photos, spec) != plan(originals, photos, AugmentSpec(pairs=5, seed=4))
    assert len(set(plan(originals, photos, spec))) == 5
    written = style_augment(model, originals, photos, tmp_path, StyleOptions(), spec)
    assert len(written.files) == 5 and all(r["seed"] == 3 for r in written.records)
    assert [(r["content"], r["style"]) for r in written.records] == \
        [(photos[i].stem, originals[j].stem) for i, j in plan(originals, photos, spec)]


def test_the_whole_set_mixes_the_originals_by_the_style_weights(model: am.AdaINModel, tmp_path: Path) -> None:
    originals, photos = _paintings(), _photos()[:2]
    mixed = style_augment(model, originals, photos, tmp_path, StyleOptions(),
                          AugmentSpec(whole_set=True, style_weights=(2, 1, 1), include_original=False))
    assert [p.name for p in mixed.files] == ["chelsea__in_all_originals.png", "astronaut__in_all_originals.png"]
    record = mixed.records[0]
    assert record["style"] == "all_originals"
    assert record["parameters"]["style_weights"] == {"work_0": 0.5, "work_1": 0.25, "work_2": 0.25}
    # the same weighted transfer as Stylize: all weight on one original is that original alone
    alone = style_augment(model, originals, photos, tmp_path, StyleOptions(),
                          AugmentSpec(whole_set=True, style_weights=(0, 1, 0), include_original=False))
    single = style_augment(model, originals[1:2], photos, tmp_path, StyleOptions(), AugmentSpec(include_original=False))
    for a, b in zip(alone.files, single.files):
        assert torch.equal(load_image(a), load_image(b))
    assert not all(torch.equal(load_image(a), load_image(b)) for a, b in zip(mixed.files, single.files))


def test_bad_weights_are_refused_before_any_file_is_written(model: am.AdaINModel, tmp_path: Path) -> None:
    originals, photos = _paintings(), _photos()[:1]
    with pytest.raises(ValueError, match=r"2 style weight\(s\) for 3 original\(s\): give one weight per original"):
        style_augment(model, originals, photos, tmp_path / "out", StyleOptions(),
                      AugmentSpec(whole_set=True, style_weights=(1, 2)))
    with pytest.raises(ValueError, match="non-negative with a positive sum"):
        style_augment(model, originals, photos, tmp_path / "out", StyleOptions(),
                      AugmentSpec(whole_set=True, style_weights=(0, 0, 0)))
    with pytest.raises(ValueError, match="turn on 'whole_set'"):
        AugmentSpec(style_weights=(1, 2, 3))
    with pytest.raises(ValueError, match="direction must be one of"):
        AugmentSpec("sideways")
    assert not (tmp_path / "out").exists()


def test_content_folders_empty_broken_or_partly_broken(tmp_path: Path) -> None:
    from test_bad_inputs_training import mixed_folder, truncated

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageFolderError, match=f"content_folder: image folder '{empty}' holds no image.*"
                                               "put varied photographs there"):
        load_contents(empty)
    mixed = mixed_folder(tmp_path / "mixed")
    (mixed / "여름").mkdir()
    (mixed / "chelsea.jpg").rename(mixed / "여름" / "고양이.jpg")  # sub-folders are read too
    contents, skipped = load_contents(mixed)
    assert sorted(c.stem for c in contents) == ["rocket", "고양이"]
    assert sorted(Path(s.path).name for s in skipped) == ["broken.jpg", "cut.png"]
    broken = tmp_path / "broken"
    broken.mkdir()
    truncated(broken / "a.jpg", "JPEG")
    with pytest.raises(ImageFolderError, match="content_folder: no readable image in .*a.jpg"):
        load_contents(broken)
