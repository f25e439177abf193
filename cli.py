"""Headless entry point: the pack's jobs without the ComfyUI UI (run through atelier_cli.py).

    python atelier_cli.py multiply FOLDER --output OUT [--variants ...] [--random N --seed S]
    python atelier_cli.py convert FOLDER --output OUT      # png copies ("tif to png")
    python atelier_cli.py train FOLDER --model SD15_CHECKPOINT_OR_FOLDER --loras LORAS --run RUN [options]
    python atelier_cli.py style FOLDER --styles STYLE_FOLDER --encoder VGG --decoder DECODER --output OUT
    python atelier_cli.py train-decoder CONTENT STYLES --encoder VGG --out-dir ADAIN_FOLDER --run RUN [options]
    python atelier_cli.py label|curate|caption|describe FOLDER ...   # see cli_collection.py
    python atelier_cli.py text-train|text-sample|text-story ...      # see cli_story.py
    python atelier_cli.py audio-train|adapter-train FOLDER ...       # see cli_audio.py
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import cli_audio, cli_collection, cli_story
from .core import augment, multiply, variants
from .core.colors import parse_color
from .core.folder_dataset import load_folder
from .core.image_files import DEFAULT_MAX_MEGAPIXELS, ImageFolderError, list_images
from .core.output_paths import safe_subfolder
from .core.preprocess import CROP_MODES, FILTERS, PAD_MODES, RESIZE_MODES, PreprocessSpec
from .nodes import bridge


def _add_loading(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder of originals (with optional <stem>.txt captions)")
    p.add_argument("--output", default="output", help="output root folder (default: ./output)")
    p.add_argument("--subfolder", default="atelier/augmented", help="inside the output root; gets vNNN folders")
    p.add_argument("--recursive", action="store_true", help="also read sub-folders")
    p.add_argument("--resize", choices=RESIZE_MODES, default="none")
    p.add_argument("--size", type=int, default=512, help="edge length for shorter_edge/longer_edge")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--pad", choices=PAD_MODES, default="none")
    p.add_argument("--pad-color", default="#000000", help="'#rrggbb', 'r,g,b' or 'most_frequent'")
    p.add_argument("--crop", choices=CROP_MODES, default="none")
    p.add_argument("--filter", choices=FILTERS, default="bicubic")
    p.add_argument("--alpha-background", default="#ffffff", help="colour transparent pixels are composited on")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS)
    p.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier's jobs, headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("multiply", help="write each original plus its named variants, captions and a manifest")
    _add_loading(m)
    s = variants.VariantSettings()
    m.add_argument("--variants", default=",".join(variants.KINDS),
                   help="comma-separated variants (ids or names such as rotation_+45); empty for none")
    m.add_argument("--no-original", action="store_true", help="do not write the originals themselves")
    m.add_argument("--brightness-down", type=float, default=s.brightness_down)
    m.add_argument("--brightness-up", type=float, default=s.brightness_up)
    m.add_argument("--saturation-down", type=float, default=s.saturation_down)
    m.add_argument("--saturation-up", type=float, default=s.saturation_up)
    m.add_argument("--angle", type=float, default=s.angle)
    m.add_argument("--fill-color", default="#000000")
    m.add_argument("--random", type=int, default=0, help="extra random variants per original")
    m.add_argument("--recipe", help="JSON file of an augmentation recipe for --random (fields of AugmentSpec)")
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("convert", help="write the folder's pictures as PNG copies (tif to png), preprocessed")
    _add_loading(c)
    c.set_defaults(subfolder="atelier/png")
    _add_train(sub)
    _add_style(sub)
    _add_train_decoder(sub)
    cli_collection.add_parsers(sub)
    cli_story.add_parsers(sub)
    cli_audio.add_parsers(sub)
    add_comfyui_option(sub)
    return parser


def add_numbers(parser: argparse.ArgumentParser, kind: type, **defaults: float) -> None:
    """``--some-name`` options of one numeric type, from ``some_name=default``."""
    for name, value in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)


# every command that reads a model takes --comfyui: the ComfyUI folder whose models it looks in
MODEL_COMMANDS = ("train", "style", "train-decoder", "label", "curate", "caption", "text-sample", "text-story",
                  "audio-train", "adapter-train")


def add_comfyui_option(sub: argparse._SubParsersAction) -> None:
    for name in MODEL_COMMANDS:
        sub.choices[name].add_argument(
            "--comfyui", help="your ComfyUI folder: models are looked for in its models/ folder (checkpoints, "
            f"atelier/clip, atelier/adain...). Default: ${bridge.COMFYUI_ENV}, else the ComfyUI this pack is installed "
            "in and ./models")


def use_models_of(args: argparse.Namespace) -> None:
    """Models from the ComfyUI folder given with --comfyui (checked before any work starts)."""
    if getattr(args, "comfyui", None):
        bridge.set_comfyui_directory(args.comfyui)


def model_file(text: str, kind: str, what: str) -> Path:
    """A model option: a name in the model folders of ``kind`` (an Atelier kind such as ``adain``, or ComfyUI's
    ``checkpoints``), else a path; the error names every place looked in and how to get the file."""
    if kind == "checkpoints":  # a single file, or a diffusers folder
        from .core.sd15_checkpoint import SD15_DOWNLOAD, SD15_FILE

        folder = bridge.model_folders("checkpoints")[0]
        return bridge.find_model_file("checkpoints", text, what, (
            f"put the checkpoint file (or diffusers folder) {text.strip()!r} in {str(folder)!r}; SD 1.5 itself comes "
            f'with `{SD15_DOWNLOAD} --local-dir "{folder}"`, then --model {SD15_FILE}'), Path.exists)
    if kind == "adain":
        from .core.adain_model import find_weights

        return find_weights(text, bridge.model_folders("atelier_adain"), what)
    folder = bridge.model_folders(f"atelier_{kind}")[0]
    return bridge.find_model_file(f"atelier_{kind}", text, what, f"train one into {str(folder)!r} (--out-dir)")


def _add_style(sub: argparse._SubParsersAction) -> None:
    from .core.color_preservation import MODES
    from .core.feature_transfer import METHODS
    from .core.stylize import StyleOptions

    d = StyleOptions()
    s = sub.add_parser("style", help="style augmentation: every original crossed with every style picture")
    s.add_argument("folder", help="folder of originals (with optional <stem>.txt captions)")
    s.add_argument("--styles", required=True, help="folder of style pictures")
    s.add_argument("--encoder", required=True, help="vgg_normalised.pth (or an Atelier safetensors encoder): a name in "
                   "models/atelier/adain, or a path")
    s.add_argument("--decoder", required=True, help="decoder.pth or a decoder trained by train-decoder: a name in "
                   "models/atelier/adain, or a path")
    s.add_argument("--output", default="output", help="output root folder (default: ./output)")
    s.add_argument("--subfolder", default="atelier/styled", help="inside the output root; gets vNNN folders")
    s.add_argument("--pairs", type=int, default=0, help="random (original, style) pairs to make; 0: all")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-original", action="store_true", help="do not write the originals themselves")
    s.add_argument("--alpha", type=float, default=d.alpha)
    s.add_argument("--method", choices=METHODS, default=d.method)
    s.add_argument("--preserve-color", choices=MODES, default=d.preserve_color)
    s.add_argument("--tile", type=int, default=d.tile)
    s.add_argument("--overlap", type=int, default=d.overlap)
    s.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _style(args: argparse.Namespace) -> int:
    from .core import adain_model
    from .core.style_augment import load_styles, plan_pairs, style_augment
    from .core.stylize import StyleOptions

    options = StyleOptions(args.alpha, args.method, args.preserve_color, args.tile, args.overlap)
    model = adain_model.load_model(model_file(args.encoder, "adain", "encoder file"),
                                   model_file(args.decoder, "adain", "decoder file"))
    data = load_folder(args.folder)
    originals = [multiply.Original(i.image, i.stem, i.caption, str(i.path)) for i in data.images]
    styles, skipped_styles = load_styles(args.styles)
    bridge.set_output_directory(args.output)
    parent = safe_subfolder(bridge.output_directory(), args.subfolder)
    device = bridge.compute_device(args.device)
    total = len(plan_pairs(len(originals), len(styles), args.pairs, args.seed))
    written = style_augment(model.to(device), originals, styles, parent, options, args.pairs, args.seed,
                            not args.no_original, device, bridge.progress(total, "stylizing"))
    for skipped in data.skipped + skipped_styles:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    print(f"wrote {len(written.files)} images from {len(originals)} originals and {len(styles)} styles to "
          f"{written.folder}")
    return 0


def _add_train_decoder(sub: argparse._SubParsersAction) -> None:
    from .training.adain_decoder import DecoderConfig

    d = DecoderConfig()
    t = sub.add_parser("train-decoder", help="train or fine-tune an AdaIN decoder (resumes from --run)")
    t.add_argument("content", help="folder of content pictures")
    t.add_argument("styles", help="folder of style pictures")
    t.add_argument("--encoder", required=True, help="vgg_normalised.pth: a name in models/atelier/adain, or a path")
    t.add_argument("--init-decoder", help="decoder to fine-tune (a name in models/atelier/adain, or a path); "
                   "without it, a new one from --seed")
    t.add_argument("--out-dir", required=True, help="where the decoder goes (ComfyUI/models/atelier/adain)")
    t.add_argument("--run", required=True, help="run folder: checkpoints and loss plot; rerun to resume")
    t.add_argument("--name", default="atelier_decoder")
    add_numbers(t, int, steps=d.steps, batch_size=d.batch_size, resize_to=d.resize_to, crop=d.crop, seed=d.seed,
             checkpoint_every=d.checkpoint_every)
    add_numbers(t, float, lr=d.lr, lr_decay=d.lr_decay, style_weight=d.style_weight)
    t.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _train_decoder(args: argparse.Namespace) -> int:
    from .core import adain_model
    from .core.output_paths import safe_name
    from .training import adain_decoder

    config = adain_decoder.DecoderConfig(args.steps, args.batch_size, args.lr, args.lr_decay, args.style_weight,
                                         args.resize_to, args.crop, args.seed, args.checkpoint_every)
    name = safe_name(args.name, "decoder name")
    init = model_file(args.init_decoder, "adain", "decoder file") if args.init_decoder else None
    model = adain_model.load_model(model_file(args.encoder, "adain", "encoder file"), init, args.seed)
    run_dir = Path(args.run)
    result = adain_decoder.train_decoder(model, args.content, args.styles, config, run_dir,
                                         bridge.compute_device(args.device), bridge.progress(config.steps, "decoder"))
    for skipped in result.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    if result.resumed_from:
        print(f"resumed from step {result.resumed_from}")
    model.to("cpu")
    path = adain_decoder.save_trained(model, result, config, Path(args.out_dir), name,
                                      str(init) if init else "scratch")
    adain_decoder.loss_plot(result, config).save(run_dir / "loss.png")
    content, style = result.losses[-1]
    print(f"content loss {content:.4f}, style loss {style:.4f} after {result.step} steps")
    print(f"wrote {path}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .training.lora_trainer import OPTIMIZERS, PRECISIONS, SCHEDULERS, TARGETS, TrainConfig

    d = TrainConfig()
    t = sub.add_parser("train", help="train an SD 1.5 LoRA on a folder of images (resumes from --run)")
    t.add_argument("folder", help="training images with optional <stem>.txt captions")
    t.add_argument("--model", required=True, help="SD 1.5 checkpoint file or diffusers folder: a name in "
                   "models/checkpoints, or a path")
    t.add_argument("--loras", required=True, help="where the LoRA file goes (ComfyUI/models/loras)")
    t.add_argument("--run", required=True, help="run folder: checkpoints, samples, loss plot; rerun to resume")
    t.add_argument("--name", default="atelier_lora")
    t.add_argument("--trigger", default="", help="trigger word put before every caption")
    t.add_argument("--no-captions", action="store_true", help="ignore caption sidecars")
    t.add_argument("--caption-dropout", type=float, default=0.0)
    t.add_argument("--resolution", type=int, default=512)
    t.add_argument("--no-upscale", action="store_true", help="refuse images smaller than their bucket")
    add_numbers(t, int, rank=d.rank, steps=d.steps, batch_size=d.batch_size, grad_accum=d.grad_accum,
             warmup_steps=d.warmup_steps, seed=d.seed, checkpoint_every=d.checkpoint_every, sample_every=0,
             sample_steps=20)
    add_numbers(t, float, alpha=d.alpha, dropout=d.dropout, lr=d.lr, max_grad_norm=d.max_grad_norm,
             min_snr_gamma=d.min_snr_gamma, noise_offset=d.noise_offset, text_encoder_lr=d.text_encoder_lr)
    t.add_argument("--targets", choices=list(TARGETS), default=d.targets)
    t.add_argument("--scheduler", choices=SCHEDULERS, default=d.scheduler)
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    t.add_argument("--mixed-precision", choices=PRECISIONS, default=d.mixed_precision)
    t.add_argument("--qlora", action="store_true", help="frozen UNet linear layers in 4-bit NF4 (CUDA, bitsandbytes)")
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--train-text-encoder", action="store_true", help="also a LoRA on the text encoder's attention")
    t.add_argument("--sample-prompt", action="append", default=[], help="prompt for sample images (repeatable)")
    t.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _train(args: argparse.Namespace) -> int:
    from .core import sd15_checkpoint
    from .training import lora_job
    from .training.lora_trainer import TrainConfig

    config = TrainConfig(
        rank=args.rank, alpha=args.alpha, dropout=args.dropout, targets=args.targets, steps=args.steps,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, scheduler=args.scheduler,
        warmup_steps=args.warmup_steps, optimizer=args.optimizer, max_grad_norm=args.max_grad_norm,
        mixed_precision=args.mixed_precision, min_snr_gamma=args.min_snr_gamma, noise_offset=args.noise_offset,
        seed=args.seed, checkpoint_every=args.checkpoint_every, gradient_checkpointing=args.gradient_checkpointing,
        train_text_encoder=args.train_text_encoder, text_encoder_lr=args.text_encoder_lr, qlora=args.qlora)
    job = lora_job.LoraJob(
        images=args.folder, name=args.name, trigger=args.trigger, use_captions=not args.no_captions,
        caption_dropout=args.caption_dropout, resolution=args.resolution, upscale_small=not args.no_upscale,
        train=config, sample_every=args.sample_every, sample_prompts=tuple(args.sample_prompt),
        sample_steps=args.sample_steps, sample_seed=args.seed)
    device = bridge.compute_device(args.device)
    lora_job.check_device(config, device)  # before the model loads
    parts, weights = sd15_checkpoint.load(model_file(args.model, "checkpoints", "SD 1.5 checkpoint"))
    total = config.steps + len(list_images(args.folder))
    result = lora_job.run(parts, job, Path(args.loras), Path(args.run), device,
                          lora_job.model_hash(weights), bridge.progress(total, "training"))
    for warning in result.warnings:
        print(f"note: {warning}", file=sys.stderr)
    if result.resumed_from:
        print(f"resumed from step {result.resumed_from}")
    print(f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f} over {len(result.losses)} steps")
    print(f"wrote {result.lora_path}")
    return 0


def _recipe(path: str | None) -> augment.AugmentSpec:
    if path is None:
        return augment.AugmentSpec(hflip=0.5, rotation=augment.Range(0.5, -15, 15),
                                   brightness=augment.Range(0.5, 0.8, 1.2), saturation=augment.Range(0.5, -0.15, 0.15))
    return augment.read_recipe(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    jobs = {"train": _train, "style": _style, "train-decoder": _train_decoder, **cli_collection.JOBS, **cli_story.JOBS,
            **cli_audio.JOBS}
    if args.command in jobs:
        try:
            use_models_of(args)
            return jobs[args.command](args)
        except (ImageFolderError, ValueError, OSError, RuntimeError) as exc:
            print(f"atelier: {exc}", file=sys.stderr)
            return 2
    try:
        pad_color = None if args.pad_color == "most_frequent" else parse_color(args.pad_color)
        spec = PreprocessSpec(args.resize, args.size, args.width, args.height, args.pad, pad_color, args.crop,
                              args.filter)
        bridge.set_output_directory(args.output)
        parent = safe_subfolder(bridge.output_directory(), args.subfolder)
        if args.command == "multiply":
            settings = variants.VariantSettings(args.brightness_down, args.brightness_up, args.saturation_down,
                                                args.saturation_up, args.angle, parse_color(args.fill_color))
            kinds = variants.parse_kinds([v for v in args.variants.split(",") if v.strip()], settings)
            random = multiply.RandomVariants(_recipe(args.recipe), args.random, args.seed) if args.random else None
            include_original = not args.no_original
        else:
            settings, kinds, random, include_original = variants.VariantSettings(), [], None, True
        files = list_images(args.folder, args.recursive)
        data = load_folder(args.folder, spec, parse_color(args.alpha_background), args.recursive,
                           args.max_megapixels, progress=bridge.progress(len(files), "loading"))
        originals = [multiply.Original(i.image, i.stem, i.caption, str(i.path)) for i in data.images]
        planned = multiply.plan_size(originals, kinds, include_original, random)
        written = multiply.multiply(originals, parent, kinds, settings, include_original, random,
                                    bridge.compute_device(args.device), bridge.progress(planned, args.command))
    except (ImageFolderError, ValueError, OSError) as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    for skipped in data.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    print(f"wrote {len(written.files)} images from {len(originals)} originals to {written.folder}")
    print(f"manifest: {written.manifest}")
    return 0
