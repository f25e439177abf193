"""Zero-shot labelling against a taxonomy: prompt ensembles, group scores, hierarchy and exclusivity.

Scores per group (``softmax``: CLIP's probabilities over the group's labels; ``cosine``: raw
similarity). A parent's hierarchical score uses its children: with softmax the probability of
its whole subtree (its own plus its children's), with cosine the best of its own and its
children's. Then the rules: an exclusive group walks down from the best root, into the best
child while that child's subtree scores at least the current label's own score, and reports the
deepest label on that path that clears its threshold (with its parents); a multi group keeps every label at or over its
threshold, best first, at most ``top_k``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..metrics.feature_cache import FeatureCache
from ..shared.progress import Progress
from .image_index import FolderIndex, index_folder
from .taxonomy import LANGUAGE_NAMES, Group, Taxonomy


@dataclass
class LabelBank:
    """A taxonomy's label embeddings for one CLIP: one unit row per (group, label)."""

    taxonomy: Taxonomy
    rows: dict[str, list[str]]  # group -> label ids, in embedding order
    embeddings: dict[str, torch.Tensor]  # group -> [L, D]
    logit_scale: float


def tower_languages(clip: Any) -> tuple[str, ...]:
    """The languages a model's text tower reads (``ClipModel.languages``); English for a model that does not say."""
    return tuple(getattr(clip, "languages", ("en",)))


def prompt_report(taxonomy: Taxonomy, tower: tuple[str, ...]) -> str:
    """Which languages' prompts a label bank for a text tower reading ``tower`` uses, and why:
    ``prompts: en+ko (the text tower reads English and Korean)``, with the labels left without one of them."""
    used = {code for group in taxonomy.groups.values() for label_id in group.labels
            for code in group.ensemble(label_id, tower)}
    languages = "+".join(dict.fromkeys(code for code in (*tower, "en") if code in used))
    lines = [f"prompts: {languages} (the text tower reads {' and '.join(LANGUAGE_NAMES.get(c, c) for c in tower)})"]
    for code in tower:
        if missing := taxonomy.missing(code):  # English never is: a label always has its English name
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            lines.append(f"{len(missing)} label(s) have no {LANGUAGE_NAMES.get(code, code)} prompt or name, so "
                         f"English stands in: {shown}")
    return "; ".join(lines)


TEXT_CACHE_FORMAT = "atelier-clip-text-v1"


def _embed_texts(clip: Any, texts: list[str], cache_dir: str | os.PathLike[str] | None) -> torch.Tensor:
    """Text embeddings, read from and kept in the cache (per text and model) when one is given."""
    if cache_dir is None:
        return clip.embed_texts(texts)
    digests = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    with FeatureCache(cache_dir, TEXT_CACHE_FORMAT, clip.fingerprint) as cache:
        found = {d: v for d in digests if (v := cache.get(d)) is not None}
        missing = list({d: t for d, t in zip(digests, texts) if d not in found}.items())
        if missing:
            values = clip.embed_texts([t for _, t in missing])
            found.update({digest: value for (digest, _), value in zip(missing, values)})
            cache.put_many([d for d, _ in missing], values)
    return torch.stack([found[d] for d in digests])


def build_label_bank(clip: Any, taxonomy: Taxonomy, cache_dir: str | os.PathLike[str] | None = None) -> LabelBank:
    """Embed every prompt of every label once (or read it from ``cache_dir``), then average each label's
    ensemble in embedding space (unit vectors averaged and renormalised, as in the CLIP paper).

    The ensembles are in every language the text tower reads (``clip.languages``) that the label has texts in,
    English alone for a label with none of them: a Korean-English tower gets bilingual ensembles, OpenAI's
    English CLIP the English ones only. Each language's texts are averaged first and then the languages, so a
    language with more prompts written does not outweigh the other."""
    tower = tower_languages(clip)
    texts: dict[str, int] = {}
    plan: dict[str, list[tuple[str, list[list[int]]]]] = {}
    for group in taxonomy.groups.values():
        plan[group.name] = []
        for label_id in group.labels:
            ensemble = group.ensemble(label_id, tower).values()
            indices = [[texts.setdefault(t, len(texts)) for t in language_texts] for language_texts in ensemble]
            plan[group.name].append((label_id, indices))
    every = _embed_texts(clip, list(texts), cache_dir)
    embeddings, rows = {}, {}
    for group_name, labels in plan.items():
        rows[group_name] = [label_id for label_id, _ in labels]
        means = torch.stack([torch.stack([every[i].mean(0) for i in per_language]).mean(0)
                             for _, per_language in labels])
        embeddings[group_name] = torch.nn.functional.normalize(means, dim=-1)
    return LabelBank(taxonomy, rows, embeddings, clip.logit_scale)


