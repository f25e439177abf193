"""Seeded random augmentation of IMAGE batches, each transform fixed or drawn from a range.

Every image of a batch draws its own parameters. Each transform happens with its probability
``p``; its magnitude is drawn uniformly from ``[min, max]`` (equal ends: a fixed value). Image
``i`` draws from a CPU generator seeded with ``derive_seed(seed, i)`` in a fixed order, so the
same seed gives the same result on any device, and one image's result does not depend on the
batch around it. Order of application: flips, one combined warp
(affine then rotation), saturation, brightness, greyscale.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from ..shared.batches import chunks
from ..shared.colors import RGB
from ..shared.progress import Progress, SilentProgress
from . import geometry, transforms


@dataclass(frozen=True)
class Range:
    p: float = 0.0
    low: float = 0.0
    high: float = 0.0

    def check(self, name: str) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{name}: probability must be between 0 and 1, not {self.p}")
        if self.low > self.high:
            raise ValueError(f"{name}: minimum {self.low} is above maximum {self.high}")


@dataclass(frozen=True)
class AugmentSpec:
    hflip: float = 0.0  # probabilities
    vflip: float = 0.0
    grayscale: float = 0.0
    saturation: Range = field(default_factory=Range)  # offset on S, -1..1
    brightness: Range = field(default_factory=lambda: Range(0.0, 1.0, 1.0))  # factor
    rotation: Range = field(default_factory=Range)  # degrees, counter-clockwise
    translate: Range = field(default_factory=Range)  # fraction of width/height, drawn per axis
    scale: Range = field(default_factory=lambda: Range(0.0, 1.0, 1.0))
    shear: Range = field(default_factory=Range)  # degrees
    expand: bool = False
    fill: RGB = (0.0, 0.0, 0.0)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "grayscale"):
            Range(getattr(self, name)).check(name)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Range):
                value.check(f.name)
        if self.brightness.low < 0:
            raise ValueError("brightness factors must be 0 or more")
        if self.scale.low <= 0:
            raise ValueError("scale must be above 0")
        if not -89.0 <= self.shear.low <= self.shear.high <= 89.0:
            raise ValueError("shear must stay within -89..89 degrees")
        if self.interpolation not in geometry.INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {geometry.INTERPOLATIONS}")


def _json_type(value: object) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def recipe_from_dict(raw: object, where: str = "the recipe") -> AugmentSpec:
    """An AugmentSpec from a recipe as JSON gives it: ``{"hflip": 0.5, "rotation": {"p": 0.5, "low": -15,
    "high": 15}, "fill": [0, 0, 0], ...}``, every key a field of AugmentSpec (ranges as objects with any of
    ``p``, ``low``, ``high``; omitted ones keep AugmentSpec's default). A wrong key or type is a ValueError
    naming ``where``, the key and the type it needs."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a JSON object of augmentation settings, not {_json_type(raw)}")
    known = {f.name: f for f in fields(AugmentSpec)}
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r}; the keys are {', '.join(known)}")
        default = getattr(AugmentSpec(), key)
        if isinstance(default, Range):
            parts = {f.name for f in fields(Range)}
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {key!r} must be an object with 'p', 'low' and 'high' numbers, "
                                 f"not {_json_type(value)}")
            for part, number in value.items():
                if part not in parts:
                    raise ValueError(f"{where}: unknown key {part!r} in {key!r}; a range has 'p', 'low' and 'high'")
                if not _is_number(number):
                    raise ValueError(f"{where}: '{key}.{part}' must be a number, not {_json_type(number)}")
            values[key] = replace(default, **value)
        elif key == "fill":
            if not (isinstance(value, list) and len(value) == 3 and all(_is_number(c) and 0 <= c <= 1 for c in value)):
                raise ValueError(f"{where}: 'fill' must be a list of three numbers from 0 to 1 (red, green, blue), "
                                 f"not {json.dumps(value)}")
            values[key] = tuple(float(c) for c in value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {key!r} must be true or false, not {_json_type(value)}")
            values[key] = value
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(f"{where}: {key!r} must be text, not {_json_type(value)}")
            values[key] = value
        else:
            if not _is_number(value):
                raise ValueError(f"{where}: {key!r} must be a number (a probability from 0 to 1), "
                                 f"not {_json_type(value)}")
            values[key] = float(value)
    try:
        return AugmentSpec(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def read_recipe(path: str | Path) -> AugmentSpec:
    """An augmentation recipe from a JSON file (see ``recipe_from_dict``); errors name the file."""
    where = f"recipe {str(path)!r}"
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}, line {exc.lineno}: not valid JSON: {exc.msg}") from None
    return recipe_from_dict(raw, where)


@dataclass(frozen=True)
class Draws:
    """The parameters drawn for a batch: booleans say whether a transform happens to image i."""

    hflip: torch.Tensor
    vflip: torch.Tensor
    grayscale: torch.Tensor
    saturation: torch.Tensor  # offset, 0 where not applied
    brightness: torch.Tensor  # factor, 1 where not applied
    angle: torch.Tensor
    translate: torch.Tensor  # [B, 2] fractions
    scale: torch.Tensor
    shear: torch.Tensor

    def select(self, index: slice | list[int]) -> "Draws":
        """The draws of some images of the batch."""
        return Draws(*(getattr(self, f.name)[index] for f in fields(Draws)))

    @property
    def warps(self) -> torch.Tensor:
        return (self.angle != 0) | (self.translate != 0).any(1) | (self.scale != 1) | (self.shear != 0)


def derive_seed(seed: int, *keys: int | str) -> int:
    """An independent 63-bit seed for ``keys`` under ``seed`` (no collisions between neighbours)."""
    digest = hashlib.sha256("/".join(map(str, (seed, *keys))).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _draw_one(spec: AugmentSpec, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def uniform(size: tuple[int, ...] = ()) -> torch.Tensor:
        return torch.rand(size, generator=gen, dtype=torch.float64)

    def happens(p: float) -> torch.Tensor:
        return uniform() < p

    def value(r: Range, neutral: float, size: tuple[int, ...] = ()) -> torch.Tensor:
        on = happens(r.p)
        drawn = r.low + (r.high - r.low) * uniform(size)
        return torch.where(on, drawn, torch.full_like(drawn, neutral))

    return [happens(spec.hflip), happens(spec.vflip), happens(spec.grayscale),
            value(spec.saturation, 0.0), value(spec.brightness, 1.0), value(spec.rotation, 0.0),
            value(spec.translate, 0.0, (2,)), value(spec.scale, 1.0), value(spec.shear, 0.0)]


def draw(spec: AugmentSpec, seeds: Sequence[int]) -> Draws:
    """One set of parameters per seed (one seed per image)."""
    per_image = [_draw_one(spec, s) for s in seeds]
    return Draws(*(torch.stack(column) for column in zip(*per_image)))


def _where(mask: torch.Tensor, changed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.to(original.device).reshape(-1, 1, 1, 1), changed, original)


def canvas(spec: AugmentSpec, draws: Draws, width: int, height: int) -> tuple[int, int]:
    """The output ``(width, height)`` of a whole batch: all its pictures share one canvas."""
    if not spec.expand:
        return width, height
    linears = [geometry.linear_part(a, s, sh) for a, s, sh in zip(draws.angle.tolist(), draws.scale.tolist(),
                                                                    draws.shear.tolist())]
    return geometry.canvas_size(linears, width, height)


def apply(images: torch.Tensor, spec: AugmentSpec, draws: Draws, out_size: tuple[int, int]) -> torch.Tensor:
    """Apply drawn parameters to ``[B, H, W, 3]`` on the batch's own device, onto an ``out_size`` canvas."""
    out = images
    if draws.hflip.any():
        out = _where(draws.hflip, transforms.hflip(out), out)
    if draws.vflip.any():
        out = _where(draws.vflip, transforms.vflip(out), out)
    _, h, w, _ = out.shape
    if draws.warps.any() or out_size != (w, h):
        translates = [(float(tx) * w, float(ty) * h) for tx, ty in draws.translate]
        out = geometry.affine(out, draws.angle.tolist(), translates, draws.scale.tolist(), draws.shear.tolist(),
                              spec.expand, spec.fill, spec.interpolation, out_size)
    if (draws.saturation != 0).any():
        out = transforms.adjust_saturation(out, draws.saturation)
    if (draws.brightness != 1).any():
        out = transforms.adjust_brightness(out, draws.brightness)
    if draws.grayscale.any():
        out = _where(draws.grayscale, transforms.grayscale(out), out)
    return out


def augment(images: torch.Tensor, spec: AugmentSpec, seed: int, progress: Progress | None = None) -> torch.Tensor:
    """Augment a batch; draws are made for the whole batch first, then applied chunk by chunk."""
    draws = draw(spec, [derive_seed(seed, i) for i in range(images.shape[0])])
    out_size = canvas(spec, draws, images.shape[2], images.shape[1])
    progress = progress or SilentProgress(images.shape[0])
    outs = []
    for start, stop in chunks(images):
        progress.check_cancel()
        part = draws.select(slice(start, stop))
        outs.append(apply(images[start:stop], spec, part, out_size))
        progress.advance(stop - start)
    return torch.cat(outs)
