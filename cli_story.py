"""Headless commands of the text generator: train on a corpus, write texts, continue a story.

    python atelier_cli.py text-train CORPUS --out-dir MODELS --run RUN [--tokenizer char] [--adversarial-epochs 50]
    python atelier_cli.py text-sample MODEL.safetensors [--count 5] [--prefix "the sea"] [--temperature 0.9]
    python atelier_cli.py text-story MODEL.safetensors "a small boat leaves the harbour." [--sentences 4]

Training resumes when the same command is run again with the same --run folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .core.output_paths import safe_name
from .core.text_generator import SamplingOptions, load_text_generator
from .nodes import bridge


def _sampling(p: argparse.ArgumentParser) -> None:
    from .cli import add_numbers

    d = SamplingOptions()
    p.add_argument("model", help="a .safetensors text model: a name in models/atelier/seqgan, or a path (one trained "
                   "before v2 needs its .json beside it)")
    add_numbers(p, float, temperature=d.temperature, top_p=d.top_p)
    add_numbers(p, int, top_k=d.top_k, max_len=d.max_len, seed=d.seed)  # max_len 0: the model's length


def add_parsers(sub: Any) -> None:
    from .cli import add_numbers  # cli is loaded by the time it asks for these parsers
    from .core.text_tokens import KINDS
    from .training.seqgan_trainer import SeqGANTrainConfig, TextModelSpec

    t = sub.add_parser("text-train", help="train a SeqGAN text generator on a corpus (resumes from --run)")
    t.add_argument("corpus", help="a .txt file (one text per line) or a folder of .txt files")
    t.add_argument("--out-dir", required=True, help="where the model goes (ComfyUI/models/atelier/seqgan)")
    t.add_argument("--run", required=True, help="run folder for checkpoints; rerun to resume")
    t.add_argument("--name", default="atelier_story")
    t.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    m, d = TextModelSpec(), SeqGANTrainConfig()
    t.add_argument("--tokenizer", choices=KINDS, default=m.tokenizer)
    add_numbers(t, int, max_vocab=m.max_vocab, max_len=m.max_len, emb_dim=m.emb_dim, hidden_dim=m.hidden_dim,
                batch_size=d.batch_size, mle_epochs=d.mle_epochs, dis_rounds=d.dis_rounds,
                adversarial_epochs=d.adversarial_epochs, g_steps=d.g_steps, d_steps=d.d_steps, d_epochs=d.d_epochs,
                rollouts=d.rollouts, negatives=d.negatives, seed=d.seed, checkpoint_every=d.checkpoint_every)
    add_numbers(t, float, rollout_rate=d.rollout_rate, g_lr=d.g_lr, d_lr=d.d_lr, d_l2=d.d_l2)
    t.add_argument("--rollout-policy", choices=["trailing", "generator"], default="trailing")
    s = sub.add_parser("text-sample", help="write texts with a trained text generator")
    _sampling(s)
    s.add_argument("--count", type=int, default=5)
    s.add_argument("--prefix", default="", help="words every text starts with")
    s.add_argument("--whole", action="store_true", help="do not cut the texts after their first sentence")
    c = sub.add_parser("text-story", help="continue a first sentence into a short story, one sentence per line")
    _sampling(c)
    c.add_argument("first", help="the first sentence")
    c.add_argument("--sentences", type=int, default=4)


def run_train(args: argparse.Namespace) -> int:
    from .core.text_tokens import read_corpus
    from .training import seqgan_trainer as trainer

    name = safe_name(args.name, "model name")  # a bad name fails before training, not after
    lines = read_corpus(Path(args.corpus))
    spec = trainer.TextModelSpec(args.tokenizer, args.max_vocab, args.max_len, args.emb_dim, args.hidden_dim)
    config = trainer.SeqGANTrainConfig(
        args.batch_size, args.mle_epochs, args.dis_rounds, args.adversarial_epochs, args.g_steps, args.d_steps,
        args.d_epochs, args.rollouts, args.rollout_rate, args.rollout_policy == "trailing", args.g_lr, args.d_lr,
        d_l2=args.d_l2, negatives=args.negatives, seed=args.seed, checkpoint_every=args.checkpoint_every)
    config.check(len(lines))
    model, models, history = trainer.train_text_generator(
        lines, spec, config, Path(args.run), bridge.compute_device(args.device),
        bridge.progress(config.steps, "training"))
    models.to("cpu")
    path = model.save(Path(args.out_dir), name, models.discriminator)
    trainer.history_plot(history, spec.max_len).save(Path(args.run) / "curve.png")
    if history.nll:
        print(f"NLL per token after pretraining: {history.nll[-1][1] / spec.max_len:.4f}")
    print(f"wrote {path}")
    return 0


def _options(args: argparse.Namespace) -> SamplingOptions:
    return SamplingOptions(args.temperature, args.top_k, args.top_p, args.max_len, args.seed)


def run_sample(args: argparse.Namespace) -> int:
    from .cli import model_file

    model = load_text_generator(model_file(args.model, "seqgan", "text model"), bridge.compute_device("auto"))
    result = model.generate(args.count, _options(args), args.prefix, stop_at_sentence_end=not args.whole)
    for note in result.notes:
        print(f"note: {note}")
    print("\n".join(result.texts))
    return 0


def run_story(args: argparse.Namespace) -> int:
    from .cli import model_file

    model = load_text_generator(model_file(args.model, "seqgan", "text model"), bridge.compute_device("auto"))
    result = model.continue_story(args.first, args.sentences, _options(args))
    for note in result.notes:
        print(f"note: {note}")
    print("\n".join(result.texts))
    return 0


JOBS = {"text-train": run_train, "text-sample": run_sample, "text-story": run_story}
