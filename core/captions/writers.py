"""The curator's text by a model instead of the fixed patterns: BLIP-2 prompted with the work's metadata and
analyses, or the SeqGAN generator conditioned on the work's analysis vector (claim 22). The record and hashtags
stay the template writer's (facts only); the generated paragraph replaces its paragraph and, like everything
else, passes the safety filter (a sentence holding a blocked word goes whole)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from .analysis_text import check_analyses, label_name
from .curation_text import CurationText, Metadata
from .safety import SafetyFilter

WRITERS = ("template", "blip2", "seqgan")
PROMPT_PALETTE = 3


def _facts(meta: Metadata, analyses: dict[str, dict[str, Any]]) -> list[str]:
    """Short ``name: value`` facts, English (the BLIP-2 language models read English)."""
    facts = [f"{name.replace('_', ' ')}: {value}" for name, value in
             (("title", meta.title), ("artist", meta.artist), ("year", meta.year), ("material", meta.material),
              ("technique", meta.technique)) if value]
    if colour := analyses.get("colour"):
        tones = ", ".join([*colour.get("words", []), *(c["hex"] for c in colour.get("palette", [])[:PROMPT_PALETTE])])
        if tones:
            facts.append(f"colours: {tones}")
    if emotion := analyses.get("emotion"):
        facts.append(f"emotion: {emotion.get('fused', emotion)['step']}")
    if (style := analyses.get("style")) and style.get("sentence"):
        facts.append(f"style: {style['sentence']}")
    if objects := analyses.get("objects"):
        if objects.get("main"):
            facts.append(f"main objects: {', '.join(label_name(o, 'en') for o in objects['main'])}")
        if objects.get("auxiliary"):
            facts.append(f"other objects: {', '.join(label_name(o, 'en') for o in objects['auxiliary'])}")
    if intent := analyses.get("intent"):
        facts += [f"{name.replace('_', ' ')} (summary): {part['summary']}" for name in ("artist_note", "expert_review")
                  if (part := intent.get(name)) and part.get("summary")]
    if (space := analyses.get("space")) and space.get("text_choice"):
        facts.append(f"space: {label_name(space['text_choice'], 'en')}")
    return facts


QUESTION = "Question: describe this artwork as a museum curator would. Answer:"


def blip2_prompt(meta: Metadata, analyses: dict[str, dict[str, Any] | None], fits: Any = None) -> str:
    """The compact prompt: the facts one per line, then the question the caption answers. ``fits`` (prompt ->
    bool) drops facts from the end (the analyses before the metadata's last ones) until the prompt fits."""
    facts = _facts(meta, check_analyses(analyses))
    prompt = "\n".join([*facts, QUESTION])
    while fits is not None and not fits(prompt):
        if not facts:
            raise ValueError("the BLIP-2 language model's window is too short for even the question: raise its "
                             "max_position_embeddings or lower max_new_tokens")
        facts.pop()
        prompt = "\n".join([*facts, QUESTION])
    return prompt


def _with_paragraph(base: CurationText, text: str, safety: SafetyFilter, writer: str) -> CurationText:
    paragraph = safety.clean(" ".join(text.split()), prose=True)
    return replace(base, paragraph=paragraph, record={**base.record, "paragraph": paragraph, "writer": writer})


def write_with_blip2(base: CurationText, blip: Any, image: torch.Tensor, meta: Metadata,
                     analyses: dict[str, dict[str, Any] | None], safety: SafetyFilter,
                     settings: Any | None = None) -> CurationText:
    """``base`` (the template writer's text) with BLIP-2's paragraph for ``image`` (``[H, W, 3]``), prompted with
    the metadata and analyses (``settings``' own prompt is replaced; the facts that do not fit the language model's
    window are left out from the end, and the record's ``prompt`` says what was asked)."""
    from .blip2 import CaptionSettings, caption_images

    settings = settings or CaptionSettings(max_new_tokens=80)
    config = blip._live().config
    window = config.text_config.max_position_embeddings - config.num_query_tokens - settings.max_new_tokens

    def fits(prompt: str) -> bool:  # the query tokens, the prompt and the answer share the language model's window
        return len(blip.tokenizer(prompt, add_special_tokens=True)["input_ids"]) <= window

    settings = replace(settings, prompt=blip2_prompt(meta, analyses, fits))
    text = caption_images(blip, [image], settings, batch_size=1)[0]
    out = _with_paragraph(base, text, safety, "blip2")
    return replace(out, record={**out.record, "prompt": settings.prompt})


def write_with_seqgan(base: CurationText, model: Any, analyses: dict[str, dict[str, Any] | None],
                      safety: SafetyFilter, options: Any | None = None) -> CurationText:
    """``base`` with the paragraph the conditioned generator samples for the work's analysis vector."""
    from ..analyses.features import FEATURES_LENGTH, FEATURES_VERSION, analysis_features
    from ..story.text_generator import SamplingOptions

    width = model.config.cond_dim
    if width != FEATURES_LENGTH:
        raise ValueError(f"the text model {model.name!r} is conditioned on {width or 'no'} features, not on the "
                         f"{FEATURES_LENGTH} of the analysis vector (version {FEATURES_VERSION}): train it with "
                         "Train Text Generator on a catalogue of Describe Folder's curation.jsonl records")
    features = analysis_features(check_analyses(analyses))
    text = model.generate(1, options or SamplingOptions(), condition=[features.tolist()]).texts[0]
    return _with_paragraph(base, text, safety, "seqgan")
