"""The LoRA trainer's command: train (SD 1.5 LoRA on a folder of pictures, resumable with --run)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import TrainingRun, add_launch_options, add_numbers, declared, model_file


def add_parsers(sub: argparse._SubParsersAction) -> None:
    lt = "training.sd15.lora_trainer"
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
                   help="which layers get a LoRA: attention (to_q/k/v/out), all_linear, all_linear_and_conv, or "
                   "kohya_default (kohya sd-scripts' default: transformer blocks' attention, feed-forward, "
                   "proj_in/out; with --train-text-encoder also the text encoder's MLP)")
    t.add_argument("--scheduler", choices=declared(lt, "SCHEDULERS"), default=d.scheduler,
                   help="learning-rate schedule")
    t.add_argument("--optimizer", choices=declared(lt, "OPTIMIZERS"), default=d.optimizer,
                   help="adamw8bit needs bitsandbytes")
    t.add_argument("--mixed-precision", choices=declared(lt, "PRECISIONS"), default=d.mixed_precision,
                   help="fp16/bf16 autocast (CUDA)")
    t.add_argument("--qlora", action="store_true", help="frozen UNet linear layers in 4-bit NF4 (CUDA, bitsandbytes)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="less memory, slower steps")
    t.add_argument("--train-text-encoder", action="store_true", help="also a LoRA on the text encoder's attention (and "
                   "MLP with --targets kohya_default)")
    t.add_argument("--sample-prompt", action="append", default=[], help="prompt for sample images (repeatable)")
    t.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    add_launch_options(t)


def run_train(args: argparse.Namespace) -> int:
    from ..core.dataset.image_files import list_images
    from ..core.sd15 import checkpoint as sd15_checkpoint
    from ..training import distributed
    from ..training.sd15 import lora_job
    from ..training.sd15.lora_trainer import TrainConfig

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
    run = TrainingRun(args, lambda: config.steps + len(list_images(args.folder)), "training")
    with run:
        lora_job.check_device(config, run.device)  # before the model loads
        distributed.check_batch(config.batch_size, "--batch-size")
        parts, weights = sd15_checkpoint.load(model_file(args.model, "checkpoints", "SD 1.5 checkpoint"))
        result = lora_job.run(parts, job, Path(args.loras), Path(args.run), run.device, lora_job.model_hash(weights),
                              run.progress, on_loss=run.on_loss)
    run.finished({"lora": str(result.lora_path), "steps": config.steps, "loss": result.losses[-1],
                  "resumed": result.resumed})
    if run.main:
        for warning in result.warnings:
            print(f"note: {warning}", file=sys.stderr)
        print(result.report())
    return 0


JOBS = {"train": run_train}
