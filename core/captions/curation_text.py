"""Curator-style texts from CLIP labels, a BLIP-2 description and the user's metadata.

A paragraph for people, a JSON record with the same facts, and hashtags; the safety filter runs
over all three last, so nothing it blocks leaves the node. The paragraph is assembled from fixed
sentence patterns: the facts come from the user and the models, never invented.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..analyses.features import FEATURES_VERSION, analysis_features
from ..shared.output_paths import write_text_atomic
from ..shared.progress import Progress, SilentProgress
from . import korean
from .analysis_text import ANALYSES, analysis_sentences, analysis_tags, article, check_analyses, check_language, join_en
from .safety import SafetyFilter

# expert_review came last (issue 19): files and calls written before it still read, without it
METADATA_FIELDS = ("title", "artist", "year", "material", "technique", "size", "artist_note", "expert_review")
MAX_HASHTAGS = 15


@dataclass(frozen=True)
class Metadata:
    title: str = ""
    artist: str = ""
    year: str = ""
    material: str = ""
    technique: str = ""
    size: str = ""
    artist_note: str = ""
    expert_review: str = ""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Metadata":
        unknown = set(values) - set(METADATA_FIELDS)
        if unknown:
            raise ValueError(f"unknown metadata field(s) {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(METADATA_FIELDS)}")
        return cls(**{k: str(v).strip() for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class CurationText:
    paragraph: str
    record: dict[str, Any]
    hashtags: list[str]

    def record_json(self) -> str:
        return json.dumps(self.record, ensure_ascii=False, indent=1)


def _names(labels: dict[str, list[dict[str, Any]]], group: str) -> list[str]:
    return [choice["name"] for choice in labels.get(group, [])]


def _sentence(text: str) -> str:
    text = " ".join(text.split()).strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?。" else text + "."


def _opening(meta: Metadata, labels: dict[str, list[dict[str, Any]]]) -> str:
    subject = f"\u201c{meta.title}\u201d" if meta.title else "This work"
    if meta.year:
        subject += f" ({meta.year})"
    if meta.artist:
        subject += f" by {meta.artist}"
    medium = _names(labels, "medium")
    size = f", {meta.size}" if meta.size else ""
    if medium:
        made = f"is {article(medium[-1])}" + (f" in {meta.technique}" if meta.technique else "") + \
            (f" on {meta.material}" if meta.material else "")
    elif meta.technique:
        made = f"is made in {meta.technique}" + (f" on {meta.material}" if meta.material else "")
    elif meta.material:
        made = f"is made of {meta.material}"
    elif meta.size:
        made, size = f"measures {meta.size}", ""
    else:
        return _sentence(subject) if subject != "This work" else ""
    return _sentence(f"{subject} {made}{size}")


def _label_sentences(labels: dict[str, list[dict[str, Any]]]) -> list[str]:
    out = []
    style, genre, period = _names(labels, "style"), _names(labels, "genre"), _names(labels, "period")
    if style or genre:
        parts = ([f"the language of {style[-1]}"] if style else []) + ([f"the {genre[-1]} tradition"] if genre else [])
        out.append(_sentence(f"It draws on {join_en(parts)}"))
    if period:
        out.append(_sentence(f"It belongs to {period[-1]}"))
    if subjects := _names(labels, "subject"):
        out.append(_sentence(f"Among its subjects are {join_en(subjects)}"))
    if palette := _names(labels, "palette"):
        out.append(_sentence(f"Its palette is {join_en(palette)}"))
    if space := _names(labels, "space"):
        out.append(_sentence(f"It would sit well in {article(space[-1])}"))
    known = {"medium", "style", "genre", "period", "subject", "palette", "space"}
    for group, chosen in labels.items():
        if group not in known and chosen:
            out.append(_sentence(f"{group.replace('_', ' ')}: {join_en([c['name'] for c in chosen])}"))
    return out


def _opening_ko(meta: Metadata, labels: dict[str, list[dict[str, Any]]]) -> list[str]:
    subject = (f"\u201c{meta.title}\u201d" if meta.title else "이 작품") + (f"({meta.year})" if meta.year else "")
    out = [f"{korean.josa(subject, '은', '는')} {meta.artist}의 작품이다."] if meta.artist else []
    subject = "작품" if out else subject
    medium = _names(labels, "medium")
    how = " ".join(p for p in (f"{meta.material}에" if meta.material else "",
                               f"{meta.technique} 기법으로" if meta.technique else "") if p)
    if medium:
        made = f"{how} 제작된 " if how else ""
        out.append(f"{korean.josa(subject, '은', '는')} {made}{korean.copula(medium[-1])}.")
    elif how:
        out.append(f"{korean.josa(subject, '은', '는')} {how} 제작되었다.")
    if meta.size:
        out.append(f"크기는 {korean.copula(meta.size)}.")
    if not out and meta.title:
        out.append(f"작품의 제목은 {korean.copula(subject)}.")
    return out


def _label_sentences_ko(labels: dict[str, list[dict[str, Any]]]) -> list[str]:
    out = []
    style, genre, period = _names(labels, "style"), _names(labels, "genre"), _names(labels, "period")
    if style or genre:
        parts = ([f"{style[-1]} 양식"] if style else []) + ([f"{genre[-1]} 전통"] if genre else [])
        out.append(f"{korean.join(parts)}에 기대고 있다.")
    if period:
        out.append(f"시대로는 {period[-1]}에 속한다.")
    if subjects := _names(labels, "subject"):
        out.append(f"소재로 {korean.josa(korean.join(subjects), '이', '가')} 등장한다.")
    if palette := _names(labels, "palette"):
        out.append(f"색채는 {korean.copula(korean.join(palette))}.")
    if space := _names(labels, "space"):
        out.append(f"{space[-1]}에 잘 어울린다.")
    known = {"medium", "style", "genre", "period", "subject", "palette", "space"}
    for group, chosen in labels.items():
        if group not in known and chosen:
            out.append(f"{group.replace('_', ' ')}: {korean.join([c['name'] for c in chosen])}.")
    return out


def hashtag(text: str) -> str:
    """``oil painting`` -> ``#OilPainting``; letters of any script kept, everything else dropped."""
    words = re.findall(r"\w+", re.sub(r"['\u2019]", "", text))  # children's room: ChildrensRoom
    joined = "".join(w[:1].upper() + w[1:] if w.isascii() else w for w in words)
    return f"#{joined}" if joined else ""


