"""Nodes of the CLIP taxonomy curator: load CLIP and a taxonomy, label, curate a folder, retrieve, evaluate, score
sentences against a picture."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.curator import clip_model, curate, image_index, retrieval, taxonomy, zero_shot
from ..core.curator import clip_model as clip_model_core  # the node methods' clip_model argument shadows the module
from ..core.curator.pixels import check_image_batch, fit_square
from ..core.curator.vector_search import SearchOptions
from ..core.dataset.image_files import load_image
from ..core.shared.hf_folders import find_model_folder
from ..core.shared.output_paths import safe_subfolder
from . import bridge
from .declare import DEVICE_INPUT, AtelierNode, float_input, int_input, model_input, seed_input


class CurateNode(AtelierNode):
    CATEGORY = "Atelier/Curate"


CLIP = "ATELIER_CLIP"
TAXONOMY = "ATELIER_TAXONOMY"
CLIP_KIND = "clip"
TEXT_TOWER_KIND = "text_towers"
DEFAULT_TEXT_TOWER = "google-bert/bert-base-multilingual-cased"
CACHE_SUBFOLDER = "atelier/clip_cache"
LANGUAGES = ["en", "ko"]
CLIP_INPUT = (CLIP, {"tooltip": "From Atelier Load CLIP."})
TAXONOMY_INPUT = (TAXONOMY, {"tooltip": "From Atelier Load Taxonomy."})


def clip_key() -> str:
    return bridge.register_model_folder(CLIP_KIND, {".safetensors", ".bin", ".json"})


def text_tower_key() -> str:
    return bridge.register_model_folder(TEXT_TOWER_KIND, {".safetensors", ".bin", ".json"})


def _precision() -> tuple[list[str], dict[str, Any]]:
    return (["auto", "fp16", "bf16", "fp32"], {"default": "auto", "tooltip": "auto: fp16 on a GPU, fp32 on the CPU; "
            "bf16 runs about twice as fast on CPUs with AVX-512 BF16 or AMX. Cached embeddings are kept per "
            "precision."})


def clip_cache_dir() -> Path:
    return bridge.output_directory() / CACHE_SUBFOLDER


def _language() -> tuple[str, dict[str, Any]]:
    return (LANGUAGES, {"default": "en", "tooltip": "Language of the label names in tags and texts (a taxonomy "
                        "may give names in any language; English is the fallback)."})


def _batch_size(default: int = 32) -> tuple[str, dict[str, Any]]:
    return int_input(default, 1, 1024, "Pictures per forward pass; larger is faster until memory runs out.")


def _files(clip: clip_model.ClipModel, folder: str, recursive: bool) -> list[Path]:
    """The folder's pictures; a wrong model, or a missing or empty folder, fails here before any work."""
    from ..core.dataset.image_files import list_images

    clip_model.refuse_comfy_clip(clip)
    return list_images(bridge.resolve_input_folder(folder), recursive)


def _index(clip: clip_model.ClipModel, folder: str, batch_size: int, recursive: bool) -> image_index.FolderIndex:
    files = _files(clip, folder, recursive)
    return image_index.index_folder(clip, files, clip_cache_dir(), batch_size,
                                    progress=bridge.progress(len(files), "embedding pictures"))


