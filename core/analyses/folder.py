"""Every analysis the user has models for, over every picture of a folder, into the folder's ``analyses.jsonl``.

Each model is loaded by the caller once and passed in; the work shared by all pictures is done once: the
folder's CLIP image embeddings in batches through ``core.curator.image_index`` (and its cache), the emotion
prompt embeddings, the style templates' Gram matrices. The detector still reads its queries with every picture
(the transformers forward takes token ids, not query embeddings). Colour always runs; the others give ``null``
where their model is missing, and per picture where their input is (no note, a picture too small for the
detector), each such case said in ``notes``.

One line per readable picture, in the folder's natural order: ``{"file", "colour", "emotion", "style",
"objects", "intent", "space"}``, each value exactly the analysis's ``record()`` for that picture.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..captions.curation_text import Metadata, read_metadata
from ..curator.image_index import index_folder
from ..curator.taxonomy import Taxonomy
from ..dataset.image_files import ImageFolderError, Skipped, list_images, load_image, read_caption
from ..shared.output_paths import write_text_atomic
from ..shared.progress import Progress, SilentProgress
from . import colour, emotion, intent, objects, space, style_match

ANALYSES_FILE = "analyses.jsonl"
ANALYSES = ("colour", "emotion", "style", "objects", "intent", "space")


@dataclass
class FolderAnalyses:
    """What ``analyse_folder`` wrote: one record per readable picture, the skipped files, and what was left out."""

    path: Path
    records: list[dict[str, Any]]
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self, record: dict[str, Any]) -> str:
        """One picture's analyses in a line: which ran, and the colour words."""
        ran = [name for name in ANALYSES if record[name] is not None]
        words = ", ".join(record["colour"]["words"])
        return f"{record['file']}: {', '.join(ran)} ({words})"

    def report(self) -> str:
        lines = [f"{len(self.records)} picture(s) analysed into {self.path}"]
        lines += [f"skipped {Path(s.path).name}: {s.reason}" for s in self.skipped]
        return "\n".join(lines + self.notes)


def picture_metadata(metadata: dict[str, Metadata], path: Path) -> Metadata:
    """A picture's metadata, keyed by its file name or stem (as Describe Folder matches it)."""
    return next((metadata[k] for k in (path.name, path.stem) if k in metadata), Metadata())


def _check_inputs(folder: Path, taxonomy: Taxonomy | None, detector: Any, object_group: str, adain: Any,
                  template_folder: str | Path | None) -> None:
    """Every error a model or input can cause, before any picture is read."""
    if not folder.is_dir():
        raise ImageFolderError(f"picture folder {str(folder)!r} does not exist: give the folder of the pictures "
                               "to analyse (absolute, or inside ComfyUI's input folder)")
    if detector is not None:
        if taxonomy is None:
            raise ValueError("object detection needs a taxonomy whose group names what to look for: wire Atelier "
                             "Load Taxonomy (or give --taxonomy)")
        objects.group_queries(taxonomy, object_group)
    if adain is not None and template_folder is None:
        raise ValueError("style matching needs a template folder beside the AdaIN model (pictures of known styles, "
                         "each with a <stem>.txt description)")


