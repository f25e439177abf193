"""Nodes of the curator's analyses: one node per analysis of a work (colour, emotion, style by templates, objects,
intent, space from the text), each giving its JSON record and, where it helps, a picture of what it found."""
from __future__ import annotations

from typing import Any

import torch

from ..core.analyses import emotion
from ..core.curator.clip_model import refuse_comfy_clip
from ..core.curator.pixels import check_image_batch
from ..core.shared.hf_folders import find_model_folder
from ..core.shared.plots import to_image_tensor
from . import bridge
from .curator import CLIP_INPUT
from .declare import AtelierNode, float_input


class AnalysisNode(AtelierNode):
    CATEGORY = "Atelier/Curate/Analyses"


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


NODE_CLASS_MAPPINGS: dict[str, type] = {"AtelierEmotionAnalysis": AtelierEmotionAnalysis}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {"AtelierEmotionAnalysis": "Atelier Emotion Analysis"}
