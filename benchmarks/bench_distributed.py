"""Data-parallel LoRA training: step time of W processes against 1 process at the same global batch.

Each configuration runs the pack's LoRA trainer (``training/sd15/lora_trainer.train_lora``, latents encoded by
shares as in ``atelier_cli.py train``) on an SD-shaped model built from a config (identical on every rank) and
the shipped sample pictures, in fresh processes: 1 process with ``python``, W processes through torchrun (gloo on
the CPU, nccl on CUDA). The median time of an optimizer step after ``--warmup`` steps is measured on rank 0.

On the CPU both sides get the same cores: 1 process with ``--threads`` threads against W processes with
``--threads / W`` each; the ratio (W processes / 1 process, at the same global batch) is the overhead of the
split and the gradient all-reduce (1.0: none; below 1: the split paid off); with ``--repeats`` the sides take
turns and each keeps its fastest run, which shields the ratio from a load that comes and goes. On CUDA it
reports steps per second on 1 GPU and on all of them (global batch ``--batch-size`` on 1 GPU, and the same per
GPU on all of them, the way one adds GPUs to go faster).

    python benchmarks/bench_distributed.py                       # CPU, 2 processes, small model
    python benchmarks/bench_distributed.py --device cuda --model v1-5-pruned-emaonly.safetensors --resolution 512
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"tiny": (32, 64), "small": (64, 128)}  # UNet block widths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--processes", type=int, default=2, help="W on the CPU; on CUDA every GPU is used")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all (split over W)")
    p.add_argument("--also-one-thread", action="store_true", help="also time 1 process with 1 thread (CPU)")
    p.add_argument("--repeats", type=int, default=1, help="CPU: runs of each side, taking turns; the fastest counts")
    p.add_argument("--size", choices=tuple(SIZES), default="small", help="the config-built model (without --model)")
    p.add_argument("--model", help="an SD 1.5 checkpoint file or diffusers folder instead of a config-built model")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4, help="the global batch (CPU); per GPU on CUDA")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one configuration, write its times here
    return p.parse_args(argv)


def _parts(args: argparse.Namespace):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from atelier.core.sd15 import checkpoint as sd15_checkpoint
    from atelier.core.sd15.pipeline import SD15Parts
    from atelier.core.sd15.tokenizer import sd15_tokenizer

    if args.model:
        return sd15_checkpoint.load(Path(args.model))[0]
    torch.manual_seed(0)  # the same weights on every rank
    return SD15Parts(
        unet=UNet2DConditionModel(sample_size=args.resolution // 8, layers_per_block=1,
                                  block_out_channels=SIZES[args.size],
                                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=768,
                                  attention_head_dim=8),
        vae=AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1),
        text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=256, num_hidden_layers=1,
                                                  num_attention_heads=12, hidden_act="quick_gelu")),
        tokenizer=sd15_tokenizer())


def worker(args: argparse.Namespace) -> None:
    """One configuration, in this process (one rank of it under torchrun)."""
    sys.path.insert(0, str(ROOT))
    from atelier_cli import load_pack

    load_pack()
    import torch

    from atelier.core.dataset.folder_dataset import load_folder
    from atelier.core.sd15 import pipeline as sd15
    from atelier.training import distributed
    from atelier.training.sd15 import latents, lora_trainer

    device = distributed.init(torch.device(args.device))
    parts = _parts(args)
    pictures = load_folder(ROOT / "samples" / "originals").images
    parts.vae.to(device)
    parts.text_encoder.to(device)
    data = latents.build([p.image for p in pictures], [p.caption or "" for p in pictures], parts.vae,
                         lambda texts: sd15.encode_prompts(parts.text_encoder, parts.tokenizer, texts),
                         args.resolution)
    parts.vae.to("cpu")
    parts.text_encoder.to("cpu")
    config = lora_trainer.TrainConfig(rank=8, steps=args.steps, batch_size=args.batch_size, seed=1,
                                      checkpoint_every=10**6, mixed_precision=args.mixed_precision)
    parts.unet.to(device, lora_trainer.autocast_dtype(config))
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as run:
        distributed.barrier()
        stamps.append(time.perf_counter())
        lora_trainer.train_lora(parts.unet, data, config, Path(run), on_step=lambda s, loss: stamps.append(
            time.perf_counter()))
    if distributed.is_main():
        times = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup:]
        Path(args.worker).write_text(json.dumps({"median_s": statistics.median(times),
                                                 "world_size": distributed.world_size()}))
    distributed.close()


def measure(args: argparse.Namespace, processes: int, batch: int, threads: int | None) -> dict:
    """Run one configuration in fresh processes and return rank 0's figures."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "times.json"
        script = [str(Path(__file__).resolve()), *_forwarded(args), "--batch-size", str(batch), "--worker", str(out)]
        launcher = [sys.executable] if processes == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--"]
        env = {**os.environ, "LOGLEVEL": "WARNING"}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        done = subprocess.run([*launcher, *script], env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"{processes}-process run failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def _forwarded(args: argparse.Namespace) -> list[str]:
    forwarded = ["--device", args.device, "--size", args.size, "--resolution", str(args.resolution), "--steps",
                 str(args.steps), "--warmup", str(args.warmup), "--mixed-precision", args.mixed_precision]
    return forwarded + (["--model", args.model] if args.model else [])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.steps <= args.warmup:
        raise SystemExit("--steps must be above --warmup")
    if args.device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if gpus == 0:
            print("nothing measured: no CUDA GPU on this machine")
            return 0
        one = measure(args, 1, args.batch_size, None)
        print(f"1 GPU: {1 / one['median_s']:.2f} steps/s (batch {args.batch_size})")
        if gpus > 1:
            every = measure(args, gpus, args.batch_size * gpus, None)
            print(f"{gpus} GPUs: {1 / every['median_s']:.2f} steps/s (global batch {args.batch_size * gpus}); "
                  f"pictures per second x{gpus * one['median_s'] / every['median_s']:.2f} of 1 GPU")
        return 0
    w = args.processes
    per = args.threads // w
    if per < 1:
        raise SystemExit(f"--threads {args.threads} cannot be split over {w} processes: give at least {w}")
    sides = {"one": (1, per * w), "many": (w, per)} | ({"single": (1, 1)} if args.also_one_thread else {})
    best: dict[str, float] = {}
    for _ in range(args.repeats):  # the sides take turns, so a load that comes and goes falls on each alike
        for side, (processes, threads) in sides.items():
            seconds = measure(args, processes, args.batch_size, threads)["median_s"]
            best[side] = min(best.get(side, seconds), seconds)
    print(f"CPU, global batch {args.batch_size}, model {args.model or args.size}, {args.resolution} px, {per * w} "
          f"threads in all")
    print(f"1 process ({per * w} thread{'s' * (per * w != 1)}): {best['one'] * 1000:.1f} ms/step")
    if "single" in best:  # on a busy machine threads can cost more than they give
        print(f"1 process (1 thread): {best['single'] * 1000:.1f} ms/step")
    print(f"{w} processes (gloo, {per} thread{'s' * (per != 1)} each): {best['many'] * 1000:.1f} ms/step")
    print(f"ratio {w} processes / 1 process: {best['many'] / best['one']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