class AtelierLoadCLIP(CurateNode):
    DESCRIPTION = ("Load a whole image-text encoder (image and text towers) for zero-shot labelling, curation, "
                   "retrieval, sentence scores, the analyses and the audio trainers, from a folder in "
                   "models/atelier/clip or the Hugging Face cache: OpenAI's CLIP (ViT-L/14, "
                   "openai/clip-vit-large-patch14, is the recommended English one), a Korean CLIP with its own "
                   "tokenizer, or a vision-text dual encoder (a text tower such as multilingual BERT or XLM-R joined "
                   "to a vision tower, as transformers' VisionTextDualEncoderModel saves it). The languages its "
                   "text tower reads (from atelier_encoder.json, else found from its tokenizer) decide which "
                   "taxonomy prompts are used. ComfyUI's CLIP_VISION lacks the text tower, so it cannot be used here.")
    EXAMPLE = ("Put a transformers CLIP or dual-encoder folder (config.json, weights, tokenizer files and "
               "preprocessor_config.json; such as openai/clip-vit-large-patch14, or a Korean-English encoder you "
               "built and fine-tuned) in models/atelier/clip and choose it, or keep the Hugging Face id when it is "
               "in your local cache; wire clip_model into Atelier Label Images, Curate Folder, Retrieve Images or "
               "Score Sentences.")
    FUNCTION = "load"
    OUTPUTS = (
        (CLIP, "clip_model", "The CLIP or dual encoder, for Label Images, Curate Folder, Retrieve Images, "
                             "Evaluate Retrieval, Score Sentences, the analyses and the audio trainers."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": model_input(bridge.model_dirs(clip_key()), clip_model.DEFAULT_CLIP, "A CLIP, Korean CLIP or "
                                 "vision-text dual-encoder folder in models/atelier/clip, or a Hugging Face id found "
                                 "in the local cache (never downloaded)."),
            "precision": (["auto", "fp16", "bf16", "fp32"], {"default": "auto", "tooltip": "auto: fp16 on a GPU, "
                          "fp32 on the CPU; bf16 runs about twice as fast on CPUs with AVX-512 BF16 or AMX. Cached "
                          "embeddings are kept per precision."}),
            "device": DEVICE_INPUT,
        }}

    def load(self, model: str, precision: str, device: str) -> tuple[Any]:
        folder = find_model_folder(model, bridge.model_folders(clip_key()), "CLIP", clip_model.DEFAULT_CLIP)
        return (clip_model.load_clip(folder, bridge.compute_device(device), precision),)


