"""Rotation and affine warps of IMAGE batches, batched through one ``grid_sample`` call.

Coordinates are in pixels with the origin at the top-left corner of the top-left pixel, so
pixel centres sit at ``i + 0.5``, as in Pillow. Angles are in degrees and positive angles
turn the picture counter-clockwise on screen, as ``PIL.Image.rotate`` does. The affine map
about the image centre ``c`` is::

    destination = R(angle) @ Shear(shear) @ (scale * (source - c)) + c_out + translate

with ``Shear(s) = [[1, tan s], [0, 1]]`` (a horizontal shear). With ``expand`` the canvas
grows to hold the whole warped picture (Pillow's rule: ``ceil(max) - floor(min)`` of the
warped corners); without it the canvas keeps the input size. Uncovered pixels take the fill
colour, and the border between picture and fill is blended by the sampler's coverage.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..shared.colors import RGB

INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


def linear_part(angle: float, scale: float = 1.0, shear: float = 0.0) -> torch.Tensor:
    """The 2x2 source-to-destination matrix (float64) of rotation, shear and scale."""
    a = math.radians(angle)
    # rounded as Pillow rounds, so that 90 and 180 degrees give exact zeros and no stray pixel
    cos, sin = round(math.cos(a), 15), round(math.sin(a), 15)
    rotation = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64)
    shear_m = torch.tensor([[1.0, math.tan(math.radians(shear))], [0.0, 1.0]], dtype=torch.float64)
    return rotation @ shear_m * scale


def expanded_size(linear: torch.Tensor, width: int, height: int) -> tuple[int, int]:
    """Width and height of the smallest canvas that holds the warped ``width x height`` picture.

    Pillow's rule, corners taken about the centre in absolute coordinates (so odd sizes round as
    Pillow rounds them), and quarter turns swap the sides exactly, as Pillow's transpose does.
    """
    entries = linear.abs().flatten().tolist()
    if sorted(entries) == [0.0, 0.0, 1.0, 1.0]:
        return (height, width) if entries[0] == 0.0 else (width, height)
    centre = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    corners = torch.tensor([[0, 0], [width, 0], [width, height], [0, height]], dtype=torch.float64) - centre
    moved = corners @ linear.T + centre
    # rounding keeps float noise (1e-13) from adding a whole pixel row
    lo = torch.round(moved.min(0).values, decimals=9)
    hi = torch.round(moved.max(0).values, decimals=9)
    return int(math.ceil(hi[0]) - math.floor(lo[0])), int(math.ceil(hi[1]) - math.floor(lo[1]))


def canvas_size(linears: Sequence[torch.Tensor], width: int, height: int) -> tuple[int, int]:
    """The expanded canvas that holds every one of several warps of a ``width x height`` picture."""
    sizes = [expanded_size(m, width, height) for m in linears]
    return max(s[0] for s in sizes), max(s[1] for s in sizes)


def inverse_map(
    linear: torch.Tensor, translate: tuple[float, float], in_size: tuple[int, int], out_size: tuple[int, int]
) -> torch.Tensor:
    """The 2x3 destination-to-source matrix in pixel coordinates (sizes as ``(width, height)``)."""
    inv = torch.linalg.inv(linear)
    c_in = torch.tensor([in_size[0] / 2, in_size[1] / 2], dtype=torch.float64)
    c_out = torch.tensor([out_size[0] / 2 + translate[0], out_size[1] / 2 + translate[1]], dtype=torch.float64)
    return torch.cat([inv, (c_in - inv @ c_out)[:, None]], dim=1)


def _normalised_theta(inverse: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """Turn pixel-space destination-to-source maps ``[B, 2, 3]`` into ``affine_grid``'s normalised form."""
    (wi, hi), (wo, ho) = in_size, out_size
    # normalised x_n = 2 x / W - 1 (align_corners=False); theta = N_in @ M @ N_out^-1
    n_in = torch.tensor([[2 / wi, 0, -1], [0, 2 / hi, -1], [0, 0, 1]], dtype=torch.float64)
    n_out_inv = torch.tensor([[wo / 2, 0, wo / 2], [0, ho / 2, ho / 2], [0, 0, 1]], dtype=torch.float64)
    bottom = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64).expand(inverse.shape[0], 1, 3)
    full = torch.cat([inverse.to(torch.float64), bottom], dim=1)
    return (n_in @ full @ n_out_inv)[:, :2]