def own_scores(similarity: torch.Tensor, group: Group, logit_scale: float) -> torch.Tensor:
    """``[N, L]`` cosine similarities to the group's scores: softmax probabilities or the cosines."""
    if group.score == "softmax":
        return torch.softmax(similarity.double() * logit_scale, dim=-1).to(similarity.dtype)
    return similarity.clone()


def hierarchical_scores(own: torch.Tensor, group: Group, rows: list[str]) -> torch.Tensor:
    """``[N, L]``: each label's score with its children's folded in (subtree sum, or max for cosine)."""
    index = {label_id: i for i, label_id in enumerate(rows)}
    out = own.clone()
    done: set[str] = set()

    def visit(label_id: str) -> torch.Tensor:
        i = index[label_id]
        if label_id in done:
            return out[:, i]
        for child in group.labels[label_id].children:
            value = visit(child)
            out[:, i] = out[:, i] + value if group.score == "softmax" else torch.maximum(out[:, i], value)
        done.add(label_id)
        return out[:, i]

    for label_id in rows:
        visit(label_id)
    return out


def _threshold(group: Group, label_id: str) -> float:
    own = group.labels[label_id].threshold
    return group.threshold if own is None else own


def choose(group: Group, rows: list[str], own: list[float], tree: list[float]) -> list[tuple[str, float]]:
    """The labels one picture gets in ``group``: ``(label id, hierarchical score)``, best first."""
    index = {label_id: i for i, label_id in enumerate(rows)}
    if group.mode == "exclusive":
        path = [max((label.id for label in group.roots()), key=lambda c: tree[index[c]])]
        while group.labels[path[-1]].children:
            best = max(group.labels[path[-1]].children, key=lambda c: tree[index[c]])
            if tree[index[best]] < own[index[path[-1]]]:
                break
            path.append(best)
        # the most specific label on the way down that clears its threshold: a bedroom too uncertain to
        # name is still a home
        for label_id in reversed(path):
            if tree[index[label_id]] >= _threshold(group, label_id):
                return [(label_id, tree[index[label_id]])]
        return []
    kept = [(label_id, tree[index[label_id]]) for label_id in rows
            if tree[index[label_id]] >= _threshold(group, label_id)]
    kept.sort(key=lambda pair: -pair[1])
    return kept[: group.top_k] if group.top_k else kept


def label_embeddings(bank: LabelBank, images: torch.Tensor, language: str = "en") -> list[dict[str, Any]]:
    """Labels for unit image embeddings ``[N, D]``: per picture ``{"labels": {group: [{label, name, score,
    path}]}, "scores": {group: {label: score}}}``, scores being the hierarchical ones."""
    results: list[dict[str, Any]] = [{"labels": {}, "scores": {}} for _ in range(images.shape[0])]
    for group in bank.taxonomy.groups.values():
        rows = bank.rows[group.name]
        similarity = images.float() @ bank.embeddings[group.name].T
        own = own_scores(similarity, group, bank.logit_scale)
        tree = hierarchical_scores(own, group, rows)
        for n, result in enumerate(results):
            own_row, tree_row = own[n].tolist(), tree[n].tolist()
            result["scores"][group.name] = {label_id: round(s, 6) for label_id, s in zip(rows, tree_row)}
            result["labels"][group.name] = [
                {"label": label_id, "name": group.labels[label_id].name(language), "score": round(score, 6),
                 "path": [*group.ancestors(label_id), label_id]}
                for label_id, score in choose(group, rows, own_row, tree_row)]
    return results


def tags(result: dict[str, Any], taxonomy: Taxonomy, language: str = "en") -> list[str]:
    """A picture's chosen labels as display names, parents before children, each once."""
    names: list[str] = []
    for group_name, chosen in result["labels"].items():
        group = taxonomy.groups[group_name]
        for choice in chosen:
            for label_id in choice["path"]:
                name = group.labels[label_id].name(language)
                if name not in names:
                    names.append(name)
    return names


def to_json(results: list[dict[str, Any]]) -> str:
    return json.dumps(results, ensure_ascii=False, indent=1)


def label_folder(clip: Any, taxonomy: Taxonomy, files: list[Path], cache_dir: str | os.PathLike[str] | None,
                 batch_size: int = 32, language: str = "en",
                 progress: Progress | None = None) -> tuple[FolderIndex, list[dict[str, Any]]]:
    """Embed a folder's pictures (cached, streamed; ``progress`` counts pictures) and label them."""
    bank = build_label_bank(clip, taxonomy, cache_dir)
    index = index_folder(clip, files, cache_dir, batch_size, progress=progress)
    return index, label_embeddings(bank, index.embeddings, language)
