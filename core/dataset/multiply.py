"""Multiply a dataset: each original plus its named variants (and seeded random ones) as PNGs.

Files are ``<stem>.png`` for the original and ``<stem>__<variant>.png`` for each variant (stems made
distinct by ``output_paths.unique_stems``), a caption sidecar ``<stem>.txt`` is copied beside every file
made from it (without colour words beside a greyscale copy), and ``manifest.jsonl``
records source, variant, parameters, seed and sha256 of every file (see core.dataset_writer).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from ..shared.output_paths import unique_stems
from ..shared.progress import Progress, SilentProgress
from . import augment, variants
from .writer import DatasetWriter, WrittenDataset, iter_groups

# images per batch: enough to keep a GPU busy, few enough for an 8 GB card at 1024 px
BATCH = 16


@dataclass
class Original:
    image: torch.Tensor  # [H, W, 3] float 0..1
    stem: str
    caption: str | None = None
    source: str = ""


@dataclass(frozen=True)
class RandomVariants:
    """``count`` extra variants per original drawn from ``spec``, named ``random_01``..."""

    spec: augment.AugmentSpec
    count: int
    seed: int


def _random_parameters(draws: augment.Draws, i: int) -> dict[str, object]:
    """What image ``i`` of a batch actually got, for the manifest."""
    d = {name: getattr(draws, name)[i].tolist() for name in
         ("hflip", "vflip", "grayscale", "saturation", "brightness", "angle", "translate", "scale", "shear")}
    neutral = {"hflip": False, "vflip": False, "grayscale": False, "saturation": 0.0, "brightness": 1.0,
               "angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": 0.0}
    return {k: v for k, v in d.items() if v != neutral[k]}


def plan_size(originals: Sequence[Original], kinds: Sequence[str], include_original: bool,
              random: RandomVariants | None) -> int:
    per_image = len(kinds) + int(include_original) + (random.count if random else 0)
    return len(originals) * per_image


def write_originals(writer: DatasetWriter, stems: Sequence[str], originals: Sequence[Original]) -> None:
    """Each original as ``<stem>.png`` with its own caption, recorded as every version folder records its
    originals (variant "original", no parameters, no seed)."""
    for stem, original in zip(stems, originals):
        writer.add_image(variants.render_original(original.image[None])[0], stem, original.caption,
                         {"source": original.source, "stem": stem, "variant": "original", "parameters": {},
                          "seed": None})


def multiply(
    originals: Sequence[Original],
    parent: Path,
    kinds: Sequence[str] = variants.KINDS,
    settings: variants.VariantSettings = variants.VariantSettings(),
    include_original: bool = True,
    random: RandomVariants | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> WrittenDataset:
    """Write the multiplied dataset as the next version folder under ``parent``; ``progress`` counts the files
    written (its total is ``plan_size``)."""
    if not originals:
        raise ValueError("no images to multiply")
    if plan_size(originals, kinds, include_original, random) == 0:
        raise ValueError("nothing to write: choose at least one variant, the original or random variants")
    count = random.count if random is not None else 0
    names = [settings.name(k) for k in kinds] + [_random_name(k, count) for k in range(1, count + 1)]
    stems = unique_stems([o.stem for o in originals], [""] + [f"__{name}" for name in names])
    progress = progress or SilentProgress(plan_size(originals, kinds, include_original, random))
    sizes = [(o.image.shape[0], o.image.shape[1]) for o in originals]
    with DatasetWriter(parent, progress=progress) as writer:
        for group in iter_groups(sizes, BATCH):
            progress.check_cancel()
            batch = torch.stack([originals[i].image for i in group]).to(device)
            rendered = variants.render(batch, kinds, settings)
            outputs: list[tuple[int, str, Image.Image, dict[str, object], int | None, bool]] = []
            if include_original:
                originals_8bit = variants.render_original(batch)
                outputs += [(j, "", originals_8bit[j], {}, None, False) for j in range(len(group))]
            for kind in kinds:
                outputs += [(j, settings.name(kind), rendered[kind][j], settings.parameters(kind), None,
                             kind == "gray_scale") for j in range(len(group))]
            if random is not None:
                outputs += _random_outputs(batch, [stems[i] for i in group], random)
            writer.wait(keep=2 * BATCH * 12)  # rendering runs ahead of encoding by about two batches
            for j, name, picture, parameters, seed, grey in outputs:
                original = originals[group[j]]
                file_stem = f"{stems[group[j]]}__{name}" if name else stems[group[j]]
                caption = original.caption
                if grey and caption is not None:  # a grey copy is not "a red barn"
                    caption = variants.without_colour_words(caption)
                writer.add_image(
                    picture, file_stem, caption,
                    {"source": original.source, "stem": stems[group[j]], "variant": name or "original",
                     "parameters": parameters, "seed": seed},
                )
        return writer.commit()


def _random_name(k: int, count: int) -> str:
    return f"random_{k:0{max(2, len(str(count)))}d}"


def _random_outputs(batch: torch.Tensor, stems: list[str], random: RandomVariants
                    ) -> list[tuple[int, str, Image.Image, dict[str, object], int, bool]]:
    outputs = []
    for k in range(1, random.count + 1):
        seeds = [augment.derive_seed(random.seed, stem, k) for stem in stems]
        draws = augment.draw(random.spec, seeds)
        # with expand each picture keeps the canvas it alone needs, so it is redone one at a time
        groups = [[j] for j in range(len(stems))] if random.spec.expand else [list(range(len(stems)))]
        for members in groups:
            part = draws.select(members)
            h, w = batch.shape[1:3]
            out = augment.apply(batch[members], random.spec, part, augment.canvas(random.spec, part, w, h))
            pictures = variants.render_original(out)
            for m, j in enumerate(members):
                params = {"recipe": asdict(random.spec), "drawn": _random_parameters(draws, j)}
                outputs.append((j, _random_name(k, random.count), pictures[m], params, seeds[j],
                                bool(draws.grayscale[j])))
    return outputs
