"""Nodes of the BLIP-2 captioner: load, caption pictures, caption a dataset, curator texts."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..core.captions import blip2
from ..core.captions.analysis_text import ANALYSES, LANGUAGES
from ..core.captions.curation_text import METADATA_FIELDS, Metadata, curate_text
from ..core.captions.safety import DEFAULT_BLOCKED, SafetyFilter, parse_blocked
from ..core.captions.writers import WRITERS, write_with_blip2, write_with_seqgan
from ..core.curator.pixels import check_image_batch
from ..core.shared.hf_folders import find_model_folder
from . import bridge
from .declare import DEVICE_INPUT, AtelierNode, float_input, int_input, model_input, seed_input
from .story import TEXT_MODEL


class CaptionNode(AtelierNode):
    CATEGORY = "Atelier/Caption"


BLIP2 = "ATELIER_BLIP2"
BLIP2_KIND = "blip2"
BLIP2_INPUT = (BLIP2, {"tooltip": "From Atelier Load BLIP-2."})


def blip2_key() -> str:
    return bridge.register_model_folder(BLIP2_KIND, {".safetensors", ".bin", ".json"})


CAPTION_INPUTS: dict[str, tuple[Any, ...]] = {
    "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "Text the caption continues, such as "
               "'Question: what style is this artwork? Answer:'. Empty: a plain caption."}),
    "max_new_tokens": int_input(40, 1, 512, "Longest caption, in tokens."),
    "min_new_tokens": int_input(0, 0, 512, "Shortest caption, in tokens."),
    "num_beams": int_input(3, 1, 16, "Beam search width (1: greedy); with sampling on, each beam samples."),
    "sampling": ("BOOLEAN", {"default": False, "tooltip": "Sample words (varied captions) instead of searching for "
                 "the likeliest caption."}),
    "temperature": float_input(1.0, 0.05, 5.0, "Sampling temperature: lower is safer, higher more varied."),
    "top_p": float_input(0.9, 0.05, 1.0, "Sampling keeps the smallest set of words whose probability reaches top_p."),
    "repetition_penalty": float_input(1.0, 1.0, 3.0, "Above 1 discourages repeated words."),
    "seed": seed_input("Seed of sampling; the same seed and batch size give the same captions."),
    "batch_size": int_input(8, 1, 256, "Pictures captioned at once."),
    "unload_after": ("BOOLEAN", {"default": False, "tooltip": "Free the model's memory when done (load it again "
                     "to caption more)."}),
}


@contextmanager
def _captioning(model: blip2.Blip2Model, prompt: str, max_new_tokens: int, min_new_tokens: int, num_beams: int,
                sampling: bool, temperature: float, top_p: float, repetition_penalty: float, seed: int,
                batch_size: int, unload_after: bool) -> Iterator[tuple[blip2.CaptionSettings, int]]:
    """The CAPTION_INPUTS as checked settings and the batch size; the model's memory is freed afterwards when
    the user asked for it."""
    settings = blip2.CaptionSettings(prompt.strip(), max_new_tokens, min_new_tokens, num_beams, sampling,
                                     temperature, top_p, repetition_penalty, seed)
    settings.check()
    yield settings, batch_size
    if unload_after:
        model.unload()


class AtelierLoadBLIP2(CaptionNode):
    DESCRIPTION = ("Load BLIP-2 (image captioning and questions) from a folder in models/atelier/blip2 or the "
                   "Hugging Face cache; Salesforce/blip2-opt-2.7b is the recommended one. 8-bit and 4-bit need "
                   "bitsandbytes and a CUDA GPU.")
    EXAMPLE = ("Put the Salesforce/blip2-opt-2.7b folder (config.json, weights, tokenizer and processor files) in "
               "models/atelier/blip2, choose it with precision 'auto' ('8bit' on an 8 GB GPU) and wire blip2_model "
               "into Atelier Caption Images or Caption Dataset.")
    FUNCTION = "load"
    OUTPUTS = (
        (BLIP2, "blip2_model", "The BLIP-2, for Caption Images and Caption Dataset."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": model_input(bridge.model_dirs(blip2_key()), blip2.DEFAULT_BLIP2, "A BLIP-2 model folder in "
                                 "models/atelier/blip2, or a Hugging Face id found in the local cache (never "
                                 "downloaded)."),
            "precision": (list(blip2.PRECISIONS), {"default": "auto", "tooltip": "auto: fp16 on a GPU, fp32 on the "
                          "CPU. 8bit (~4 GB for OPT-2.7B) and 4bit (~2.5 GB) load through bitsandbytes on CUDA."}),
            "device": DEVICE_INPUT,
        }}

    def load(self, model: str, precision: str, device: str) -> tuple[Any]:
        folder = find_model_folder(model, bridge.model_folders(blip2_key()), "BLIP-2", blip2.DEFAULT_BLIP2)
        return (blip2.load_blip2(folder, bridge.compute_device(device), precision),)


class AtelierCaptionImages(CaptionNode):
    DESCRIPTION = "Caption an IMAGE batch with BLIP-2, in batches; one caption per line, in batch order."
    EXAMPLE = ("Wire Atelier Load BLIP-2 and Atelier Load Image Folder's images: captions holds one line per picture, "
               "in batch order, for Atelier Train LoRA's captions. A prompt such as 'Question: what style is this "
               "artwork? Answer:' asks for style words instead.")
    FUNCTION = "caption"
    OUTPUTS = (
        ("STRING", "captions", "One caption per picture, one per line (the LoRA trainer's 'captions' input reads "
                               "this)."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "blip2_model": BLIP2_INPUT,
            "images": ("IMAGE", {"tooltip": "The pictures to caption."}),
            **CAPTION_INPUTS,
        }}

    def caption(self, blip2_model: blip2.Blip2Model, images: torch.Tensor, **caption_inputs: Any) -> tuple[str]:
        with _captioning(blip2_model, **caption_inputs) as (settings, batch_size):
            check_image_batch(images)
            captions = blip2.caption_images(blip2_model, images, settings, batch_size,
                                            bridge.progress(images.shape[0], "captioning"))
        return ("\n".join(captions),)


class AtelierCaptionDataset(CaptionNode):
    DESCRIPTION = ("Write a <stem>.txt caption beside every picture of a folder, the captions the LoRA trainer reads. "
                   "Existing captions are kept unless 'overwrite' is on; pictures that fail to decode are listed. "
                   "Pictures that would share one caption file (a.jpg and a.tif) are refused before captioning.")
    EXAMPLE = ("Wire Atelier Load BLIP-2 and Atelier Multiply Dataset's (or Curate Folder's) folder into folder, "
               "trigger 'sks_style': every picture gets a <stem>.txt reading 'sks_style, a ...'; captions already "
               "there stay unless overwrite is on. Wire folder on into Atelier Train LoRA.")
    FUNCTION = "caption"
    OUTPUT_NODE = True
    OUTPUTS = (
        ("STRING", "folder", "The folder captioned, for Train LoRA's folder."),
        ("STRING", "report", "How many captions were written and kept, and the pictures skipped with why."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "blip2_model": BLIP2_INPUT,
            "folder": ("STRING", {"default": "atelier/dataset", "tooltip": "Folder of pictures (absolute, or inside "
                       "ComfyUI's input folder), such as a version folder from Curate Folder or Multiply Dataset."}),
            "trigger": ("STRING", {"default": "", "tooltip": "Word put before every caption ('sks_style, a ...')."}),
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace captions that already exist."}),
            "recursive": ("BOOLEAN", {"default": False, "tooltip": "Also caption pictures in sub-folders."}),
            **CAPTION_INPUTS,
        }}

    def caption(self, blip2_model: blip2.Blip2Model, folder: str, trigger: str, overwrite: bool, recursive: bool,
                **caption_inputs: Any) -> tuple[str, str]:
        from ..core.dataset.image_files import list_images

        with _captioning(blip2_model, **caption_inputs) as (settings, batch_size):
            path = bridge.resolve_input_folder(folder)
            total = len(list_images(path, recursive))
            report = blip2.caption_folder(blip2_model, path, settings, trigger, overwrite, batch_size, recursive,
                                          bridge.progress(total, "captioning"))
        return str(path), report.report()


def _safety(blocked_words: str) -> SafetyFilter:
    return SafetyFilter(parse_blocked(blocked_words))


BLOCKED_INPUT = ("STRING", {"default": ", ".join(DEFAULT_BLOCKED), "multiline": True, "tooltip": "Words removed "
                 "from everything this node outputs (with URLs and e-mail addresses, always); comma-separated. "
                 "A sentence holding one is dropped."})


LANGUAGE_INPUT = (list(LANGUAGES), {"default": "en", "tooltip": "Language of the text: en (English) or ko "
                  "(Korean sentences; label and analysis names in Korean where the records or shipped taxonomies "
                  "have them)."})


def _analysis_record(name: str, text: str | None, picture_index: int) -> dict[str, Any] | None:
    """One analysis node's JSON output as one work's record: an object, or the picture_index-th of a list."""
    if not text or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}_json is not JSON from the {name} analysis node: {exc}") from None
    if isinstance(value, list):
        if picture_index >= len(value):
            raise ValueError(f"picture_index {picture_index} is past the {len(value)} record(s) of {name}_json")
        value = value[picture_index]
    if not isinstance(value, dict):
        raise ValueError(f"{name}_json must be the record (a JSON object, or a list of them) its analysis node "
                         "outputs")
    return value


class AtelierCurationText(CaptionNode):
    DESCRIPTION = ("A curator-style paragraph, a JSON record and hashtags for one work, from its CLIP labels, a "
                   "BLIP-2 description, your metadata and the curator's analyses (colour, emotion, style, objects, "
                   "intent, space), in English or Korean. Writers: template (fixed sentence patterns, never "
                   "inventing a fact), blip2 (BLIP-2 prompted with the metadata and analyses; needs blip2_model and "
                   "image) or seqgan (a text generator conditioned on the work's analysis vector; needs text_model); "
                   "the record and hashtags always hold the facts. A safety filter removes URLs, e-mail addresses and "
                   "blocked words (sales talk by default) from all three.")
    EXAMPLE = ("Wire Atelier Label Images' labels_json and Atelier Caption Images' captions (into descriptions), fill "
               "title 'Harbour at Dawn', material 'oil on canvas' and the artist's note, wire the analysis nodes' "
               "colour_json, emotion_json... and show paragraph in a text preview; language 'ko' writes it in "
               "Korean, picture_index chooses the picture of a batch.")
    FUNCTION = "write"
    OUTPUTS = (
        ("STRING", "paragraph", "The curator-style paragraph."),
        ("STRING", "record_json", "The work as a JSON record."),
        ("STRING", "hashtags", "Hashtags, space-separated."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        fields = {name: ("STRING", {"default": "", "multiline": name in ("artist_note", "expert_review"),
                                    "tooltip": f"The work's {name.replace('_', ' ')} (optional)."})
                  for name in METADATA_FIELDS}
        review = fields.pop("expert_review")  # added later: after the older widgets, so saved workflows load
        return {
            "required": {
                **fields,
                "picture_index": int_input(0, 0, 100_000, "Which picture of labels_json and "
                                           "descriptions this is about."),
                "blocked_words": BLOCKED_INPUT,
                "expert_review": review,
                "language": LANGUAGE_INPUT,
                "writer": (list(WRITERS), {"default": "template", "tooltip": "template: fixed sentence patterns "
                           "from the facts; blip2: BLIP-2 writes the paragraph from the picture, prompted with the "
                           "metadata and analyses (wire blip2_model and image; English); seqgan: the conditioned "
                           "text generator writes it from the work's analysis vector (wire text_model)."}),
            },
            "optional": {
                "labels_json": ("STRING", {"forceInput": True, "tooltip": "From Atelier Label Images."}),
                "descriptions": ("STRING", {"forceInput": True, "tooltip": "From Atelier Caption Images: one "
                                 "description per line."}),
                **{f"{name}_json": ("STRING", {"forceInput": True, "tooltip": f"From the {name} analysis node: its "
                                    f"{name}_json (an object, or a list whose picture_index-th record is used)."})
                   for name in ANALYSES},
                "blip2_model": (BLIP2, {"tooltip": "From Atelier Load BLIP-2; for writer blip2."}),
                "text_model": (TEXT_MODEL, {"tooltip": "From Load or Train Text Generator, trained on Describe "
                               "Folder's curation.jsonl records (their features); for writer seqgan."}),
                "image": ("IMAGE", {"tooltip": "The work (the picture_index-th of a batch); for writer blip2."}),
            },
        }

    def write(self, title: str, artist: str, year: str, material: str, technique: str, size: str,
              artist_note: str, picture_index: int, blocked_words: str, labels_json: str | None = None,
              descriptions: str | None = None, expert_review: str = "", language: str = "en",
              writer: str = "template", blip2_model: Any = None, text_model: Any = None,
              image: torch.Tensor | None = None, **analysis_json: str | None) -> tuple[str, str, str]:
        if writer == "blip2" and (blip2_model is None or image is None):
            raise ValueError("writer 'blip2' needs blip2_model (from Atelier Load BLIP-2) and image (the work) wired; "
                             "or choose writer 'template'")
        if writer == "seqgan" and text_model is None:
            raise ValueError("writer 'seqgan' needs text_model (from Load or Train Text Generator, trained on "
                             "Describe Folder's curation.jsonl) wired; or choose writer 'template'")
        if image is not None and writer == "blip2":
            check_image_batch(image)
            if picture_index >= image.shape[0]:
                raise ValueError(f"picture_index {picture_index} is past the {image.shape[0]} picture(s) of image")
        analyses = {name: _analysis_record(name, analysis_json.get(f"{name}_json"), picture_index)
                    for name in ANALYSES}
        labels: dict[str, Any] = {}
        if labels_json:
            try:
                records = json.loads(labels_json)
            except json.JSONDecodeError as exc:
                raise ValueError(f"labels_json is not JSON from Atelier Label Images: {exc}") from None
            if not isinstance(records, list) or not records:
                raise ValueError("labels_json must be the list Atelier Label Images outputs")
            if picture_index >= len(records):
                raise ValueError(f"picture_index {picture_index} is past the {len(records)} labelled picture(s)")
            labels = records[picture_index].get("labels", {})
        lines = [line for line in (descriptions or "").splitlines()]
        if lines and picture_index >= len(lines):
            raise ValueError(f"picture_index {picture_index} is past the {len(lines)} description line(s)")
        description = lines[picture_index] if lines else ""
        meta = Metadata(title, artist, year, material, technique, size, artist_note, expert_review)
        safety = _safety(blocked_words)
        text = curate_text(labels, description, meta, safety, analyses, language)
        if writer == "blip2":
            text = write_with_blip2(text, blip2_model, image[picture_index], meta, analyses, safety)
        elif writer == "seqgan":
            text = write_with_seqgan(text, text_model, analyses, safety)
        return text.paragraph, text.record_json(), " ".join(text.hashtags)


class AtelierDescribeFolder(CaptionNode):
    DESCRIPTION = ("Curation texts for every picture of a dataset version (such as Curate Folder's, captioned by "
                   "Caption Dataset): labels from its manifest, the caption as description, metadata matched by "
                   "file name, and every analysis of the folder's analyses.jsonl (from Analyse Folder) where it has "
                   "one: in the text, and in each record with its analysis vector ('features', what a conditioned "
                   "text generator trains on). Writes curation.jsonl and a readable curation.md into the folder, in "
                   "English or Korean.")
    EXAMPLE = ("Wire Atelier Curate Folder's folder, captioned by Atelier Caption Dataset, into folder and give "
               "metadata_file 'atelier/metadata.csv' (a 'file' column, then title, artist, year...): the folder gains "
               "curation.jsonl and a readable curation.md.")
    FUNCTION = "describe"
    OUTPUT_NODE = True
    OUTPUTS = (
        ("STRING", "records_json", "Every picture's record, as a JSON list."),
        ("STRING", "catalogue", "The readable catalogue written as curation.md."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "folder": ("STRING", {"default": "", "tooltip": "The dataset version folder (absolute, or inside "
                       "ComfyUI's input folder); wire Curate Folder's or Caption Dataset's 'folder' here."}),
            "metadata_file": ("STRING", {"default": "", "tooltip": "Optional JSON (picture name -> {title, artist, "
                              "year, material, technique, size, artist_note}) or CSV with a 'file' column."}),
            "blocked_words": BLOCKED_INPUT,
            "language": LANGUAGE_INPUT,
        }}

    def describe(self, folder: str, metadata_file: str, blocked_words: str, language: str = "en") -> tuple[str, str]:
        from ..core.captions.curation_text import describe_folder, read_metadata
        from ..core.dataset.image_files import list_images

        path = bridge.resolve_input_folder(folder)
        metadata = read_metadata(bridge.resolve_input_folder(metadata_file)) if metadata_file.strip() else None
        total = len(list_images(path, recursive=True))
        records = describe_folder(path, _safety(blocked_words), metadata, bridge.progress(total, "describing"),
                                  language)
        return json.dumps(records, ensure_ascii=False, indent=1), (path / "curation.md").read_text(encoding="utf-8")


NODE_CLASS_MAPPINGS = {
    "AtelierLoadBLIP2": AtelierLoadBLIP2,
    "AtelierCaptionImages": AtelierCaptionImages,
    "AtelierCaptionDataset": AtelierCaptionDataset,
    "AtelierCurationText": AtelierCurationText,
    "AtelierDescribeFolder": AtelierDescribeFolder,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierLoadBLIP2": "Atelier Load BLIP-2",
    "AtelierCaptionImages": "Atelier Caption Images",
    "AtelierCaptionDataset": "Atelier Caption Dataset",
    "AtelierCurationText": "Atelier Curation Text",
    "AtelierDescribeFolder": "Atelier Describe Folder",
}
