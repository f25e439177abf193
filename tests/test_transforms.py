"""Each augmentation held to a Pillow/numpy reference on real photographs, with stated tolerances.

Tolerances are in 8-bit levels after rounding: flips are exact; greyscale and brightness agree
within 1 level (Pillow rounds in fixed point); saturation within 1 level of a float HSV round
trip; warps agree with Pillow's bilinear transform within 1 level on average and 2 levels at the
99th percentile, the rest being the one-pixel seam between picture and fill, which Pillow cuts
hard and we blend by coverage (under 1.5% of pixels).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from atelier.core.dataset import geometry, transforms

from helpers import as_batch, photo, to_u8


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return photo("chelsea.jpg")  # 320x211, not square


def test_flips_are_exact(cat: np.ndarray) -> None:
    x = as_batch(cat)
    assert np.array_equal(to_u8(transforms.hflip(x))[0], np.asarray(ImageOps.mirror(Image.fromarray(cat))))
    assert np.array_equal(to_u8(transforms.vflip(x))[0], np.asarray(ImageOps.flip(Image.fromarray(cat))))


def test_grayscale_is_pillow_luma_in_three_channels(cat: np.ndarray) -> None:
    ours = to_u8(transforms.grayscale(as_batch(cat)))[0]
    ref = np.asarray(Image.fromarray(cat).convert("L"))
    assert ours.shape == cat.shape
    assert np.array_equal(ours[..., 0], ours[..., 2])
    assert _diff(ours[..., 1], ref).max() <= 1


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.0, 1.4])
def test_brightness_matches_image_enhance(cat: np.ndarray, factor: float) -> None:
    ours = to_u8(transforms.adjust_brightness(as_batch(cat), factor))[0]
    ref = np.asarray(ImageEnhance.Brightness(Image.fromarray(cat)).enhance(factor))
    assert _diff(ours, ref).max() <= 1


def _hsv_round_trip(rgb: np.ndarray, offset: float) -> np.ndarray:
    """Textbook RGB -> HSV -> RGB in float64, S shifted by ``offset``."""
    x = rgb.astype(np.float64) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(-1)
    c = v - x.min(-1)
    s = np.where(v > 0, c / np.where(v > 0, v, 1), 0)
    safe = np.where(c > 0, c, 1)
    h = np.select([c == 0, v == r, v == g], [0, ((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4) / 6
    s = np.clip(s + offset, 0, 1)
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    out = np.stack([np.choose(i, [v, q, p, p, t, v]), np.choose(i, [t, v, v, q, p, p]),
                    np.choose(i, [p, p, t, v, v, q])], -1)
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("offset", [-0.3, -0.1, 0.15, 0.4])
def test_saturation_is_an_offset_on_hsv_s(offset: float) -> None:
    coffee = photo("coffee.webp")
    ours = to_u8(transforms.adjust_saturation(as_batch(coffee), offset))[0]
    ref = _hsv_round_trip(coffee, offset)
    coloured = coffee.max(-1) != coffee.min(-1)  # greys have no hue: checked below
    assert _diff(ours, ref)[coloured].max() <= 1


def test_saturation_keeps_greys_grey_and_hue_and_value() -> None:
    x = torch.tensor([[[[0.5, 0.5, 0.5], [0.8, 0.4, 0.2], [0.0, 0.0, 0.0]]]])
    up = transforms.adjust_saturation(x, 0.3)
    assert torch.allclose(up[0, 0, 0], x[0, 0, 0])
    assert torch.allclose(up[0, 0, 1].max(), torch.tensor(0.8))  # V kept
    # S 0.75 -> 1.0 (clamped): min falls to 0, the hue fraction (G - B) / (V - B) stays 1/3
    assert torch.allclose(up[0, 0, 1], torch.tensor([0.8, 0.8 / 3, 0.0]), atol=1e-6)


def test_planar_and_channels_last_agree(cat: np.ndarray) -> None:
    x = as_batch(cat, cat[::-1].copy())
    planar = x.permute(0, 3, 1, 2).contiguous()
    for fn in (lambda t, d: transforms.adjust_saturation(t, -0.2, d), lambda t, d: transforms.luma(t, d),
               lambda t, d: transforms.adjust_brightness(t, 1.2, d)):
        assert torch.allclose(fn(x, -1), fn(planar, 1).permute(0, 2, 3, 1), atol=1e-6)


def _warp_tolerance(ours: np.ndarray, ref: np.ndarray) -> None:
    d = _diff(ours, ref)
    assert d.mean() <= 1.0
    assert np.percentile(d, 99) <= 2
    assert (d.max(-1) > 8).mean() < 0.015


@pytest.mark.parametrize(("angle", "expand"), [(45, False), (-45, False), (30, True), (-100, True), (7.5, False)])
def test_rotation_matches_pillow_rotate(cat: np.ndarray, angle: float, expand: bool) -> None:
    fill = (0.2, 0.6, 1.0)
    ours = to_u8(geometry.rotate(as_batch(cat), angle, expand=expand, fill=fill))[0]
    ref = np.asarray(Image.fromarray(cat).rotate(angle, resample=Image.BILINEAR, expand=expand,
                                                 fillcolor=tuple(round(v * 255) for v in fill)))
    _warp_tolerance(ours, ref)


def test_quarter_turns_are_exact_pixel_moves(cat: np.ndarray) -> None:
    ours = to_u8(geometry.rotate(as_batch(cat), 90, expand=True))[0]
    assert np.array_equal(ours, np.rot90(cat))


def test_affine_matches_pillow_transform_with_the_documented_matrix(cat: np.ndarray) -> None:
    angle, (tx, ty), scale, shear = 20.0, (12.0, -7.0), 0.85, 10.0
    h, w = cat.shape[:2]
    # destination = R @ Shear @ (scale * (source - c)) + c + t, written out independently here
    a, s = math.radians(angle), math.radians(shear)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    forward = rot @ np.array([[1, math.tan(s)], [0, 1]]) * scale
    inv = np.linalg.inv(forward)
    c = np.array([w / 2, h / 2])
    offset = c - inv @ (c + np.array([tx, ty]))
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    ref = np.asarray(Image.fromarray(cat).transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR))
    ours = to_u8(geometry.affine(as_batch(cat), [angle], [(tx, ty)], [scale], [shear]))[0]
    _warp_tolerance(ours, ref)


def test_per_image_warps_in_one_batch_equal_separate_calls(cat: np.ndarray) -> None:
    x = as_batch(cat, cat[::-1].copy())
    both = geometry.affine(x, [10, -25], [(3, 0), (0, -4)], [1.0, 1.2], [0, 5], expand=True)
    size = (both.shape[2], both.shape[1])
    for i, (a, t, s, sh) in enumerate([(10, (3, 0), 1.0, 0), (-25, (0, -4), 1.2, 5)]):
        alone = geometry.affine(x[i : i + 1], [a], [t], [s], [sh], expand=True, out_size=size)
        assert torch.allclose(both[i], alone[0], atol=1e-5)
