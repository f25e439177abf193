"""Nodes of the curator's analyses: one node per analysis of a work (colour, emotion, style by templates, objects,
intent, space from the text), each giving its JSON record and, where it helps, a picture of what it found."""
from __future__ import annotations

import json
from typing import Any

from ..core.analyses import intent
from ..core.curator.clip_model import refuse_comfy_clip
from ..core.shared.hf_folders import find_model_folder
from . import bridge
from .curator import CLIP
from .declare import AtelierNode, int_input


class AnalysisNode(AtelierNode):
    CATEGORY = "Atelier/Curate/Analyses"


NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}


def summarizer_key() -> str:
    return bridge.register_model_folder("summarizers", {".safetensors", ".bin", ".json"})


class AtelierIntentSummary(AnalysisNode):
    DESCRIPTION = ("The work's intent: summaries of the artist's note and of the expert review. Extractive by "
                   "default (the most central sentences, kept whole and in order, so no word is invented; CLIP "
                   "embeds the sentences when one is wired, else TF-IDF), or abstractive with a seq2seq "
                   "summarisation model folder (BART, T5) from models/atelier/summarizers. Each summary is "
                   "labelled as one.")
    EXAMPLE = ("Paste the artist's note and an expert review, keep summarizer '(extractive)' and max_sentences 2, "
               "and show summary in a text preview: 'Summary of the artist's note: ...'.")
    FUNCTION = "summarize"
    OUTPUTS = (
        ("STRING", "intent_json", "The summaries as a JSON record: artist_note and expert_review, each with summary, "
                                  "method and the sentences kept (null where that text was empty)."),
        ("STRING", "summary", "The summaries, one a line, each labelled 'Summary of ...'."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "artist_note": ("STRING", {"default": "", "multiline": True, "tooltip": "The artist's note on the "
                                "work, in English or Korean."}),
                "expert_review": ("STRING", {"default": "", "multiline": True, "tooltip": "An expert's review of the "
                                  "work (optional)."}),
                "max_sentences": int_input(2, 1, 20, "How many sentences an extractive summary keeps of each text."),
            },
            "optional": {
                "summarizer": ([intent.EXTRACTIVE, *bridge.model_dirs(summarizer_key())],
                               {"default": intent.EXTRACTIVE, "tooltip": "'(extractive)' keeps the most central "
                                "sentences; or a seq2seq summarisation model folder in models/atelier/summarizers "
                                f"(such as {intent.DEFAULT_SUMMARIZER}) for an abstractive summary."}),
                "clip": (CLIP, {"tooltip": "From Atelier Load CLIP: embeds the sentences for the "
                         "extractive summary (else TF-IDF). OpenAI CLIP reads English only."}),
                "device": (["auto", "cpu", "cuda"], {"default": "auto", "tooltip": "Where the summarisation model "
                           "runs."}),
            },
        }

    def summarize(self, artist_note: str, expert_review: str, max_sentences: int,
                  summarizer: str = intent.EXTRACTIVE, clip: Any = None, device: str = "auto") -> tuple[str, str]:
        model = None
        if summarizer != intent.EXTRACTIVE:
            folder = find_model_folder(summarizer, bridge.model_folders(summarizer_key()), "summarizer",
                                       intent.DEFAULT_SUMMARIZER)
            model = intent.load_summarizer(folder, str(bridge.compute_device(device)))
        if clip is not None:
            refuse_comfy_clip(clip)
        result = intent.summarize_intent(artist_note, expert_review, max_sentences, model, clip)
        return json.dumps(result.record(), ensure_ascii=False, indent=1), result.text()


NODE_CLASS_MAPPINGS["AtelierIntentSummary"] = AtelierIntentSummary
NODE_DISPLAY_NAME_MAPPINGS["AtelierIntentSummary"] = "Atelier Intent Summary"
