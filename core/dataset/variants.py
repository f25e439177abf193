"""The nine named variants a dataset is multiplied by, rendered batch-wide to 8-bit pixels.

``brightness_down`` / ``brightness_up``: brightness factor; ``saturation_down`` /
``saturation_up``: offset on HSV S; ``gray_scale``; ``horizontal_flip`` / ``vertical_flip``;
``rotation_+A`` / ``rotation_-A``: counter-clockwise / clockwise by ``A`` degrees, same canvas,
corners filled. Semantics are those of core.transforms and core.geometry.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
from PIL import Image

from ..shared.batches import chunks
from ..shared.colors import RGB
from ..shared.plots import to_image_tensor
from . import geometry, transforms

KINDS = (
    "brightness_down", "brightness_up", "gray_scale", "horizontal_flip", "rotation_plus",
    "rotation_minus", "saturation_down", "saturation_up", "vertical_flip",
)


@dataclass(frozen=True)
class VariantSettings:
    brightness_down: float = 0.7
    brightness_up: float = 1.3
    saturation_down: float = -0.2
    saturation_up: float = 0.2
    angle: float = 45.0
    fill: RGB = (0.0, 0.0, 0.0)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if not 0.0 <= self.brightness_down <= 1.0 or self.brightness_up < 1.0:
            raise ValueError("brightness_down must lie in 0..1 and brightness_up be 1 or more")
        if not -1.0 <= self.saturation_down <= 0.0 <= self.saturation_up <= 1.0:
            raise ValueError("saturation_down must lie in -1..0 and saturation_up in 0..1")
        if not 0.0 < self.angle < 360.0:
            raise ValueError("rotation angle must lie between 0 and 360 degrees")
        if self.interpolation not in geometry.INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {geometry.INTERPOLATIONS}")

    def name(self, kind: str) -> str:
        """The file-name suffix of a variant: the kind, with the real angle for rotations."""
        if kind == "rotation_plus":
            return f"rotation_+{self.angle:g}"
        if kind == "rotation_minus":
            return f"rotation_-{self.angle:g}"
        return kind

    def parameters(self, kind: str) -> dict[str, object]:
        """What the manifest records about how a variant was made."""
        if kind.startswith("brightness"):
            return {"factor": getattr(self, kind)}
        if kind.startswith("saturation"):
            return {"hsv_s_offset": getattr(self, kind)}
        if kind.startswith("rotation"):
            sign = 1 if kind == "rotation_plus" else -1
            return {"degrees_counter_clockwise": sign * self.angle, "fill": list(asdict(self)["fill"]),
                    "interpolation": self.interpolation, "expand": False}
        return {}


def parse_kinds(names: Iterable[str], settings: VariantSettings) -> list[str]:
    """Kinds from their ids or file-name suffixes (``rotation_+45``), in the canonical order."""
    by_name = {settings.name(k): k for k in KINDS} | {k: k for k in KINDS}
    chosen = set()
    for name in names:
        if name not in by_name:
            raise ValueError(f"unknown variant {name!r}; choose from {', '.join(settings.name(k) for k in KINDS)}")
        chosen.add(by_name[name])
    return [k for k in KINDS if k in chosen]


def _render_planar(x: torch.Tensor, kind: str, s: VariantSettings) -> torch.Tensor:
    """One kind of a planar ``[B, 3, H, W]`` piece on the 8-bit scale (0..255 floats)."""
    if kind == "gray_scale":
        return transforms.luma(x, dim=1)
    if kind in ("brightness_down", "brightness_up"):
        return transforms.adjust_brightness(x, getattr(s, kind), dim=1, peak=255.0)
    angle = s.angle if kind == "rotation_plus" else -s.angle
    fill = tuple(255.0 * v for v in s.fill)
    return geometry.rotate(x, angle, expand=False, fill=fill, interpolation=s.interpolation, dim=1)


def _quantise_into(target: torch.Tensor, scaled: torch.Tensor) -> None:
    """Write 0..255 floats into uint8 ``target`` rounding half up (consumes ``scaled``)."""
    target.copy_(scaled.add_(0.5).clamp_(0.0, 255.0))


def _planar_255(images: torch.Tensor) -> torch.Tensor:
    """An IMAGE batch as planar ``[B, 3, H, W]`` floats on the 8-bit scale, in one pass."""
    b, h, w, c = images.shape
    planar = torch.empty((b, c, h, w), dtype=torch.float32, device=images.device)
    torch.mul(images.permute(0, 3, 1, 2), 255.0, out=planar)
    return planar


def _render_piece(planar: torch.Tensor, kinds: list[str], settings: VariantSettings
                  ) -> Iterator[tuple[str, torch.Tensor]]:
    """Each kind's planar uint8 pixels for one piece of a batch, on the piece's device."""
    if any(k.endswith("flip") for k in kinds):
        # flips commute with quantisation: they move 8-bit pixels, not floats
        base = torch.empty_like(planar, dtype=torch.uint8)
        _quantise_into(base, planar.clone())
    saturations = [k for k in kinds if k.startswith("saturation")]
    if saturations:
        # the offsets share the per-pixel work; results lie within [0, V], so rounding needs no clamp
        value, below, factors = transforms.saturation_factors(
            planar, [getattr(settings, k) for k in saturations], dim=1)
        rounding = value.add_(0.5)
        quantised = {k: torch.addcmul(rounding, below, f, value=-1.0).to(torch.uint8)
                     for k, f in zip(saturations, factors)}
    for kind in kinds:
        if kind == "horizontal_flip":
            yield kind, base.flip(3)
        elif kind == "vertical_flip":
            yield kind, base.flip(2)
        elif kind in saturations:
            yield kind, quantised.pop(kind)
        else:
            target = torch.empty_like(planar, dtype=torch.uint8)
            _quantise_into(target, _render_planar(planar, kind, settings))  # a one-plane grey broadcasts
            yield kind, target


def render(images: torch.Tensor, kinds: Iterable[str], settings: VariantSettings) -> dict[str, list[Image.Image]]:
    """Each kind's RGB Pillow images for a float IMAGE batch.

    The work is planar, where every step is cheapest, and goes a cache-sized piece at a time
    (the whole batch on a GPU): each piece becomes Pillow images while its pixels are still in
    cache, which on a CPU is several times faster than converting the whole batch afterwards.
    """
    kinds = list(kinds)
    out: dict[str, list[Image.Image]] = {k: [] for k in kinds}
    for start, stop in chunks(images):
        for kind, pixels in _render_piece(_planar_255(images[start:stop]), kinds, settings):
            out[kind] += _to_pils(pixels)
    return out


def render_original(images: torch.Tensor) -> list[Image.Image]:
    """The batch itself as 8-bit RGB Pillow images."""
    out: list[Image.Image] = []
    for start, stop in chunks(images):
        planar = _planar_255(images[start:stop])
        eight_bit = torch.empty_like(planar, dtype=torch.uint8)
        _quantise_into(eight_bit, planar)
        out += _to_pils(eight_bit)
    return out


def preview(images: torch.Tensor, kinds: Iterable[str], settings: VariantSettings,
            include_original: bool = True) -> torch.Tensor:
    """An IMAGE batch of the (8-bit exact) original and variants of every picture of ``images``."""
    kinds = list(kinds)
    rendered = render(images, kinds, settings)
    pictures = (render_original(images) if include_original else []) + [p for k in kinds for p in rendered[k]]
    return torch.cat([to_image_tensor(p) for p in pictures]) if pictures else images


def _to_pils(planar: torch.Tensor) -> list[Image.Image]:
    return [to_pil(p) for p in planar.cpu()]


def to_pil(planar: torch.Tensor) -> Image.Image:
    """One ``[3, H, W]`` uint8 image as an RGB Pillow image (Pillow merges planes faster than it reads
    interleaved pixels)."""
    return Image.merge("RGB", [Image.fromarray(plane) for plane in planar.numpy()])


# Colour words a greyscale copy's caption drops (whole words, any case), so a grey picture is not captioned
# "a red barn": English names of hues and Korean ones with their common adjective and -색 forms. Black, white
# and grey stay: a greyscale picture still shows them.
COLOUR_WORDS = frozenset("""
red orange yellow green blue purple violet pink brown cyan magenta teal turquoise indigo gold golden silver
crimson scarlet maroon navy beige lavender lime olive amber coral colorful colourful multicolored multicoloured
빨간 빨강 빨간색 붉은 주황 주황색 노란 노랑 노란색 초록 초록색 녹색 푸른 파란 파랑 파란색 하늘색 남색 청록색 보라
보라색 분홍 분홍색 갈색 금색 은색 다채로운 알록달록한
""".split())
_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


def without_colour_words(caption: str) -> str:
    """``caption`` with the words of ``COLOUR_WORDS`` removed and the spaces and commas they leave tidied."""
    text = _WORD.sub(lambda m: "" if m[0].casefold() in COLOUR_WORDS else m[0], caption)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;])(\s*[,;])+", r"\1", text)
    return "\n".join(line.strip(" ,;") for line in text.splitlines()) if text.strip() else ""
