"""Colour from the pixels, exact on synthetic pictures: palette and shares, Lab and YCbCr against references,
histograms, tone words and their numbers, the swatch, the node, and flat or malformed pictures."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.core.analyses.colour import (
    MAX_SAMPLES,
    TONE_RULES,
    analyse_colour,
    rgb_to_ycbcr,
    srgb_to_lab,
    swatch,
    tone_words,
)
from atelier.nodes.analyses import AtelierColourAnalysis

RED, BLUE, GREEN = (200, 60, 50), (50, 70, 200), (40, 180, 60)


def _picture(parts: list[tuple[tuple[int, int, int], int]], width: int = 30) -> torch.Tensor:
    """Horizontal stripes: each colour (0..255) ``rows`` rows high."""
    rows = [torch.tensor(rgb, dtype=torch.float32).div(255).expand(n, width, 3) for rgb, n in parts]
    return torch.cat(rows).contiguous()


def test_half_red_half_blue_gives_those_two_colours_at_half_each() -> None:
    record = analyse_colour(_picture([(RED, 20), (BLUE, 20)]), palette_size=5).record()
    assert {(c["hex"], c["share"]) for c in record["palette"]} == {("#c83c32", 0.5), ("#3246c8", 0.5)}
    assert [c["rgb"] for c in record["palette"]] == [list(BLUE), list(RED)]  # equal shares: by hex


def test_shares_count_every_pixel_of_a_picture_larger_than_the_sample() -> None:
    image = _picture([(RED, 100), (GREEN, 60), (BLUE, 40)], width=150)
    assert image.shape[0] * image.shape[1] > MAX_SAMPLES
    result = analyse_colour(image, palette_size=3, seed=7)
    assert [(c.hex, c.share) for c in result.palette] == [("#c83c32", 0.5), ("#28b43c", 0.3), ("#3246c8", 0.2)]
    assert analyse_colour(image, palette_size=3, seed=7).record() == result.record()


def test_lab_matches_the_reference_values() -> None:
    # CIELAB (D65) of sRGB primaries and grey, as Bruce Lindbloom's calculator gives them
    lab = srgb_to_lab(np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]))
    expected = [[100.0, 0.0, 0.0], [53.2408, 80.0925, 67.2032], [32.2970, 79.1875, -107.8602], [53.3890, 0.0, 0.0],
                [0.0, 0.0, 0.0]]
    assert np.allclose(lab, expected, atol=2e-3)


def test_ycbcr_matches_pillow_jpeg_conversion() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(rgb).convert("YCbCr"), dtype=np.float64).reshape(-1, 3)
    ours = rgb_to_ycbcr(rgb.reshape(-1, 3) / 255.0) * 255
    # Pillow works in fixed point and truncates to 8 bits; BT.709's weights would be off by tens of levels
    assert np.abs(ours - pillow).max() < 1.5 and np.abs(ours - pillow).mean() < 0.75


def test_histograms_put_each_colour_in_its_bin_and_sum_to_one() -> None:
    bins = 32
    histograms = analyse_colour(_picture([(RED, 30), (BLUE, 10)]), bins=bins).histograms
    for space, channels in histograms.items():
        for name, values in channels.items():
            assert len(values) == bins and math.isclose(sum(values), 1.0), (space, name)
    red, blue = np.array(RED) / 255, np.array(BLUE) / 255
    for space, convert in (("rgb", lambda c: c), ("ycbcr", lambda c: rgb_to_ycbcr(c[None])[0])):
        for i, name in enumerate(histograms[space]):
            expected = np.zeros(bins)
            expected[int(convert(red)[i] * bins)] += 0.75
            expected[int(convert(blue)[i] * bins)] += 0.25
            assert np.allclose(histograms[space][name], expected), (space, name)


def test_tone_measures_are_the_lab_statistics_behind_the_words() -> None:
    result = analyse_colour(_picture([(RED, 20), (BLUE, 20)]))
    lab = srgb_to_lab(np.array([RED, BLUE]) / 255.0)
    mean = lab.mean(0)
    assert math.isclose(result.measures["lightness"], mean[0], abs_tol=1e-9)
    assert math.isclose(result.measures["warmth"], math.cos(math.radians(50)) * mean[1]
                        + math.sin(math.radians(50)) * mean[2], abs_tol=1e-9)
    assert math.isclose(result.measures["chroma"], np.hypot(lab[:, 1], lab[:, 2]).mean(), abs_tol=1e-9)
    assert math.isclose(result.measures["contrast"], abs(lab[0, 0] - lab[1, 0]) / 2, abs_tol=1e-9)
    # warmth 17.5 (red's 73 against blue's -38), lightness 41.5, chroma 72.8, contrast 5.1
    assert result.words == ("warm", "vivid", "low contrast")
    assert result.words_ko == ("따뜻한", "선명한", "대비가 약한")
    assert result.summary() == "warm, vivid, low contrast: #3246c8 50%, #c83c32 50%"
    record = result.record()
    assert record["thresholds"]["warmth"] == [-10.0, 10.0] and record["measures"]["warmth"] == 17.54


@pytest.mark.parametrize(("rgb", "words"), [
    ((255, 140, 0), ("warm", "bright", "vivid", "low contrast")),  # warmth 81.5, L* 69.5, C* 84
    ((0, 150, 210), ("cool", "vivid", "low contrast")),  # warmth -38.0, C* 41.5
    ((0, 0, 0), ("dark", "muted", "low contrast")),
    ((128, 128, 128), ("muted", "low contrast")),  # L* 53.6: neither bright nor dark
])
def test_flat_colours_get_their_words(rgb: tuple[int, int, int], words: tuple[str, ...]) -> None:
    assert analyse_colour(_picture([(rgb, 4)], width=4)).words == words


def test_a_grey_ramp_is_neither_warm_nor_cool_and_has_high_contrast() -> None:
    ramp = torch.linspace(0, 1, 256)[None, :, None].expand(8, 256, 3).contiguous()
    result = analyse_colour(ramp)
    assert abs(result.measures["warmth"]) < 1e-3 and abs(result.measures["chroma"]) < 1e-3
    assert result.words == ("muted", "high contrast") and result.words_ko == ("차분한", "대비가 강한")
    assert all(c.rgb[0] == c.rgb[1] == c.rgb[2] for c in result.palette)


def test_words_follow_the_stated_thresholds() -> None:
    middle = {rule[0]: (rule[1] + rule[2]) / 2 for rule in TONE_RULES}
    assert tone_words(middle) == ((), ())
    for name, low, high, below, above, below_ko, above_ko in TONE_RULES:
        assert tone_words({**middle, name: high}) == ((above,), (above_ko,))
        assert tone_words({**middle, name: low}) == ((below,), (below_ko,))


def test_a_flat_picture_has_one_colour_at_full_share() -> None:
    result = analyse_colour(_picture([((77, 77, 77), 9)], width=9), palette_size=8)
    assert [(c.hex, c.share) for c in result.palette] == [("#4d4d4d", 1.0)]
    assert result.record()["measures"]["warmth"] == 0.0  # never "-0.0"


def test_the_swatch_bands_are_as_wide_as_the_shares() -> None:
    palette = analyse_colour(_picture([(RED, 30), (BLUE, 10)])).palette
    pixels = np.asarray(swatch(palette, width=200, height=60))
    assert pixels.shape == (60, 200, 3)
    assert (pixels[50, :150] == RED).all() and (pixels[50, 150:] == BLUE).all()


def test_bad_pictures_are_refused() -> None:
    with pytest.raises(ValueError, match=r"one picture \[H, W, 3\]"):
        analyse_colour(torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match="at least 1"):
        analyse_colour(torch.zeros(4, 4, 3), palette_size=0)


def test_node_gives_an_object_for_one_picture_and_a_list_for_a_batch() -> None:
    node = AtelierColourAnalysis()
    half = _picture([(RED, 20), (BLUE, 20)])
    text, swatches, summary = node.analyse(half[None], 5, 32, 0)
    assert json.loads(text)["palette"][0]["share"] == 0.5
    assert swatches.shape == (1, 96, 512, 3) and summary == "warm, vivid, low contrast: #3246c8 50%, #c83c32 50%"
    flat = _picture([((77, 77, 77), 40)])
    text, swatches, summary = node.analyse(torch.stack([half, flat]), 5, 16, 0)
    records = json.loads(text)
    assert [len(r["palette"]) for r in records] == [2, 1] and len(records[1]["histograms"]["rgb"]["r"]) == 16
    assert swatches.shape == (2, 96, 512, 3) and summary.splitlines()[1] == "dark, muted, low contrast: #4d4d4d 100%"
    with pytest.raises(ValueError, match="IMAGE batch"):
        node.analyse(torch.zeros(0, 4, 4, 3), 5, 32, 0)
