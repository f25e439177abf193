"""The style part's diffusion form: virtual-data (SD 1.5 conditioned on each original's image embedding and a list of
change prompts, written into a new version folder).

    python atelier_cli.py virtual-data ORIGINALS --model SD15 --adapter ADAPTER --clip CLIP --change "in a forest" \
        --change "at night" [--samples 2] [--trigger sks] [--lora FIRST_LORA] --output OUT

Without ComfyUI the pictures are drawn with diffusers' pipeline (DDIM) on the pack's SD 1.5 parts; inside ComfyUI
the node Atelier Virtual Data (SD 1.5) draws them with ComfyUI's own sampler and VAE.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from .audio import _PRECISIONS
    from .common import add_numbers, declared

    d = declared("core.sd15.virtual_data", "VirtualDataSettings")
    v = sub.add_parser("virtual-data", help="virtual data in the originals' style: SD 1.5 conditioned on each "
                       "original's image embedding and change prompts, into a new vNNN folder")
    v.add_argument("folder", help="folder of originals (with optional <stem>.txt captions)")
    v.add_argument("--model", required=True, help="SD 1.5 checkpoint file or diffusers folder: a name in "
                   "models/checkpoints, or a path")
    v.add_argument("--adapter", required=True, help="embedding adapter written by adapter-train: a name in "
                   "models/atelier/embedding_adapters, or a path")
    v.add_argument("--clip", default=declared("core.curator.clip_model", "DEFAULT_CLIP"),
                   help="the image encoder the adapter was trained with: a CLIP folder, name or cached HF id")
    v.add_argument("--change", action="append", help="a change prompt such as 'in a forest' "
                   "(repeatable); each original is drawn with each")
    v.add_argument("--changes-file", help="a text file of change prompts, one per line (added to --change)")
    v.add_argument("--trigger", default=d.trigger, help="trigger word put before each change prompt (prompt and "
                   "caption)")
    v.add_argument("--negative", default="", help="negative prompt")
    v.add_argument("--lora", help="a first LoRA (fine-tuned on the originals) merged into SD 1.5 before sampling: "
                   "a name in models/loras, or a path")
    add_numbers(v, float, 0, 5, lora_strength=(1.0, "strength of --lora (as LoraLoader's)"),
                strength=(1.0, "scale of the adapter's tokens; 0: the change prompt alone"))
    add_numbers(v, int, 1, samples=(d.samples, "pictures per original and change prompt"),
                steps=(25, "DDIM denoising steps"))
    add_numbers(v, int, 64, width=(d.width, "picture width (multiple of 8)"),
                height=(d.height, "picture height (multiple of 8)"))
    add_numbers(v, int, 0, seed=(d.seed, "seed of the pictures (the same seed gives the same pixels)"))
    add_numbers(v, float, 0, 30, guidance=(7.0, "classifier-free guidance scale"))
    v.add_argument("--no-original", action="store_true", help="do not write the originals themselves")
    v.add_argument("--output", default="output", help="output root folder")
    v.add_argument("--subfolder", default="atelier/virtual", help="inside the output root; gets vNNN folders")
    v.add_argument("--precision", default="auto", choices=_PRECISIONS,
                   help="SD 1.5 and the image encoder: auto is fp16 on CUDA, fp32 on the CPU")
    v.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")


def run_virtual_data(args: argparse.Namespace) -> int:
    import torch

    from ..core.dataset import multiply
    from ..core.dataset.folder_dataset import load_folder
    from ..core.sd15 import checkpoint as sd15_checkpoint
    from ..core.sd15 import lora_file
    from ..core.sd15 import virtual_data as vd
    from ..core.sd15.embedding_adapter import load_adapter
    from ..core.shared.output_paths import safe_subfolder
    from ..nodes import bridge
    from .audio import _image_encoder
    from .common import model_file

    changes = list(args.change or [])
    if args.changes_file:
        changes += vd.parse_changes(Path(args.changes_file).read_text(encoding="utf-8"))
    settings = vd.VirtualDataSettings(tuple(changes), args.samples, args.width, args.height, args.seed, args.trigger,
                                      not args.no_original)
    data = load_folder(args.folder)
    originals = [multiply.Original(i.image, i.stem, i.caption, str(i.path)) for i in data.images]
    bridge.set_output_directory(args.output)
    parent = safe_subfolder(bridge.output_directory(), args.subfolder)
    vd.check_disk(parent, settings.pictures(len(originals)), args.width, args.height)  # before any model loads
    adapter = load_adapter(model_file(args.adapter, "embedding_adapters", "embedding adapter"))
    lora = bridge.find_model_file("loras", args.lora, "LoRA", "train one with `train` (--loras)") if args.lora \
        else None
    device = bridge.compute_device(args.device)
    embeds = adapter.embed_images(_image_encoder(args), [o.image for o in originals])
    half = args.precision == "fp16" or (args.precision == "auto" and device.type == "cuda")
    dtype = {"bf16": torch.bfloat16}.get(args.precision, torch.float16 if half else torch.float32)
    parts, _ = sd15_checkpoint.load(model_file(args.model, "checkpoints", "SD 1.5 checkpoint"), dtype)
    details = {"steps": args.steps, "guidance": args.guidance, "strength": args.strength, "negative": args.negative,
               "sampler": "diffusers DDIM", "adapter": adapter.file}
    if lora is not None:
        patched = lora_file.apply_file(parts.unet, parts.text_encoder, lora, args.lora_strength)
        details.update(lora=lora.name, lora_strength=args.lora_strength)
        print(f"merged {lora.name} into {patched} layers (strength {args.lora_strength})")
    draw = vd.diffusers_draw(parts, adapter, args.strength, args.steps, args.guidance, args.negative, device)
    written = vd.write_virtual_data(originals, embeds, settings, draw, parent, details,
                                    bridge.progress(len(originals) * len(settings.prompts), "drawing"))
    for skipped in data.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    print(f"wrote {len(written.files)} pictures ({len(originals)} originals x {len(settings.prompts)} changes x "
          f"{settings.samples} samples{' + the originals' if settings.include_original else ''}) to {written.folder}")
    return 0


JOBS = {"virtual-data": run_virtual_data}
