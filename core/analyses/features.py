"""The work's fused analysis vector: one fixed-length list of numbers from its analysis records, the condition
of the SeqGAN writer (claim 22) and the ``features`` of Describe Folder's curation.jsonl records.

Layout (FEATURES_VERSION 1, FEATURES_LENGTH 47 numbers, each about -1..1 or 0..1):

- 0-5: which analyses are there (1 or 0), in the order colour, emotion, style, objects, intent, space;
- 6-9: colour measures: warmth / 50, lightness / 100, chroma / 100, contrast / 50, each clipped to -1..1;
- 10-21: the three largest palette colours, each L* / 100, a* / 128, b* / 128 and its share (0 where fewer);
- 22-29: fused emotion: valence, arousal, then the six basic emotions' shares (happiness, sadness, anger, fear,
  surprise, disgust);
- 30: style: the best template's distance d as d / (1 + d);
- 31-32: objects: min(objects, 10) / 10 and min(main objects, 10) / 10;
- 33-46: space chosen by the text, one-hot over the shipped ``spaces`` taxonomy's ``space`` group in its order.

A missing analysis leaves its numbers 0 (its presence flag says it is missing). Change the layout only with a new
FEATURES_VERSION: catalogues written under another one do not match.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

FEATURES_VERSION = 1
ANALYSES = ("colour", "emotion", "style", "objects", "intent", "space")
BASIC = ("happiness", "sadness", "anger", "fear", "surprise", "disgust")
PALETTE_COLOURS = 3
MEASURE_SCALES = (("warmth", 50.0), ("lightness", 100.0), ("chroma", 100.0), ("contrast", 50.0))
MAX_OBJECTS = 10


@lru_cache(maxsize=1)
def space_order() -> tuple[str, ...]:
    """The label ids of the shipped spaces taxonomy's space group, in their order (the one-hot's)."""
    from ..curator.taxonomy import load_taxonomy
    from .space import DEFAULT_GROUP

    return tuple(load_taxonomy("spaces").groups[DEFAULT_GROUP].labels)


FEATURES_LENGTH = len(ANALYSES) + len(MEASURE_SCALES) + 4 * PALETTE_COLOURS + 2 + len(BASIC) + 1 + 2 + 14


def _clip(value: float) -> float:
    return max(-1.0, min(1.0, float(value)))


def analysis_features(analyses: dict[str, Any]) -> torch.Tensor:
    """``[FEATURES_LENGTH]`` float32: the layout above from the records (``None`` or absent ones count as missing)."""
    present = [1.0 if analyses.get(name) else 0.0 for name in ANALYSES]
    colour = analyses.get("colour") or {}
    measures = colour.get("measures", {})
    tone = [_clip(measures.get(name, 0.0) / scale) for name, scale in MEASURE_SCALES]
    palette: list[float] = []
    for entry in colour.get("palette", [])[:PALETTE_COLOURS]:
        lightness, a, b = entry.get("lab", (0.0, 0.0, 0.0))
        palette += [_clip(lightness / 100), _clip(a / 128), _clip(b / 128), _clip(entry.get("share", 0.0))]
    palette += [0.0] * (4 * PALETTE_COLOURS - len(palette))
    emotion = analyses.get("emotion") or {}
    fused = emotion.get("fused", emotion)
    feeling = [_clip(fused.get("valence", 0.0)), _clip(fused.get("arousal", 0.0))] + \
        [_clip(fused.get("basic", {}).get(name, 0.0)) for name in BASIC]
    style = analyses.get("style") or {}
    distance = float(style["matches"][0]["distance"]) if style.get("matches") else 0.0
    objects = analyses.get("objects") or {}
    counts = [min(len(objects.get("objects", [])), MAX_OBJECTS) / MAX_OBJECTS,
              min(len(objects.get("main", [])), MAX_OBJECTS) / MAX_OBJECTS]
    space = analyses.get("space") or {}
    order = space_order()
    one_hot = [1.0 if space.get("text_choice") == label else 0.0 for label in order]
    vector = [*present, *tone, *palette, *feeling, distance / (1 + distance), *counts, *one_hot]
    if len(vector) != FEATURES_LENGTH:
        raise RuntimeError(f"the features have {len(vector)} numbers where layout {FEATURES_VERSION} has "
                           f"{FEATURES_LENGTH}: the spaces taxonomy's space group changed")
    return torch.tensor(vector, dtype=torch.float32)
