"""The exhibition space a work suits, from its text (paragraphs 0126-0129 of the seed) beside today's picture score.

From the text: the text's CLIP text embedding against each space class of a taxonomy group (each class the unit
mean of its prompt ensemble, as zero-shot labelling builds it), by the Euclidean distance between the two unit
vectors, nearest first, as the seed measures it. On unit vectors ``|t - s|^2 = 2 - 2 cos(t, s)``, so the distance
ranks the classes exactly as cosine similarity does (reversed). A text longer than one sentence is embedded
sentence by sentence (CLIP reads 77 tokens) and the unit embeddings averaged and renormalised, as a prompt
ensemble is. Every class of the group is ranked, a room of a home beside home itself: the text has no hierarchy.

From the picture (when one is given): the zero-shot scores of the same group (``core.curator.zero_shot``: softmax
or cosine, a parent scoring with its children) and the label its rules choose (none when the best is under
the group's threshold).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from ..curator.taxonomy import Taxonomy, TaxonomyError
from ..curator.zero_shot import build_label_bank, label_embeddings

DEFAULT_GROUP = "space"  # the shipped `spaces` taxonomy's group
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")


@dataclass(frozen=True)
class SpaceResult:
    group: str
    names: dict[str, str]  # label id -> display name in the chosen language
    from_text: tuple[tuple[str, float], ...]  # (label id, Euclidean distance), nearest first
    sentences: int
    from_picture: tuple[tuple[str, float], ...]  # (label id, zero-shot score), best first; empty without a picture
    picture_choice: str | None

    @property
    def text_choice(self) -> str:
        return self.from_text[0][0]

    def record(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "from_text": [{"space": s, "name": self.names[s], "distance": round(d, 6)} for s, d in self.from_text],
            "from_picture": [{"space": s, "name": self.names[s], "score": round(v, 6)} for s, v in self.from_picture],
            "text_choice": self.text_choice,
            "picture_choice": self.picture_choice,
            "sentences": self.sentences,
        }


def sentences(text: str) -> list[str]:
    """The text's sentences (split after . ! ? and at line breaks), without empty ones."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def text_embedding(clip: Any, text: str) -> tuple[torch.Tensor, int]:
    """The unit embedding of a text (the renormalised mean of its sentences' unit embeddings) and how many
    sentences it had; an empty text is an error."""
    parts = sentences(text)
    if not parts:
        raise ValueError("the text is empty: give the curator's text or the artist's note to place the work by")
    return torch.nn.functional.normalize(clip.embed_texts(parts).mean(0), dim=-1), len(parts)


def space_group(taxonomy: Taxonomy, group: str) -> Taxonomy:
    """The taxonomy cut down to the one group; a group it does not have is an error naming those it has."""
    if group not in taxonomy.groups:
        raise TaxonomyError(f"taxonomy {taxonomy.name!r} has no group {group!r}; its groups are "
                            f"{', '.join(taxonomy.groups)} (the shipped 'spaces' taxonomy's is {DEFAULT_GROUP!r})")
    return Taxonomy(taxonomy.name, {group: taxonomy.groups[group]}, taxonomy.source, taxonomy.description)


def space_from_text(clip: Any, taxonomy: Taxonomy, text: str, image: torch.Tensor | None = None,
                    group: str = DEFAULT_GROUP, language: str = "en",
                    cache_dir: str | os.PathLike[str] | None = None,
                    image_embedding: torch.Tensor | None = None) -> SpaceResult:
    """Rank the group's spaces by the text (and score them on ``image``, one ``[H, W, 3]`` picture, or on its
    unit ``image_embedding`` already computed, if given); ``cache_dir`` keeps the prompt embeddings as zero-shot
    labelling does."""
    only = space_group(taxonomy, group)
    embedding, count = text_embedding(clip, text)
    bank = build_label_bank(clip, only, cache_dir)
    rows = bank.rows[group]
    distances = torch.linalg.vector_norm(bank.embeddings[group] - embedding, dim=-1).tolist()
    from_text = tuple(sorted(zip(rows, distances), key=lambda pair: pair[1]))
    from_picture: tuple[tuple[str, float], ...] = ()
    picture_choice = None
    if image_embedding is None and image is not None:
        image_embedding = clip.embed_images([image])[0]
    if image_embedding is not None:
        result = label_embeddings(bank, image_embedding[None], language)[0]
        from_picture = tuple(sorted(result["scores"][group].items(), key=lambda pair: -pair[1]))
        chosen = result["labels"][group]  # none when the best is under the group's threshold
        picture_choice = chosen[0]["label"] if chosen else None
    labels = only.groups[group].labels
    names = {label_id: labels[label_id].name(language) for label_id in rows}
    return SpaceResult(group, names, from_text, count, from_picture, picture_choice)