def _grid(inverse: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int],
          device: torch.device | str) -> torch.Tensor:
    theta = _normalised_theta(inverse, in_size, out_size).to(device=device, dtype=torch.float32)
    return F.affine_grid(theta, [theta.shape[0], 1, out_size[1], out_size[0]], align_corners=False)


@functools.lru_cache(maxsize=16)
def _shared_grid(key: tuple[float, ...], in_size: tuple[int, int], out_size: tuple[int, int],
                 device: str) -> torch.Tensor:
    """One sampling grid reused by every piece of a batch (and every batch) warped the same way."""
    inverse = torch.tensor(key, dtype=torch.float64).reshape(1, 2, 3)
    return _grid(inverse, in_size, out_size, device)


def warp(
    images: torch.Tensor,
    inverse: torch.Tensor,
    out_size: tuple[int, int],
    fill: RGB | torch.Tensor = (0.0, 0.0, 0.0),
    interpolation: str = "bilinear",
    dim: int = -1,
) -> torch.Tensor:
    """Resample ``[B, H, W, C]`` images (``[B, C, H, W]`` with ``dim=1``) through destination-to-source
    maps ``[B, 2, 3]`` (or ``[1, 2, 3]`` shared by the batch) onto a ``(width, height)`` canvas;
    ``fill`` is one colour or one per image."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, not {interpolation!r}")
    nchw = images if dim == 1 else images.permute(0, 3, 1, 2)
    b, c, h, w = nchw.shape
    shared = inverse.shape[0] == 1
    if shared:
        key = tuple(round(v, 12) for v in inverse.flatten().tolist())
        grid = _shared_grid(key, (w, h), out_size, str(images.device))
    else:
        grid = _grid(inverse, (w, h), out_size, images.device)
    out = F.grid_sample(nchw, grid.expand(b, -1, -1, -1) if shared else grid, mode=interpolation,
                        padding_mode="zeros", align_corners=False)
    fill_t = torch.as_tensor(fill, dtype=images.dtype, device=images.device).reshape(-1, c, 1, 1)
    if bool((fill_t != 0).any()):
        # one coverage map serves the whole batch when every image shares the map
        ones = torch.ones((1 if shared else b, 1, h, w), dtype=images.dtype, device=images.device)
        coverage = F.grid_sample(ones, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
        out = out + (1.0 - coverage.clamp(0.0, 1.0)) * fill_t
    if interpolation == "bicubic":
        out = out.clamp(0.0, 1.0)
    return out if dim == 1 else out.permute(0, 2, 3, 1)


def rotate(
    images: torch.Tensor,
    angle: float,
    expand: bool = False,
    fill: RGB = (0.0, 0.0, 0.0),
    interpolation: str = "bilinear",
    dim: int = -1,
) -> torch.Tensor:
    """Rotate every image of a batch by one angle, as ``PIL.Image.rotate(angle, expand=expand)``."""
    return affine(images, [angle], [(0.0, 0.0)], [1.0], [0.0], expand, fill, interpolation, dim=dim)


def affine(
    images: torch.Tensor,
    angles: Sequence[float],
    translates: Sequence[tuple[float, float]],
    scales: Sequence[float],
    shears: Sequence[float],
    expand: bool = False,
    fill: RGB | torch.Tensor = (0.0, 0.0, 0.0),
    interpolation: str = "bilinear",
    out_size: tuple[int, int] | None = None,
    dim: int = -1,
) -> torch.Tensor:
    """Warp each image by its own parameters (sequences of length B, or length 1 for the whole batch).

    With ``expand`` and differing parameters the canvas is the largest any image needs, so the
    batch keeps one size; each picture is centred on it. ``out_size`` overrides the canvas (used
    to keep one canvas across the pieces of a batch).
    """
    h, w = images.shape[-2:] if dim == 1 else images.shape[1:3]
    linears = [linear_part(a, s, sh) for a, s, sh in zip(angles, scales, shears)]
    if out_size is None:
        out_size = canvas_size(linears, w, h) if expand else (w, h)
    inverse = torch.stack([inverse_map(m, t, (w, h), out_size) for m, t in zip(linears, translates)])
    return warp(images, inverse, out_size, fill, interpolation, dim)
