"""Nodes of the curator's analyses: one node per analysis of a work (colour, emotion, style by templates, objects,
intent, space from the text), each giving its JSON record and, where it helps, a picture of what it found."""
from __future__ import annotations

import json
from typing import Any

import torch

from . import bridge
from .declare import AtelierNode, int_input
from .style import ADAIN


class AnalysisNode(AtelierNode):
    CATEGORY = "Atelier/Curate/Analyses"


NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}


STYLE_CACHE_SUBFOLDER = "atelier/style_templates"


class AtelierStyleMatch(AnalysisNode):
    DESCRIPTION = ("Style by template matching: the Gram matrices of the AdaIN VGG-19 encoder's relu1_1..relu4_1 "
                   "features (after resizing to a fixed shorter side) compared, by mean squared difference averaged "
                   "over the four layers, with those of a folder of template pictures, each described by a "
                   "<stem>.txt; the nearest templates, their distances, and the best one's description as the style "
                   "sentence. Only the encoder of the AdaIN model is used.")
    EXAMPLE = ("Put a few pictures of known styles in ComfyUI/input/style_templates, each with a description beside "
               "it (impressionism.png + impressionism.txt 'loose impressionist brushwork in broken colour'), wire "
               "Atelier Load AdaIN Model and a work from Load Image, and set sentence_template 'In the manner of "
               "{description}': sentence reads 'In the manner of loose impressionist brushwork in broken colour'.")
    FUNCTION = "run"
    OUTPUTS = (
        ("STRING", "style_json", "A JSON list, one record per picture: matches (template, distance, description; "
                                 "nearest first), sentence, layers, size, notes (templates without a description)."),
        ("STRING", "sentence", "The style sentence of each picture, one line per picture."),
        ("IMAGE", "preview", "Each picture (a row) beside its nearest templates with their distances."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from ..core.analyses.style_match import DEFAULT_SENTENCE, DEFAULT_SIZE

        return {"required": {
            "adain_model": (ADAIN, {"tooltip": "From Atelier Load AdaIN Model; only its VGG-19 encoder is "
                            "used (any decoder will do)."}),
            "image": ("IMAGE", {"tooltip": "The work(s) whose style is matched; a batch gives one record each."}),
            "template_folder": ("STRING", {"default": "style_templates", "tooltip": "Folder of template pictures "
                                "(absolute, or inside ComfyUI's input folder), each with a <stem>.txt description; "
                                "a template without one is described by its file name."}),
            "top_k": int_input(3, 1, 100, "How many of the nearest templates to report."),
            "sentence_template": ("STRING", {"default": DEFAULT_SENTENCE, "tooltip": "The style sentence, made from "
                                  "the best template: {description}, {name} (its file name without extension) and "
                                  "{distance}, as in 'In the manner of {description}'."}),
            "size": int_input(DEFAULT_SIZE, 64, 2048, "Every picture and template is resized to this shorter side "
                              "before encoding, so distances are comparable whatever their sizes.", 8),
            "rotation_invariant": ("BOOLEAN", {"default": True, "tooltip": "Average each picture's Gram matrices "
                                   "over its four quarter turns, so a picture turned by 90, 180 or 270 degrees has "
                                   "the same style (4x the encoding work)."}),
        }}

    def run(self, adain_model: Any, image: torch.Tensor, template_folder: str, top_k: int, sentence_template: str,
            size: int, rotation_invariant: bool) -> tuple[str, str, torch.Tensor]:
        from ..core.analyses import style_match
        from ..core.curator.pixels import check_image_batch
        from ..core.dataset.image_files import list_images
        from ..core.shared.plots import to_image_tensor

        check_image_batch(image)
        style_match.check_sentence_template(sentence_template)
        folder = bridge.resolve_input_folder(template_folder)
        model = adain_model.to(bridge.compute_device())
        bank = style_match.load_templates(model, folder, size, rotation_invariant,
                                          bridge.output_directory() / STYLE_CACHE_SUBFOLDER,
                                          bridge.progress(len(list_images(folder)), "template styles"))
        results = [style_match.match_style(model, picture, bank, top_k, sentence_template) for picture in image]
        return (json.dumps([r.record() for r in results], ensure_ascii=False, indent=2),
                "\n".join(r.sentence for r in results),
                to_image_tensor(style_match.preview(list(image), results, bank)))


NODE_CLASS_MAPPINGS["AtelierStyleMatch"] = AtelierStyleMatch
NODE_DISPLAY_NAME_MAPPINGS["AtelierStyleMatch"] = "Atelier Style Match"
