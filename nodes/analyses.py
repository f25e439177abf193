"""Nodes of the curator's analyses: one node per analysis of a work (colour, emotion, style by templates, objects,
intent, space from the text), each giving its JSON record and, where it helps, a picture of what it found."""
from __future__ import annotations

import json
from typing import Any

import torch

from ..core.analyses import colour, emotion, space
from ..core.curator.clip_model import refuse_comfy_clip
from ..core.curator.pixels import check_image_batch
from ..core.curator.taxonomy import Taxonomy
from ..core.shared.hf_folders import find_model_folder
from ..core.shared.plots import to_image_tensor
from . import bridge
from .curator import CLIP_INPUT, LANGUAGES, TAXONOMY_INPUT, clip_cache_dir
from .declare import AtelierNode, float_input, int_input, seed_input


class AnalysisNode(AtelierNode):
    CATEGORY = "Atelier/Curate/Analyses"


def _json(records: list[dict[str, Any]]) -> str:
    """One picture's record as a JSON object, a batch's as a list."""
    return json.dumps(records[0] if len(records) == 1 else records, ensure_ascii=False, indent=1)


class AtelierColourAnalysis(AnalysisNode):
    DESCRIPTION = ("Colour from the pixels: per-channel histograms in RGB and YCbCr (BT.601 full range), the dominant "
                   "palette (k-means in CIELAB, seeded; each colour's share of the picture, largest first) and "
                   "colour-tone words from measured numbers (warm/cool, bright/dark, vivid/muted, high/low contrast, "
                   "in English and Korean), the numbers and thresholds in the JSON.")
    EXAMPLE = ("Wire Load Image into images: a picture half red (#c83c32) and half blue (#3246c8) gives the summary "
               "'warm, vivid, low contrast: #3246c8 50%, #c83c32 50%'; swatch shows the palette as bands as wide as "
               "each colour's share, and colour_json keeps the "
               "histograms, the measures behind each word and its Korean word for the curator's text.")
    FUNCTION = "analyse"
    OUTPUTS = (
        ("STRING", "colour_json", "The analysis as JSON: an object for one picture, a list for a batch (palette, "
                                  "words, words_ko, measures, thresholds, histograms)."),
        ("IMAGE", "swatch", "Each picture's palette as bands as wide as its shares, labelled with hex and share."),
        ("STRING", "summary", "One line per picture: its tone words, then its palette colours and shares."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The picture, or a batch (each analysed on its own)."}),
            "palette_size": int_input(colour.DEFAULT_PALETTE, 1, 16, "Colours in the palette (k of k-means); fewer "
                                      "when the picture has fewer distinct colours."),
            "bins": int_input(colour.DEFAULT_BINS, 2, 256, "Bins of each channel's histogram over 0..1."),
            "seed": seed_input("Seed of the k-means starts and of the pixel sample it is fitted on (pictures over "
                               f"{colour.MAX_SAMPLES:,} pixels)."),
        }}

    def analyse(self, images: torch.Tensor, palette_size: int, bins: int, seed: int) -> tuple[str, torch.Tensor, str]:
        check_image_batch(images)
        progress = bridge.progress(images.shape[0], "colour")
        results = []
        for image in images:
            progress.check_cancel()
            results.append(colour.analyse_colour(image, palette_size, bins, seed))
            progress.advance()
        swatches = torch.cat([to_image_tensor(colour.swatch(r.palette)) for r in results])
        return _json([r.record() for r in results]), swatches, "\n".join(r.summary() for r in results)


class AtelierSpaceFromText(AnalysisNode):
    DESCRIPTION = ("The exhibition space a work suits, from its text: the text's CLIP embedding against each space "
                   "of a taxonomy group by Euclidean distance between unit embeddings (nearest first; it ranks as "
                   "cosine does), beside the picture's zero-shot scores for the same group when a picture is given. "
                   "Both rankings and choices go into the JSON.")
    EXAMPLE = ("Wire Atelier Load CLIP, Atelier Load Taxonomy ('spaces') and the curator's text or the artist's note "
               "('A quiet morning light over a reading chair.'); add the picture from Load Image: space names the "
               "nearest space by the text, and space_json ranks every space by text distance and by picture score.")
    FUNCTION = "place"
    OUTPUTS = (
        ("STRING", "space_json", "JSON: from_text (space, name, distance; nearest first), from_picture (space, "
                                 "name, score; best first; empty without a picture), text_choice, picture_choice."),
        ("STRING", "space", "The name of the space nearest the text, in the chosen language."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip_model": CLIP_INPUT,
                "taxonomy": TAXONOMY_INPUT,
                "text": ("STRING", {"default": "", "multiline": True, "tooltip": "The curator's text or the "
                         "artist's note, in a language the CLIP reads (OpenAI CLIP: English); each sentence is "
                         "embedded and their embeddings averaged."}),
                "group": ("STRING", {"default": space.DEFAULT_GROUP, "tooltip": "The taxonomy group of spaces "
                          "('space' in the shipped 'spaces' taxonomy)."}),
                "language": (LANGUAGES, {"default": "en", "tooltip": "Language of the space names (English is "
                             "the fallback where the taxonomy has no name in it)."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "The work's picture, for the picture-based score beside the text's "
                           "(the first of a batch)."}),
            },
        }

    def place(self, clip_model: Any, taxonomy: Taxonomy, text: str, group: str, language: str,
              images: torch.Tensor | None = None) -> tuple[str, str]:
        refuse_comfy_clip(clip_model)
        if images is not None:
            check_image_batch(images)
        result = space.space_from_text(clip_model, taxonomy, text, None if images is None else images[0],
                                       group.strip(), language, clip_cache_dir())
        record = json.dumps(result.record(), ensure_ascii=False, indent=1)
        return record, result.names[result.text_choice]


