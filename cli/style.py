"""Style commands: style (Style Augmentation into a new version folder) and train-decoder (AdaIN decoder)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.shared.output_paths import safe_name, safe_subfolder
from .common import add_numbers, declared, model_file


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_style(sub)
    _add_train_decoder(sub)


def _add_style(sub: argparse._SubParsersAction) -> None:
    d = declared("core.style.stylize", "StyleOptions")
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
    s.add_argument("--method", choices=declared("core.style.feature_transfer", "METHODS"), default=d.method,
                   help="adain (mean and std) or efdm (exact feature distribution matching)")
    s.add_argument("--preserve-color", choices=declared("core.style.color_preservation", "MODES"),
                   default=d.preserve_color, help="keep the original's colours")
    add_numbers(s, int, 64, tile=(d.tile, "pixels; larger pictures run in tiles of about this size (multiple of 8)"))
    add_numbers(s, int, 0, overlap=(d.overlap, "pixels of context around each tile (a multiple of 8)"))
    s.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _style(args: argparse.Namespace) -> int:
    from ..core.dataset import multiply
    from ..core.dataset.folder_dataset import load_folder
    from ..core.style import adain_model
    from ..core.style.style_augment import load_styles, plan_pairs, style_augment
    from ..core.style.stylize import StyleOptions
    from ..nodes import bridge

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
    d = declared("training.style.adain_decoder", "DecoderConfig")
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
    from ..core.style import adain_model
    from ..nodes import bridge
    from ..training.style import adain_decoder

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


JOBS = {"style": _style, "train-decoder": _train_decoder}
