"""Style augmentation: "virtual" training pictures written as a new dataset version, exactly as Multiply
Dataset writes one.

Two directions. ``in_originals_style`` (the first model of the seed's two-model flow): the originals are
the style and the user's content pictures (photographs) the content, so every virtual picture is one
content picture painted in an original's style, ``<content>__in_<original>.png``, captioned with the
content picture's caption and the trigger word that names the originals' style. ``restyle_originals``:
the originals are the content, painted in the styles of other pictures, ``<original>__style_<style>.png``,
captioned with the original's caption. Either way every content picture meets every style picture (or a
seeded sample of the pairs), or, with ``whole_set``, all style pictures at once, mixed by weights as one
style target (``__in_all_originals`` / ``__style_all_styles``). The originals themselves may be copied
along with their own captions; ``manifest.jsonl`` names the content and the style of every file.
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
from ..dataset.image_files import ImageFolderError, Skipped
from ..dataset.multiply import Original, write_originals
from ..dataset.writer import DatasetWriter, WrittenDataset
from ..shared.output_paths import unique_stems
from ..shared.progress import Progress, SilentProgress
from .adain_model import AdaINModel
from .stylize import StyleOptions, check_pictures, normalised_weights, style_targets, stylize

DIRECTIONS = ("in_originals_style", "restyle_originals")
# per direction: what the pictures beside the originals are, what the style pictures are, and the name
# parts of a virtual picture, <content><infix><style> (the style being the mix's name with whole_set)
_SIDES = {"in_originals_style": ("content picture", "original", "__in_", "all_originals"),
          "restyle_originals": ("style picture", "style picture", "__style_", "all_styles")}


@dataclass(frozen=True)
class AugmentSpec:
    """What to make, besides the style options: the direction, the pairs, the captions and the mixing."""

    direction: str = "in_originals_style"
    pairs: int = 0  # how many (content, style) pairs to draw, seeded; 0: all of them
    seed: int = 0
    include_original: bool = True
    trigger: str = ""  # put before the caption of every picture in the originals' style
    whole_set: bool = False  # all style pictures mixed as one style target
    style_weights: tuple[float, ...] | None = None  # the mix's weights, one per style picture; None: equal

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {self.direction!r}")
        if self.style_weights and not self.whole_set:
            raise ValueError("style_weights mix the style pictures into one style target: turn on 'whole_set', "
                             "or leave style_weights empty")


def load_pictures(folder: str | os.PathLike[str], what: str, advice: str = "", recursive: bool = False
                  ) -> tuple[list[Original], list[Skipped]]:
    """The pictures of a folder (and its sub-folders, if ``recursive``) with their caption sidecars, and the
    files that failed to decode (skipped: list them to the user). No readable picture at all is an error
    naming the folder, ``what`` it is for and the ``advice``, before any work."""
    try:
        data = load_folder(folder, recursive=recursive)
    except ImageFolderError as exc:
        raise ImageFolderError(f"{what}: {exc}" + (f"; {advice}" if advice else "")) from exc
    return [Original(item.image, item.stem, item.caption, str(item.path)) for item in data.images], data.skipped


def load_contents(folder: str | os.PathLike[str]) -> tuple[list[Original], list[Skipped]]:
    """The content pictures for ``in_originals_style``, sub-folders included (a photo library is often sorted
    into them); an empty or missing folder says what to put there."""
    return load_pictures(folder, "content_folder", "put varied photographs there (5-20 per original), or choose "
                         "direction 'restyle_originals' to paint the originals in the style folder's styles instead",
                         recursive=True)


def plan_pairs(contents: int, styles: int, pairs: int, seed: int) -> list[tuple[int, int]]:
    """Every (content, style) pair, or ``pairs`` of them drawn without replacement (0: all)."""
    every = [(i, j) for i in range(contents) for j in range(styles)]
    if pairs <= 0 or pairs >= len(every):
        return every
    return sorted(random.Random(seed).sample(every, pairs))


def sides(originals: Sequence[Original], others: Sequence[Original], spec: AugmentSpec
          ) -> tuple[Sequence[Original], Sequence[Original]]:
    """(content pictures, style pictures): ``others`` are the content in ``in_originals_style``, the styles
    in ``restyle_originals``."""
    return (others, originals) if spec.direction == "in_originals_style" else (originals, others)


def mix_weights(originals: Sequence[Original], others: Sequence[Original], spec: AugmentSpec) -> list[float] | None:
    """The style pictures' weights in the ``whole_set`` mix, summing to 1 (None without it): a list that does
    not give one weight per style picture is an error."""
    if not spec.whole_set:
        return None
    return normalised_weights(list(spec.style_weights or []), len(sides(originals, others, spec)[1]),
                              _SIDES[spec.direction][1])


def plan(originals: Sequence[Original], others: Sequence[Original], spec: AugmentSpec) -> list[tuple[int, int]]:
    """The (content, style) index pairs to make (with ``whole_set`` the style index is always 0, the mix), after
    checking every picture and the weights: call it first, and bad input fails before any work."""
    others_word = _SIDES[spec.direction][0]
    if not originals:
        raise ValueError("no original pictures")
    if not others:
        raise ValueError(f"no {others_word}s")
    for pictures, what in ((originals, "original"), (others, others_word)):
        for picture in pictures:
            check_pictures(picture.image[None], f"{what} {picture.stem!r}")
    mix_weights(originals, others, spec)
    contents, styles = sides(originals, others, spec)
    return plan_pairs(len(contents), 1 if spec.whole_set else len(styles), spec.pairs, spec.seed)


def virtual_caption(caption: str | None, trigger: str) -> str | None:
    """The trigger word first, then the content picture's caption; None when there is neither."""
    text = ", ".join(part.strip() for part in (trigger, caption or "") if part.strip())
    return text or None


