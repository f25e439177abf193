"""Style commands: style (Style Augmentation into a new version folder) and train-decoder (AdaIN decoder)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.shared.output_paths import safe_name, safe_subfolder
from .common import TrainingRun, add_launch_options, add_numbers, declared, model_file


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_style(sub)
    _add_train_decoder(sub)


def _add_style(sub: argparse._SubParsersAction) -> None:
    d = declared("core.style.stylize", "StyleOptions")
    a = declared("core.style.style_augment", "AugmentSpec")
    s = sub.add_parser("style", help="style augmentation: virtual pictures in the originals' style (content "
                       "pictures painted in each original's style), or the originals restyled")
    s.add_argument("folder", help="folder of originals (with optional <stem>.txt captions)")
    s.add_argument("--direction", choices=declared("core.style.style_augment", "DIRECTIONS"), default=a.direction,
                   help="in_originals_style: the --content-folder pictures painted in the originals' style; "
                   "restyle_originals: the originals painted in the --styles pictures' styles")
    s.add_argument("--content-folder", help="in_originals_style: folder of content pictures (varied photographs, "
                   "5-20 per original, with optional <stem>.txt captions; sub-folders included)")
    s.add_argument("--styles", dest="style_folder", help="restyle_originals: folder of style pictures")
    s.add_argument("--encoder", required=True, help="vgg_normalised.pth (or an Atelier safetensors encoder): a name in "
                   "models/atelier/adain, or a path")
    s.add_argument("--decoder", required=True, help="decoder.pth or a decoder trained by train-decoder: a name in "
                   "models/atelier/adain, or a path")
    s.add_argument("--output", default="output", help="output root folder")
    s.add_argument("--subfolder", default="atelier/styled", help="inside the output root; gets vNNN folders")
    add_numbers(s, int, 0, pairs=(a.pairs, "random (content, style) pairs to make; 0: all"),
                seed=(a.seed, "seed of the random pairs"))
    s.add_argument("--no-original", action="store_true", help="do not write the originals themselves")
    s.add_argument("--trigger", default=a.trigger, help="in_originals_style: word naming the originals' style, put "
                   "before each virtual picture's caption")
    s.add_argument("--whole-set", action="store_true", help="mix all style pictures (the originals, in "
                   "in_originals_style) into one style target: one picture per content picture")
    s.add_argument("--style-weights", default="", help="with --whole-set: one weight per style picture in their "
                   "order, like '2, 1, 1'; empty: equal")
    add_numbers(s, float, 0, 1, alpha=(d.alpha, "1: all style; 0: the decoder's reconstruction of the content"))
    s.add_argument("--method", choices=declared("core.style.feature_transfer", "METHODS"), default=d.method,
                   help="adain (mean and std) or efdm (exact feature distribution matching)")
    s.add_argument("--preserve-color", choices=declared("core.style.color_preservation", "MODES"),
                   default=d.preserve_color, help="keep the content pictures' colours")
    add_numbers(s, int, 64, tile=(d.tile, "pixels; larger pictures run in tiles of about this size (multiple of 8)"))
    add_numbers(s, int, 0, overlap=(d.overlap, "pixels of context around each tile (a multiple of 8)"))
    s.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def _style(args: argparse.Namespace) -> int:
    from ..core.style import adain_model
    from ..core.style.style_augment import AugmentSpec, load_contents, load_pictures, plan, style_augment, summary
    from ..core.style.stylize import StyleOptions, parse_weights
    from ..nodes import bridge

    options = StyleOptions(args.alpha, args.method, args.preserve_color, args.tile, args.overlap)
    weights = parse_weights(args.style_weights)
    spec = AugmentSpec(args.direction, args.pairs, args.seed, not args.no_original, args.trigger, args.whole_set,
                       None if weights is None else tuple(weights))
    inside = args.direction == "in_originals_style"
    if not (args.content_folder if inside else args.style_folder):
        raise ValueError("give --content-folder: a folder of photographs to paint in the originals' style (or "
                         "--direction restyle_originals with --styles)" if inside else
                         "give --styles: a folder of style pictures to paint the originals in")
    originals, skipped = load_pictures(args.folder, "folder of originals")
    others, skipped_others = load_contents(args.content_folder) if inside else \
        load_pictures(args.style_folder, "style_folder")
    model = adain_model.load_model(model_file(args.encoder, "adain", "encoder file"),
                                   model_file(args.decoder, "adain", "decoder file"))
    bridge.set_output_directory(args.output)
    parent = safe_subfolder(bridge.output_directory(), args.subfolder)
    device = bridge.compute_device(args.device)
    written = style_augment(model.to(device), originals, others, parent, options, spec, device,
                            bridge.progress(len(plan(originals, others, spec)), "stylizing"))
    for skip in skipped + skipped_others:
        print(f"skipped {skip.path}: {skip.reason}", file=sys.stderr)
    print(f"{summary(written, originals, others, spec)} to {written.folder}")
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
    add_launch_options(t)


def _train_decoder(args: argparse.Namespace) -> int:
    from ..core.style import adain_model
    from ..training import distributed
    from ..training.style import adain_decoder

    config = adain_decoder.DecoderConfig(args.steps, args.batch_size, args.lr, args.lr_decay, args.style_weight,
                                         args.resize_to, args.crop, args.seed, args.checkpoint_every)
    name = safe_name(args.name, "decoder name")
    run = TrainingRun(args, lambda: config.steps, "decoder")
    with run:
        distributed.check_batch(config.batch_size, "--batch-size")
        init = model_file(args.init_decoder, "adain", "decoder file") if args.init_decoder else None
        model = adain_model.load_model(model_file(args.encoder, "adain", "encoder file"), init, args.seed)
        run_dir = Path(args.run)
        result = adain_decoder.train_decoder(model, args.content, args.styles, config, run_dir, run.device,
                                             run.progress)
        model.to("cpu")

        def write() -> Path:  # rank 0 alone; every rank gets the path
            adain_decoder.loss_plot(result, config).save(run_dir / "loss.png")
            return adain_decoder.save_trained(model, result, config, Path(args.out_dir), name,
                                              str(init) if init else "scratch")

        path = distributed.from_rank0(write)
    content, style = result.losses[-1]
    run.finished({"decoder": str(path), "steps": config.steps, "loss": content + config.style_weight * style,
                  "resumed": result.resumed})
    if run.main:
        for skipped in result.skipped:
            print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
        if result.resumed:
            print(result.resumed)
        print(f"content loss {content:.4f}, style loss {style:.4f} after {result.step} steps")
        print(f"wrote {path}")
    return 0


JOBS = {"style": _style, "train-decoder": _train_decoder}