def analyse_folder(folder: str | Path, clip: Any = None, taxonomy: Taxonomy | None = None, adain: Any = None,
                   template_folder: str | Path | None = None, detector: Any = None, object_group: str = "subject",
                   metadata_file: str | Path | None = None, space_group: str = space.DEFAULT_GROUP,
                   language: str = "en", seed: int = 0, palette_size: int = colour.DEFAULT_PALETTE,
                   max_sentences: int = 2, cache_dir: str | Path | None = None,
                   progress: Progress | None = None) -> FolderAnalyses:
    """Analyse every picture of ``folder`` (sub-folders too) with the models given and write
    ``folder/analyses.jsonl`` atomically. ``progress`` counts pictures (after the CLIP pass, which has its own
    count) and a cancel is noticed before each picture."""
    folder = Path(folder).expanduser()
    _check_inputs(folder, taxonomy, detector, object_group, adain, template_folder)
    files = list_images(folder, recursive=True)
    metadata = read_metadata(Path(metadata_file)) if metadata_file else {}
    notes: list[str] = []
    skipped: list[Skipped] = []
    bank = None  # the templates first: a missing template folder fails before the CLIP pass
    if adain is not None:
        bank = style_match.load_templates(adain, template_folder or "", cache_dir=None)
        if bank.undescribed:
            notes.append(f"style: {len(bank.undescribed)} template(s) have no <stem>.txt description, so their file "
                         f"names are used: {', '.join(bank.undescribed)}")
    embeddings: dict[Path, torch.Tensor] = {}
    prompts = None
    if clip is not None:
        index = index_folder(clip, files, cache_dir)  # one batched pass (or the cache) for every picture
        embeddings = dict(zip(index.files, index.embeddings))
        skipped += index.skipped
        prompts = emotion.prompt_embeddings(clip)
    with_space = clip is not None and taxonomy is not None and space_group in taxonomy.groups
    if clip is not None and taxonomy is not None and not with_space:
        notes.append(f"space: taxonomy {taxonomy.name!r} has no group {space_group!r} (the 'spaces' taxonomy has "
                     "it): no space analysis")
    if not metadata_file:
        notes.append("intent: no metadata file (artist_note, expert_review per picture): no intent summaries")
    progress = progress or SilentProgress(len(files))
    records: list[dict[str, Any]] = []
    for path in files:
        progress.check_cancel()
        name = path.relative_to(folder).as_posix()
        if clip is not None and path not in embeddings:  # the CLIP pass already skipped it with its reason
            progress.advance()
            continue
        try:
            image = load_image(path)
        except ImageFolderError as exc:
            skipped.append(Skipped(str(path), str(exc)))
            progress.advance()
            continue
        meta = picture_metadata(metadata, path)
        ctx = _Context(clip, prompts, taxonomy if with_space else None, space_group, language, adain, bank,
                       detector, taxonomy, object_group, seed, palette_size, max_sentences, cache_dir,
                       bool(metadata_file), notes)
        records.append(_analyse_one(ctx, path, name, image, meta, embeddings.get(path)))
        progress.advance()
    if not records:
        reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:5])
        raise ImageFolderError(f"no readable picture in {str(folder)!r}: {reasons}")
    out = folder / ANALYSES_FILE
    write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return FolderAnalyses(out, records, skipped, notes)


@dataclass
class _Context:
    """The models and choices shared by every picture of one run."""

    clip: Any
    prompts: torch.Tensor | None
    space_taxonomy: Taxonomy | None  # None: no space analysis
    space_group: str
    language: str
    adain: Any
    bank: Any
    detector: Any
    taxonomy: Taxonomy | None
    object_group: str
    seed: int
    palette_size: int
    max_sentences: int
    cache_dir: str | Path | None
    have_metadata: bool
    notes: list[str]


def _analyse_one(ctx: _Context, path: Path, name: str, image: torch.Tensor, meta: Metadata,
                 embedding: torch.Tensor | None) -> dict[str, Any]:
    record: dict[str, Any] = {"file": name, **dict.fromkeys(ANALYSES)}
    record["colour"] = colour.analyse_colour(image, ctx.palette_size, colour.DEFAULT_BINS, ctx.seed).record()
    if ctx.clip is not None:
        try:
            result = emotion.analyse_emotion(ctx.clip, image, meta.artist_note, prompts=ctx.prompts,
                                             embedding=embedding)
        except ValueError as exc:  # a note the CLIP cannot read: said, and the picture read alone
            ctx.notes.append(f"emotion, {name}: {exc}; the picture alone is read")
            result = emotion.analyse_emotion(ctx.clip, image, "", prompts=ctx.prompts, embedding=embedding)
        record["emotion"] = result.record()
    if ctx.space_taxonomy is not None:
        text = read_caption(path) or meta.artist_note
        try:
            if not text:
                raise ValueError("no caption sidecar and no artist's note: no text to place it by")
            emotion.check_readable(ctx.clip.tokenizer, text, f"CLIP {ctx.clip.name!r}")
            record["space"] = space.space_from_text(ctx.clip, ctx.space_taxonomy, text, None, ctx.space_group,
                                                    ctx.language, ctx.cache_dir, embedding).record()
        except ValueError as exc:  # said, not guessed
            ctx.notes.append(f"space, {name}: {exc}; no space")
    if ctx.bank is not None:
        record["style"] = style_match.match_style(ctx.adain, image, ctx.bank).record()
    if ctx.detector is not None:
        if min(image.shape[:2]) < objects.MIN_SIDE:
            ctx.notes.append(f"objects, {name}: {image.shape[1]}x{image.shape[0]} is under the detector's "
                             f"{objects.MIN_SIDE} pixels on the shorter side: no objects")
        else:
            record["objects"] = objects.detect_objects(ctx.detector, image, ctx.taxonomy,  # type: ignore[arg-type]
                                                       ctx.object_group).record()
    if meta.artist_note or meta.expert_review:
        record["intent"] = intent.summarize_intent(meta.artist_note, meta.expert_review, ctx.max_sentences, None,
                                                   ctx.clip).record()
    elif ctx.have_metadata:
        ctx.notes.append(f"intent, {name}: the artist's note and the expert review are empty: no intent summary")
    return record
