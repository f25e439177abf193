"""LoRA training step time and peak memory: the pack's trainer against diffusers' reference loop.

The reference is the loop of diffusers' ``examples/text_to_image/train_text_to_image_lora.py``,
written out without accelerate: frozen UNet, VAE and text encoder in the weight dtype, peft LoRA on
to_q/to_k/to_v/to_out.0 (``unet.add_adapter``), LoRA parameters in fp32, AdamW, and every step the
VAE encodes the batch, the text encoder encodes its captions, then noise, a random timestep, the
UNet under autocast, MSE, backward (loss-scaled in fp16), clipping, step. The pack's trainer runs
the same model, pictures, captions, rank, precision, batch size and device; it encodes latents and
captions once before its loop (that setup is timed separately).

Each side runs in a fresh process so peak memory is its own: on CUDA ``max_memory_allocated``
during the loop, on the CPU the process's peak resident set. Reported: median step time, peak
memory, and ours / reference ratios (goal: both at most 1.0).

Run: ``python benchmarks/bench_lora_step.py`` (tiny SD-shaped model, CPU) or on a GPU
``python benchmarks/bench_lora_step.py --model v1-5-pruned-emaonly.safetensors --device cuda
--resolution 512 --mixed-precision fp16 --optimizer adamw8bit --gradient-checkpointing``.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from atelier_cli import load_pack  # noqa: E402

load_pack()
from atelier.core.dataset.folder_dataset import load_folder  # noqa: E402
from atelier.core.sd15 import checkpoint as sd15_checkpoint  # noqa: E402
from atelier.core.sd15 import pipeline as sd15  # noqa: E402
from atelier.training.sd15 import latents as train_data  # noqa: E402
from atelier.training.sd15 import lora_trainer  # noqa: E402

PICTURES = ROOT / "samples" / "originals"


def small_sd15() -> sd15.SD15Parts:
    """An SD 1.5-shaped model small enough for a CPU benchmark (SD 1.5's heads, norms and text width)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from atelier.core.sd15.tokenizer import sd15_tokenizer

    torch.manual_seed(0)
    return sd15.SD15Parts(
        unet=UNet2DConditionModel(sample_size=16, layers_per_block=1, block_out_channels=(64, 128),
                                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=768,
                                  attention_head_dim=8),
        vae=AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1),
        text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=256, num_hidden_layers=2,
                                                  num_attention_heads=12, hidden_act="quick_gelu")),
        tokenizer=sd15_tokenizer())


def _pictures(args: argparse.Namespace) -> tuple[list[torch.Tensor], list[str]]:
    """The same square crops and captions for both sides (the reference has no buckets)."""
    size = (args.resolution, args.resolution)
    loaded = load_folder(PICTURES).images
    images = [train_data.fit_to_bucket(i.image, size) for i in loaded]
    captions = [train_data.caption_for(i.caption, "atl", True) for i in loaded]
    return images, captions


def _peak(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _optimizer(params, args):
    if args.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    return torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)


def run_reference(parts: sd15.SD15Parts, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    from peft import LoraConfig

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision, torch.float32)
    unet, vae, text_encoder = parts.unet, parts.vae, parts.text_encoder
    for model in (unet, vae, text_encoder):
        model.requires_grad_(False)
        model.to(device, dtype=weight_dtype)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    optimizer = _optimizer(params, args)
    scheduler = lora_trainer.noise_scheduler()
    scaler = torch.amp.GradScaler("cuda", enabled=args.mixed_precision == "fp16" and device.type == "cuda")
    images, captions = _pictures(args)
    pixels = torch.stack(images).permute(0, 3, 1, 2) * 2 - 1
    ids = parts.tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    gen = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    unet.train()
    for _ in range(args.steps):
        start = time.perf_counter()
        idx = torch.randint(0, len(images), (args.batch_size,), generator=gen)
        latents = vae.encode(pixels[idx].to(device, weight_dtype)).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (args.batch_size,), device=device).long()
        noisy = scheduler.add_noise(latents, noise, t)
        cond = text_encoder(ids[idx].to(device), return_dict=False)[0]
        with torch.autocast(device.type, dtype=weight_dtype, enabled=weight_dtype != torch.float32):
            pred = unet(noisy, t, cond, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float(), reduction="mean")
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times[1:]), "peak_mib": _peak(device), "setup_s": 0.0}


def run_ours(parts: sd15.SD15Parts, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision)
    images, captions = _pictures(args)
    setup = time.perf_counter()
    parts.vae.to(device)
    parts.text_encoder.to(device)
    data = train_data.build(images, captions, parts.vae,
                            lambda texts: sd15.encode_prompts(parts.text_encoder, parts.tokenizer, texts),
                            args.resolution)
    parts.vae.to("cpu")
    parts.text_encoder.to("cpu")
    parts.unet.to(device, weight_dtype)
    setup = time.perf_counter() - setup
    config = lora_trainer.TrainConfig(rank=args.rank, alpha=args.rank, steps=args.steps, batch_size=args.batch_size,
                                      optimizer=args.optimizer, mixed_precision=args.mixed_precision,
                                      gradient_checkpointing=args.gradient_checkpointing,
                                      checkpoint_every=10**9)
    stamps = []

    def on_step(step: int, loss: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as run_dir:
        stamps.append(time.perf_counter())
        lora_trainer.train_lora(parts.unet, data, config, Path(run_dir), on_step=on_step)
    steps = [b - a for a, b in zip(stamps, stamps[1:])][1:-1]  # first: warm-up; last: the final checkpoint
    return {"step_s": statistics.median(steps), "peak_mib": _peak(device), "setup_s": setup}


def _child(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    parts = sd15_checkpoint.load(args.model)[0] if args.model else small_sd15()
    result = (run_ours if args.which == "ours" else run_reference)(parts, args, device)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="SD 1.5 checkpoint file or diffusers folder (default: a small random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--mixed-precision", choices=lora_trainer.PRECISIONS, default="no")
    parser.add_argument("--optimizer", choices=lora_trainer.OPTIMIZERS, default="adamw")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--which", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.which:
        _child(args)
        return
    results = {}
    for which in ("reference", "ours"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--which", which], capture_output=True,
                             text=True, check=True)
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, ref = results["ours"], results["reference"]
    settings = {k: v for k, v in vars(args).items() if k != "which"}
    print(f"settings: {json.dumps(settings)}")
    print(f"reference: {ref['step_s'] * 1000:.1f} ms/step, peak {ref['peak_mib']:.0f} MiB")
    print(f"ours:      {ours['step_s'] * 1000:.1f} ms/step, peak {ours['peak_mib']:.0f} MiB "
          f"(latents and captions encoded once in {ours['setup_s']:.2f} s)")
    print(f"ratio ours/reference: step time {ours['step_s'] / ref['step_s']:.2f}x, "
          f"peak memory {ours['peak_mib'] / ref['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
