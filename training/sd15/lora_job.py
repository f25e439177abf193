"""A whole LoRA run: originals (and their augmented or styled copies) in, a LoRA file out.

Checks everything it can before the loop starts (images, captions, folders, settings), encodes
latents and prompts once and moves the VAE and text encoder off the GPU, trains with
checkpoints and resume, draws sample images every N steps, and writes the LoRA into the
``loras`` folder with kohya keys, the true alpha and string metadata.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ...core.dataset.folder_dataset import FolderDataset, load_folder
from ...core.dataset.image_files import check_writable
from ...core.sd15 import lora_file
from ...core.sd15 import pipeline as sd15
from ...core.shared import plots
from ...core.shared.bitsandbytes_support import require_bitsandbytes
from ...core.shared.output_paths import safe_name
from ...core.shared.progress import Progress, SilentProgress
from ...core.shared.state_dicts import file_sha256
from .. import distributed
from . import latents as train_data
from . import lora_trainer

TRAINER_VERSION = "atelier-lora 0.1"


@dataclass(frozen=True)
class LoraJob:
    images: str  # folder of images with optional <stem>.txt captions ("" when the pictures come as tensors)
    name: str = "atelier_lora"
    trigger: str = ""
    use_captions: bool = True
    caption_dropout: float = 0.0
    resolution: int = 512
    bucket_step: int = 64
    upscale_small: bool = True
    train: lora_trainer.TrainConfig = field(default_factory=lora_trainer.TrainConfig)
    sample_every: int = 0  # 0: samples only at the end
    sample_prompts: tuple[str, ...] = ()
    sample_steps: int = 20
    sample_seed: int = 0


@dataclass
class JobResult:
    lora_path: Path
    losses: list[float]
    loss_plot: Image.Image
    samples: list[Image.Image]
    warnings: list[str]
    resumed: str  # "resumed from step S" (and the world sizes when they differ), or "" for a fresh run
    params: lora_trainer.ParameterCount

    def report(self) -> str:
        """What the run did, for the console and the node's report: resumed step, parameters, loss, file."""
        lines = [self.resumed] if self.resumed else []
        lines += [self.params.summary(),
                  f"loss {self.losses[0]:.4f} -> {self.losses[-1]:.4f} over {len(self.losses)} steps",
                  f"wrote {self.lora_path}"]
        return "\n".join(lines)


def model_hash(path: Path | None) -> str:
    """sha256 of the base model's weights file, as a short hex string ('unknown' without a file)."""
    return file_sha256(path) if path is not None and path.is_file() else "unknown"


def run_name(job: LoraJob, pictures_digest: str, base_model_hash: str) -> str:
    """``<name>-<key>``: the key changes with the settings (not the number of steps or the sampling), the
    pictures and the base model, so running the same job again finds its checkpoint and resumes."""
    settings = {k: v for k, v in asdict(job).items()
                if k not in ("sample_every", "sample_prompts", "sample_steps", "train")}
    key = json.dumps([job.train.fingerprint(), pictures_digest, base_model_hash, settings], sort_keys=True)
    return f"{safe_name(job.name, 'LoRA name')}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@torch.no_grad()
def sample_images(parts: sd15.SD15Parts, prompts: list[str], seed: int, steps: int, size: int) -> list[Image.Image]:
    """Generate with the LoRA-patched UNet through diffusers' SD pipeline and a DDIM scheduler."""
    device = next(parts.unet.parameters()).device
    text_device, text_training = next(parts.text_encoder.parameters()).device, parts.text_encoder.training
    parts.text_encoder.eval()
    pipe = sd15.ddim_pipeline(parts, device)
    was_training = parts.unet.training
    parts.unet.eval()
    images = []
    dtype = next(p for n, p in parts.unet.named_parameters() if "lora_" not in n).dtype
    for i, prompt in enumerate(prompts):
        gen = torch.Generator(device="cpu").manual_seed(seed + i)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):  # a half-precision base
            images += pipe(prompt, num_inference_steps=steps, generator=gen, height=size, width=size).images
    parts.unet.train(was_training)
    parts.vae.to("cpu")
    parts.text_encoder.to(text_device).train(text_training)  # back where the loop (if any) needs it
    return images


def attention_backend(unet: torch.nn.Module, device: torch.device) -> tuple[str, str | None]:
    """xformers' memory-efficient attention where it is installed and the UNet trains on CUDA, else PyTorch
    SDPA (diffusers' default); returns the backend and, when an installed xformers failed, why."""
    if device.type != "cuda" or importlib.util.find_spec("xformers") is None:
        return "sdpa", None
    try:
        unet.enable_xformers_memory_efficient_attention()
    except Exception as exc:  # noqa: BLE001 - an xformers build that does not match this torch or GPU
        return "sdpa", f"xformers is installed but unusable here ({exc}); PyTorch SDPA attention is used"
    return "xformers", None


