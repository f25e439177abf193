"""Analyses per second over a folder: ``analyse_folder`` against a per-picture loop calling each analysis node's
engine one picture at a time, in one run, on the same models and pictures.

    python benchmarks/bench_analyses.py [--images 16] [--size 96] [--device cpu|cuda]
        [--clip CLIP_FOLDER | --vit-l] [--adain-encoder VGG --adain-decoder DEC] [--detector OWL_FOLDER]

Without model options tiny random models are built (CLIP, AdaIN VGG, OWLv2, as in the tests); each real one given
replaces its tiny one. The folder is N seeded noise pictures with a caption sidecar and an artist's note each; the
taxonomy has an object group and a space group; three style templates (two described).

Timed, each analysing every picture with all six analyses:
  * per-picture loop: per picture, what each node does for one picture: colour; emotion (the prompt embeddings
    and the picture's CLIP embedding computed for that call); style (the template bank looked up, in memory
    after the first call, as the node does); objects; intent; space (the picture embedded again);
  * ``analyse_folder``, first run (CLIP embeddings batched and written to the cache), and a second run (every
    embedding from the cache).
One picture goes through the loop untimed first, so first-call costs (lazy imports, kernel set-up) fall on
neither side. Reported: pictures per second and analyses per second (pictures x 6) for each, and the ratios.
CPU timings on a shared machine vary from run to run: compare the figures of one run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from atelier_cli import load_pack  # noqa: E402

load_pack()

from helpers import tiny_adain_files, tiny_clip_folder, tiny_owl_folder  # noqa: E402

TAXONOMY = """name: bench
templates: ["a picture of {}"]
groups:
  subject:
    mode: multi
    labels: [cat, vase, boat, tree, person]
  space:
    mode: exclusive
    labels: [cafe, library, gallery, bedroom, office]
"""
NOTE = "A quiet morning over the sea. The light is soft and warm. Boats rest in the harbour before the day begins."


def _folder(root: Path, count: int, size: int) -> tuple[Path, Path]:
    work = root / "work"
    work.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray((rng.uniform(0, 1, (size, size, 3)) * 255).astype(np.uint8)).save(work / f"{i + 1}.png")
        (work / f"{i + 1}.txt").write_text("shelves of old books in a quiet room", encoding="utf-8")
    meta = root / "meta.json"
    meta.write_text(json.dumps({f"{i + 1}": {"artist_note": NOTE, "expert_review": "Calm. Exact."}
                                for i in range(count)}), encoding="utf-8")
    return work, meta


def _templates(root: Path, size: int) -> Path:
    folder = root / "templates"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, name in enumerate(("waves", "grid", "plain")):
        Image.fromarray((rng.uniform(0, 1, (size, size, 3)) * 255 * (i + 1) / 3).astype(np.uint8)).save(
            folder / f"{name}.png")
        if name != "plain":
            (folder / f"{name}.txt").write_text(f"a {name} pattern", encoding="utf-8")
    return folder


def per_picture_loop(work: Path, meta: Path, clip, taxonomy, adain, templates: Path, detector, cache: Path) -> int:
    """Each node's engine, one picture at a time (what six single-picture graphs do)."""
    from atelier.core.analyses import colour, emotion, intent, objects, space, style_match
    from atelier.core.captions.curation_text import read_metadata
    from atelier.core.dataset.image_files import list_images, load_image, read_caption

    metadata = read_metadata(meta)
    files = list_images(work)
    for path in files:
        image = load_image(path)
        note = metadata[path.stem]
        colour.analyse_colour(image)
        emotion.analyse_emotion(clip, image, note.artist_note, prompts=emotion.prompt_embeddings(clip))
        style_match.match_style(adain, image, style_match.load_templates(adain, templates))
        objects.detect_objects(detector, image, taxonomy, "subject")
        intent.summarize_intent(note.artist_note, note.expert_review, 2, None, clip)
        space.space_from_text(clip, taxonomy, read_caption(path) or "", image, "space", "en", cache)
    return len(files)


def _timed(fn, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=96, help="side of the square pictures")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip", help="a CLIP model folder (default: a tiny random one)")
    parser.add_argument("--vit-l", action="store_true", help="a full-size ViT-L/14 CLIP with random weights instead "
                        "of the tiny one (a forward pass costs the same whatever the weights)")
    parser.add_argument("--adain-encoder", help="vgg_normalised.pth (default: a tiny random VGG)")
    parser.add_argument("--adain-decoder", help="decoder.pth (with --adain-encoder)")
    parser.add_argument("--detector", help="an OWLv2 / OWL-ViT folder (default: a tiny random OWLv2)")
    args = parser.parse_args()
    from atelier.core.analyses import objects, style_match
    from atelier.core.analyses.folder import ANALYSES, analyse_folder
    from atelier.core.curator.clip_model import load_clip
    from atelier.core.curator.taxonomy import parse_taxonomy
    from atelier.core.style.adain_model import load_model

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work, meta = _folder(root, args.images, args.size)
        templates = _templates(root, args.size)
        taxonomy = parse_taxonomy(TAXONOMY, "bench")
        if args.vit_l:
            from bench_curator import vit_l14_folder

            clip_folder = vit_l14_folder(root / "clip")
        else:
            clip_folder = Path(args.clip) if args.clip else tiny_clip_folder(root / "clip")
        clip = load_clip(clip_folder, args.device)
        vgg, dec = ((Path(args.adain_encoder), Path(args.adain_decoder)) if args.adain_encoder
                    else tiny_adain_files(root / "adain"))
        adain = load_model(vgg, dec).to(args.device)
        detector = objects.load_detector(Path(args.detector) if args.detector else tiny_owl_folder(root / "owl"),
                                         args.device)
        style_match.load_templates(adain, templates)  # both sides then find the bank in memory
        warm, warm_meta = _folder(root / "warm", 1, args.size)  # first calls (lazy imports, kernels) untimed
        per_picture_loop(warm, warm_meta, clip, taxonomy, adain, templates, detector, root / "warm_cache")
        count, loop_s = _timed(per_picture_loop, work, meta, clip, taxonomy, adain, templates, detector,
                               root / "loop_cache")
        kwargs = dict(clip=clip, taxonomy=taxonomy, adain=adain, template_folder=templates, detector=detector,
                      metadata_file=meta, cache_dir=root / "cache")
        first, first_s = _timed(analyse_folder, work, **kwargs)
        _, second_s = _timed(analyse_folder, work, **kwargs)
    assert len(first.records) == count and all(all(r[k] for k in ANALYSES) for r in first.records)
    n = len(ANALYSES) * count
    figures = {"pictures": count, "size": args.size, "device": args.device,
               "adain": args.adain_encoder or "tiny random", "detector": args.detector or "tiny random",
               "clip": "random ViT-L/14" if args.vit_l else (args.clip or "tiny random"),
               "loop_s": loop_s, "folder_first_s": first_s, "folder_cached_s": second_s,
               "loop_analyses_per_s": n / loop_s, "folder_first_analyses_per_s": n / first_s,
               "folder_cached_analyses_per_s": n / second_s,
               "speedup_first": loop_s / first_s, "speedup_cached": loop_s / second_s}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
