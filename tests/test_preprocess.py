"""Resize, pad and centre-crop against Pillow, and the size plan known before decoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.core.dataset.preprocess import PreprocessSpec, preprocess
from atelier.core.shared.colors import most_frequent_color, parse_color

from helpers import as_batch, photo, to_u8


@pytest.mark.parametrize(("filt", "pil_filter"), [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
@pytest.mark.parametrize("size", [(160, 106), (480, 316)])  # down and up
def test_exact_resize_agrees_with_pillow(filt: str, pil_filter: int, size: tuple[int, int]) -> None:
    cat = photo("chelsea.jpg")
    ours = to_u8(preprocess(as_batch(cat), PreprocessSpec(resize="exact", width=size[0], height=size[1],
                                                          filter=filt)))[0]
    ref = np.asarray(Image.fromarray(cat).resize(size, pil_filter))
    d = np.abs(ours.astype(int) - ref.astype(int))
    assert ours.shape == ref.shape
    assert d.mean() < 1.0 and np.percentile(d, 99) <= 3


def test_edge_resizes_keep_aspect_ratio() -> None:
    x = torch.rand(1, 200, 300, 3)
    assert preprocess(x, PreprocessSpec(resize="shorter_edge", size=100)).shape == (1, 100, 150, 3)
    assert preprocess(x, PreprocessSpec(resize="longer_edge", size=150)).shape == (1, 100, 150, 3)


def test_resize_and_fill_pads_with_the_most_frequent_colour() -> None:
    pixels = np.zeros((40, 20, 3), np.uint8)
    pixels[:] = (10, 200, 30)
    pixels[:5] = (255, 0, 0)
    out = to_u8(preprocess(as_batch(pixels), PreprocessSpec(pad="square", pad_color=None)))[0]
    assert out.shape == (40, 40, 3)
    assert tuple(out[0, 0]) == (10, 200, 30) and tuple(out[39, 39]) == (10, 200, 30)
    assert np.array_equal(out[:, 10:30], pixels)  # centred, untouched
    ref = max(Image.fromarray(pixels).getcolors(1 << 24))[1]
    assert tuple(round(v * 255) for v in most_frequent_color(as_batch(pixels)[0])) == ref


def test_pad_to_size_and_centre_crop_positions() -> None:
    x = as_batch(photo("coffee.webp"))  # 320x213
    padded = to_u8(preprocess(x, PreprocessSpec(pad="to_size", width=330, height=223, pad_color=(1.0, 1.0, 1.0))))[0]
    assert padded.shape == (223, 330, 3)
    assert np.array_equal(padded[5:218, 5:325], to_u8(x)[0]) and padded[0, 0].tolist() == [255, 255, 255]
    cropped = preprocess(x, PreprocessSpec(crop="center", width=100, height=50))[0]
    assert torch.equal(cropped, x[0, (213 - 50) // 2 : (213 - 50) // 2 + 50, 110:210])


@pytest.mark.parametrize("spec", [
    PreprocessSpec(resize="longer_edge", size=128, pad="square", pad_color=None),
    PreprocessSpec(resize="shorter_edge", size=64, crop="center", width=64, height=64),
    PreprocessSpec(resize="exact", width=50, height=70),
    PreprocessSpec(pad="to_size", width=200, height=200),
])
def test_output_size_plan_matches_what_preprocess_makes(spec: PreprocessSpec) -> None:
    for h, w in ((213, 320), (320, 213), (99, 101)):
        out = preprocess(torch.rand(1, h, w, 3), spec)
        assert (out.shape[2], out.shape[1]) == spec.output_size(w, h)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="resize must be one of"):
        PreprocessSpec(resize="biggest")
    with pytest.raises(ValueError, match="at least 1 pixel"):
        PreprocessSpec(size=0)
    with pytest.raises(ValueError, match="not '#rrggbb'"):
        parse_color("#12345")
    assert parse_color("#fff") == (1.0, 1.0, 1.0) and parse_color("255, 0, 0") == (1.0, 0.0, 0.0)
