"""Headless commands of the text generator and the story strip: train on a corpus, write texts, continue a
story, stack panels into a strip.

    python atelier_cli.py text-train CORPUS --out-dir MODELS --run RUN [--tokenizer char] [--adversarial-epochs 50]
    python atelier_cli.py text-sample MODEL.safetensors [--count 5] [--prefix "the sea"] [--temperature 0.9]
    python atelier_cli.py text-story MODEL.safetensors "a small boat leaves the harbour." [--sentences 4]
    python atelier_cli.py story-strip PANELS --out strip.png [--captions story.txt] [--width 800]
    python atelier_cli.py story-panels FOLDER --lines story.txt --clip CLIP --out-dir GUIDES [--distinct]

Training resumes when the same command is run again with the same --run folder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..core.shared.output_paths import safe_name
from .collection import _clip_model, load_clip_option


def _sampling(p: argparse.ArgumentParser) -> None:
    from .common import add_numbers, declared

    d = declared("core.story.text_generator", "SamplingOptions")
    p.add_argument("model", help="a text generator .safetensors written by text-train: a name in "
                   "models/atelier/seqgan, or a path (one trained before v2 needs its .json beside it)")
    add_numbers(p, float, above=0, temperature=(d.temperature, "higher is more varied"))
    add_numbers(p, float, high=1, above=0, top_p=(d.top_p, "nucleus share of probability; 1: off"))
    add_numbers(p, int, 0, top_k=(d.top_k, "sample from the k likeliest tokens; 0: off"),
                max_len=(d.max_len, "longest text in tokens; 0: the model's length"),
                seed=(d.seed, "seed of the sampling"))


def add_parsers(sub: Any) -> None:
    from .common import add_numbers, declared  # cli is loaded by the time it asks for these parsers

    t = sub.add_parser("text-train", help="train a SeqGAN text generator on a corpus (resumes from --run)")
    t.add_argument("corpus", nargs="?", help="a .txt file (one text per line) or a folder of .txt files (not needed "
                   "with --conditioning)")
    t.add_argument("--conditioning", help="a catalogue that conditions the model on each work: a JSON-lines file of "
                   "{\"features\": [numbers], \"text\": ...} or a folder of curation.jsonl records with features; "
                   "its texts are the corpus")
    t.add_argument("--discriminator", choices=["cnn", "lstm"], default="cnn", help="cnn (the paper's) or lstm (logits "
                   "at every step, averaged)")
    t.add_argument("--compare-unconditioned", action="store_true", help="with --conditioning: also train the "
                   "generator with and without the works' features on one seeded split (a fifth of the catalogue "
                   "held out) and print both held-out NLLs per token")
    t.add_argument("--out-dir", required=True, help="where the model goes (ComfyUI/models/atelier/seqgan)")
    t.add_argument("--run", required=True, help="run folder for checkpoints; rerun to resume")
    t.add_argument("--name", default="atelier_story", help="file name of the model (name_2 if taken)")
    t.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    trainer = "training.story.seqgan_trainer"
    m, d = declared(trainer, "TextModelSpec"), declared(trainer, "SeqGANTrainConfig")
    t.add_argument("--tokenizer", choices=declared("core.story.text_tokens", "KINDS"), default=m.tokenizer,
                   help="word (English), char (any script, Korean included) or sentencepiece")
    add_numbers(t, int, 1, max_vocab=(m.max_vocab, "most frequent pieces kept, the four specials included (at "
                                                  "least 5)"))
    add_numbers(t, int, 1, max_len=(m.max_len, "tokens per text; longer texts are cut"),
                emb_dim=(m.emb_dim, "token embedding size"), hidden_dim=(m.hidden_dim, "LSTM hidden size"),
                batch_size=(d.batch_size, "texts per batch (the corpus needs at least one batch)"),
                g_steps=(d.g_steps, "policy-gradient updates per adversarial epoch"),
                d_epochs=(d.d_epochs, "epochs over each discriminator round's data"),
                rollouts=(d.rollouts, "Monte Carlo rollouts per token's reward"),
                checkpoint_every=(d.checkpoint_every, "steps (epochs and rounds) between checkpoints"))
    add_numbers(t, int, 0, mle_epochs=(d.mle_epochs, "maximum-likelihood pretraining epochs"),
                dis_rounds=(d.dis_rounds, "discriminator pretraining rounds"),
                adversarial_epochs=(d.adversarial_epochs, "adversarial (policy-gradient) epochs"),
                d_steps=(d.d_steps, "discriminator rounds per adversarial epoch"),
                negatives=(d.negatives, "generated texts per discriminator round; 0: as many as the corpus"),
                seed=(d.seed, "seed of the weights, batches and samples"))
    add_numbers(t, float, 0, 1, rollout_rate=(d.rollout_rate, "how slowly the trailing rollout policy "
                                              "(--rollout-policy trailing) follows the generator"))
    add_numbers(t, float, above=0, g_lr=(d.g_lr, "generator learning rate"),
                d_lr=(d.d_lr, "discriminator learning rate"))
    add_numbers(t, float, 0, d_l2=(d.d_l2, "L2 weight on the discriminator's output layer"))
    t.add_argument("--rollout-policy", choices=["trailing", "generator"], default="generator",
                   help="who completes the rollouts: the generator itself (the paper, and in effect its reference "
                   "code), or a copy trailing it (this pack's option)")
    s = sub.add_parser("text-sample", help="write texts with a trained text generator")
    _sampling(s)
    add_numbers(s, int, 1, count=(5, "how many texts"))
    s.add_argument("--prefix", default="", help="words every text starts with")
    s.add_argument("--whole", action="store_true", help="do not cut the texts after their first sentence")
    c = sub.add_parser("text-story", help="continue a first sentence into a short story, one sentence per line")
    _sampling(c)
    c.add_argument("first", help="the first sentence")
    add_numbers(c, int, 1, sentences=(4, "sentences after the first"))
    layout = declared("core.story.strip", "StripLayout")
    g = sub.add_parser("story-strip", help="stack a folder's pictures (panels, in name order) into a vertical, "
                       "captioned strip")
    g.add_argument("panels", help="folder of panel pictures, in natural name order (2.png before 10.png)")
    g.add_argument("--out", required=True, help="the strip's .png file (an existing file is replaced)")
    g.add_argument("--captions", help="a text file, one caption per panel and line (default: each panel's "
                   "<stem>.txt)")
    add_numbers(g, int, 64, width=(layout.width, "strip width in pixels; panels are scaled to fit, aspect kept"))
    add_numbers(g, int, 0, gutter=(layout.gutter, "pixels between panels"), margin=(layout.margin, "pixels around "
                "everything"), caption_size=(layout.caption_size, "caption font size in pixels; 0: no captions"))
    g.add_argument("--background", default="#ffffff", help="colour of gutters and margins")
    g.add_argument("--caption-color", default="#000000", help="caption colour")
    g.add_argument("--font", default=layout.font, help="a .ttf/.otf file; empty: a system font covering the "
                   "captions' script (for Korean install Noto Sans CJK or Nanum)")
    p = sub.add_parser("story-panels", help="each story line's closest picture of a folder (CLIP retrieval), cropped "
                       "to the panel size: the guides that start the panels, with a JSON report")
    p.add_argument("folder", help="folder of pictures to search")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--lines", help="a text file of the story, one sentence per line (text-story's output)")
    given.add_argument("--line", action="append", help="one sentence of the story; repeat it for each line")
    p.add_argument("--out-dir", required=True, help="where the guides (01.png, 02.png, ...) and panels.json go "
                   "(files of the same names are replaced)")
    _clip_model(p)
    add_numbers(p, int, 1, width=(512, "panel width in pixels; each picture covers it and is centre-cropped"),
                height=(512, "panel height in pixels"), batch_size=(32, "pictures per forward pass"))
    p.add_argument("--distinct", action="store_true", help="never one picture for two panels (lines take pictures "
                   "in story order)")
    p.add_argument("--recursive", action="store_true", help="also search sub-folders")
    p.add_argument("--output", default="output", help="output root folder (holds the embedding cache)")


def run_train(args: argparse.Namespace) -> int:
    from ..core.shared.progress import WeightedSteps
    from ..core.story.catalogue import read_catalogue
    from ..core.story.text_tokens import read_corpus
    from ..nodes import bridge
    from ..training.story import seqgan_trainer as trainer

    if not args.corpus and not args.conditioning:
        raise ValueError("text-train needs a corpus (a .txt file or folder) or --conditioning (a catalogue)")
    catalogue = read_catalogue(Path(args.conditioning)) if args.conditioning else None
    features = None if catalogue is None else catalogue.features
    lines = catalogue.texts if catalogue else read_corpus(Path(args.corpus))
    spec = trainer.TextModelSpec(args.tokenizer, args.max_vocab, args.max_len, args.emb_dim, args.hidden_dim,
                                 args.discriminator)
    config = trainer.SeqGANTrainConfig(
        args.batch_size, args.mle_epochs, args.dis_rounds, args.adversarial_epochs, args.g_steps, args.d_steps,
        args.d_epochs, args.rollouts, args.rollout_rate, args.rollout_policy == "trailing", args.g_lr, args.d_lr,
        d_l2=args.d_l2, negatives=args.negatives, seed=args.seed, checkpoint_every=args.checkpoint_every)
    config.check(len(lines))
    costs = config.step_costs(len(lines), spec.max_len)  # the bar covers every phase at its cost from the start
    model, models, history = trainer.train_text_generator(
        lines, spec, config, Path(args.run), bridge.compute_device(args.device),
        WeightedSteps(bridge.progress(sum(costs), "training"), costs), features)
    models.to("cpu")
    path = model.save(Path(args.out_dir), safe_name(args.name, "model name"), models.discriminator)
    trainer.history_plot(history, spec.max_len).save(Path(args.run) / "curve.png")
    if history.nll:
        print(f"NLL per token after pretraining: {history.nll[-1][1] / spec.max_len:.4f}")
    print(f"wrote {path}")
    if args.compare_unconditioned:
        gain = trainer.conditioning_gain(lines, features, spec, config, device=bridge.compute_device(args.device))
        print(f"held-out NLL per token: {gain['conditional_nll']:.4f} conditioned on the works' features, "
              f"{gain['unconditional_nll']:.4f} without ({gain['train_texts']} texts trained, "
              f"{gain['heldout_texts']} held out)")
    return 0


def _options(args: argparse.Namespace) -> Any:  # -> core.text_generator.SamplingOptions
    from ..core.story.text_generator import SamplingOptions

    return SamplingOptions(args.temperature, args.top_k, args.top_p, args.max_len, args.seed)


def run_sample(args: argparse.Namespace) -> int:
    from ..core.story.text_generator import load_text_generator
    from ..nodes import bridge
    from .common import model_file

    model = load_text_generator(model_file(args.model, "seqgan", "text model"), bridge.compute_device("auto"))
    result = model.generate(args.count, _options(args), args.prefix, stop_at_sentence_end=not args.whole)
    for note in result.notes:
        print(f"note: {note}")
    print("\n".join(result.texts))
    return 0


def run_story(args: argparse.Namespace) -> int:
    from ..core.story.text_generator import load_text_generator
    from ..nodes import bridge
    from .common import model_file

    model = load_text_generator(model_file(args.model, "seqgan", "text model"), bridge.compute_device("auto"))
    result = model.continue_story(args.first, args.sentences, _options(args))
    for note in result.notes:
        print(f"note: {note}")
    print("\n".join(result.texts))
    return 0


def run_strip(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..core.dataset.folder_dataset import load_folder
    from ..core.dataset.image_files import encode_png
    from ..core.shared.colors import parse_color
    from ..core.story.strip import StripLayout, make_strip

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {str(out)!r}: give a .png file name")
    layout = StripLayout(args.width, args.gutter, args.margin, parse_color(args.background), args.caption_size,
                         parse_color(args.caption_color), font=args.font.strip())
    layout.check()  # before any picture is read
    captions = None
    if args.captions:
        captions = [line.strip() for line in Path(args.captions).read_text(encoding="utf-8").splitlines()]
    data = load_folder(args.panels)
    for skipped in data.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    if captions is None:
        captions = [item.caption or "" for item in data.images]
    elif len(captions) < len(data.images):
        raise ValueError(f"--captions {args.captions!r} has {len(captions)} line(s) for {len(data.images)} panels: "
                         "give one line per panel (an empty line for none)")
    strip = make_strip([item.image for item in data.images], captions[:len(data.images)], layout)
    picture = Image.fromarray((strip.clamp(0, 1) * 255).round().byte().numpy())
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")  # a kill leaves no half file
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(encode_png(picture))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {out} ({picture.width}x{picture.height}, {len(data.images)} panels)")
    return 0


def run_panels(args: argparse.Namespace) -> int:
    import json

    from PIL import Image

    from ..core.dataset.image_files import list_images
    from ..core.shared.output_paths import write_atomic, write_text_atomic
    from ..core.story.panel_guides import check_request, panel_guides, story_lines
    from ..nodes import bridge
    from ..nodes.curator import clip_cache_dir

    bridge.set_output_directory(args.output)
    try:
        lines = story_lines([Path(args.lines).read_text(encoding="utf-8-sig")] if args.lines else args.line)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --lines {args.lines!r}: {exc}") from exc
    files = list_images(Path(args.folder), args.recursive)
    check_request(lines, (args.width, args.height), args.distinct, len(files))  # before the model loads
    clip = load_clip_option(args)
    found = panel_guides(clip, lines, files, clip_cache_dir(), (args.width, args.height), args.distinct,
                         args.batch_size, progress=bridge.progress(len(files), "embedding pictures"))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = found.records()
    digits = max(2, len(str(len(records))))
    for record, picture in zip(records, found.pictures):
        record["guide"] = f"{record['panel']:0{digits}d}.png"
        image = Image.fromarray((picture * 255).round().byte().numpy())
        write_atomic(out / record["guide"], lambda tmp, image=image: image.save(tmp, format="PNG"))
    write_text_atomic(out / "panels.json", json.dumps({"folder": str(Path(args.folder)), "width": args.width,
                                                       "height": args.height, "distinct": args.distinct,
                                                       "panels": records}, ensure_ascii=False, indent=1))
    print(found.report())
    print(f"wrote {len(records)} guide(s) and panels.json to {out}")
    return 0


JOBS = {"text-train": run_train, "text-sample": run_sample, "text-story": run_story, "story-strip": run_strip,
        "story-panels": run_panels}
