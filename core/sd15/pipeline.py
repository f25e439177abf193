"""Stable Diffusion 1.5 parts from a local diffusers folder, with a clear error for anything else.

Only local files: ``from_pretrained`` runs with ``local_files_only=True``. A folder laid out as
diffusers saves a pipeline: ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and
``scheduler/``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LATENT_CHANNELS = 4
TEXT_DIM = 768
MAX_TOKENS = 77


@dataclass
class SD15Parts:
    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer


def identify(unet_config: dict[str, Any], scheduler_config: dict[str, Any] | None = None) -> str:
    """Name the model family of a diffusers UNet config: 'sd15' or a description of what it is."""
    if unet_config.get("addition_embed_type") == "text_time":
        return "SDXL (not SD 1.5)"
    if unet_config.get("cross_attention_dim") == 1024:
        return "SD 2.x (not SD 1.5)"
    if (scheduler_config or {}).get("prediction_type") == "v_prediction":
        return "a v-prediction model (SD 1.5 training here is epsilon prediction)"
    if unet_config.get("in_channels") != LATENT_CHANNELS or unet_config.get("out_channels") != LATENT_CHANNELS:
        return f"a UNet with {unet_config.get('in_channels')} input channels (an inpainting or other variant)"
    if unet_config.get("cross_attention_dim") != TEXT_DIM:
        return f"a UNet with {unet_config.get('cross_attention_dim')}-d text conditioning (not SD 1.5)"
    return "sd15"


def load_diffusers_folder(folder: str | Path, dtype: torch.dtype = torch.float32) -> SD15Parts:
    """Load SD 1.5 from a local diffusers folder; refuses other families before loading weights."""
    root = Path(folder).expanduser()
    missing = [p for p in ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer")
               if not (root / p).exists()]
    if missing:
        raise FileNotFoundError(f"{str(root)!r} is not a diffusers SD 1.5 folder: it lacks {', '.join(missing)}")
    unet_config = json.loads((root / "unet" / "config.json").read_text(encoding="utf-8"))
    sched_file = root / "scheduler" / "scheduler_config.json"
    sched_config = json.loads(sched_file.read_text(encoding="utf-8")) if sched_file.exists() else None
    family = identify(unet_config, sched_config)
    if family != "sd15":
        raise ValueError(f"{str(root)!r} holds {family}; the LoRA trainer trains SD 1.5")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": True, "torch_dtype": dtype}
    return SD15Parts(
        unet=UNet2DConditionModel.from_pretrained(root / "unet", **kw),
        vae=AutoencoderKL.from_pretrained(root / "vae", **kw),
        text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder", **kw),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True),
    )


def tokenize(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """``[N, 77]`` token ids, prompts padded/truncated to SD 1.5's 77 tokens."""
    return tokenizer(prompts, padding="max_length", truncation=True, max_length=MAX_TOKENS,
                     return_tensors="pt").input_ids


@torch.no_grad()
def encode_prompts(text_encoder: Any, tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """``[N, 77, 768]`` last hidden states of the prompts."""
    device = next(text_encoder.parameters()).device
    return text_encoder(tokenize(tokenizer, prompts).to(device)).last_hidden_state.float().cpu()


def ddim_pipeline(parts: SD15Parts, device: torch.device | str):  # -> diffusers.StableDiffusionPipeline
    """The parts as diffusers' SD pipeline with SD 1.5's DDIM schedule, no safety checker and no progress bar: what
    the pack draws pictures with outside ComfyUI. The VAE and text encoder move to ``device``; the UNet stays where
    the caller put it (a quantized one must not be moved)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=parts.vae.to(device), text_encoder=parts.text_encoder.to(device),
                                   tokenizer=parts.tokenizer, unet=parts.unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
