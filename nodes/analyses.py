"""Nodes of the curator's analyses: one node per analysis of a work (colour, emotion, style by templates, objects,
intent, space from the text), each giving its JSON record and, where it helps, a picture of what it found."""
from __future__ import annotations

import json
from typing import Any

import torch

from ..core.analyses import colour, emotion, intent, space
from ..core.curator.clip_model import refuse_comfy_clip
from ..core.curator.pixels import check_image_batch
from ..core.curator.taxonomy import Taxonomy
from ..core.shared.hf_folders import find_model_folder
from ..core.shared.plots import to_image_tensor
from . import bridge
from .curator import CLIP, CLIP_INPUT, LANGUAGES, TAXONOMY, TAXONOMY_INPUT, clip_cache_dir
from .declare import DEVICE_INPUT, AtelierNode, float_input, int_input, model_input, seed_input
from .style import ADAIN


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
            "device": DEVICE_INPUT,
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


class AtelierAnalyseFolder(AnalysisNode):
    DESCRIPTION = ("Every analysis you have models for, over every picture of a folder, written as analyses.jsonl "
                   "into it (one line per picture, read by Atelier Describe Folder): colour always; emotion with a "
                   "CLIP; space from the text with a CLIP and a taxonomy with the space group (the text: the "
                   "picture's caption sidecar, else its artist's note); style with an AdaIN model and a template "
                   "folder; objects with a detector and the taxonomy's object group; intent with a metadata file "
                   "(artist_note, expert_review per picture). Each model is used once for the whole folder: CLIP "
                   "embeds the pictures in batches (cached), the emotion prompts and the templates once.")
    EXAMPLE = ("Put the curated pictures in input/atelier/collection, wire Atelier Load CLIP, Atelier Load Taxonomy "
               "('spaces'), Atelier Load AdaIN Model (template_folder atelier/style_templates) and Atelier Load "
               "Detector, set metadata_file to a metadata.json beside the pictures, and wire folder into Atelier "
               "Describe Folder: report lists each picture's analyses, and curation.md is written from them.")
    FUNCTION = "run"
    OUTPUTS = (
        ("STRING", "folder", "The folder analysed (now holding analyses.jsonl), for Atelier Describe Folder."),
        ("STRING", "analyses_json", "The analyses as a JSON list, one object per picture: file, colour, emotion, "
                                    "style, objects, intent, space (null where that analysis did not run)."),
        ("STRING", "report", "One line per picture (the analyses that ran and its colour words), then the files "
                             "skipped and what was left out and why."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "folder": ("STRING", {"default": "atelier/collection", "tooltip": "Folder of pictures (absolute, or "
                           "inside ComfyUI's input folder; sub-folders too). Files that fail to decode are skipped "
                           "and listed."}),
                "template_folder": ("STRING", {"default": "atelier/style_templates", "tooltip": "Template pictures "
                                    "for style matching, each with a <stem>.txt description (absolute, or inside "
                                    "the input folder); used when adain_model is wired."}),
                "object_group": ("STRING", {"default": "subject", "tooltip": "The taxonomy group whose labels the "
                                 "detector looks for (artworks: subject); used when detector is wired."}),
                "space_group": ("STRING", {"default": space.DEFAULT_GROUP, "tooltip": "The taxonomy group of "
                                "exhibition spaces ('space' in the shipped 'spaces' taxonomy); space is skipped "
                                "when the taxonomy has no such group."}),
                "metadata_file": ("STRING", {"default": "", "tooltip": "JSON (picture name or stem -> fields) or "
                                  "CSV with a 'file' column, giving artist_note and expert_review for intent, and "
                                  "the note read for emotion and space (absolute, or inside the input folder). "
                                  "Empty: no intent."}),
                "language": (LANGUAGES, {"default": "en", "tooltip": "Language of the space names."}),
                "seed": seed_input("Seed of the colour palette's k-means."),
            },
            "optional": {
                "clip_model": (CLIP, {"tooltip": "From Atelier Load CLIP: emotion, space and the intent "
                               "summary's sentence embeddings."}),
                "taxonomy": (TAXONOMY, {"tooltip": "From Atelier Load Taxonomy: its space group for space, its "
                             "object group for the detector."}),
                "adain_model": (ADAIN, {"tooltip": "From Atelier Load AdaIN Model: style by template matching "
                                "(its encoder only)."}),
                "detector": (DETECTOR, {"tooltip": "From Atelier Load Detector: objects."}),
            },
        }

    def run(self, folder: str, template_folder: str, object_group: str, space_group: str, metadata_file: str,
            language: str, seed: int, clip_model: Any = None, taxonomy: Taxonomy | None = None,
            adain_model: Any = None, detector: Any = None) -> tuple[str, str, str]:
        from ..core.analyses.folder import analyse_folder
        from ..core.dataset.image_files import list_images

        if clip_model is not None:
            refuse_comfy_clip(clip_model)
        path = bridge.resolve_input_folder(folder)
        templates = bridge.resolve_input_folder(template_folder) if adain_model is not None else None
        model = adain_model.to(bridge.compute_device()) if adain_model is not None else None
        meta = bridge.resolve_input_folder(metadata_file) if metadata_file.strip() else None
        count = len(list_images(path, recursive=True)) if path.is_dir() else 0
        result = analyse_folder(path, clip_model, taxonomy, model, templates, detector, object_group.strip(), meta,
                                space_group.strip(), language, seed, cache_dir=clip_cache_dir(),
                                progress=bridge.progress(count, "analysing pictures"))
        report = "\n".join([*(result.line(r) for r in result.records), result.report()])
        return str(path), json.dumps(result.records, ensure_ascii=False, indent=1), report


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "AtelierColourAnalysis": AtelierColourAnalysis,
    "AtelierSpaceFromText": AtelierSpaceFromText,
    "AtelierEmotionAnalysis": AtelierEmotionAnalysis,
    "AtelierStyleMatch": AtelierStyleMatch,
    "AtelierLoadDetector": AtelierLoadDetector,
    "AtelierDetectObjects": AtelierDetectObjects,
    "AtelierIntentSummary": AtelierIntentSummary,
    "AtelierAnalyseFolder": AtelierAnalyseFolder,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "AtelierColourAnalysis": "Atelier Colour Analysis",
    "AtelierSpaceFromText": "Atelier Space from Text",
    "AtelierEmotionAnalysis": "Atelier Emotion Analysis",
    "AtelierStyleMatch": "Atelier Style Match",
    "AtelierLoadDetector": "Atelier Load Detector",
    "AtelierDetectObjects": "Atelier Detect Objects",
    "AtelierIntentSummary": "Atelier Intent Summary",
    "AtelierAnalyseFolder": "Atelier Analyse Folder",
}
