"""SD 1.5 from the original (CompVis "ldm") layout: single-file checkpoints and what ComfyUI loaded.

Both hold ``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE) and
``cond_stage_model.transformer.*`` (CLIP text). Conversion to diffusers and transformers models is
offline: the configs in ``configs/sd15`` (SD 1.x's v1-inference and CLIP-L's text config), with
channel counts, depths and levels read from the weights' shapes so slimmed variants load too,
diffusers' own ldm converters for the keys, and the tokenizer from the shipped BPE vocabulary.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import torch

from ..shared.weight_files import check_weight_file, check_weight_files, reading
from .pipeline import LATENT_CHANNELS, TEXT_DIM, SD15Parts

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "sd15"
UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer."
CHECKPOINT_EXTENSIONS = {".safetensors", ".ckpt", ".pt", ".pth"}
SD15_FILE = "v1-5-pruned-emaonly.safetensors"  # SD 1.5 itself (4.3 GB), from the repository below
SD15_DOWNLOAD = f"hf download stable-diffusion-v1-5/stable-diffusion-v1-5 {SD15_FILE}"


def identify(state_dict: dict[str, Any]) -> str:
    """'sd15', or what the checkpoint holds instead, in words a user recognises."""
    keys = state_dict.keys()
    if any(k.startswith("conditioner.embedders.") for k in keys):
        return "SDXL (not SD 1.5)"
    if any(k.startswith(p) for k in keys for p in ("model.diffusion_model.joint_blocks.",
                                                   "model.diffusion_model.double_blocks.")):
        return "an SD3 or Flux transformer (not SD 1.5)"
    conv_in = state_dict.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        return "no Stable Diffusion UNet (model.diffusion_model.input_blocks is missing)"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "SD 2.x (OpenCLIP text encoder; not SD 1.5)"
    context = next((v.shape[1] for k, v in state_dict.items()
                    if k.startswith(UNET) and k.endswith("attn2.to_k.weight")), None)
    if context == 1024:
        return "SD 2.x (1024-d text conditioning; not SD 1.5)"
    if "v_pred" in keys:
        return "a v-prediction model (SD 1.5 training here is epsilon prediction)"
    if conv_in.shape[1] != LATENT_CHANNELS:
        return f"a UNet with {conv_in.shape[1]} input channels (an inpainting or instruct variant, not plain SD 1.5)"
    if context != TEXT_DIM:
        return f"a UNet with {context}-d text conditioning (not SD 1.5)"
    missing = [name for name, prefix in (("VAE", VAE), ("text encoder", CLIP))
               if not any(k.startswith(prefix) for k in keys)]
    if missing:
        return f"an SD 1.5 UNet without its {' and '.join(missing)} (a full checkpoint is needed)"
    return "sd15"


def _count(state_dict: dict[str, Any], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state_dict if (m := regex.match(k))})


def unet_params(state_dict: dict[str, Any]) -> dict[str, Any]:
    """v1-inference's ``unet_config.params`` with levels, channels and depths read from the weights."""
    params = dict(_v1()["model"]["params"]["unet_config"]["params"])
    conv_in = state_dict[UNET + "input_blocks.0.0.weight"]
    channels = conv_in.shape[0]
    mults, res_blocks, attention_at, depth = [], [], [], 1
    level, blocks, mult, i = 0, 0, 1, 1
    while any(k.startswith(f"{UNET}input_blocks.{i}.") for k in state_dict):
        block = f"{UNET}input_blocks.{i}."
        if block + "0.op.weight" in state_dict:  # a downsampler closes the level
            mults.append(mult)
            res_blocks.append(blocks)
            level, blocks = level + 1, 0
        else:
            blocks += 1
            mult = state_dict[block + "0.out_layers.3.weight"].shape[0] // channels
            if block + "1.proj_in.weight" in state_dict:
                if 2 ** level not in attention_at:
                    attention_at.append(2 ** level)
                depth = _count(state_dict, re.escape(block) + r"1\.transformer_blocks\.(\d+)\.")
        i += 1
    mults.append(mult)
    res_blocks.append(blocks)
    if len(set(res_blocks)) != 1:
        raise ValueError(f"the UNet has {res_blocks} residual blocks per level; SD 1.5 has the same number in each")
    params.update(in_channels=conv_in.shape[1], out_channels=state_dict[UNET + "out.2.weight"].shape[0],
                  model_channels=channels, channel_mult=mults, num_res_blocks=res_blocks[0],
                  attention_resolutions=attention_at, transformer_depth=depth)
    return params


