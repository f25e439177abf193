"""Headless entry point: the pack's jobs without the ComfyUI UI (run through atelier_cli.py).

    python atelier_cli.py multiply FOLDER --output OUT [--variants ...] [--random N --seed S [--recipe R.json]]
    python atelier_cli.py convert FOLDER --output OUT      # png copies ("tif to png")
    python atelier_cli.py train FOLDER --model SD15_CHECKPOINT_OR_FOLDER --loras LORAS --run RUN [options]
    python atelier_cli.py style FOLDER --styles STYLE_FOLDER --encoder VGG --decoder DECODER --output OUT
    python atelier_cli.py train-decoder CONTENT STYLES --encoder VGG --out-dir ADAIN_FOLDER --run RUN [options]
    python atelier_cli.py fid REAL GENERATED [--kid-subset 50]
    python atelier_cli.py label|curate|caption|describe|retrieve|evaluate-retrieval FOLDER ...  # cli_collection.py
    python atelier_cli.py text-train|text-sample|text-story|story-strip ...                      # cli_story.py
    python atelier_cli.py audio-train|adapter-train|audio-encode ...                            # cli_audio.py

The parser is built without importing torch or any model library (``--help`` answers at once): option defaults
and choices are read from the source of the core modules that own them (``declared``), and every job imports
what it needs when it runs. Numeric options are range-checked as they are parsed (``number``).
"""
from __future__ import annotations

import argparse
import ast
import functools
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import cli_audio, cli_collection, cli_story
from .core.output_paths import safe_name, safe_subfolder

