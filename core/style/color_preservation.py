"""Keeping the content's colours under a style (Gatys et al., "Preserving color in neural artistic style
transfer", 2016): recolour the style image first, or transfer the style's luminance only."""
from __future__ import annotations

import torch

MODES = ("none", "match_style_colors", "luminance_only")

# RGB <-> YIQ (NTSC): Y carries the luminance, I and Q the colour
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def _sqrtm(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(1e-8)
    return vectors @ torch.diag(values.rsqrt() if inverse else values.sqrt()) @ vectors.T


def _mean_cov(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = pixels.mean(0)
    centred = pixels - mean
    # a ridge far below one 8-bit level squared (1.5e-5): it only keeps a flat direction from dividing by 0
    return mean, centred.T @ centred / max(1, pixels.shape[0] - 1) + 1e-8 * torch.eye(3, dtype=pixels.dtype)


def match_colors(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``style`` (``[H, W, 3]`` 0..1) moved by an affine map so its colour mean and covariance are those of
    ``content``.

    Not clipped to 0..1: on a contrasty photograph a tenth of the pixels or more land outside, and clipping
    them would take the promised statistics away again (the covariance then misses by a quarter). The
    encoder takes any values; only the stylized picture is clipped."""
    s = style.reshape(-1, 3).double().cpu()
    c = content.reshape(-1, 3).double().cpu()
    s_mean, s_cov = _mean_cov(s)
    c_mean, c_cov = _mean_cov(c)
    transform = _sqrtm(c_cov) @ _sqrtm(s_cov, inverse=True)
    out = (s - s_mean) @ transform.T + c_mean
    return out.reshape(style.shape).to(style.dtype).to(style.device)


def luminance_only(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylized picture's luminance with the content's colour (I and Q of YIQ); ``[..., 3]`` 0..1."""
    to_yiq = _RGB_TO_YIQ.to(stylized.device, stylized.dtype)
    y = stylized @ to_yiq[0]
    iq = content @ to_yiq[1:].T
    yiq = torch.cat([y[..., None], iq], -1)
    return (yiq @ torch.linalg.inv(to_yiq).T).clamp(0, 1)