class AtelierLoadTaxonomy(CurateNode):
    DESCRIPTION = ("A taxonomy for zero-shot labelling: one shipped with the pack (artworks, scenes, spaces) or your "
                   "own YAML/JSON file (see taxonomies/README.md in the pack). Parse errors give the line.")
    EXAMPLE = ("Choose 'artworks' and wire taxonomy into Atelier Label Images. For labels of your own, write a YAML "
               "file as taxonomies/README.md shows, put it in ComfyUI/input and give its name in custom_file.")
    FUNCTION = "load"
    OUTPUTS = (
        (TAXONOMY, "taxonomy", "The taxonomy, for Label Images and Curate Folder."),
        ("STRING", "summary", "Its groups and their labels, one group per line, and the languages it has prompts "
                              "in."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        shipped = taxonomy.shipped_taxonomies()
        return {"required": {
            "taxonomy": (shipped, {"default": "artworks", "tooltip": "A taxonomy that comes with the pack."}),
            "custom_file": ("STRING", {"default": "", "tooltip": "Your own taxonomy file (absolute, or inside "
                            "ComfyUI's input folder); when given it is used instead of the one above."}),
        }}

    def load(self, taxonomy: str, custom_file: str) -> tuple[Any, str]:
        from ..core.curator.taxonomy import load_taxonomy

        source = str(bridge.resolve_input_folder(custom_file)) if custom_file.strip() else taxonomy
        loaded = load_taxonomy(source)
        lines = [f"{loaded.name}: {len(loaded.groups)} group(s)"]
        lines += [f"{g.name} ({g.mode}): {', '.join(g.labels)}" for g in loaded.groups.values()]
        lines.append(f"prompts in: {', '.join(loaded.prompt_languages())} (the CLIP's text tower picks which)")
        return loaded, "\n".join(lines)


class AtelierLabelImages(CurateNode):
    DESCRIPTION = ("Zero-shot labels for an IMAGE batch against a taxonomy: prompt ensembles, scores per label, "
                   "hierarchy, thresholds, top-k and exclusive groups. The prompts are in every language the CLIP's "
                   "text tower reads (English and Korean for a Korean-English dual encoder, English for OpenAI's "
                   "CLIP). Outputs JSON (labels and every score per picture), tags (one line per picture) and which "
                   "prompts were used.")
    EXAMPLE = ("Wire Atelier Load CLIP, Atelier Load Taxonomy ('artworks') and pictures from Load Image: tags holds "
               "each picture's labels on one line, and labels_json goes into Atelier Curation Text.")
    FUNCTION = "label"
    OUTPUTS = (
        ("STRING", "labels_json", "A JSON list, one object per picture: chosen labels per group and all scores."),
        ("STRING", "tags", "Comma-separated label names, one line per picture."),
        ("STRING", "prompts", "Which languages' prompts were used and why, e.g. 'prompts: en+ko (the text tower "
                              "reads English and Korean)'."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip_model": CLIP_INPUT,
            "taxonomy": TAXONOMY_INPUT,
            "images": ("IMAGE", {"tooltip": "The pictures to label."}),
            "language": _language(),
            "batch_size": _batch_size(),
        }}

    def label(self, clip_model: clip_model.ClipModel, taxonomy: taxonomy.Taxonomy, images: torch.Tensor,
              language: str, batch_size: int) -> tuple[str, str, str]:
        clip_model_core.refuse_comfy_clip(clip_model)
        check_image_batch(images)
        bank = zero_shot.build_label_bank(clip_model, taxonomy, clip_cache_dir())
        embeddings = image_index.embed_batch(clip_model, images, batch_size,
                                             bridge.progress(images.shape[0], "labelling"))
        results = zero_shot.label_embeddings(bank, embeddings, language)
        tags = "\n".join(", ".join(zero_shot.tags(r, taxonomy, language)) for r in results)
        return zero_shot.to_json(results), tags, zero_shot.prompt_report(taxonomy, clip_model.languages)


class AtelierCurateFolder(CurateNode):
    DESCRIPTION = ("Label every picture of a folder, keep or drop by labels and scores, sort, remove near-duplicates "
                   "(keeping the best of each cluster), and copy what stays (with caption sidecars) into a new "
                   "vNNN version folder with a manifest of labels and scores. Embeddings are cached, so a second "
                   "run over the same folder encodes nothing.")
    EXAMPLE = ("Point folder at a collection in ComfyUI/input/atelier/collection, keep 'medium:oil_painting', sort_by "
               "'landscape', dedup_threshold 0.95: the oil paintings, best landscapes first and near-duplicates "
               "removed, are copied into output/atelier/curated/v001, whose curation_report.json says why each other "
               "picture was dropped.")
    FUNCTION = "curate"
    OUTPUT_NODE = True
    OUTPUTS = (
        ("STRING", "folder", "The version folder written."),
        ("STRING", "labels_json", "Labels and scores of every picture of the source folder."),
        ("STRING", "report", "What was kept, dropped (and why) and skipped, and how near-duplicates were searched "
                             "(exact, or the approximate index and its measured recall)."),
        ("INT", "kept", "How many pictures were kept."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip_model": CLIP_INPUT,
            "taxonomy": TAXONOMY_INPUT,
            "folder": ("STRING", {"default": "atelier/collection", "tooltip": "Folder of pictures (absolute, or "
                       "inside ComfyUI's input folder). Files that fail to decode are skipped and listed."}),
            "keep": ("STRING", {"default": "", "multiline": True, "tooltip": "Keep rules, comma- or line-separated: "
                     "'medium:oil_painting' (label chosen), 'landscape>=0.3' (score at least). Empty: keep all."}),
            "require_all": ("BOOLEAN", {"default": False, "tooltip": "Keep only pictures matching every keep rule "
                            "(off: any one)."}),
            "drop": ("STRING", {"default": "", "multiline": True, "tooltip": "Drop rules, same form; a picture "
                     "matching any is dropped."}),
            "sort_by": ("STRING", {"default": "", "tooltip": "A label: pictures sorted by its score, highest first, "
                        "and numbered in that order. Empty: folder order."}),
            "dedup_threshold": float_input(0.95, 0.0, 1.0, "Cosine similarity of CLIP embeddings at which two pictures "
                                      "count as near-duplicates; 0 turns removal off.", 0.005),
            "keep_best": (list(curate.KEEP_BEST), {"default": "resolution", "tooltip": "Which of a cluster of "
                          "near-duplicates stays: the one with most pixels, or the best sort_by score."}),
            "subfolders_by": ("STRING", {"default": "", "tooltip": "A group name: each picture goes into a sub-folder "
                              "named after its label in that group. Empty: one flat folder."}),
            "subfolder": ("STRING", {"default": "atelier/curated", "tooltip": "Inside ComfyUI's output folder; "
                          "each run adds a new vNNN folder here."}),
            "language": _language(),
            "batch_size": _batch_size(),
            "recursive": ("BOOLEAN", {"default": False, "tooltip": "Also read pictures in sub-folders."}),
        }}

    def curate(self, clip_model: clip_model.ClipModel, taxonomy: taxonomy.Taxonomy, folder: str, keep: str,
               require_all: bool, drop: str, sort_by: str, dedup_threshold: float, keep_best: str,
               subfolders_by: str, subfolder: str, language: str, batch_size: int,
               recursive: bool) -> tuple[str, str, str, int]:
        options = curate.CurateOptions(keep, require_all, drop, sort_by, dedup_threshold, keep_best,
                                       subfolders_by.strip())
        parent = safe_subfolder(bridge.output_directory(), subfolder)
        options.check(taxonomy)
        files = _files(clip_model, folder, recursive)
        index, results = zero_shot.label_folder(clip_model, taxonomy, files, clip_cache_dir(), batch_size,
                                                language, bridge.progress(len(files), "embedding pictures"))
        plan = curate.plan_curation(index, results, taxonomy, options)
        written = curate.write_curated(index, results, taxonomy, plan, options, parent, language,
                                       bridge.progress(len(plan.order), "writing"))
        records = [{"file": str(f), **r} for f, r in zip(index.files, results)]
        report = [zero_shot.prompt_report(taxonomy, clip_model.languages), index.report(),
                  *([plan.search] if plan.search else []),
                  f"kept {len(plan.order)} of {len(index.files)} into {written.folder}"]
        report += [f"dropped {index.files[row].name}: {why}" for row, why in sorted(plan.dropped.items())]
        return str(written.folder), zero_shot.to_json(records), "\n".join(report), len(plan.order)


class AtelierRetrieveImages(CurateNode):
    DESCRIPTION = ("Text to pictures: the top-K pictures of a folder nearest a text query in CLIP space, from the "
                   "cached embeddings (a folder indexed once answers every later query at once). The query may be "
                   "Korean or English; it goes through the text tower's own tokenizer, and a Korean query given to "
                   "an English-only CLIP is answered with a warning that the model reads English only.")
    EXAMPLE = ("Wire Atelier Load CLIP, point folder at your collection and ask 'a calm seascape at dusk': images "
               "shows the 8 nearest pictures and results their ranks, similarities and paths. The first query indexes "
               "the folder; later ones answer at once.")
    FUNCTION = "retrieve"
    OUTPUTS = (
        ("IMAGE", "images", "The pictures found, best first, fitted into squares of 'preview_size'."),
        ("STRING", "results", "One line per picture: rank, cosine similarity and path (after a warning line when "
                              "the model cannot read the query's language)."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip_model": CLIP_INPUT,
            "folder": ("STRING", {"default": "atelier/collection", "tooltip": "Folder of pictures to search."}),
            "query": ("STRING", {"default": "a calm seascape at dusk", "multiline": True,
                      "tooltip": "What to look for, in words: English, or Korean with a Korean-English encoder "
                                 "('해 질 녘의 고요한 바다')."}),
            "top_k": int_input(8, 1, 1000, "How many pictures to return."),
            "preview_size": int_input(512, 64, 4096, "Side of the square each result is fitted into.", 8),
            "batch_size": _batch_size(),
            "recursive": ("BOOLEAN", {"default": False, "tooltip": "Also search sub-folders."}),
        }}

    def retrieve(self, clip_model: clip_model.ClipModel, folder: str, query: str, top_k: int, preview_size: int,
                 batch_size: int, recursive: bool) -> tuple[torch.Tensor, str]:
        if not query.strip():
            raise ValueError("the query is empty: describe what to look for")
        index = _index(clip_model, folder, batch_size, recursive)
        found = retrieval.top_k(clip_model.embed_texts([query.strip()])[0], index.embeddings, top_k)
        images = torch.stack([fit_square(load_image(index.files[row]), preview_size) for row, _ in found])
        lines = [f"{rank}\t{score:.4f}\t{index.files[row]}" for rank, (row, score) in enumerate(found, start=1)]
        warning = clip_model_core.unread_warning(clip_model, [query])
        return images, "\n".join([warning, *lines] if warning else lines)


class AtelierEvaluateRetrieval(CurateNode):
    DESCRIPTION = ("MRR@K and recall@K of text-to-image retrieval over (text, picture) pairs: each picture's caption "
                   "sidecar (<stem>.txt), or each text of a pairs file, is the query that should find its picture "
                   "among all the folder's pictures. Captions and pairs may be Korean or English (the report warns "
                   "when the model reads no Korean and some texts are Korean).")
    EXAMPLE = ("Point folder at pictures with <stem>.txt captions (Atelier Caption Dataset writes them) and keep k "
               "10: an mrr near 1 means each caption finds its own picture first. Compare two CLIP models on the same "
               "folder.")
    FUNCTION = "evaluate"
    OUTPUTS = (
        ("FLOAT", "mrr", "Mean reciprocal rank at K: 1 when every query finds its picture first, 0 when none is "
                         "within K."),
        ("FLOAT", "recall", "Share of queries whose picture is within the top K."),
        ("STRING", "report", "Both scores as text, and how the pictures were searched (exact, or the approximate "
                             "index and its measured recall), after a warning line when the model cannot read "
                             "the texts' language."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip_model": CLIP_INPUT,
            "folder": ("STRING", {"default": "atelier/collection", "tooltip": "Pictures with <stem>.txt captions; "
                       "pictures without a caption take part as distractors."}),
            "k": int_input(10, 1, 10_000, "The cut-off K of MRR@K and recall@K."),
            "batch_size": _batch_size(),
            "pairs_file": ("STRING", {"default": "", "tooltip": "Optional (text, picture) pairs instead of the "
                           "captions: a CSV with 'text' and 'image' columns or JSON lines {\"text\", \"image\"}, "
                           "pictures named relative to the folder."}),
        }}

    def evaluate(self, clip_model: clip_model.ClipModel, folder: str, k: int, batch_size: int,
                 pairs_file: str = "", search: SearchOptions | None = None) -> tuple[float, float, str]:
        """``search``: how many pictures are searched exactly, and the approximate index's memory (the CLI's
        --exact-limit and --search-memory-mb; ComfyUI uses the defaults)."""
        from ..core.dataset.image_files import read_caption

        pairs_path = bridge.resolve_input_folder(pairs_file) if pairs_file.strip() else None
        named = retrieval.read_pairs(pairs_path) if pairs_path else None  # a bad file fails before any encoding
        index = _index(clip_model, folder, batch_size, False)
        if named is not None:
            pairs = retrieval.pair_rows(named, index.files, bridge.resolve_input_folder(folder))
        else:
            pairs = [(caption, row) for row, path in enumerate(index.files) if (caption := read_caption(path))]
        if not pairs:
            raise ValueError(f"no picture in {folder!r} has a <stem>.txt caption to use as its query")
        texts = [text for text, _ in pairs]
        queries = clip_model.embed_texts(texts)
        found, searched = retrieval.rank_search(queries, index.embeddings, [row for _, row in pairs], k, search)
        scores = retrieval.evaluate(found, k)
        warning = clip_model_core.unread_warning(clip_model, texts, "the pairs' text")
        return scores.mrr, scores.recall, "\n".join(filter(None, [warning, scores.report(), searched.describe()]))


class AtelierScoreSentences(CurateNode):
    DESCRIPTION = ("Score a list of sentences against a picture, as the thesis's Table 5 does: each sentence's cosine "
                   "similarity to the picture in the encoder's shared space and its probability among the sentences "
                   "(softmax at the model's logit scale), ranked best first, with a bar chart. Sentences may be "
                   "Korean or English; with an English-only CLIP, Korean sentences are scored with a warning.")
    EXAMPLE = ("Wire Atelier Load CLIP (a Korean-English dual encoder) and a webtoon panel from Load Image, and write "
               "five candidate captions, one per line ('비 오는 밤 골목길을 걷는 소녀', 'a girl walking down an alley "
               "on a rainy night', ...): table ranks them, chart draws their probabilities.")
    FUNCTION = "score"
    OUTPUTS = (
        ("STRING", "table", "Per picture: rank, cosine, probability and sentence, one sentence per line, best first."),
        ("STRING", "scores_json", "A JSON list, one object per picture: its sentences ranked with cosine and "
                                  "probability."),
        ("IMAGE", "chart", "A bar chart per picture of the chosen score, in the order the sentences were given."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip_model": CLIP_INPUT,
            "image": ("IMAGE", {"tooltip": "The picture (or pictures) the sentences describe."}),
            "sentence_list": ("STRING", {"default": "a photo of a cat\na photo of a dog\n고양이 사진\n강아지 사진",
                          "multiline": True, "tooltip": "The sentences to score, one per line, Korean or English; "
                          "blank lines are left out."}),
            "score": (list(taxonomy.SCORES), {"default": "softmax", "tooltip": "What the chart draws: softmax, each "
                      "sentence's probability among these sentences (they sum to 1), or cosine, its raw similarity "
                      "(independent of the others). The table and JSON give both."}),
            "pictures": (["first", "each"], {"default": "first", "tooltip": "Score the batch's first picture, or "
                         "each picture of the batch (one table section, JSON object and chart per picture)."}),
        }}

    def score(self, clip_model: clip_model.ClipModel, image: torch.Tensor, sentence_list: str, score: str,
              pictures: str) -> tuple[str, str, torch.Tensor]:
        from ..core.shared.plots import bar_chart, to_image_tensor
        from ..core.story.strip import font_for

        clip_model_core.refuse_comfy_clip(clip_model)
        check_image_batch(image)
        texts = retrieval.read_sentences(sentence_list)
        chosen = image if pictures == "each" else image[:1]
        text_embeddings = clip_model.embed_texts(texts)
        picture_embeddings = image_index.embed_batch(clip_model, chosen, 32,
                                                     bridge.progress(chosen.shape[0], "scoring"))
        warning = clip_model_core.unread_warning(clip_model, texts, "the sentence list")
        tables, records, charts = [warning] if warning else [], [], []
        font = font_for("".join(texts), 14)  # a system font with Korean glyphs when one is installed
        for n, embedding in enumerate(picture_embeddings):
            result = retrieval.score_sentences(embedding, text_embeddings, texts, clip_model.logit_scale)
            tables.append(f"picture {n + 1}\n{result.table()}" if chosen.shape[0] > 1 else result.table())
            records.append({"picture": n, "sentences": result.record()})
            values = list(result.probability if score == "softmax" else result.cosine)
            title = f"picture {n + 1}: {'probability' if score == 'softmax' else 'cosine'} per sentence"
            charts.append(to_image_tensor(bar_chart(texts, values, title, font)))
        return "\n\n".join(tables), zero_shot.to_json(records), torch.cat(charts)


class AtelierBuildDualEncoder(CurateNode):
    DESCRIPTION = ("Build a bilingual image-text encoder from parts, as the webtoon thesis does: a text model (such as "
                   "multilingual BERT or XLM-R, from models/atelier/text_towers) and the image tower of a CLIP (from "
                   "models/atelier/clip), joined by new projection layers. The towers keep what they learned; the "
                   "projections start random (seeded), so fine-tune the result on caption-picture pairs before "
                   "trusting its scores. Towers of different widths meet in the projection size.")
    EXAMPLE = ("Put bert-base-multilingual-cased in models/atelier/text_towers, choose it and "
               "openai/clip-vit-base-patch32, keep projection_dim 512, name it in save_as (such as ko-en-clip) and "
               "wire clip_model into Atelier Fine-tune Image-Text Encoder; Load CLIP lists the saved folder.")
    FUNCTION = "build"
    OUTPUTS = (
        (CLIP, "clip_model", "The new encoder (untrained projections), for fine-tuning or any node taking a CLIP."),
        ("STRING", "report", "The towers, their widths, the shared size, the languages read, and where it was saved."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "text_model": model_input(bridge.model_dirs(text_tower_key()), DEFAULT_TEXT_TOWER, "A text model folder "
                                      "(BERT, RoBERTa, XLM-R; with its tokenizer) in models/atelier/text_towers, or "
                                      "a Hugging Face id found in the local cache."),
            "vision_model": model_input(bridge.model_dirs(clip_key()), clip_model.DEFAULT_CLIP, "A CLIP folder "
                                        "(its image tower is taken), a CLIP vision or a ViT folder, in "
                                        "models/atelier/clip, or a Hugging Face id found in the local cache."),
            "projection_dim": int_input(512, 8, 4096, "Size of the shared text-image space the new projections map "
                                        "both towers into (512 in the thesis)."),
            "seed": seed_input("Seed of the new projections' random start."),
            "save_as": ("STRING", {"default": "", "tooltip": "A name to save the encoder under in "
                                   "models/atelier/clip (Load CLIP then lists it; name_2 when taken); empty: not "
                                   "saved."}),
            "precision": _precision(),
            "device": DEVICE_INPUT,
        }}

    def build(self, text_model: str, vision_model: str, projection_dim: int, seed: int, save_as: str,
              precision: str, device: str) -> tuple[Any, str]:
        from ..core.curator.dual_encoder import build_dual_encoder

        target = clip_model.new_model_folder(bridge.model_folders(clip_key())[0], save_as) if save_as.strip() else None
        text = find_model_folder(text_model, bridge.model_folders(text_tower_key()), "text tower", DEFAULT_TEXT_TOWER)
        vision = find_model_folder(vision_model, bridge.model_folders(clip_key()), "CLIP", clip_model.DEFAULT_CLIP)
        built, report = build_dual_encoder(text, vision, projection_dim, seed, bridge.compute_device(device),
                                           precision)
        if target is not None:
            built.name = target.name
            report += f"\nsaved as {clip_model.save_clip(built, target)}"
        return built, report


NODE_CLASS_MAPPINGS = {
    "AtelierLoadCLIP": AtelierLoadCLIP,
    "AtelierLoadTaxonomy": AtelierLoadTaxonomy,
    "AtelierLabelImages": AtelierLabelImages,
    "AtelierCurateFolder": AtelierCurateFolder,
    "AtelierRetrieveImages": AtelierRetrieveImages,
    "AtelierEvaluateRetrieval": AtelierEvaluateRetrieval,
    "AtelierBuildDualEncoder": AtelierBuildDualEncoder,
    "AtelierScoreSentences": AtelierScoreSentences,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierLoadCLIP": "Atelier Load CLIP",
    "AtelierLoadTaxonomy": "Atelier Load Taxonomy",
    "AtelierLabelImages": "Atelier Label Images",
    "AtelierCurateFolder": "Atelier Curate Folder",
    "AtelierRetrieveImages": "Atelier Retrieve Images",
    "AtelierEvaluateRetrieval": "Atelier Evaluate Retrieval",
    "AtelierBuildDualEncoder": "Atelier Build Dual Encoder",
    "AtelierScoreSentences": "Atelier Score Sentences",
}
