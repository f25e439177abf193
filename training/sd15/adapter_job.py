"""A whole adapter run: pictures (with optional captions) and a frozen SD 1.5 in, an adapter file out."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from ...core.audio.image_embedding import ImageEmbedder, embed_pictures, probe_embedding
from ...core.dataset.folder_dataset import FolderDataset
from ...core.dataset.image_files import check_writable
from ...core.sd15 import pipeline as sd15
from ...core.sd15.embedding_adapter import save_adapter
from ...core.shared import plots
from ...core.shared.output_paths import safe_name
from ...core.shared.progress import Progress, SilentProgress
from .. import distributed
from . import latents as train_data
from .adapter_trainer import AdapterResult, AdapterTrainConfig, train_adapter
from .lora_trainer import autocast_dtype

TRAINER_VERSION = "atelier-embedding-adapter 0.1"


@dataclass
class AdapterJobResult:
    path: Path
    result: AdapterResult
    plot: Image.Image
    warnings: list[str]


def run_name(name: str, config: AdapterTrainConfig, pictures_digest: str, base_hash: str, image_encoder: str,
             resolution: int) -> str:
    key = json.dumps([config.fingerprint(), pictures_digest, base_hash, image_encoder, resolution])
    return f"{safe_name(name, 'adapter name')}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def run(parts: sd15.SD15Parts, dataset: FolderDataset, images: ImageEmbedder, config: AdapterTrainConfig, name: str,
        adapters_dir: Path, run_dir: Path, resolution: int = 512, use_captions: bool = True,
        device: torch.device | str = "cpu", progress: Progress | None = None) -> AdapterJobResult:
    device = torch.device(device)
    safe_name(name, "adapter name")
    check_writable(adapters_dir)
    check_writable(run_dir)
    pictures = [item.image for item in dataset.images]
    prompts = [train_data.caption_for(item.caption, "", use_captions) for item in dataset.images]
    progress = progress or SilentProgress(2 * len(pictures) + config.steps)
    embeds = embed_pictures(images, pictures, progress=progress).unit
    parts.vae.to(device)
    parts.text_encoder.to(device)
    data = train_data.build(pictures, prompts, parts.vae, lambda texts: sd15.encode_prompts(
        parts.text_encoder, parts.tokenizer, texts), resolution, progress=progress, seed=config.seed)
    parts.vae.to("cpu")
    parts.text_encoder.to("cpu")
    parts.unet.to(device, autocast_dtype(config))
    result = train_adapter(parts.unet, data, embeds, config, run_dir, progress,
                           lambda step, loss: progress.status(f"loss {loss:.4f}"))
    extra = {"atelier_trainer_version": TRAINER_VERSION, "atelier_train_config": json.dumps(asdict(config)),
             "atelier_pictures": len(pictures), "atelier_resolution": resolution, "atelier_steps": len(result.losses)}
    plot = plots.loss_curve(result.losses)

    def write() -> Path:  # rank 0 alone (training/distributed.py); every rank gets the path
        plot.save(run_dir / "loss.png")
        return save_adapter(adapters_dir, name, result.adapter, images.name, extra, probe_embedding(images))

    path = distributed.from_rank0(write)
    return AdapterJobResult(path, result, plot, dataset.report().splitlines()[1:] + data.warnings)
