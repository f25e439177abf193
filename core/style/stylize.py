"""Stylize pictures with an AdaIN model: any size, several weighted styles, masks, colour preservation.

Pictures larger than ``tile`` on a side run in tiles. Encoding: each tile with ``overlap`` pixels of
context on every side (tile origins on the 8-pixel pooling grid), keeping only its core, so the
relu4_1 map of the whole picture is assembled exactly. The style transfer then runs on that whole
map, so the statistics are those of the whole picture, never of a tile. Decoding: the same tiles
with context, cross-faded over ``overlap / 2`` pixels around each seam. The decoder's output is
a multiple of 8 (ceil pooling) and is cropped back to the input's size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..shared.progress import Progress, SilentProgress
from . import color_preservation
from .adain_model import MIN_SIDE, AdaINModel
from .feature_transfer import METHODS, StyleTarget, check_mask_count, region_weights, style_target, transfer


@dataclass(frozen=True)
class StyleOptions:
    alpha: float = 1.0  # 1: all style; 0: the decoder's reconstruction of the content
    method: str = "adain"
    preserve_color: str = "none"
    tile: int = 1024  # pixels; larger pictures run in tiles of about this size
    overlap: int = 64  # pixels of context around each tile (a multiple of 8); half of it is cross-faded

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.alpha <= 1.0, "alpha must lie in 0..1"),
            (self.method in METHODS, f"method must be one of {METHODS}"),
            (self.preserve_color in color_preservation.MODES,
             f"preserve_color must be one of {color_preservation.MODES}"),
            (self.tile >= 64 and self.tile % 8 == 0, "tile must be a multiple of 8, at least 64"),
            (0 <= self.overlap <= self.tile and self.overlap % 8 == 0,
             "overlap must be a multiple of 8 between 0 and the tile size"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def recolours_styles(self) -> bool:
        """Whether each content picture recolours the styles, so their targets cannot be computed once."""
        return self.preserve_color == "match_style_colors"


def check_pictures(images: torch.Tensor, what: str) -> None:
    """``[B, H, W, 3]`` RGB of at least MIN_SIDE pixels a side, or a clear error."""
    if images.dim() != 4:
        raise ValueError(f"{what} must be an IMAGE batch [B, H, W, 3], not a tensor of shape {tuple(images.shape)}")
    channels = images.shape[-1]
    if channels != 3:
        kind = {1: "greyscale", 2: "greyscale with alpha", 4: "RGBA"}.get(channels, f"{channels}-channel")
        raise ValueError(f"{what} is {kind}; style transfer takes RGB pictures (convert it to RGB first, for "
                         "example by loading it with Load Image, which drops alpha into a separate MASK)")
    if images.shape[0] == 0:
        raise ValueError(f"{what} holds no picture")
    if min(images.shape[1:3]) < MIN_SIDE:
        raise ValueError(f"{what} is {images.shape[2]}x{images.shape[1]} pixels; style transfer needs at least "
                         f"{MIN_SIDE}x{MIN_SIDE}")


def normalised_weights(weights: list[float] | None, styles: int, what: str = "style picture") -> list[float]:
    """Style weights summing to 1 (None or empty: equal); a list that does not give one weight per ``what``
    is an error."""
    if weights is None or not weights:
        return [1.0 / styles] * styles
    if len(weights) != styles:
        raise ValueError(f"{len(weights)} style weight(s) for {styles} {what}(s): give one weight per {what}, in "
                         "their order, or none for equal weights")
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"style weights must be non-negative with a positive sum, not {weights}")
    return [w / sum(weights) for w in weights]


def parse_weights(text: str) -> list[float] | None:
    """'0.7, 0.3' -> [0.7, 0.3]; empty -> None (equal weights): style weights as typed in a node or command."""
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"style_weights must be numbers separated by commas, like '0.7, 0.3'; got {text!r}") from None


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    """About equal spans covering ``0..length``, at most ``tile`` long, starting on the 8-pixel grid."""
    count = math.ceil(length / tile)
    starts = [min(length, round(i * length / count / 8) * 8) for i in range(count)]
    return list(zip(starts, [*starts[1:], length]))


def encode(model: AdaINModel, image: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """relu4_1 features (float32) of ``[1, 3, H, W]``, in tiles when a side exceeds ``tile``."""
    height, width = image.shape[-2:]
    if height <= tile and width <= tile:
        return model.encode(image).float()
    out = torch.empty(1, model.channels, math.ceil(height / 8), math.ceil(width / 8), device=image.device)
    for y0, y1 in _spans(height, tile):
        for x0, x1 in _spans(width, tile):
            ys, xs = max(0, y0 - overlap), max(0, x0 - overlap)
            piece = model.encode(image[..., ys:min(height, y1 + overlap), xs:min(width, x1 + overlap)]).float()
            fy, fx, ny, nx = (y0 - ys) // 8, (x0 - xs) // 8, math.ceil((y1 - y0) / 8), math.ceil((x1 - x0) / 8)
            out[..., y0 // 8:y0 // 8 + ny, x0 // 8:x0 // 8 + nx] = piece[..., fy:fy + ny, fx:fx + nx]
    return out


def _fades(length: int, tile: int, blend: int, device: torch.device
            ) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """For each span along one side: its core start, kept start and end, and the weights over the kept range:
    rising across the seam before the core and falling after it, normalised so that all spans' weights add
    up to 1 everywhere (tile weights are products of two of these, so they add up to 1 too)."""
    total = torch.zeros(length, device=device)
    fades = []
    for start, stop in _spans(length, tile):
        k0, k1 = max(0, start - blend), min(length, stop + blend)
        p = torch.arange(k0, k1, device=device, dtype=torch.float32) + 0.5
        w = torch.ones_like(p)
        if blend and start > 0:
            w = w * ((p - (start - blend)) / (2 * blend)).clamp(0, 1)
        if blend and stop < length:
            w = w * (((stop + blend) - p) / (2 * blend)).clamp(0, 1)
        total[k0:k1] += w
        fades.append((start, stop, k0, k1, w))
    return [(start, stop, k0, k1, w / total[k0:k1]) for start, stop, k0, k1, w in fades]


def decode(model: AdaINModel, features: torch.Tensor, out: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Decode relu4_1 features into ``out`` (``[H, W, 3]``), in cross-faded tiles when a side exceeds ``tile``.

    The cross-fade weights add up to 1 everywhere, so tiles are summed straight into ``out``.
    """
    height, width = out.shape[:2]
    if height <= tile and width <= tile:
        return out.copy_(model.decode(features)[0, :, :height, :width].permute(1, 2, 0))
    fh, fw = features.shape[-2:]
    out.zero_()
    blend, margin = overlap // 2, overlap // 8
    for y0, y1, ky0, ky1, wy in _fades(height, tile, blend, out.device):
        for x0, x1, kx0, kx1, wx in _fades(width, tile, blend, out.device):
            fys, fxs = max(0, y0 // 8 - margin), max(0, x0 // 8 - margin)
            fye, fxe = min(fh, math.ceil(y1 / 8) + margin), min(fw, math.ceil(x1 / 8) + margin)
            piece = model.decode(features[..., fys:fye, fxs:fxe])[0].permute(1, 2, 0).float()
            crop = piece[ky0 - 8 * fys:ky1 - 8 * fys, kx0 - 8 * fxs:kx1 - 8 * fxs]
            out[ky0:ky1, kx0:kx1] += crop * (wy[:, None] * wx[None, :])[..., None]
    return out


def _planar(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``[H, W, 3]`` as ``[1, 3, H, W]`` in channels-last memory, the layout convolutions run fastest in."""
    return image[None].to(device, torch.float32).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def style_targets(model: AdaINModel, styles: list[torch.Tensor], options: StyleOptions,
                  device: torch.device | str = "cpu") -> list[StyleTarget]:
    """What ``stylize`` moves content features towards, one per style picture: computed once, it serves every
    call with the same styles and options (unless ``options.recolours_styles``)."""
    device = torch.device(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        return [style_target(encode(model, _planar(s.float(), device), options.tile, options.overlap), options.method)
                for s in styles]


def stylize(model: AdaINModel, content: torch.Tensor, styles: list[torch.Tensor], options: StyleOptions,
            style_weights: list[float] | None = None, masks: torch.Tensor | None = None,
            device: torch.device | str = "cpu", progress: Progress | None = None,
            targets: list[StyleTarget] | None = None) -> torch.Tensor:
    """``content`` (``[B, H, W, 3]`` 0..1) in the style of ``styles`` (each ``[h, w, 3]``, any size), mixed by
    ``style_weights`` or placed by ``masks`` (``[M, H, W]``, see feature_transfer.region_weights). ``targets``
    from ``style_targets`` skips encoding the styles again."""
    check_pictures(content, "content")
    if not styles:
        raise ValueError("no style picture")
    for i, style in enumerate(styles):
        check_pictures(style[None], f"style {i + 1}")
    weights = normalised_weights(style_weights, len(styles))
    if masks is not None:
        masks = masks[None] if masks.dim() == 2 else masks
        if tuple(masks.shape[-2:]) != tuple(content.shape[1:3]):
            raise ValueError(f"the mask is {masks.shape[-1]}x{masks.shape[-2]} but the content is "
                             f"{content.shape[2]}x{content.shape[1]}: they must be the same size")
        check_mask_count(masks.shape[0], len(styles))
    device = torch.device(device)
    progress = progress or SilentProgress(content.shape[0])
    height, width = content.shape[1:3]
    results = torch.empty(content.shape, dtype=torch.float32)
    if targets is not None and len(targets) != len(styles):
        raise ValueError(f"{len(targets)} style targets for {len(styles)} style pictures")
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        for b in range(content.shape[0]):
            progress.check_cancel()
            image = content[b].float()
            if options.recolours_styles:
                targets = style_targets(model, [color_preservation.match_colors(s.float(), image) for s in styles],
                                        options, device)
            elif targets is None:
                targets = style_targets(model, styles, options, device)
            features = encode(model, _planar(image, device), options.tile, options.overlap)
            regions = None if masks is None else region_weights(masks.to(device), len(styles), weights,
                                                                tuple(features.shape[-2:]))
            moved = transfer(features, targets, options.method, weights, regions)
            if options.alpha < 1:
                moved = moved.mul_(options.alpha).add_(features, alpha=1 - options.alpha)
            del features
            slot = results[b]
            out = slot if device.type == "cpu" else torch.empty(height, width, 3, device=device)
            decode(model, moved, out, options.tile, options.overlap).clamp_(0, 1)
            if options.preserve_color == "luminance_only":
                out = color_preservation.luminance_only(out, image.to(out.device))
            if out is not slot:  # decoded on the GPU, or recoloured
                slot.copy_(out)
            progress.advance()
    return results
