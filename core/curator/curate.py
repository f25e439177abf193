"""Curating a labelled folder: keep and drop rules, sorting, near-duplicate removal, a new dataset version.

Rules name labels as ``label``, ``group:label`` or a synonym, optionally with a score:
``medium:oil_painting`` needs the label chosen (a chosen child counts for its parents),
``landscape>=0.3`` needs its hierarchical score at least 0.3. The kept pictures are copied byte
for byte (with their caption sidecars) into the next ``vNNN`` folder with a manifest of their
labels and scores, and a report of what was dropped and why.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..dataset.image_files import read_caption
from ..dataset.writer import DatasetWriter, WrittenDataset
from ..shared.output_paths import unique_stems
from ..shared.progress import Progress, SilentProgress
from .image_index import FolderIndex
from .taxonomy import Taxonomy, TaxonomyError
from .vector_search import SearchOptions, VectorSearch, threshold_pairs
from .zero_shot import tags

KEEP_BEST = ("resolution", "score")
REPORT = "curation_report.json"
_RULE = re.compile(r"^(?P<ref>[^<>=]+?)\s*(?:>=\s*(?P<score>[-+0-9.eE]+))?$")


@dataclass(frozen=True)
class Rule:
    text: str  # as the user wrote it
    labels: tuple[tuple[str, str], ...]  # (group, label) pairs it names; any one of them satisfies it
    min_score: float | None = None  # None: the label must be among the chosen ones

    def matches(self, result: dict[str, Any]) -> bool:
        return any(self._matches(group, label, result) for group, label in self.labels)

    def _matches(self, group: str, label: str, result: dict[str, Any]) -> bool:
        if self.min_score is not None:
            return result["scores"][group][label] >= self.min_score
        return any(label in choice["path"] for choice in result["labels"][group])

    def score(self, result: dict[str, Any]) -> float:
        return max(result["scores"][group][label] for group, label in self.labels)

    def __str__(self) -> str:
        return self.text


def parse_rules(text: str, taxonomy: Taxonomy) -> list[Rule]:
    """Comma- or line-separated rules; an unqualified name is satisfied by that label in any group that has it."""
    rules = []
    for part in re.split(r"[,\n]", text):
        part = part.strip()
        if not part:
            continue
        match = _RULE.match(part)
        if match is None:
            raise TaxonomyError(f"rule {part!r} is not 'label', 'group:label' or 'label>=score'")
        score = match["score"]
        try:
            min_score = None if score is None else float(score)
        except ValueError:
            raise TaxonomyError(f"rule {part!r}: {score!r} is not a number") from None
        rules.append(Rule(part, tuple(taxonomy.resolve(match["ref"])), min_score))
    return rules


@dataclass
class CurateOptions:
    keep: str = ""  # rules; empty keeps every picture
    require_all: bool = False  # keep only pictures that match every keep rule (else any)
    drop: str = ""  # rules; a picture matching any is dropped
    sort_by: str = ""  # a label: highest score first, and files numbered in that order; empty: folder order
    dedup_threshold: float = 0.0  # cosine similarity at which two pictures are near-duplicates; 0: off
    keep_best: str = "resolution"  # which of a cluster of near-duplicates stays: most pixels, or best sort score
    subfolders_by: str = ""  # a group: each picture goes into a folder named after its label there
    search: SearchOptions = field(default_factory=SearchOptions)  # how near-duplicates are searched

    def check(self, taxonomy: Taxonomy) -> tuple[list[Rule], list[Rule], list[Rule]]:
        """The keep, drop and sort rules, parsed against ``taxonomy``; any mistake raises before work starts."""
        if self.keep_best not in KEEP_BEST:
            raise ValueError(f"keep_best must be one of {', '.join(KEEP_BEST)}, got {self.keep_best!r}")
        if not 0.0 <= self.dedup_threshold <= 1.0:
            raise ValueError(f"dedup_threshold must be from 0 (off) to 1, got {self.dedup_threshold}")
        self.search.check()
        keep, drop = parse_rules(self.keep, taxonomy), parse_rules(self.drop, taxonomy)
        sort_rule = parse_rules(self.sort_by, taxonomy)
        if len(sort_rule) > 1:
            raise TaxonomyError(f"sort_by takes one label, got {self.sort_by!r}")
        if self.keep_best == "score" and not sort_rule:
            raise ValueError("keep_best 'score' ranks near-duplicates by the sort_by label's score: give sort_by")
        if self.subfolders_by and self.subfolders_by not in taxonomy.groups:
            raise TaxonomyError(f"subfolders_by names group {self.subfolders_by!r}, which taxonomy {taxonomy.name!r}"
                                f" does not have (groups: {', '.join(taxonomy.groups)})")
        self.label_folders(taxonomy)  # folder names are settled before any labelling starts
        return keep, drop, sort_rule

    def label_folders(self, taxonomy: Taxonomy) -> dict[str, str]:
        """The sub-folder of each label of the ``subfolders_by`` group (``''``: the unlabelled ones), from its id
        as a safe name: Korean ids stay Korean, two ids that clean to one name get ``_2``, and an id of only
        symbols becomes ``label_0003``; empty without ``subfolders_by``."""
        if not self.subfolders_by:
            return {}
        ids = list(taxonomy.groups[self.subfolders_by].labels)
        return dict(zip([*ids, ""], unique_stems([*ids, "unlabelled"], fallback="label")))


@dataclass
class CurationPlan:
    order: list[int]  # kept rows of the index, in output order
    dropped: dict[int, str] = field(default_factory=dict)  # row -> why
    duplicate_of: dict[int, int] = field(default_factory=dict)  # dropped row -> the row kept in its place
    search: str = ""  # how near-duplicates were searched (exact, or which index and its measured recall)


def near_duplicates(embeddings: torch.Tensor, threshold: float, block: int = 2048,
                    options: SearchOptions | None = None) -> tuple[list[list[int]], VectorSearch]:
    """Groups of rows linked by cosine similarity >= ``threshold`` (transitively), each with two or more
    members, ordered by their first row, and the search that found them. Neighbours are found through FAISS
    ``block`` rows at a time (exact up to ``options.exact_limit`` rows, approximate above: see
    ``vector_search``), so memory stays bounded."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    pairs, search = threshold_pairs(unit, threshold, options, block)
    return clusters_of(pairs, embeddings.shape[0]), search