def curate_text(labels: dict[str, list[dict[str, Any]]], description: str, meta: Metadata,
                safety: SafetyFilter, analyses: dict[str, dict[str, Any] | None] | None = None,
                language: str = "en") -> CurationText:
    """The paragraph, record and hashtags for one work. ``labels`` is one picture's ``labels`` from
    zero-shot labelling (group -> chosen labels with names and scores); ``analyses`` the records of the curator's
    analyses (colour, emotion, style, objects, intent, space; a missing or ``None`` one is left out), written in
    ``language`` (en or ko). Without analyses and in English the text is what it was before the analyses."""
    check_language(language)
    used = check_analyses(analyses or {})
    # each field first, so a quote is never left half-open; the description and the artist's words are
    # sentences: one that holds a blocked word goes whole rather than be misquoted
    prose = {name: safety.clean(getattr(meta, name), prose=True) for name in ("artist_note", "expert_review")}
    meta = Metadata(**{**safety.clean_value(asdict(meta)), **prose})
    description = safety.clean(description, prose=True)
    if language == "ko":
        sentences = [*_opening_ko(meta, labels), _sentence(description), *_label_sentences_ko(labels)]
    else:
        sentences = [_opening(meta, labels), _sentence(description), *_label_sentences(labels)]
    # a sentence from an analysis that holds a blocked word goes whole, like the description
    sentences += [safety.clean(s, prose=True) for s in analysis_sentences(used, language)]
    if meta.artist_note:
        said = "작가의 말" if language == "ko" else "In the artist\u2019s words"
        sentences.append(f"{said}: \u201c{meta.artist_note}\u201d")
    paragraph = safety.clean(" ".join(s for s in sentences if s))
    tags = [choice["name"] for chosen in labels.values() for choice in chosen] + analysis_tags(used, language)
    candidates = [hashtag(t) for t in [meta.artist, meta.technique, meta.material, *tags] if t]
    hashtags = safety.hashtags(list(dict.fromkeys(t for t in candidates if t)))[:MAX_HASHTAGS]
    record = safety.clean_value({
        **asdict(meta), "description": " ".join(description.split()),
        "labels": {group: [{"label": c["label"], "name": c["name"], "score": c["score"]} for c in chosen]
                   for group, chosen in labels.items()},
        "tags": tags, "hashtags": hashtags, "paragraph": paragraph,
        **({"language": language} if language != "en" else {}), **({"analyses": used} if used else {})})
    return CurationText(paragraph, record, hashtags)


def read_metadata(path: Path) -> dict[str, Metadata]:
    """Per-picture metadata from a JSON object (file name or stem -> fields) or a CSV with a ``file`` column;
    keys as written (``describe_folder`` matches a picture's name or stem)."""
    import csv

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read metadata file {str(path)!r}: {exc}") from exc
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        rows = list(reader)
        if "file" not in (reader.fieldnames or []):
            raise ValueError(f"metadata CSV {str(path)!r} needs a 'file' column (the picture's name or stem)")
        entries = {row.pop("file"): {k: v for k, v in row.items() if k and v} for row in rows}
    else:
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"metadata file {str(path)!r}, line {exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise ValueError(f"metadata file {str(path)!r} must map picture names to objects of fields")
    out = {}
    for name, fields in entries.items():
        try:
            out[str(name)] = Metadata.from_dict(fields)
        except ValueError as exc:
            raise ValueError(f"metadata file {str(path)!r}, entry {name!r}: {exc}") from None
    return out


