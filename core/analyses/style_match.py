"""Style by template matching (claims 16-17): which of a user's template pictures a work's style is nearest to.

A picture's style is the Gram matrices of the AdaIN VGG-19 encoder's relu1_1, relu2_1, relu3_1 and relu4_1
features (each ``F F^T / (C*H*W)`` for features ``F`` of shape ``[C, H*W]``), taken after resizing the picture
to a fixed shorter side so that distances between pictures of any size are comparable. Two styles are as far
apart as the mean squared difference of their Gram matrices, averaged over the four layers.

Gram matrices do not care where a texture sits, but a convolution's kernels do care which way it runs; so by
default each picture's Gram matrices are averaged over its four quarter turns, which makes the distance
exactly the same for the picture turned by 90, 180 or 270 degrees (``rotation_invariant``).

Templates are a folder of pictures, each with a ``<stem>.txt`` description (a template without one is
described by its file name, and the result says so once). Their Gram matrices are computed once per folder
state, encoder and size: kept in memory, and on disk (safetensors keyed by the picture's hash) where a cache
folder is given.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..dataset.image_files import folder_fingerprint, list_images, load_image, read_caption
from ..shared.colors import to_uint8
from ..story.strip import font_for
from ..style.adain_model import MIN_SIDE, AdaINModel

LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
DEFAULT_SIZE = 256
DEFAULT_SENTENCE = "{description}"
SENTENCE_FIELDS = ("description", "name", "distance")

Grams = tuple[torch.Tensor, ...]  # one [C, C] float32 matrix per layer


def resize_short_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[H, W, 3]`` in 0..1 scaled (antialiased bicubic) so that its shorter side is ``size``."""
    if size < MIN_SIDE:
        raise ValueError(f"size must be at least {MIN_SIDE} pixels (the encoder's three poolings need it), "
                         f"got {size}")
    height, width = image.shape[:2]
    scale = size / min(height, width)
    target = (max(size, round(height * scale)), max(size, round(width * scale)))
    planar = image.permute(2, 0, 1)[None].float()
    if target != (height, width):
        planar = F.interpolate(planar, size=target, mode="bicubic", antialias=True, align_corners=False)
    return planar.clamp(0.0, 1.0)[0].permute(1, 2, 0)


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``[C, C]`` of ``[C, H, W]`` features, normalised by ``C*H*W``."""
    c, h, w = features.shape
    flat = features.reshape(c, h * w).float()
    return flat @ flat.T / (c * h * w)


def gram_matrices(model: AdaINModel, image: torch.Tensor, size: int = DEFAULT_SIZE,
                  rotation_invariant: bool = True) -> Grams:
    """The four layers' Gram matrices of ``[H, W, 3]`` (0..1) resized to shorter side ``size``; with
    ``rotation_invariant`` averaged over the picture's four quarter turns."""
    planar = resize_short_side(image, size).permute(2, 0, 1)[None]
    device = next(model.encoder.parameters()).device
    turns = range(4) if rotation_invariant else range(1)
    sums: list[torch.Tensor] = []
    with torch.inference_mode():
        for k in turns:
            levels = model.encode_levels(torch.rot90(planar, k, dims=(2, 3)).to(device))
            grams = [gram(level[0]).cpu() for level in levels]
            sums = grams if not sums else [s + g for s, g in zip(sums, grams)]
    return tuple(s / len(turns) for s in sums)


def gram_distance(a: Grams, b: Grams) -> float:
    """Mean squared difference of two pictures' Gram matrices, averaged over the layers."""
    return float(sum(torch.mean((x - y) ** 2) for x, y in zip(a, b)) / len(a))


@dataclass(frozen=True)
class Template:
    path: Path
    description: str  # the <stem>.txt text, or the file name where there is none
    described: bool
    grams: Grams

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class TemplateBank:
    folder: Path
    templates: tuple[Template, ...]
    size: int
    rotation_invariant: bool

    @property
    def undescribed(self) -> list[str]:
        return [t.path.name for t in self.templates if not t.described]


_BANKS: dict[tuple[str, str, int, bool], TemplateBank] = {}
KEPT_BANKS = 4  # template folders kept in memory (the real encoder's Gram matrices take ~1.4 MB per template)


def _encoder_key(model: AdaINModel) -> str:
    # a model loaded from files is named by its weights; one built in memory by its object
    return model.encoder_sha256 or f"object-{id(model.encoder)}"


def _cached_grams(model: AdaINModel, path: Path, size: int, rotation_invariant: bool,
                  cache_dir: Path | None) -> Grams:
    """A template's Gram matrices, read from ``cache_dir`` when a file of the same picture bytes, encoder, size
    and rotation choice is there, else computed (and written there)."""
    from ..shared.state_dicts import file_sha256, write_safetensors

    if cache_dir is None:
        return gram_matrices(model, load_image(path), size, rotation_invariant)
    key = hashlib.sha256(f"{file_sha256(path)}|{_encoder_key(model)}|{size}|{rotation_invariant}".encode())
    cached = cache_dir / f"{key.hexdigest()[:32]}.safetensors"
    if cached.is_file():
        from safetensors.torch import load_file

        try:
            stored = load_file(str(cached))
            return tuple(stored[layer] for layer in LAYERS)
        except (OSError, KeyError, RuntimeError):
            pass  # a damaged cache file is computed again and replaced
    grams = gram_matrices(model, load_image(path), size, rotation_invariant)
    write_safetensors(cached, {layer: g.contiguous() for layer, g in zip(LAYERS, grams)},
                      {"format": "atelier-style-grams", "template": path.name})
    return grams