def style_augment(model: AdaINModel, originals: Sequence[Original], others: Sequence[Original], parent: Path,
                  options: StyleOptions = StyleOptions(), spec: AugmentSpec = AugmentSpec(),
                  device: torch.device | str = "cpu", progress: Progress | None = None) -> WrittenDataset:
    """Write the virtual pictures (and the originals, if ``spec.include_original``) as the next version folder
    under ``parent``. ``others`` are the content pictures or the style pictures, as ``spec.direction`` says."""
    pairs = plan(originals, others, spec)
    _, _, infix, set_name = _SIDES[spec.direction]
    contents, styles = sides(originals, others, spec)
    weights = mix_weights(originals, others, spec)
    style_names = [set_name] if spec.whole_set else unique_stems([s.stem for s in styles], fallback="style")
    suffixes = [""] + [infix + name for name in style_names]
    # one call over the originals and the content pictures, so no two files of the folder share a name
    stems = unique_stems([o.stem for o in originals] + ([] if contents is originals else [c.stem for c in contents]),
                         suffixes)
    original_stems = stems[:len(originals)]
    content_stems = original_stems if contents is originals else stems[len(originals):]
    progress = progress or SilentProgress(len(pairs))
    settings = {"direction": spec.direction, **asdict(options)}
    if spec.whole_set:
        settings["style_weights"] = {s.stem: w for s, w in zip(styles, weights)}
    # the style pictures encoded once, not once per pair (each content picture recolours them otherwise)
    targets = None if options.recolours_styles else style_targets(model, [s.image for s in styles], options, device)
    with DatasetWriter(parent) as writer:
        if spec.include_original:
            write_originals(writer, original_stems, originals)
        for i, j in pairs:
            progress.check_cancel()
            content = contents[i]
            chosen = range(len(styles)) if spec.whole_set else [j]
            out = stylize(model, content.image[None], [styles[k].image for k in chosen], options, weights,
                          device=device, targets=None if targets is None else [targets[k] for k in chosen])
            caption = virtual_caption(content.caption, spec.trigger) if spec.direction == "in_originals_style" \
                else content.caption
            style_source = "" if spec.whole_set else styles[j].source
            writer.add_image(variants.render_original(out)[0], f"{content_stems[i]}{infix}{style_names[j]}", caption,
                             {"source": content.source, "stem": content_stems[i],
                              "variant": f"{infix.strip('_')}_{style_names[j]}",
                              "content": content_stems[i], "style": style_names[j],  # as in the file's name
                              "parameters": {"content_source": content.source, "style_source": style_source,
                                             **settings},
                              "seed": spec.seed if spec.pairs else None})
            writer.wait(keep=8)
            progress.advance()
        return writer.commit()


def summary(written: WrittenDataset, originals: Sequence[Original], others: Sequence[Original],
            spec: AugmentSpec) -> str:
    """One line saying what was written: how many files, how many virtual, from what content in what style."""
    contents, styles = sides(originals, others, spec)
    virtual = sum(record["variant"] != "original" for record in written.records)
    kind = "originals" if spec.direction == "in_originals_style" else "style pictures"
    return (f"wrote {len(written.files)} images ({virtual} virtual): {len(contents)} content pictures in the style "
            f"of {len(styles)} {kind}{', mixed as one' if spec.whole_set else ''}")
