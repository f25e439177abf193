"""Headless commands of the curator and captioner: label, curate, caption, describe, retrieve from a folder.

    python atelier_cli.py label FOLDER --clip CLIP --taxonomy artworks [--json labels.json]
    python atelier_cli.py curate FOLDER --clip CLIP --taxonomy spaces --output OUT [--keep RULES] [--dedup 0.95]
                                [--exact-limit 100000] [--search-memory-mb 4096]
    python atelier_cli.py caption FOLDER --blip2 BLIP2 [--trigger WORD] [--overwrite] [--prompt TEXT] [--ray ...]
    python atelier_cli.py embed FOLDER --clip CLIP [--recursive] [--ray [ADDRESS] --workers N --gpus-per-worker G]
    python atelier_cli.py describe FOLDER [--metadata metadata.csv]
    python atelier_cli.py retrieve FOLDER "a calm seascape at dusk" --clip CLIP [--top-k 8]
    python atelier_cli.py evaluate-retrieval FOLDER --clip CLIP [--k 10] [--pairs pairs.csv] [--exact-limit N]
    python atelier_cli.py encoder-build --text bert-base-multilingual-cased --vision CLIP --name ko-en-clip
    python atelier_cli.py score-sentences PICTURE [PICTURE ...] --sentences lines.txt --clip CLIP [--chart chart.png]

CLIP and BLIP-2 are a folder name under models/atelier/clip (or blip2) of the ComfyUI folder (--comfyui),
a Hugging Face id (found there by its last part, or in the local cache), or a path: a CLIP, a Korean CLIP or a
vision-text dual encoder. Retrieval and sentence scores run the Retrieve Images, Evaluate Retrieval and Score
Sentences nodes' own code on the model given here; queries, pairs and sentences may be Korean or English.
With --ray, embed and caption spread the work over the workers of a Ray cluster (core/curator/ray_collection.py;
Ray is optional: pip install "ray[data]").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..core.shared.output_paths import safe_subfolder

_CLIP_PRECISIONS = ["auto", "fp16", "bf16", "fp32"]


def _clip_model(p: argparse.ArgumentParser) -> None:
    from .common import declared

    p.add_argument("--clip", default=declared("core.curator.clip_model", "DEFAULT_CLIP"),
                   help="CLIP: a folder name in models/atelier/clip, a Hugging Face id, or a path")
    p.add_argument("--precision", default="auto", choices=_CLIP_PRECISIONS, help="weights' precision")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _clip_options(p: argparse.ArgumentParser) -> None:
    from .common import add_numbers

    p.add_argument("folder", help="folder of pictures")
    _clip_model(p)
    p.add_argument("--taxonomy", default="artworks", help="a shipped taxonomy (artworks, scenes, spaces) or a file")
    p.add_argument("--language", default="en", help="language of label names (en, ko, ...)")
    add_numbers(p, int, 1, batch_size=(32, "pictures per forward pass"))
    p.add_argument("--recursive", action="store_true", help="also read sub-folders")
    p.add_argument("--cache", default=None, help="embedding cache folder (default: OUTPUT/atelier/clip_cache)")
    p.add_argument("--output", default="output", help="output root folder")


def _search_options(p: argparse.ArgumentParser) -> None:
    from .common import add_numbers, declared

    add_numbers(p, int, 0, exact_limit=(declared("core.curator.vector_search", "EXACT_LIMIT"),
                                        "up to this many pictures, search is exact; above, an approximate FAISS "
                                        "index (its choice and measured recall are printed)"))
    add_numbers(p, float, above=0, search_memory_mb=(declared("core.curator.vector_search", "MEMORY_MB"),
                                                     "memory the approximate index may take, in MB"))


def search_options(args: argparse.Namespace) -> Any:  # -> core.curator.vector_search.SearchOptions
    from ..core.curator.vector_search import SearchOptions

    return SearchOptions(args.exact_limit, args.search_memory_mb)


def _ray_options(p: argparse.ArgumentParser, what: str) -> None:
    from .common import add_numbers

    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help=f"{what} on the workers of a Ray cluster (pip install \"ray[data]\"): --ray alone starts "
                   "one on this machine (or joins $RAY_ADDRESS), --ray HOST:6379 joins a cluster started with "
                   "`ray start --head`; every machine must see the pictures, models and this pack at the same paths")
    add_numbers(p, int, 1, workers=(1, "--ray: model copies, each loading the model once"))
    add_numbers(p, float, 0, gpus_per_worker=(0.0, "--ray: GPUs each worker holds (0: the workers use CPUs; "
                                              "0.5 puts two workers on a GPU)"))


def _cluster(args: argparse.Namespace) -> Any:  # -> core.curator.ray_collection.Cluster
    from ..core.curator.ray_collection import Cluster

    return Cluster(args.ray or None, args.workers, args.gpus_per_worker)


def add_parsers(sub: Any) -> None:
    from .common import add_numbers, declared  # cli is loaded by the time it asks for these parsers

    p = sub.add_parser("label", help="zero-shot labels of every picture of a folder against a taxonomy")
    _clip_options(p)
    p.add_argument("--json", help="write the labels and scores to this JSON file (default: print tags)")
    c = sub.add_parser("curate", help="label, filter, sort and dedupe a folder into a new version folder")
    _clip_options(c)
    c.add_argument("--subfolder", default="atelier/curated", help="inside the output root; gets vNNN folders")
    c.add_argument("--keep", default="", help="keep rules: 'medium:oil_painting, landscape>=0.3'")
    c.add_argument("--require-all", action="store_true", help="keep only pictures matching every keep rule")
    c.add_argument("--drop", default="", help="drop rules, same form")
    c.add_argument("--sort-by", default="", help="a label: sort by its score and number the files")
    add_numbers(c, float, 0, 1, dedup=(0.95, "near-duplicate cosine threshold; 0 turns it off"))
    c.add_argument("--keep-best", default="resolution", choices=["resolution", "score"],
                   help="which of a cluster of near-duplicates stays: most pixels, or best --sort-by score")
    c.add_argument("--subfolders-by", default="", help="a group: one sub-folder per label of that group")
    _search_options(c)
    k = sub.add_parser("caption", help="write <stem>.txt BLIP-2 captions beside the pictures of a folder")
    k.add_argument("folder", help="folder of pictures")
    k.add_argument("--blip2", default=declared("core.captions.blip2", "DEFAULT_BLIP2"),
                   help="BLIP-2: a folder name in models/atelier/blip2, a Hugging Face id, or a path")
    k.add_argument("--precision", default="auto", choices=list(declared("core.captions.blip2", "PRECISIONS")),
                   help="weights' precision (8bit and 4bit: CUDA and bitsandbytes)")
    k.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    k.add_argument("--trigger", default="", help="word put before every caption")
    k.add_argument("--overwrite", action="store_true", help="replace existing captions")
    k.add_argument("--recursive", action="store_true", help="also caption sub-folders")
    d = declared("core.captions.blip2", "CaptionSettings")
    k.add_argument("--prompt", default=d.prompt, help="text the caption continues, e.g. 'Question: what is in this "
                   "picture? Answer:'; empty: a plain caption")
    add_numbers(k, int, 1, max_new_tokens=(d.max_new_tokens, "longest caption, in tokens"),
                num_beams=(d.num_beams, "beam-search width"), batch_size=(8, "pictures per forward pass"))
    add_numbers(k, int, 0, min_new_tokens=(d.min_new_tokens, "shortest caption, in tokens"),
                seed=(d.seed, "seed of --sampling"))
    add_numbers(k, float, above=0, temperature=(d.temperature, "--sampling: higher is more varied"),
                repetition_penalty=(d.repetition_penalty, "above 1 discourages repeated words"))
    add_numbers(k, float, high=1, above=0, top_p=(d.top_p, "--sampling: nucleus share of probability"))
    k.add_argument("--sampling", action="store_true", help="sample instead of beam search")
    _ray_options(k, "caption")
    m = sub.add_parser("embed", help="CLIP embeddings of every picture of a folder into the embedding store, which "
                       "label, curate and retrieve then read instead of running CLIP again (with --ray: on a cluster)")
    m.add_argument("folder", help="folder of pictures")
    _clip_model(m)
    add_numbers(m, int, 1, batch_size=(32, "pictures per forward pass"))
    m.add_argument("--recursive", action="store_true", help="also read sub-folders")
    m.add_argument("--cache", default=None, help="embedding store folder (default: OUTPUT/atelier/clip_cache)")
    m.add_argument("--output", default="output", help="output root folder")
    _ray_options(m, "embed")
    d = sub.add_parser("describe", help="curation texts for a dataset version (manifest labels, captions)")
    d.add_argument("folder", help="a version folder, such as one written by curate and captioned by caption")
    d.add_argument("--metadata", help="JSON (name -> fields) or CSV with a 'file' column")
    d.add_argument("--blocked", default=", ".join(declared("core.captions.safety", "DEFAULT_BLOCKED")),
                   help="comma-separated blocked words")
    d.add_argument("--language", choices=("en", "ko"), default="en", help="language of the texts (ko: Korean)")
    d.add_argument("--writer", choices=("template", "blip2", "seqgan"), default="template",
                   help="who writes each paragraph: fixed sentence patterns (never invent facts), BLIP-2 prompted "
                   "with the metadata and analyses (--blip2), or a text generator conditioned on the analysis "
                   "vector (--text-model); the record and hashtags are always the template's")
    d.add_argument("--blip2", default=declared("core.captions.blip2", "DEFAULT_BLIP2"),
                   help="--writer blip2: a folder name in models/atelier/blip2, a Hugging Face id, or a path")
    d.add_argument("--text-model", help="--writer seqgan: a conditioned text model from text-train --conditioning "
                   "(a name in models/atelier/seqgan, or a path)")
    d.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu, for --writer blip2/seqgan")
    add_numbers(d, int, 1, max_new_tokens=(80, "--writer blip2: the longest paragraph, in tokens"))
    r = sub.add_parser("retrieve", help="the pictures of a folder nearest a text query (CLIP; embeddings cached)")
    r.add_argument("folder", help="folder of pictures to search")
    r.add_argument("query", help="what to look for, in words")
    _clip_model(r)
    add_numbers(r, int, 1, top_k=(8, "how many pictures to list"), batch_size=(32, "pictures per forward pass"))
    r.add_argument("--recursive", action="store_true", help="also search sub-folders")
    r.add_argument("--output", default="output", help="output root folder (holds the embedding cache)")
    e = sub.add_parser("evaluate-retrieval", help="MRR@K and recall@K of text-to-picture retrieval over a folder's "
                       "(caption, picture) pairs")
    e.add_argument("folder", help="pictures with <stem>.txt captions (the others are distractors)")
    _clip_model(e)
    add_numbers(e, int, 1, k=(10, "the cut-off K of MRR@K and recall@K"),
                batch_size=(32, "pictures per forward pass"))
    e.add_argument("--pairs", default="", help="(text, picture) pairs instead of the captions: a CSV with 'text' "
                   "and 'image' columns or JSON lines {\"text\", \"image\"}, pictures relative to the folder")
    e.add_argument("--output", default="output", help="output root folder (holds the embedding cache)")
    _search_options(e)
    s = sub.add_parser("score-sentences", help="score sentences (Korean or English) against each picture: cosine and "
                       "probability among the sentences, ranked, with a bar chart")
    s.add_argument("pictures", nargs="+", help="picture file(s)")
    s.add_argument("--sentences", default="", help="a UTF-8 text file with one sentence per line")
    s.add_argument("--sentence", action="append", default=[], help="a sentence (repeat for more); added after "
                   "those of --sentences")
    _clip_model(s)
    s.add_argument("--score", default="softmax", choices=declared("core.curator.taxonomy", "SCORES"),
                   help="what the chart draws: probability among the sentences (softmax) or raw cosine")
    s.add_argument("--json", help="write the ranked scores to this JSON file")
    s.add_argument("--chart", help="write the bar charts (one per picture, stacked) to this PNG file")
    add_build_parser(sub)


def add_build_parser(sub: Any) -> None:
    from .common import add_numbers, declared

    b = sub.add_parser("encoder-build", help="join a text model and a CLIP's image tower into a bilingual dual "
                       "encoder with new projections, saved in models/atelier/clip")
    b.add_argument("--text", default=declared("nodes.curator", "DEFAULT_TEXT_TOWER"),
                   help="text tower: a folder name in models/atelier/text_towers, a Hugging Face id, or a path")
    b.add_argument("--vision", default=declared("core.curator.clip_model", "DEFAULT_CLIP"),
                   help="vision tower: a CLIP, CLIP vision or ViT folder name in models/atelier/clip, an id, or a path")
    b.add_argument("--name", required=True,
                   help="folder name of the new encoder in models/atelier/clip (name_2 if taken)")
    add_numbers(b, int, 8, projection_dim=(512, "size of the shared text-image space"))
    add_numbers(b, int, 0, seed=(0, "seed of the new projections"))
    b.add_argument("--precision", default="fp32", choices=_CLIP_PRECISIONS, help="weights' precision")
    b.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def run_build(args: argparse.Namespace) -> int:
    from ..nodes.curator import AtelierBuildDualEncoder

    _, report = AtelierBuildDualEncoder().build(args.text, args.vision, args.projection_dim, args.seed, args.name,
                                                args.precision, args.device)
    print(report)
    return 0


def load_clip_option(args: argparse.Namespace) -> Any:  # -> core.clip_model.ClipModel
    from ..core.curator import clip_model
    from ..core.shared.hf_folders import find_model_folder
    from ..nodes import bridge
    from ..nodes.curator import clip_key

    folder = find_model_folder(args.clip, bridge.model_folders(clip_key()), "CLIP", clip_model.DEFAULT_CLIP)
    return clip_model.load_clip(folder, bridge.compute_device(args.device), args.precision)


def _labelled(args: argparse.Namespace) -> tuple[Any, Any, Any, list[dict[str, Any]]]:
    from ..core.curator import zero_shot
    from ..core.curator.taxonomy import load_taxonomy
    from ..core.dataset.image_files import list_images
    from ..nodes import bridge
    from ..nodes.curator import clip_cache_dir

    bridge.set_output_directory(args.output)
    taxonomy = load_taxonomy(args.taxonomy)
    files = list_images(args.folder, args.recursive)
    clip = load_clip_option(args)
    cache = Path(args.cache) if args.cache else clip_cache_dir()
    print(zero_shot.prompt_report(taxonomy, clip.languages), file=sys.stderr)  # stdout keeps one line per picture
    index, results = zero_shot.label_folder(clip, taxonomy, files, cache, args.batch_size, args.language,
                                            bridge.progress(len(files), "embedding"))
    return taxonomy, clip, index, results


def run_label(args: argparse.Namespace) -> int:
    from ..core.curator import zero_shot

    taxonomy, _, index, results = _labelled(args)
    for skipped in index.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    if args.json:
        records = [{"file": str(f), **r} for f, r in zip(index.files, results)]
        Path(args.json).write_text(zero_shot.to_json(records) + "\n", encoding="utf-8")
        print(f"labelled {len(results)} picture(s) into {args.json}")
    else:
        for path, result in zip(index.files, results):
            print(f"{path.name}\t{', '.join(zero_shot.tags(result, taxonomy, args.language))}")
    return 0


def run_curate(args: argparse.Namespace) -> int:
    from ..core.curator import curate
    from ..core.curator.taxonomy import load_taxonomy
    from ..nodes import bridge

    options = curate.CurateOptions(args.keep, args.require_all, args.drop, args.sort_by, args.dedup, args.keep_best,
                                   args.subfolders_by, search_options(args))
    options.check(load_taxonomy(args.taxonomy))  # a bad rule fails before any model loads
    taxonomy, _, index, results = _labelled(args)
    plan = curate.plan_curation(index, results, taxonomy, options)
    parent = safe_subfolder(bridge.output_directory(), args.subfolder)
    written = curate.write_curated(index, results, taxonomy, plan, options, parent, args.language)
    for skipped in index.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    for row, why in sorted(plan.dropped.items()):
        print(f"dropped {index.files[row].name}: {why}")
    for line in [*index.notes, *([plan.search] if plan.search else [])]:
        print(line)
    print(f"kept {len(plan.order)} of {len(index.files)} picture(s) ({index.encoded} encoded) in {written.folder}")
    return 0


def run_caption(args: argparse.Namespace) -> int:
    from ..core.captions import blip2
    from ..core.shared.hf_folders import find_model_folder
    from ..nodes import bridge
    from ..nodes.captioner import blip2_key

    settings = blip2.CaptionSettings(args.prompt, args.max_new_tokens, args.min_new_tokens, args.num_beams,
                                     args.sampling, args.temperature, args.top_p, args.repetition_penalty, args.seed)
    settings.check()
    files, _, _ = blip2.plan_captions(args.folder, args.overwrite, args.recursive)  # name clashes before loading
    folder = find_model_folder(args.blip2, bridge.model_folders(blip2_key()), "BLIP-2", blip2.DEFAULT_BLIP2)
    if args.ray is not None:
        from ..core.curator.ray_collection import caption_collection

        report = caption_collection(folder, args.folder, settings, _cluster(args), args.trigger, args.overwrite,
                                    args.batch_size, args.recursive, args.precision,
                                    bridge.progress(len(files), "captioning"))
    else:
        model = blip2.load_blip2(folder, bridge.compute_device(args.device), args.precision)
        report = blip2.caption_folder(model, args.folder, settings, args.trigger, args.overwrite, args.batch_size,
                                      args.recursive, bridge.progress(len(files), "captioning"))
    for skipped in report.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    for name, caption in report.captions.items():
        print(f"{name}\t{caption}")
    print(report.report().splitlines()[0])
    return 0


def run_embed(args: argparse.Namespace) -> int:
    from ..core.curator import clip_model, image_index
    from ..core.dataset.image_files import list_images
    from ..core.shared.hf_folders import find_model_folder
    from ..nodes import bridge
    from ..nodes.curator import clip_cache_dir, clip_key

    bridge.set_output_directory(args.output)
    files = list_images(args.folder, args.recursive)
    cache = Path(args.cache) if args.cache else clip_cache_dir()
    folder = find_model_folder(args.clip, bridge.model_folders(clip_key()), "CLIP", clip_model.DEFAULT_CLIP)
    if args.ray is not None:
        from ..core.curator.ray_collection import embed_collection

        index = embed_collection(folder, files, cache, _cluster(args), args.batch_size, precision=args.precision,
                                 progress=bridge.progress(len(files), "embedding"))
    else:
        clip = clip_model.load_clip(folder, bridge.compute_device(args.device), args.precision)
        index = image_index.index_folder(clip, files, cache, args.batch_size,
                                         progress=bridge.progress(len(files), "embedding"))
    print(index.report())
    print(f"embeddings in {cache}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from ..core.captions.curation_text import describe_folder, read_metadata
    from ..core.captions.safety import SafetyFilter, parse_blocked

    metadata = read_metadata(Path(args.metadata)) if args.metadata else None
    safety = SafetyFilter(parse_blocked(args.blocked))
    records = describe_folder(Path(args.folder), safety, metadata, language=args.language,
                              rewrite=_second_writer(args, safety))
    print(json.dumps(records, ensure_ascii=False, indent=1))
    print(f"wrote {Path(args.folder) / 'curation.jsonl'} and curation.md ({len(records)} picture(s))")
    return 0


def _second_writer(args: argparse.Namespace, safety: Any) -> Any:
    """The BLIP-2 or SeqGAN writer for describe_folder, its model loaded once; None for the template writer."""
    from ..core.captions import writers
    from ..core.dataset.image_files import load_image
    from ..nodes import bridge

    if args.writer == "blip2":
        from ..core.captions import blip2
        from ..core.shared.hf_folders import find_model_folder
        from ..nodes.captioner import blip2_key

        folder = find_model_folder(args.blip2, bridge.model_folders(blip2_key()), "BLIP-2", blip2.DEFAULT_BLIP2)
        blip = blip2.load_blip2(folder, bridge.compute_device(args.device), "auto")
        settings = blip2.CaptionSettings(max_new_tokens=args.max_new_tokens)
        return lambda text, path, meta, analyses: writers.write_with_blip2(text, blip, load_image(path), meta,
                                                                           analyses, safety, settings)
    if args.writer == "seqgan":
        from ..core.story.text_generator import load_text_generator
        from .common import model_file

        model = load_text_generator(model_file(args.text_model, "seqgan", "text model"),
                                    bridge.compute_device(args.device))
        return lambda text, path, meta, analyses: writers.write_with_seqgan(text, model, analyses, safety)
    return None


def run_retrieve(args: argparse.Namespace) -> int:
    from ..nodes import bridge
    from ..nodes.curator import AtelierRetrieveImages

    bridge.set_output_directory(args.output)
    clip = load_clip_option(args)
    _, lines = AtelierRetrieveImages().retrieve(clip, str(Path(args.folder).resolve()), args.query, args.top_k, 64,
                                                args.batch_size, args.recursive)
    print(lines)
    return 0


def run_evaluate_retrieval(args: argparse.Namespace) -> int:
    from ..nodes import bridge
    from ..nodes.curator import AtelierEvaluateRetrieval

    bridge.set_output_directory(args.output)
    pairs = str(Path(args.pairs).resolve()) if args.pairs.strip() else ""
    clip = load_clip_option(args)
    _, _, report = AtelierEvaluateRetrieval().evaluate(clip, str(Path(args.folder).resolve()), args.k,
                                                       args.batch_size, pairs, search_options(args))
    print(report)
    return 0


def run_score_sentences(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from ..core.curator.retrieval import read_sentences
    from ..core.dataset.image_files import load_image
    from ..core.shared.output_paths import write_atomic, write_text_atomic
    from ..nodes.curator import AtelierScoreSentences

    try:
        lines = Path(args.sentences).read_text(encoding="utf-8").splitlines() if args.sentences else []
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --sentences {args.sentences!r}: {exc}; give a UTF-8 text file with one "
                         "sentence per line") from exc
    sentences = "\n".join(read_sentences("\n".join([*lines, *args.sentence])))  # none at all fails before loading
    pictures = [load_image(Path(path)) for path in args.pictures]  # an unreadable picture too
    clip = load_clip_option(args)
    records, charts = [], []
    for path, picture in zip(args.pictures, pictures):
        table, scores, chart = AtelierScoreSentences().score(clip, picture[None], sentences, args.score, "first")
        print(f"{path}\n{table}\n")
        records.append({"file": str(path), "sentences": json.loads(scores)[0]["sentences"]})
        charts.append(chart[0])
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(records, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.chart:
        pixels = (torch.cat(charts).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        write_atomic(Path(args.chart), lambda tmp: Image.fromarray(pixels).save(tmp, "PNG"))
        print(f"wrote {args.chart}")
    return 0


JOBS = {"label": run_label, "curate": run_curate, "caption": run_caption, "embed": run_embed, "describe": run_describe,
        "retrieve": run_retrieve, "evaluate-retrieval": run_evaluate_retrieval, "score-sentences": run_score_sentences,
        "encoder-build": run_build}