def load_templates(model: AdaINModel, folder: str | Path, size: int = DEFAULT_SIZE, rotation_invariant: bool = True,
                   cache_dir: Path | None = None, progress: Any = None) -> TemplateBank:
    """The template pictures of ``folder`` (not its sub-folders) with their descriptions and Gram matrices;
    computed once per folder state (files, sizes, times, descriptions), encoder, size and rotation choice."""
    files = list_images(folder)  # a missing or empty folder is an error here, before any encoding
    key = (folder_fingerprint(files), _encoder_key(model), size, rotation_invariant)
    if key in _BANKS:
        return _BANKS[key]
    templates = []
    for path in files:
        description = read_caption(path)
        grams = _cached_grams(model, path, size, rotation_invariant, cache_dir)
        templates.append(Template(path, description or path.stem, bool(description), grams))
        if progress is not None:
            progress.advance()
            progress.check_cancel()
    bank = TemplateBank(Path(folder), tuple(templates), size, rotation_invariant)
    while len(_BANKS) >= KEPT_BANKS:
        del _BANKS[next(iter(_BANKS))]  # the oldest
    _BANKS[key] = bank
    return bank


def check_sentence_template(text: str) -> str:
    """The sentence template, or a clear error naming the fields it may use."""
    text = text.strip() or DEFAULT_SENTENCE
    try:
        text.format(description="", name="", distance=0.0)
    except (KeyError, IndexError, ValueError) as exc:
        fields = ", ".join("{" + f + "}" for f in SENTENCE_FIELDS)
        raise ValueError(f"sentence template {text!r} does not work ({exc!r}); it may use {fields}, as in "
                         "'In the manner of {description}'") from exc
    return text


@dataclass(frozen=True)
class Match:
    template: str  # the template's file name
    distance: float
    description: str


@dataclass(frozen=True)
class StyleMatch:
    matches: tuple[Match, ...]  # nearest first
    sentence: str
    size: int
    rotation_invariant: bool
    notes: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        return {
            "matches": [{"template": m.template, "distance": float(f"{m.distance:.6g}"),
                         "description": m.description} for m in self.matches],
            "sentence": self.sentence,
            "layers": list(LAYERS),
            "distance": "mean squared difference of Gram matrices (normalised by C*H*W), averaged over the layers",
            "size": self.size,
            "rotation_invariant": self.rotation_invariant,
            "notes": list(self.notes),
        }


def match_style(model: AdaINModel, image: torch.Tensor, bank: TemplateBank, top_k: int = 3,
                sentence_template: str = DEFAULT_SENTENCE) -> StyleMatch:
    """The ``top_k`` templates nearest to ``image`` (``[H, W, 3]`` 0..1) and the style sentence: the best
    template's description put into ``sentence_template`` (``{description}``, ``{name}``, ``{distance}``)."""
    template_text = check_sentence_template(sentence_template)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    query = gram_matrices(model, image, bank.size, bank.rotation_invariant)
    scored = sorted(((gram_distance(query, t.grams), t) for t in bank.templates), key=lambda pair: pair[0])
    matches = tuple(Match(t.path.name, d, t.description) for d, t in scored[:top_k])
    best_distance, best = scored[0]
    sentence = template_text.format(description=best.description, name=best.name, distance=f"{best_distance:.4g}")
    notes = ()
    if bank.undescribed:
        notes = (f"{len(bank.undescribed)} template(s) in {str(bank.folder)!r} have no <stem>.txt description, so "
                 f"their file names are used: {', '.join(bank.undescribed)}",)
    return StyleMatch(matches, sentence, bank.size, bank.rotation_invariant, notes)


def _thumbnail(image: torch.Tensor, height: int) -> Image.Image:
    picture = Image.fromarray(to_uint8(image.float()).cpu().numpy())
    width = max(1, round(picture.width * height / picture.height))
    return picture.resize((width, height), Image.BICUBIC)


def preview(images: Sequence[torch.Tensor], results: Sequence[StyleMatch], bank: TemplateBank,
            height: int = 256) -> Image.Image:
    """One row per query picture: the query beside its best templates, each captioned with its name and distance."""
    by_name = {t.path.name: t for t in bank.templates}
    gap, caption = 8, 20
    rows = []
    for image, result in zip(images, results):
        tiles = [(_thumbnail(image, height), "query")]
        tiles += [(_thumbnail(load_image(by_name[m.template].path), height), f"{m.template}  {m.distance:.4g}")
                  for m in result.matches]
        rows.append(tiles)
    width = max(sum(t.width for t, _ in tiles) + gap * (len(tiles) + 1) for tiles in rows)
    row_height = height + caption + gap
    canvas = Image.new("RGB", (width, row_height * len(rows) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    font = font_for("".join(text for tiles in rows for _, text in tiles), 12)  # template names may be Korean
    for r, tiles in enumerate(rows):
        x, y = gap, gap + r * row_height
        for tile, text in tiles:
            canvas.paste(tile, (x, y))
            draw.text((x, y + height + 4), text, fill="black", font=font)
            x += tile.width + gap
    return canvas
