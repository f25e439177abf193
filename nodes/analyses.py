"""Nodes of the curator's analyses: one node per analysis of a work (colour, emotion, style by templates, objects,
intent, space from the text), each giving its JSON record and, where it helps, a picture of what it found."""
from __future__ import annotations

import json
from typing import Any

import torch

from ..core.shared.plots import to_image_tensor
from . import bridge
from .curator import TAXONOMY
from .declare import AtelierNode, float_input, int_input, model_input
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


DETECTOR = "ATELIER_DETECTOR"
DETECTOR_KIND = "detectors"


def detector_key() -> str:
    return bridge.register_model_folder(DETECTOR_KIND, {".safetensors", ".bin", ".json"})


class AtelierLoadDetector(AnalysisNode):
    DESCRIPTION = ("Load an open-vocabulary object detector (OWLv2 or OWL-ViT, transformers) from a folder in "
                   "models/atelier/detectors or the Hugging Face cache, for Atelier Detect Objects; "
                   "google/owlv2-base-patch16-ensemble is the recommended one. Nothing is downloaded.")
    EXAMPLE = ("Download google/owlv2-base-patch16-ensemble into models/atelier/detectors/owlv2-base-patch16-ensemble "
               "(`hf download google/owlv2-base-patch16-ensemble --include \"*.json\" --include \"*.txt\" --include "
               "\"*.safetensors\" --local-dir models/atelier/detectors/owlv2-base-patch16-ensemble`), choose it here "
               "and wire detector into Atelier Detect Objects.")
    FUNCTION = "load"
    OUTPUTS = (
        (DETECTOR, "detector", "The detector, for Atelier Detect Objects."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from ..core.analyses.objects import DEFAULT_DETECTOR

        return {"required": {
            "model": model_input(bridge.model_dirs(detector_key()), DEFAULT_DETECTOR, "An OWLv2 or OWL-ViT folder in "
                                 "models/atelier/detectors, or a Hugging Face id found in the local cache (never "
                                 "downloaded)."),
            "precision": (["auto", "fp16", "bf16", "fp32"], {"default": "auto", "tooltip": "auto: fp16 on a GPU, "
                          "fp32 on the CPU."}),
            "device": (["auto", "cpu"], {"default": "auto", "tooltip": "auto: ComfyUI's GPU when there is one."}),
        }}

    def load(self, model: str, precision: str, device: str) -> tuple[Any]:
        from ..core.analyses import objects
        from ..core.shared.hf_folders import find_model_folder

        folder = find_model_folder(model, bridge.model_folders(detector_key()), "object detector",
                                   objects.DEFAULT_DETECTOR)
        return (objects.load_detector(folder, bridge.compute_device(device), precision),)


class AtelierDetectObjects(AnalysisNode):
    DESCRIPTION = ("Open-vocabulary objects: the detector looks for the phrases (prompts and synonyms) of one "
                   "taxonomy group's labels; boxes under score_threshold are dropped, overlapping ones (IoU above "
                   "nms_iou) keep the best; an object is main when area share x (1 - distance of its centre from "
                   "the picture's centre, 0 at the centre and 1 at a corner) reaches main_threshold (near the centre "
                   "and large), else auxiliary. Boxes are drawn on the picture: main in red, auxiliary in blue.")
    EXAMPLE = ("Wire Atelier Load Detector, Atelier Load Taxonomy ('artworks') with group 'subject', and a work from "
               "Load Image: summary reads like 'main: person; auxiliary: flowers, furniture', and boxes shows where.")
    FUNCTION = "run"
    OUTPUTS = (
        ("STRING", "objects_json", "A JSON list, one record per picture: objects (label, score, box in pixels, "
                                   "area_share, centre_distance, prominence, role), main, auxiliary, queries."),
        ("IMAGE", "boxes", "The pictures with their boxes and labels: main objects red, auxiliary ones blue."),
        ("STRING", "summary", "Main and auxiliary objects of each picture, one line per picture."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "detector": (DETECTOR, {"tooltip": "From Atelier Load Detector."}),
            "taxonomy": (TAXONOMY, {"tooltip": "From Atelier Load Taxonomy; one of its groups gives the queries."}),
            "group": ("STRING", {"default": "subject", "tooltip": "The taxonomy group whose labels are looked for "
                      "(artworks: subject)."}),
            "images": ("IMAGE", {"tooltip": "The work(s); each shorter side at least 32 pixels."}),
            "score_threshold": float_input(0.1, 0.0, 1.0, "Boxes whose best label scores (sigmoid) below this are "
                                           "dropped."),
            "nms_iou": float_input(0.3, 0.0, 1.0, "Of boxes overlapping by more than this IoU, only the best is kept "
                                   "(whatever their labels)."),
            "main_threshold": float_input(0.1, 0.0, 1.0, "An object is main when area share x (1 - centre "
                                          "distance) is at least this: 0.1 is a centred box covering a tenth of the "
                                          "picture.", 0.005),
            "language": (["en", "ko"], {"default": "en", "tooltip": "Language of the label names in summary and on "
                         "the boxes (the JSON keeps label ids)."}),
        }}

    def run(self, detector: Any, taxonomy: Any, group: str, images: torch.Tensor, score_threshold: float,
            nms_iou: float, main_threshold: float, language: str) -> tuple[str, torch.Tensor, str]:
        from ..core.analyses import objects
        from ..core.curator.pixels import check_image_batch

        check_image_batch(images)
        objects.group_queries(taxonomy, group.strip())  # a missing group fails before any work
        objects.check_picture_size(images[0])
        names = {label.id: label.name(language) for label in taxonomy.groups[group.strip()].labels.values()}
        progress = bridge.progress(len(images), "detecting objects")
        results, drawn = [], []
        for image in images:
            result = objects.detect_objects(detector, image, taxonomy, group.strip(), score_threshold, nms_iou,
                                            main_threshold)
            results.append(result)
            drawn.append(to_image_tensor(objects.draw_boxes(image, result, names)))
            progress.advance()
            progress.check_cancel()
        return (json.dumps([r.record() for r in results], ensure_ascii=False, indent=2), torch.cat(drawn),
                "\n".join(r.summary(names) for r in results))


NODE_CLASS_MAPPINGS["AtelierLoadDetector"] = AtelierLoadDetector
NODE_CLASS_MAPPINGS["AtelierDetectObjects"] = AtelierDetectObjects
NODE_DISPLAY_NAME_MAPPINGS["AtelierLoadDetector"] = "Atelier Load Detector"
NODE_DISPLAY_NAME_MAPPINGS["AtelierDetectObjects"] = "Atelier Detect Objects"
