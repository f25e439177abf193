"""Moving content features to a style's feature distribution: AdaIN and EFDM, over whole maps or regions.

AdaIN replaces each channel's mean and standard deviation (Huang and Belongie, 2017); EFDM
(Zhang et al., 2022) matches the whole distribution: the content value of rank r takes the style
value of the same quantile. Style targets are computed once per style and reused for every
content picture. With several styles, ``region_weights`` (``[K, h, w]``, summing to 1 at each
position) say how much of each style every position takes: AdaIN blends the K transferred maps
with these weights, each normalised by the content statistics of its own (weighted) region; EFDM
gives each position the style of its largest weight, ranked within that region.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-5  # added to the variance, as the reference AdaIN does
METHODS = ("adain", "efdm")


def mean_std(features: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``[B, C, h, w]`` as ``[B, C, 1, 1]``, unbiased as the reference AdaIN takes
    them, over the whole map or over a region given by ``weight`` (``[h, w]``, non-negative)."""
    x = features.float().flatten(2)
    if weight is None:
        mean, var = x.mean(-1), x.var(-1)
    else:
        w = weight.float().flatten().to(x.device)
        total = w.sum().clamp_min(1e-8)
        mean = (x * w).sum(-1) / total
        var = ((x - mean.unsqueeze(-1)).pow(2) * w).sum(-1) / (total - 1).clamp_min(1e-8)  # unbiased for 0/1 masks
    return mean[..., None, None], (var + EPS).sqrt()[..., None, None]


@dataclass
class StyleTarget:
    """What one style image contributes: its relu4_1 statistics, and for EFDM its sorted values."""

    mean: torch.Tensor  # [1, C, 1, 1]
    std: torch.Tensor
    sorted_values: torch.Tensor | None = None  # [C, n] ascending, for EFDM


def style_target(features: torch.Tensor, method: str) -> StyleTarget:
    mean, std = mean_std(features)
    sorted_values = features[0].float().flatten(1).sort(-1).values if method == "efdm" else None
    return StyleTarget(mean, std, sorted_values)


def adain(content: torch.Tensor, target: StyleTarget, weight: torch.Tensor | None = None) -> torch.Tensor:
    mean, std = mean_std(content, weight)
    return (content.float() - mean) / std * target.std + target.mean


def _quantiles(sorted_values: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` evenly spaced quantiles of each row of ``sorted_values`` ([C, n] -> [C, count])."""
    n = sorted_values.shape[-1]
    if n == count:
        return sorted_values
    position = (torch.arange(count, device=sorted_values.device, dtype=torch.float32) + 0.5) * n / count - 0.5
    position = position.clamp(0, n - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=n - 1)
    frac = position - low
    return sorted_values[:, low] * (1 - frac) + sorted_values[:, high] * frac


def efdm(content: torch.Tensor, target: StyleTarget, region: torch.Tensor | None = None) -> torch.Tensor:
    """Each content value takes the style value of its rank (ties broken by position), over the whole map or
    the positions where ``region`` (``[h, w]`` bool) is true; other positions keep their content value."""
    if target.sorted_values is None:
        raise ValueError("EFDM needs the style's sorted features: make the target with method 'efdm'")
    out = content.float().clone()
    flat = out.flatten(2)  # [B, C, n], a view of out
    index = None if region is None else region.flatten().nonzero().squeeze(1).to(flat.device)
    for b in range(flat.shape[0]):
        values = flat[b] if index is None else flat[b][:, index]
        if values.shape[-1] == 0:
            continue
        order = values.argsort(dim=-1, stable=True)
        matched = torch.empty_like(values)
        matched.scatter_(-1, order, _quantiles(target.sorted_values.to(values.device), values.shape[-1]))
        if index is None:
            flat[b] = matched
        else:
            flat[b][:, index] = matched
    return out


def transfer(content: torch.Tensor, targets: list[StyleTarget], method: str,
             style_weights: list[float], region_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Content relu4_1 features moved to the styles: mixed by ``style_weights`` (summing to 1), or placed by
    ``region_weights`` (``[K, h, w]``, one map per style) when given."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if region_weights is None:
        if method == "adain":
            return sum(w * adain(content, t) for w, t in zip(style_weights, targets) if w)
        return sum(w * efdm(content, t) for w, t in zip(style_weights, targets) if w)
    region_weights = region_weights.to(content.device)
    if method == "adain":
        return sum(region_weights[k] * adain(content, t, region_weights[k])
                   for k, t in enumerate(targets) if region_weights[k].any())
    owner = region_weights.argmax(0)
    out = content.float().clone()
    for k, t in enumerate(targets):
        region = owner == k
        if region.any():
            out = torch.where(region, efdm(content, t, region), out)
    return out


def check_mask_count(masks: int, styles: int) -> None:
    if masks not in (styles, styles - 1) or masks == 0:
        raise ValueError(f"{masks} mask(s) for {styles} style(s): give one mask per style, or one fewer "
                         "(the last style takes the rest)")


def region_weights(masks: torch.Tensor, styles: int, style_weights: list[float], size: tuple[int, int]
                   ) -> torch.Tensor:
    """Per-style weight maps at feature size ``(h, w)`` from ``masks`` (``[M, H, W]``, 0..1).

    M == styles: mask k is style k's region; M == styles - 1: the last style takes what the masks leave.
    Where masks overlap they share; where they leave some of a position uncovered, the styles share
    it by ``style_weights``.
    """
    check_mask_count(masks.shape[0], styles)
    small = F.interpolate(masks[:, None].float().clamp(0, 1), size=size, mode="area")[:, 0]
    if masks.shape[0] == styles - 1:
        small = torch.cat([small, (1 - small.sum(0, keepdim=True)).clamp_min(0)])
    covered = small.sum(0, keepdim=True)
    shares = torch.tensor(style_weights, dtype=small.dtype, device=small.device)[:, None, None]
    small = small + (1 - covered).clamp_min(0) * shares
    return small / small.sum(0, keepdim=True).clamp_min(1e-8)