def _manifest_entry_problem(entry: Any) -> str | None:
    """What makes one manifest line unusable here, or ``None``."""
    if not isinstance(entry, dict):
        return f"a JSON object is needed, not {type(entry).__name__}"
    if not isinstance(entry.get("file"), str) or not entry["file"]:
        return "it names no 'file' (the picture's path inside the folder)"
    if "source" in entry and not isinstance(entry["source"], str):
        return "its 'source' must be text"
    labels = entry.get("labels", {})
    if not isinstance(labels, dict) or not all(
            isinstance(chosen, list) and all(isinstance(c, dict) and isinstance(c.get("label"), str)
                                             and isinstance(c.get("name"), str)
                                             and isinstance(c.get("score"), (int, float)) for c in chosen)
            for chosen in labels.values()):
        return "its 'labels' must map each group to a list of {\"label\", \"name\", \"score\"}"
    return None


def _json_lines(path: Path, problem: Callable[[Any], str | None], unreadable: str, remedy: str) -> list[Any]:
    """The entries of a JSON-lines file; the first damaged line (not JSON, or ``problem`` names what is wrong) is an
    error naming the file, the line and ``remedy``, raised before any picture is described."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {str(path)!r} ({exc}): {unreadable}") from exc
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            why: str | None = f"not valid JSON ({exc.msg}, column {exc.colno})"
        else:
            why = problem(entry)
        if why:
            raise ValueError(f"{str(path)!r}, line {number}: {why}. {remedy}")
        entries.append(entry)
    return entries


def read_manifest(manifest: Path) -> dict[str, dict[str, Any]]:
    """A dataset version's ``manifest.jsonl`` by file."""
    entries = _json_lines(manifest, _manifest_entry_problem, "delete it to describe the pictures without labels",
                          "Repair or delete that line (its picture is then described without labels), or delete "
                          "the file to describe every picture without labels")
    return {entry["file"]: entry for entry in entries}


ANALYSES_FILE = "analyses.jsonl"


def _analyses_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return "a JSON object with 'file' is needed"
    try:
        check_analyses({k: v for k, v in entry.items() if k in ANALYSES})
    except ValueError as exc:
        return str(exc)
    return None


def read_analyses(path: Path) -> dict[str, dict[str, Any]]:
    """A folder's ``analyses.jsonl`` (one line per picture: ``file`` and the six records, ``None`` where an analysis
    was not run) by file."""
    entries = _json_lines(path, _analyses_problem, "run Analyse Folder again, or delete it to describe the pictures "
                          "without their analyses", "Run Analyse Folder again, or delete the file to describe the "
                          "pictures without their analyses")
    return {entry["file"]: check_analyses({k: v for k, v in entry.items() if k in ANALYSES}) for entry in entries}


# A second writer's paragraph in place of the template's: (template text, picture file, metadata, analyses) -> text
Rewrite = Callable[[CurationText, Path, Metadata, dict[str, Any]], CurationText]


def describe_folder(folder: Path, safety: SafetyFilter, metadata: dict[str, Metadata] | None = None,
                    progress: Progress | None = None, language: str = "en",
                    rewrite: Rewrite | None = None) -> list[dict[str, Any]]:
    """Curation records for every picture of a dataset version: labels from its manifest, the description
    from its caption sidecar, metadata matched by file stem, and, where the folder has an ``analyses.jsonl``, each
    picture's analyses (in its record with their ``features`` vector, and in its text). Writes ``curation.jsonl``
    (one record per picture) and ``curation.md`` (a readable catalogue) into the folder in ``language``, and
    returns the records. ``rewrite`` (the BLIP-2 or SeqGAN writer) replaces each template paragraph."""
    from ..dataset.image_files import list_images, read_caption
    from ..dataset.writer import MANIFEST

    check_language(language)
    manifest = folder / MANIFEST
    entries = read_manifest(manifest) if manifest.is_file() else {}
    analysed = read_analyses(folder / ANALYSES_FILE) if (folder / ANALYSES_FILE).is_file() else None
    files = list_images(folder, recursive=True)
    progress = progress or SilentProgress(len(files))
    metadata = metadata or {}
    records, catalogue = [], []
    for path in files:
        progress.check_cancel()
        name = path.relative_to(folder).as_posix()
        labels = entries.get(name, {}).get("labels", {})
        source = Path(str(entries.get(name, {}).get("source", path)))  # a curated copy may have been renamed
        keys = (source.name, source.stem, path.name, path.stem)
        meta = next((metadata[k] for k in keys if k in metadata), Metadata())
        analyses = None if analysed is None else analysed.get(name, {})
        text = curate_text(labels, read_caption(path) or "", meta, safety, analyses, language)
        if rewrite is not None:
            text = rewrite(text, path, meta, analyses or {})
        record = {"file": name, **text.record}
        if analyses is not None:
            record |= {"features": [round(v, 6) for v in analysis_features(analyses).tolist()],
                       "features_version": FEATURES_VERSION}
        records.append(record)
        heading = text.record.get("title") or path.stem
        catalogue.append(f"## {heading}\n\n{text.paragraph}\n\n{' '.join(text.hashtags)}\n")
        progress.advance()
    write_text_atomic(folder / "curation.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    write_text_atomic(folder / "curation.md", "\n".join(catalogue))
    return records