def near_duplicate_clusters(embeddings: torch.Tensor, threshold: float, block: int = 2048,
                            options: SearchOptions | None = None) -> list[list[int]]:
    """The clusters of ``near_duplicates``."""
    return near_duplicates(embeddings, threshold, block, options)[0]


def clusters_of(pairs: list[tuple[int, int]], count: int) -> list[list[int]]:
    """The connected groups of two or more of ``count`` rows that ``pairs`` link, ordered by their first row."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(b)] = root(a)
    clusters: dict[int, list[int]] = {}
    for i in range(count):
        clusters.setdefault(root(i), []).append(i)
    return [members for members in clusters.values() if len(members) > 1]


def plan_curation(index: FolderIndex, results: list[dict[str, Any]], taxonomy: Taxonomy,
                  options: CurateOptions) -> CurationPlan:
    """Which pictures stay, in which order, and why each other one goes."""
    keep, drop, sort_rule = options.check(taxonomy)

    def sort_score(row: int) -> float:
        return sort_rule[0].score(results[row])

    plan = CurationPlan([])
    candidates = []
    for row, result in enumerate(results):
        hits = [rule for rule in keep if rule.matches(result)]
        if keep and (len(hits) < len(keep) if options.require_all else not hits):
            missing = [str(r) for r in keep if r not in hits]
            plan.dropped[row] = "matches no keep rule" if not hits else f"does not match {', '.join(missing)}"
        elif banned := [str(rule) for rule in drop if rule.matches(result)]:
            plan.dropped[row] = f"matches drop rule {', '.join(banned)}"
        else:
            candidates.append(row)
    if options.dedup_threshold > 0 and len(candidates) > 1:
        def quality(row: int) -> tuple[float, ...]:
            width, height = index.sizes[row]
            pixels = float(width * height)
            return (sort_score(row), pixels) if options.keep_best == "score" else (pixels, -row)

        clusters, search = near_duplicates(index.embeddings[candidates], options.dedup_threshold,
                                           options=options.search)
        plan.search = f"near-duplicates: {search.describe()}"
        for cluster in clusters:
            rows = [candidates[i] for i in cluster]
            best = max(rows, key=quality)
            for row in rows:
                if row != best:
                    plan.duplicate_of[row] = best
                    plan.dropped[row] = f"near-duplicate of {index.files[best].name}"
    kept = [row for row in candidates if row not in plan.dropped]
    if sort_rule:
        kept.sort(key=lambda row: -sort_score(row))
    plan.order = kept
    return plan


def write_curated(index: FolderIndex, results: list[dict[str, Any]], taxonomy: Taxonomy, plan: CurationPlan,
                  options: CurateOptions, parent: Path, language: str = "en",
                  progress: Progress | None = None) -> WrittenDataset:
    """Copy the kept pictures (and caption sidecars) into the next version folder under ``parent``, with a
    manifest of labels and scores and ``curation_report.json``."""
    if not plan.order:
        raise ValueError(f"the rules keep none of the {len(results)} picture(s): nothing to write "
                         f"({len(plan.dropped)} dropped; see the report of 'Atelier Label Images')")
    progress = progress or SilentProgress(len(plan.order))
    stems = unique_stems([index.files[row].stem for row in plan.order])
    width = len(str(len(plan.order)))
    duplicates: dict[int, list[str]] = {}
    for row, best in plan.duplicate_of.items():
        duplicates.setdefault(best, []).append(index.files[row].name)
    folders = options.label_folders(taxonomy)
    with DatasetWriter(parent) as writer:
        for rank, (row, stem) in enumerate(zip(plan.order, stems), start=1):
            progress.check_cancel()
            name = f"{rank:0{width}d}_{stem}" if options.sort_by.strip() else stem
            if options.subfolders_by:
                chosen = results[row]["labels"][options.subfolders_by]
                name = f"{folders[chosen[0]['label'] if chosen else '']}/{name}"
            source = index.files[row]
            record = {"source": str(source), "rank": rank, "labels": results[row]["labels"],
                      "scores": results[row]["scores"], "tags": tags(results[row], taxonomy, language),
                      "width": index.sizes[row][0], "height": index.sizes[row][1]}
            if row in duplicates:
                record["near_duplicates"] = duplicates[row]
            writer.add_copy(source, name, read_caption(source), record)
            progress.advance()
        dropped = [{"file": str(index.files[row]), "reason": why} for row, why in sorted(plan.dropped.items())]
        report = {"taxonomy": taxonomy.name, "options": dataclasses.asdict(options), "kept": len(plan.order),
                  "dropped": dropped, "skipped": [{"file": s.path, "reason": s.reason} for s in index.skipped]}
        if plan.search:
            report["near_duplicate_search"] = plan.search
        writer.add_text(REPORT, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        return writer.commit()