def check_device(config: lora_trainer.TrainConfig, device: torch.device) -> None:
    """What the optimizer and quantization settings need, checked before any long work."""
    if config.qlora:
        if device.type != "cuda":
            raise ValueError(f"QLoRA (4-bit NF4 base) runs on a CUDA GPU only, not on {device.type}; "
                             "turn qlora off, or use 8-bit AdamW and gradient checkpointing to save memory")
        require_bitsandbytes("QLoRA")
    if config.optimizer == "adamw8bit":
        require_bitsandbytes("8-bit AdamW")


def run(parts: sd15.SD15Parts, job: LoraJob, loras_dir: Path, run_dir: Path, device: torch.device | str = "cpu",
        base_model_hash: str = "unknown", progress: Progress | None = None,
        dataset: FolderDataset | None = None, on_loss: Callable[[int, float], None] | None = None) -> JobResult:
    """Train a LoRA on ``dataset`` (by default the folder ``job.images``) and save it into ``loras_dir``;
    checkpoints live in ``run_dir``. ``on_loss(step, loss)`` after every optimizer step.

    As one rank of a process group (training/distributed.py) every rank trains its share of each batch; rank 0
    alone writes checkpoints, samples, the loss plot and the LoRA file, and every rank returns its result."""
    device = torch.device(device)
    check_device(job.train, device)
    safe_name(job.name, "LoRA name")
    lora_trainer.targeted_layers(parts.unet, job.train)
    if job.train.train_text_encoder:
        lora_trainer.targeted_layers(parts.text_encoder, job.train, text_encoder=True)
    dataset = dataset or load_folder(job.images)
    check_writable(loras_dir)
    check_writable(run_dir)
    prompts = [train_data.caption_for(i.caption, job.trigger, job.use_captions) for i in dataset.images]
    progress = progress or SilentProgress(len(dataset.images) + job.train.steps)

    parts.vae.to(device)
    parts.text_encoder.to(device)

    train_te = job.train.train_text_encoder

    def encode(texts: list[str]) -> torch.Tensor:
        if train_te:  # the text encoder trains too: keep token ids, encoded every step
            return sd15.tokenize(parts.tokenizer, texts)
        return sd15.encode_prompts(parts.text_encoder, parts.tokenizer, texts)

    data = train_data.build([i.image for i in dataset.images], prompts, parts.vae, encode, job.resolution,
                            job.bucket_step, job.upscale_small, job.caption_dropout, job.train.seed, progress)
    parts.vae.to("cpu")  # latents are cached: the VAE (and the text encoder, unless it trains) leave the GPU
    parts.text_encoder.to(device if train_te else "cpu")
    # frozen weights in the autocast dtype, as diffusers' scripts keep them (QLoRA quantizes them on the device)
    parts.unet.to(device, lora_trainer.autocast_dtype(job.train))
    attention, attention_warning = attention_backend(parts.unet, device)
    samples: list[Image.Image] = []
    sample_size = job.resolution
    prompts_to_sample = list(job.sample_prompts)

    sample_dir = run_dir / "samples"

    def take_samples(step: int) -> None:
        if not distributed.is_main():
            return
        new = sample_images(parts, prompts_to_sample, job.sample_seed, job.sample_steps, sample_size)
        sample_dir.mkdir(exist_ok=True)
        for i, image in enumerate(new):
            image.save(sample_dir / f"step_{step:06d}_{i + 1:02d}.png")
            progress.preview(image)
        samples.extend(new)

    def on_step(step: int, loss: float) -> None:
        progress.status(f"loss {loss:.4f}")
        if on_loss is not None:
            on_loss(step, loss)
        if prompts_to_sample and job.sample_every and step % job.sample_every == 0 and step < job.train.steps:
            take_samples(step)

    result = lora_trainer.train_lora(parts.unet, data, job.train, run_dir, progress, on_step,
                                     parts.text_encoder if train_te else None)
    if prompts_to_sample:
        take_samples(result.step)
    metadata = {
        "ss_base_model_hash": base_model_hash, "ss_network_dim": job.train.rank,
        "ss_network_alpha": job.train.alpha, "ss_steps": result.step, "ss_resolution": job.resolution,
        "ss_num_train_images": len(dataset.images), "atelier_trigger": job.trigger,
        "atelier_use_captions": job.use_captions, "atelier_caption_dropout": job.caption_dropout,
        "atelier_targets": job.train.targets, "atelier_attention": attention, "atelier_train_config": asdict(job.train),
        "atelier_lora_layers": result.params.layers, "atelier_trainable_params": result.params.trainable,
        "atelier_targeted_params": result.params.targeted, "atelier_base_params": result.params.base,
        "ss_training_comment": TRAINER_VERSION, "atelier_trainer_version": TRAINER_VERSION,
    }
    plot = plots.loss_curve(result.losses)

    def write() -> Path:
        tensors = lora_file.kohya_state_dict(parts.unet, parts.text_encoder if train_te else None)
        plot.save(run_dir / "loss.png")
        return lora_file.save_lora(loras_dir, job.name, tensors, metadata)

    path = distributed.from_rank0(write)
    warnings = dataset.report().splitlines()[1:] + data.warnings + ([attention_warning] if attention_warning else [])
    return JobResult(path, result.losses, plot, samples, warnings, result.resumed, result.params)
