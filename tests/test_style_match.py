"""Style by template matching: Gram matrices of the AdaIN encoder against template pictures (tiny random VGG)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.core.analyses import style_match
from atelier.core.style.adain_model import load_model

from helpers import tiny_adain_files

KINDS = ("stripes", "dots", "noise")


def texture(kind: str, seed: int, size: int = 96) -> np.ndarray:
    """A picture whose style is known by construction: horizontal stripes, a grid of dots or coloured noise,
    each with a seeded phase and a little noise so no two are the same."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    shift = int(rng.integers(0, 12))
    if kind == "stripes":
        grey = (((yy + shift) // 6) % 2).astype(np.float32)
        img = np.stack([grey * 0.9, grey * 0.5, grey * 0.2], -1)
    elif kind == "dots":
        dots = ((((xx + shift) % 12) - 6) ** 2 + (((yy + shift) % 12) - 6) ** 2 < 9).astype(np.float32)
        img = np.stack([dots * 0.2, dots * 0.4, dots * 0.9], -1) + 0.05
    else:
        img = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
    img = img + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    encoder, decoder = tiny_adain_files(tmp_path_factory.mktemp("adain"), base=4, seed=0)
    return load_model(encoder, decoder)


def _templates(folder, described=True):
    folder.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        Image.fromarray(texture(kind, seed=0)).save(folder / f"{kind}.png")
        if described:
            (folder / f"{kind}.txt").write_text(f"a {kind} pattern\n", encoding="utf-8")
    return folder


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).float() / 255.0


def test_gram_is_normalised_by_c_h_w():
    features = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    flat = features.reshape(2, 12)
    assert torch.allclose(style_match.gram(features), flat @ flat.T / 24)


def test_each_query_matches_the_template_made_the_same_way(model, tmp_path):
    bank = style_match.load_templates(model, _templates(tmp_path / "t"), size=64)
    for kind in KINDS:
        for seed in (1, 2):
            result = style_match.match_style(model, _image(texture(kind, seed)), bank, top_k=3)
            distances = [m.distance for m in result.matches]
            assert result.matches[0].template == f"{kind}.png"
            assert distances == sorted(distances) and distances[0] < 0.5 * distances[1]
            assert result.sentence == f"a {kind} pattern"


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_rotated_picture_matches_its_own_template_first(model, tmp_path, turns):
    bank = style_match.load_templates(model, _templates(tmp_path / "t"), size=64)
    for kind in KINDS:
        rotated = np.rot90(texture(kind, seed=0), turns).copy()
        result = style_match.match_style(model, _image(rotated), bank, top_k=3)
        assert result.matches[0].template == f"{kind}.png"
        # the four quarter turns are averaged, so the rotated picture is its template's exact twin
        assert result.matches[0].distance < 1e-6 * result.matches[1].distance


def test_without_rotation_averaging_stripes_turned_are_a_different_style(model, tmp_path):
    """What the averaging is for: a random VGG's kernels tell horizontal stripes from vertical ones."""
    bank = style_match.load_templates(model, _templates(tmp_path / "t"), size=64, rotation_invariant=False)
    upright = style_match.match_style(model, _image(texture("stripes", 0)), bank).matches[0]
    turned = style_match.match_style(model, _image(np.rot90(texture("stripes", 0)).copy()), bank)
    turned_distance = next(m.distance for m in turned.matches if m.template == "stripes.png")
    assert upright.distance < 1e-9 and turned_distance > 1e-6


def test_distances_do_not_depend_on_the_picture_size(model, tmp_path):
    bank = style_match.load_templates(model, _templates(tmp_path / "t"), size=64)
    small = style_match.match_style(model, _image(texture("dots", 3, size=96)), bank).matches
    large = style_match.match_style(model, _image(np.kron(texture("dots", 3, size=96), np.ones((2, 2, 1),
                                                   dtype=np.uint8))), bank).matches
    assert [m.template for m in small] == [m.template for m in large]
    assert small[0].template == "dots.png" and large[0].distance < 0.5 * large[1].distance


def test_sentence_template_record_and_missing_descriptions(model, tmp_path):
    folder = _templates(tmp_path / "t", described=False)
    (folder / "dots.txt").write_text("점묘 같은 물방울 무늬", encoding="utf-8")
    bank = style_match.load_templates(model, folder, size=64)
    result = style_match.match_style(model, _image(texture("dots", 4)), bank, top_k=2,
                                     sentence_template="In the manner of {description} ({name}, {distance})")
    assert result.sentence.startswith("In the manner of 점묘 같은 물방울 무늬 (dots, ")
    record = json.loads(json.dumps(style_match.match_style(model, _image(texture("noise", 4)), bank).record()))
    assert set(record) >= {"matches", "sentence", "layers", "size"}
    assert record["layers"] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1"] and record["size"] == 64
    assert record["sentence"] == "noise" and record["matches"][0] == {
        "template": "noise.png", "distance": record["matches"][0]["distance"], "description": "noise"}
    assert len(record["notes"]) == 1 and "noise.png, stripes.png" in record["notes"][0]
    with pytest.raises(ValueError, match=r"\{description\}"):
        style_match.match_style(model, _image(texture("dots", 4)), bank, sentence_template="like {style}")


def test_template_grams_are_cached_in_memory_and_on_disk(model, tmp_path, monkeypatch):
    folder, cache = _templates(tmp_path / "t"), tmp_path / "cache"
    first = style_match.load_templates(model, folder, size=64, cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 3
    assert style_match.load_templates(model, folder, size=64, cache_dir=cache) is first
    style_match._BANKS.clear()
    monkeypatch.setattr(style_match, "gram_matrices", lambda *a, **k: pytest.fail("computed again"))
    again = style_match.load_templates(model, folder, size=64, cache_dir=cache)
    for a, b in zip(first.templates, again.templates):
        assert all(torch.equal(x, y) for x, y in zip(a.grams, b.grams))


def test_a_changed_folder_is_read_again(model, tmp_path):
    folder = _templates(tmp_path / "t")
    first = style_match.load_templates(model, folder, size=64)
    (folder / "dots.txt").write_text("polka dots, changed", encoding="utf-8")
    second = style_match.load_templates(model, folder, size=64)
    assert second is not first and second.templates[0].description == "polka dots, changed"


def test_preview_shows_the_query_beside_its_matches(model, tmp_path):
    bank = style_match.load_templates(model, _templates(tmp_path / "t"), size=64)
    image = _image(texture("dots", 5, size=80))
    results = [style_match.match_style(model, image, bank, top_k=k) for k in (2, 1)]
    picture = np.asarray(style_match.preview([image, image], results, bank, height=64))
    assert picture.shape == (2 * (64 + 20 + 8) + 8, 3 * 64 + 4 * 8, 3)
    thumb = np.asarray(Image.fromarray(texture("dots", 5, size=80)).resize((64, 64), Image.BICUBIC))
    assert np.array_equal(picture[8:72, 8:72], thumb) and np.array_equal(picture[100:164, 8:72], thumb)
    assert (picture[100:164, 8 + 2 * 72:] == 255).all()  # the second row has one template fewer


def test_empty_template_folder_is_an_error(model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="holds no image"):
        style_match.load_templates(model, tmp_path / "empty")


def test_style_match_node(model, tmp_path, monkeypatch):
    from atelier.nodes import bridge
    from atelier.nodes.analyses import AtelierStyleMatch

    from helpers import node_defaults

    monkeypatch.setattr(bridge, "output_directory", lambda: tmp_path / "out")
    folder = _templates(tmp_path / "t")
    images = torch.stack([_image(texture("stripes", 7)), _image(texture("noise", 7))])
    args = node_defaults(AtelierStyleMatch, template_folder=str(folder), top_k=2, size=64,
                         sentence_template="In the manner of {description}")
    style_json, sentence, preview = AtelierStyleMatch().run(model, images, **args)
    records = json.loads(style_json)
    assert [r["matches"][0]["template"] for r in records] == ["stripes.png", "noise.png"]
    assert sentence == "In the manner of a stripes pattern\nIn the manner of a noise pattern"
    assert preview.shape[0] == 1 and preview.shape[-1] == 3 and preview.shape[1] == 2 * (256 + 28) + 8
    assert len(list((tmp_path / "out" / "atelier" / "style_templates").glob("*.safetensors"))) == 3
    with pytest.raises(ValueError, match="may use"):
        AtelierStyleMatch().run(model, images, **{**args, "sentence_template": "{style}"})