NO_CLASSIFIER = "(none)"


def text_classifier_key() -> str:
    return bridge.register_model_folder("text_classifiers", {".safetensors", ".bin", ".json"})


class AtelierEmotionAnalysis(AnalysisNode):
    DESCRIPTION = ("The emotion of a work: the six basic emotions and a point on the valence-arousal circle with "
                   "its nearest of twelve steps (happy, delighted, excited, tense, angry, frustrated, depressed, "
                   "bored, tired, calm, relaxed, content), read from the picture by CLIP and from its text (title, "
                   "artist's note, expert review) by CLIP's text tower or a text-classification model, and fused as "
                   "a weighted mean of the two distributions, so an emotion found in both is not counted twice.")
    EXAMPLE = ("Wire Atelier Load CLIP and a picture from Load Image, and write the artist's note in text: summary "
               "reads like 'calm (valence 0.05, arousal -0.62); picture: relaxed; text: calm', and circle shows the "
               "picture's, the text's and the fused points. For an emotion classifier of your own, put its "
               "transformers folder in models/atelier/text_classifiers and choose it in classifier.")
    FUNCTION = "analyse"
    OUTPUTS = (
        ("STRING", "emotion_json", "The picture's, the text's and the fused readings (basic emotions, valence, "
                                   "arousal, step in English and Korean), the weights and the method; a list for a "
                                   "batch of pictures."),
        ("IMAGE", "circle", "The twelve-step valence-arousal circle with the picture's, the text's and the fused "
                            "points, one per picture."),
        ("STRING", "summary", "The fused step with its valence and arousal, and each source's step; one line per "
                              "picture."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip_model": CLIP_INPUT,
            "images": ("IMAGE", {"tooltip": "The work (each picture of a batch is read with the same text)."}),
            "text": ("STRING", {"default": "", "multiline": True, "tooltip": "The work's title, artist's note or "
                     "expert review. Empty (or text_weight 0): the picture alone. A text whose word pieces are "
                     "mostly unknown to the model's tokenizer (Korean for an English CLIP or classifier) is refused, "
                     "not guessed at."}),
            "picture_weight": float_input(1.0, 0.0, 10.0, "Weight of the picture's reading in the fusion."),
            "text_weight": float_input(1.0, 0.0, 10.0, "Weight of the text's reading in the fusion (the weights "
                                       "are renormalised over the readings there are)."),
            "temperature": float_input(emotion.DEFAULT_TEMPERATURE, 0.001, 1.0, "Softmax temperature over CLIP's "
                                       "cosine similarities to the emotion prompts; 0.01 is CLIP's own scale, higher "
                                       "spreads the probabilities.", 0.001),
        }, "optional": {
            "classifier": ([NO_CLASSIFIER, *bridge.model_dirs(text_classifier_key())], {
                "default": NO_CLASSIFIER, "tooltip": "A transformers text-classification folder in "
                "models/atelier/text_classifiers whose labels name emotions (such as "
                f"{emotion.EXAMPLE_CLASSIFIER}); (none): the text is read by CLIP's text tower."}),
        }}

    def analyse(self, clip_model: Any, images: torch.Tensor, text: str, picture_weight: float, text_weight: float,
                temperature: float, classifier: str = NO_CLASSIFIER) -> tuple[str, torch.Tensor, str]:
        refuse_comfy_clip(clip_model)
        check_image_batch(images)
        reader = None
        if classifier != NO_CLASSIFIER and text.strip():
            folder = find_model_folder(classifier, bridge.model_folders(text_classifier_key()), "text classifier",
                                       emotion.EXAMPLE_CLASSIFIER)
            reader = emotion.load_text_classifier(folder, clip_model.device)
        prompts = emotion.prompt_embeddings(clip_model)
        progress = bridge.progress(images.shape[0], "reading emotion")
        results = []
        for image in images:
            progress.check_cancel()
            results.append(emotion.analyse_emotion(clip_model, image, text, picture_weight, text_weight,
                                                   temperature, reader, prompts))
            progress.advance()
        circles = torch.cat([to_image_tensor(emotion.circle_image(r)) for r in results])
        return emotion.to_json(results), circles, "\n".join(r.summary() for r in results)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "AtelierColourAnalysis": AtelierColourAnalysis,
    "AtelierSpaceFromText": AtelierSpaceFromText,
    "AtelierEmotionAnalysis": AtelierEmotionAnalysis,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "AtelierColourAnalysis": "Atelier Colour Analysis",
    "AtelierSpaceFromText": "Atelier Space from Text",
    "AtelierEmotionAnalysis": "Atelier Emotion Analysis",
}
