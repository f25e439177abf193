"""Style augmentation: "virtual" training pictures, every original crossed with every style picture (or a
seeded sample of the pairs), written as a new dataset version exactly as Multiply Dataset writes one.

Files are ``<stem>.png`` for an original (optional) and ``<stem>__style_<style>.png`` for each
stylized copy; the original's caption sidecar goes beside every file made from it, and
``manifest.jsonl`` records source, style, settings and seed.
"""
from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..dataset import variants
from ..dataset.folder_dataset import load_folder
from ..dataset.image_files import Skipped
from ..dataset.multiply import Original
from ..dataset.writer import DatasetWriter, WrittenDataset
from ..shared.output_paths import unique_stems
from ..shared.progress import Progress, SilentProgress
from .adain_model import AdaINModel
from .feature_transfer import StyleTarget
from .stylize import StyleOptions, check_pictures, style_targets, stylize


@dataclass
class StylePicture:
    image: torch.Tensor  # [H, W, 3] float 0..1
    name: str
    source: str = ""


def load_styles(folder: str | os.PathLike[str]) -> tuple[list[StylePicture], list[Skipped]]:
    """The style pictures of a folder, and the files that failed to decode (skipped: list them to the user)."""
    data = load_folder(folder)
    return [StylePicture(item.image, item.stem, str(item.path)) for item in data.images], data.skipped


def plan_pairs(originals: int, styles: int, pairs: int, seed: int) -> list[tuple[int, int]]:
    """Every (original, style) pair, or ``pairs`` of them drawn without replacement (0: all)."""
    every = [(i, j) for i in range(originals) for j in range(styles)]
    if pairs <= 0 or pairs >= len(every):
        return every
    return sorted(random.Random(seed).sample(every, pairs))


def style_augment(model: AdaINModel, originals: Sequence[Original], styles: Sequence[StylePicture], parent: Path,
                  options: StyleOptions = StyleOptions(), pairs: int = 0, seed: int = 0,
                  include_original: bool = True, device: torch.device | str = "cpu",
                  progress: Progress | None = None) -> WrittenDataset:
    """Write the originals and their stylized copies as the next version folder under ``parent``."""
    if not originals:
        raise ValueError("no original pictures to stylize")
    if not styles:
        raise ValueError("no style pictures")
    for original in originals:
        check_pictures(original.image[None], f"original {original.stem!r}")
    for style in styles:
        check_pictures(style.image[None], f"style picture {style.name!r}")
    style_names = unique_stems([s.name for s in styles], fallback="style")
    stems = unique_stems([o.stem for o in originals], [""] + [f"__style_{name}" for name in style_names])
    plan = plan_pairs(len(originals), len(styles), pairs, seed)
    progress = progress or SilentProgress(len(plan))
    settings = asdict(options)
    with DatasetWriter(parent) as writer:
        if include_original:
            for stem, original in zip(stems, originals):
                writer.add_image(variants.render_original(original.image[None])[0], stem, original.caption,
                                 {"source": original.source, "stem": stem, "variant": "original", "parameters": {},
                                  "seed": None})
        targets: dict[int, list[StyleTarget]] = {}  # each style picture encoded once, not once per pair
        for i, j in plan:
            progress.check_cancel()
            original, style = originals[i], styles[j]
            if not options.recolours_styles and j not in targets:
                targets[j] = style_targets(model, [style.image], options, device)
            out = stylize(model, original.image[None], [style.image], options, device=device, targets=targets.get(j))
            writer.add_image(variants.render_original(out)[0], f"{stems[i]}__style_{style_names[j]}",
                             original.caption,
                             {"source": original.source, "stem": stems[i], "variant": f"style_{style_names[j]}",
                              "parameters": {"style": style_names[j], "style_source": style.source, **settings},
                              "seed": seed if pairs else None})
            writer.wait(keep=8)
            progress.advance()
        return writer.commit()