def vae_ddconfig(state_dict: dict[str, Any]) -> dict[str, Any]:
    """v1-inference's VAE ``ddconfig`` with channels and depths read from the weights."""
    ddconfig = dict(_v1()["model"]["params"]["first_stage_config"]["params"]["ddconfig"])
    enc = VAE + "encoder."
    ch = state_dict[enc + "conv_in.weight"].shape[0]
    levels = _count(state_dict, re.escape(enc) + r"down\.(\d+)\.")
    ddconfig.update(
        ch=ch, ch_mult=[state_dict[f"{enc}down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels)],
        num_res_blocks=_count(state_dict, re.escape(enc) + r"down\.0\.block\.(\d+)\."),
        z_channels=state_dict[VAE + "decoder.conv_in.weight"].shape[1])
    return ddconfig


def clip_config(state_dict: dict[str, Any]) -> dict[str, Any]:
    """CLIP-L's text config with its sizes read from the weights (64-d attention heads, as CLIP's)."""
    config = json.loads((CONFIGS / "clip_text_config.json").read_text(encoding="utf-8"))
    text = CLIP + "text_model."
    vocab, hidden = state_dict[text + "embeddings.token_embedding.weight"].shape
    config.update(vocab_size=vocab, hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
                  max_position_embeddings=state_dict[text + "embeddings.position_embedding.weight"].shape[0],
                  num_hidden_layers=_count(state_dict, re.escape(text) + r"encoder\.layers\.(\d+)\."),
                  intermediate_size=state_dict[text + "encoder.layers.0.mlp.fc1.weight"].shape[0])
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _v1() -> dict[str, Any]:
    return json.loads((CONFIGS / "v1-inference.json").read_text(encoding="utf-8"))


def _assign(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"the checkpoint's {what} does not fit SD 1.5's layout: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")


def parts_from_state_dict(state_dict: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                          tokenizer: Any = None, source: str = "the checkpoint") -> SD15Parts:
    """Diffusers UNet and VAE, transformers text encoder and tokenizer from an ldm-layout SD 1.5;
    anything else is refused by name, the error naming ``source``."""
    family = identify(state_dict)
    if family != "sd15":
        raise ValueError(f"{source} holds {family}; the LoRA trainer trains SD 1.5")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tokenizer import sd15_tokenizer

    # always copies: ComfyUI hands over inference-mode tensors, which autograd refuses to save
    sd = {k: v.to(dtype, copy=True) if v.is_floating_point() else v.clone() for k, v in state_dict.items()}
    original = copy.deepcopy(_v1())
    original["model"]["params"]["unet_config"]["params"] = unet_params(sd)
    original["model"]["params"]["first_stage_config"]["params"]["ddconfig"] = vae_ddconfig(sd)
    unet_cfg = create_unet_diffusers_config_from_ldm(original, sd)
    vae_cfg = create_vae_diffusers_config_from_ldm(original, sd)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
    _assign(unet, convert_ldm_unet_checkpoint(sd, unet_cfg), "UNet")
    _assign(vae, convert_ldm_vae_checkpoint(sd, vae_cfg), "VAE")
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_config(sd))).to(dtype)
    clip_sd = convert_ldm_clip_checkpoint(sd)
    if not hasattr(text_encoder, "text_model"):  # transformers >= 5.6 has no text_model level
        clip_sd = {k.removeprefix("text_model."): v for k, v in clip_sd.items()}
    known = text_encoder.state_dict().keys()
    clip_sd = {k: v for k, v in clip_sd.items() if k in known}
    _assign(text_encoder, clip_sd, "text encoder")
    return SD15Parts(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer or sd15_tokenizer())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A single-file checkpoint's tensors: safetensors, or a pickle read with ``weights_only=True``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    if path.suffix.lower() not in CHECKPOINT_EXTENSIONS:
        raise ValueError(f"{path.name!r}: a checkpoint is one of {sorted(CHECKPOINT_EXTENSIONS)}")
    how = f"copy or download it again (SD 1.5 itself: `{SD15_DOWNLOAD}`)"
    check_weight_file(path, "checkpoint", how)
    with reading(path, "checkpoint", how, f"SD 1.5's is {SD15_FILE}: `{SD15_DOWNLOAD}`"):
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(loaded).__name__}, not a checkpoint's dict of tensors")
    return state


def load_single_file(path: str | Path, dtype: torch.dtype = torch.float32) -> SD15Parts:
    """SD 1.5 from one checkpoint file (the kind ComfyUI keeps in ``models/checkpoints``)."""
    return parts_from_state_dict(read_state_dict(path), dtype, source=repr(Path(path).name))


def load(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[SD15Parts, Path]:
    """SD 1.5 from a single-file checkpoint or a diffusers folder, and the file whose hash names the base."""
    from .pipeline import load_diffusers_folder

    path = Path(path).expanduser()
    if path.is_dir():
        how = "copy the whole diffusers folder again"
        for part in ("unet", "vae", "text_encoder"):
            if (path / part).is_dir():
                check_weight_files(path / part, f"SD 1.5 {part} weights", how)
        with reading(path, "SD 1.5 weights in", how, "the same model's .safetensors files"):
            parts = load_diffusers_folder(path, dtype)
        return parts, path / "unet" / "diffusion_pytorch_model.safetensors"
    return load_single_file(path, dtype), path