_ROOT = Path(__file__).resolve().parent
RESUMABLE = {"train", "train-decoder", "text-train", "audio-train", "adapter-train"}  # rerun with --run to resume


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (not for required options, on/off flags, or options whose help
    says what their absence means); epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or isinstance(action, argparse._StoreTrueAction):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def _top_level(module: str) -> dict[str, ast.AST]:
    tree = ast.parse((_ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            names.update((t.id, node.value) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            names[node.target.id] = node.value
    return names


def declared(module: str, name: str) -> Any:
    """A literal constant of ``module`` (``"core.preprocess"``), or a dataclass's literal field defaults as a
    namespace, read from the source without importing it (the engine imports torch; ``--help`` must not).
    tests/test_cli_parser.py holds every value read here equal to the imported one."""
    node = _top_level(module)[name]
    if not isinstance(node, ast.ClassDef):
        return ast.literal_eval(node)
    fields = {}
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
            try:
                fields[item.target.id] = ast.literal_eval(item.value)
            except ValueError:  # field(default_factory=...): not an option's default
                continue
    return SimpleNamespace(**fields)



def number(kind: type, low: float | None = None, high: float | None = None,
           above: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type`` that parses ``kind`` and refuses values outside ``low..high`` (or not ``above``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and value < low or high is not None and value > high:
            where = (f"from {low} to {high}" if low is not None and high is not None
                     else f"at least {low}" if low is not None else f"at most {high}")
            raise argparse.ArgumentTypeError(f"must be {where}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be above {above}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _add_loading(p: argparse.ArgumentParser) -> None:
    pre = "core.preprocess"
    p.add_argument("folder", help="folder of originals (with optional <stem>.txt captions)")
    p.add_argument("--output", default="output", help="output root folder")
    p.add_argument("--subfolder", default="atelier/augmented", help="inside the output root; gets vNNN folders")
    p.add_argument("--recursive", action="store_true", help="also read sub-folders")
    p.add_argument("--resize", choices=declared(pre, "RESIZE_MODES"), default="none", help="how to resize")
    add_numbers(p, int, 1, size=(512, "edge length for shorter_edge/longer_edge"),
                width=(512, "width for --resize exact and --pad to_size"),
                height=(512, "height for --resize exact and --pad to_size"))
    p.add_argument("--pad", choices=declared(pre, "PAD_MODES"), default="none", help="how to pad")
    p.add_argument("--pad-color", default="#000000", help="'#rrggbb', 'r,g,b' or 'most_frequent'")
    p.add_argument("--crop", choices=declared(pre, "CROP_MODES"), default="none", help="centre crop to the size")
    p.add_argument("--filter", choices=declared(pre, "FILTERS"), default="bicubic", help="resampling filter")
    p.add_argument("--alpha-background", default="#ffffff", help="colour transparent pixels are composited on")
    p.add_argument("--max-megapixels", type=number(float, above=0),
                   default=declared("core.image_files", "DEFAULT_MAX_MEGAPIXELS"),
                   help="larger pictures are skipped as possible decompression bombs")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atelier", description="Atelier's jobs, headless. '<command> --help' lists a "
                     "command's options.", epilog=f"Ctrl-C stops a job; {', '.join(sorted(RESUMABLE))} resume "
                     "when the same command runs again with the same --run folder.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    m = sub.add_parser("multiply", help="write each original plus its named variants, captions and a manifest",
                       epilog=RECIPE_HELP)
    _add_loading(m)
    s = declared("core.variants", "VariantSettings")
    m.add_argument("--variants", default=",".join(declared("core.variants", "KINDS")),
                   help="comma-separated variants (ids or names such as rotation_+45); empty for none")
    m.add_argument("--no-original", action="store_true", help="do not write the originals themselves")
    add_numbers(m, float, 0, brightness_down=(s.brightness_down, "brightness factor of brightness_down"),
                brightness_up=(s.brightness_up, "brightness factor of brightness_up"))
    add_numbers(m, float, -1, 1, saturation_down=(s.saturation_down, "HSV saturation offset of saturation_down"),
                saturation_up=(s.saturation_up, "HSV saturation offset of saturation_up"))
    add_numbers(m, float, -360, 360, angle=(s.angle, "degrees of rotation_+/-, counter-clockwise"))
    m.add_argument("--fill-color", default="#000000", help="colour of the corners a rotation uncovers")
    add_numbers(m, int, 0, random=(0, "extra random variants per original, drawn from --recipe"),
                seed=(0, "seed of the random variants"))
    m.add_argument("--recipe", help="JSON augmentation recipe for --random (format below); without it a mild "
                   "default: flips, small rotations, brightness and saturation")
    c = sub.add_parser("convert", help="write the folder's pictures as PNG copies (tif to png), preprocessed")
    _add_loading(c)
    c.set_defaults(subfolder="atelier/png")
    _add_train(sub)
    _add_style(sub)
    _add_train_decoder(sub)
    _add_fid(sub)
    cli_collection.add_parsers(sub)
    cli_story.add_parsers(sub)
    cli_audio.add_parsers(sub)
    add_comfyui_option(sub)
    return parser


def add_numbers(parser: argparse.ArgumentParser, kind: type, low: float | None = None, high: float | None = None,
                above: float | None = None, **options: tuple[Any, str]) -> None:
    """``--some-name`` options of one numeric type and range, from ``some_name=(default, help)``."""
    for name, (value, text) in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=number(kind, low, high, above), default=value,
                            help=text)


# every command that reads a model takes --comfyui: the ComfyUI folder whose models it looks in
MODEL_COMMANDS = ("train", "style", "train-decoder", "fid", "label", "curate", "caption", "retrieve",
                  "evaluate-retrieval", "text-sample", "text-story", "audio-train", "adapter-train", "audio-encode")


def add_comfyui_option(sub: argparse._SubParsersAction) -> None:
    env = declared("nodes.bridge", "COMFYUI_ENV")
    for name in MODEL_COMMANDS:
        sub.choices[name].add_argument(
            "--comfyui", help="your ComfyUI folder: models are looked for in its models/ folder (checkpoints, "
            f"atelier/clip, atelier/adain...). Default: ${env}, else the ComfyUI this pack is installed in and "
            "./models")


def use_models_of(args: argparse.Namespace) -> None:
    """Models from the ComfyUI folder given with --comfyui (checked before any work starts)."""
    if getattr(args, "comfyui", None):
        from .nodes import bridge

        bridge.set_comfyui_directory(args.comfyui)


def model_file(text: str, kind: str, what: str) -> Path:
    """A model option: a name in the model folders of ``kind`` (an Atelier kind such as ``adain``, or ComfyUI's
    ``checkpoints``), else a path; the error names every place looked in and how to get the file."""
    from .nodes import bridge

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
    d = declared("core.stylize", "StyleOptions")
    s = sub.add_parser("style", help="style augmentation: every original crossed with every style picture")
    s.add_argument("folder", help="folder of originals (with optional <stem>.txt captions)")
    s.add_argument("--styles", required=True, help="folder of style pictures")
    s.add_argument("--encoder", required=True, help="vgg_normalised.pth (or an Atelier safetensors encoder): a name in "
                   "models/atelier/adain, or a path")
    s.add_argument("--decoder", required=True, help="decoder.pth or a decoder trained by train-decoder: a name in "
                   "models/atelier/adain, or a path")
    s.add_argument("--output", default="output", help="output root folder")
    s.add_argument("--subfolder", default="atelier/styled", help="inside the output root; gets vNNN folders")
    add_numbers(s, int, 0, pairs=(0, "random (original, style) pairs to make; 0: all"),
                seed=(0, "seed of the random pairs"))
    s.add_argument("--no-original", action="store_true", help="do not write the originals themselves")
    add_numbers(s, float, 0, 1, alpha=(d.alpha, "1: all style; 0: the decoder's reconstruction of the content"))
    s.add_argument("--method", choices=declared("core.feature_transfer", "METHODS"), default=d.method,
                   help="adain (mean and std) or efdm (exact feature distribution matching)")
    s.add_argument("--preserve-color", choices=declared("core.color_preservation", "MODES"),
                   default=d.preserve_color, help="keep the original's colours")
    add_numbers(s, int, 64, tile=(d.tile, "pixels; larger pictures run in tiles of about this size (multiple of 8)"))
    add_numbers(s, int, 0, overlap=(d.overlap, "pixels of context around each tile (a multiple of 8)"))
    s.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _style(args: argparse.Namespace) -> int:
    from .core import adain_model, multiply
    from .core.folder_dataset import load_folder
    from .core.style_augment import load_styles, plan_pairs, style_augment
    from .core.stylize import StyleOptions
    from .nodes import bridge

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
    d = declared("training.adain_decoder", "DecoderConfig")
    t = sub.add_parser("train-decoder", help="train or fine-tune an AdaIN decoder (resumes from --run)")
    t.add_argument("content", help="folder of content pictures")
    t.add_argument("styles", help="folder of style pictures")
    t.add_argument("--encoder", required=True, help="vgg_normalised.pth: a name in models/atelier/adain, or a path")
    t.add_argument("--init-decoder", help="decoder to fine-tune (a name in models/atelier/adain, or a path); "
                   "without it, a new one from --seed")
    t.add_argument("--out-dir", required=True, help="where the decoder goes (ComfyUI/models/atelier/adain)")
    t.add_argument("--run", required=True, help="run folder: checkpoints and loss plot; rerun to resume")
    t.add_argument("--name", default="atelier_decoder", help="file name of the decoder (name_2 if taken)")
    add_numbers(t, int, 1, steps=(d.steps, "training steps"), batch_size=(d.batch_size, "pictures per step"),
                resize_to=(d.resize_to, "shorter edge the pictures are resized to"),
                crop=(d.crop, "random square crop of the resized pictures"),
                checkpoint_every=(d.checkpoint_every, "steps between checkpoints"))
    add_numbers(t, int, 0, seed=(d.seed, "seed of the new decoder, the crops and the pairs"))
    add_numbers(t, float, above=0, lr=(d.lr, "Adam learning rate"))
    add_numbers(t, float, 0, lr_decay=(d.lr_decay, "inverse-time learning-rate decay per step"),
                style_weight=(d.style_weight, "weight of the style loss against the content loss"))
    t.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _train_decoder(args: argparse.Namespace) -> int:
    from .core import adain_model
    from .nodes import bridge
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


def _add_fid(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fid", help="FID and KID between two folders of pictures (the FID Inception network)")
    f.add_argument("folder_a", help="first set, say generated samples")
    f.add_argument("folder_b", help="second set, say the originals")
    f.add_argument("--weights", help="pt_inception-2015-12-05-6726825d.pth, or a folder holding it (default: "
                   "models/atelier/fid)")
    add_numbers(f, int, 1, kid_subsets=(100, "KID: how many random subsets are averaged"),
                batch_size=(50, "pictures per Inception forward pass"))
    add_numbers(f, int, 2, kid_subset_size=(1000, "KID: pictures per subset (clipped to the smaller set)"))
    add_numbers(f, int, 0, seed=(0, "seed of KID's subset draws"))
    f.add_argument("--cache", help="feature cache folder (default: OUTPUT/atelier/fid_cache)")
    f.add_argument("--output", default="output", help="output root folder (holds the default cache)")
    f.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _fid(args: argparse.Namespace) -> int:
    from .core import fid
    from .core.image_files import list_images
    from .nodes import bridge
    from .nodes.fid import fid_folders

    bridge.set_output_directory(args.output)
    device = bridge.compute_device(args.device)
    model = fid.load_fid_inception(args.weights or fid_folders(), device)
    cache = Path(args.cache) if args.cache else bridge.output_directory() / "atelier" / "fid_cache"
    a, b = (fid.folder_features(model, folder, cache, args.batch_size, device, bridge.progress(
        len(list_images(folder)), "FID features")) for folder in (args.folder_a, args.folder_b))
    fid_value = fid.fid_from_features(a, b)
    kid, kid_std = fid.kid_from_features(a, b, args.kid_subsets, args.kid_subset_size, args.seed)
    print(f"FID {fid_value:.3f}  KID {kid:.5f} ± {kid_std:.5f}  ({a.shape[0]} vs {b.shape[0]} images; small sets "
          "bias FID upwards)")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    lt = "training.lora_trainer"
    d = declared(lt, "TrainConfig")
    t = sub.add_parser("train", help="train an SD 1.5 LoRA on a folder of images (resumes from --run)")
    t.add_argument("folder", help="training images with optional <stem>.txt captions")
    t.add_argument("--model", required=True, help="SD 1.5 checkpoint file or diffusers folder: a name in "
                   "models/checkpoints, or a path")
    t.add_argument("--loras", required=True, help="where the LoRA file goes (ComfyUI/models/loras)")
    t.add_argument("--run", required=True, help="run folder: checkpoints, samples, loss plot; rerun to resume")
    t.add_argument("--name", default="atelier_lora", help="file name of the LoRA (name_2 if taken)")
    t.add_argument("--trigger", default="", help="trigger word put before every caption")
    t.add_argument("--no-captions", action="store_true", help="ignore caption sidecars")
    add_numbers(t, float, 0, 1, caption_dropout=(0.0, "share of steps trained on an empty caption"))
    add_numbers(t, int, 64, resolution=(512, "training resolution (aspect-ratio buckets of about this area)"))
    t.add_argument("--no-upscale", action="store_true", help="refuse images smaller than their bucket")
    add_numbers(t, int, 1, rank=(d.rank, "LoRA rank"), steps=(d.steps, "optimizer steps"),
                batch_size=(d.batch_size, "pictures per micro-batch"),
                grad_accum=(d.grad_accum, "micro-batches per optimizer step"),
                checkpoint_every=(d.checkpoint_every, "steps between checkpoints"),
                sample_steps=(20, "denoising steps of the sample images"))
    add_numbers(t, int, 0, warmup_steps=(d.warmup_steps, "learning-rate warm-up steps"),
                seed=(d.seed, "seed of the LoRA's start, the noise and the order"),
                sample_every=(0, "steps between sample images; 0: none"))
    add_numbers(t, float, above=0, alpha=(d.alpha, "LoRA alpha (scale alpha / rank)"), lr=(d.lr, "learning rate"),
                text_encoder_lr=(d.text_encoder_lr, "learning rate of the text encoder's LoRA"))
    add_numbers(t, float, 0, 1, dropout=(d.dropout, "dropout inside the LoRA layers"))
    add_numbers(t, float, 0, max_grad_norm=(d.max_grad_norm, "gradient clipping norm; 0: no clipping"),
                min_snr_gamma=(d.min_snr_gamma, "min-SNR loss weighting gamma; 0: plain MSE"),
                noise_offset=(d.noise_offset, "noise offset (darker darks, brighter lights)"))
    t.add_argument("--targets", choices=list(declared(lt, "TARGETS")), default=d.targets,
                   help="which UNet layers get a LoRA")
    t.add_argument("--scheduler", choices=declared(lt, "SCHEDULERS"), default=d.scheduler,
                   help="learning-rate schedule")
    t.add_argument("--optimizer", choices=declared(lt, "OPTIMIZERS"), default=d.optimizer,
                   help="adamw8bit needs bitsandbytes")
    t.add_argument("--mixed-precision", choices=declared(lt, "PRECISIONS"), default=d.mixed_precision,
                   help="fp16/bf16 autocast (CUDA)")
    t.add_argument("--qlora", action="store_true", help="frozen UNet linear layers in 4-bit NF4 (CUDA, bitsandbytes)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="less memory, slower steps")
    t.add_argument("--train-text-encoder", action="store_true", help="also a LoRA on the text encoder's attention")
    t.add_argument("--sample-prompt", action="append", default=[], help="prompt for sample images (repeatable)")
    t.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _train(args: argparse.Namespace) -> int:
    from .core import sd15_checkpoint
    from .core.image_files import list_images
    from .nodes import bridge
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


RECIPE_HELP = """\
--recipe: a JSON object drawn from for each random variant (--random N). Every key is optional:
  hflip, vflip, grayscale   number 0..1: probability of the flip / greyscale
  saturation, brightness, rotation, translate, scale, shear
                            {"p": probability 0..1, "low": number, "high": number}: applied with probability p,
                            its amount drawn uniformly from low..high (saturation: offset on HSV S, -1..1;
                            brightness and scale: factors; rotation and shear: degrees; translate: fraction of
                            the size)
  expand                    true/false: grow the canvas so a rotation keeps the corners
  fill                      [r, g, b], 0..1: colour of uncovered corners
  interpolation             "bilinear" or "nearest"
Example (samples/recipe.json): {"hflip": 0.5, "rotation": {"p": 0.5, "low": -15, "high": 15},
  "brightness": {"p": 0.5, "low": 0.8, "high": 1.2}}"""


def _recipe(path: str | None) -> Any:  # -> core.augment.AugmentSpec
    from .core import augment

    if path is None:
        return augment.AugmentSpec(hflip=0.5, rotation=augment.Range(0.5, -15, 15),
                                   brightness=augment.Range(0.5, 0.8, 1.2), saturation=augment.Range(0.5, -0.15, 0.15))
    return augment.read_recipe(path)


def _multiply(args: argparse.Namespace) -> int:
    """multiply and convert: load (and preprocess) a folder, write it with its variants into a vNNN folder."""
    from .core import multiply, variants
    from .core.colors import parse_color
    from .core.folder_dataset import load_folder
    from .core.image_files import list_images
    from .core.preprocess import PreprocessSpec
    from .nodes import bridge

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
    for skipped in data.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    print(f"wrote {len(written.files)} images from {len(originals)} originals to {written.folder}")
    print(f"manifest: {written.manifest}")
    return 0


def _check_up_front(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what would only fail after long work: names, sub-folders, options that do nothing."""
    if getattr(args, "name", None) is not None:
        safe_name(args.name, "--name")
    if getattr(args, "subfolder", None) is not None:
        safe_subfolder(Path(args.output), args.subfolder)
    for folder in (getattr(args, "out_dir", None), getattr(args, "loras", None)):  # where a trained file goes
        if folder is not None:
            from .core.image_files import check_writable

            check_writable(Path(folder))
    if args.command == "multiply" and args.recipe is not None:
        if not args.random:
            parser.error("--recipe is drawn from for random variants only: give --random N (variants per "
                         "original) with it")
        _recipe(args.recipe)


def _flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """The command's option names as core and node messages spell them (``max_megapixels``) -> the flag."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: a.option_strings[0] for a in sub._actions if a.option_strings and a.dest != "help"}


# how core and node messages name settings: resize 'exact'; 'recursive' or batch_size
_SETTING_VALUE = re.compile(r"(?<![-\w])([a-z][a-z0-9_]*) '([^'\n]*)'")
_SETTING = re.compile(r"(?<![-\w])(?:'([a-z][a-z0-9_]*)'|([a-z][a-z0-9]*_[a-z0-9_]+))(?![\w-])")


def cli_spelling(message: str, flags: dict[str, str]) -> str:
    """Core errors name settings as the node inputs do (turn on 'recursive', lower batch_size, resize 'exact'):
    say them as typed on the command line (--recursive, --batch-size, --resize exact)."""
    def setting_value(match: re.Match[str]) -> str:
        flag = flags.get(match.group(1))
        return f"{flag} {match.group(2)}" if flag else match.group(0)

    def setting(match: re.Match[str]) -> str:
        return flags.get(match.group(1) or match.group(2), match.group(0))

    return _SETTING.sub(setting, _SETTING_VALUE.sub(setting_value, message))


JOBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "multiply": _multiply, "convert": _multiply, "train": _train, "style": _style, "train-decoder": _train_decoder,
    "fid": _fid, **cli_collection.JOBS, **cli_story.JOBS, **cli_audio.JOBS}


def main(argv: Sequence[str] | None = None) -> int:
    from .core.progress import close_bars

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _check_up_front(parser, args)
        use_models_of(args)
        return JOBS[args.command](args)
    except KeyboardInterrupt:
        close_bars()
        print("stopped; run the same command to resume" if args.command in RESUMABLE else "stopped",
              file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # the engine's errors say what to do; no traceback
        close_bars()
        print(f"atelier: {cli_spelling(str(exc), _flags(parser, args.command))}", file=sys.stderr)
        return 2
