"""LoRA files in the kohya layout that ComfyUI's LoraLoader maps for SD 1.5, written and read back.

Keys: ``lora_unet_<diffusers module path, dots as underscores>.{lora_down,lora_up}.weight`` and
``.alpha``; for the text encoder ``lora_te_text_model_encoder_layers_<i>_<self_attn_q_proj|...>``.
The names and the true alpha are written here rather than with diffusers' converter, which
writes alpha = rank whatever alpha was trained with, and whose UNet attention names (and peft's)
ComfyUI silently drops.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..shared.state_dicts import check_complete, save_new_file

UNET_PREFIX = "lora_unet_"
TE_PREFIX = "lora_te_"
# transformers CLIP layer sub-modules -> the kohya suffix ComfyUI expects (comfy/lora.py LORA_CLIP_MAP)
CLIP_SUFFIXES = {
    "self_attn.q_proj": "self_attn_q_proj", "self_attn.k_proj": "self_attn_k_proj",
    "self_attn.v_proj": "self_attn_v_proj", "self_attn.out_proj": "self_attn_out_proj",
    "mlp.fc1": "mlp_fc1", "mlp.fc2": "mlp_fc2",
}
_CLIP_LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.(.+)$")


def unet_key(module_path: str) -> str:
    return UNET_PREFIX + module_path.replace(".", "_")


def text_encoder_key(module_path: str) -> str:
    """``[text_model.]encoder.layers.3.self_attn.q_proj`` (transformers 4 or 5) to the kohya name."""
    match = _CLIP_LAYER.search(module_path)
    if match is None or match.group(2) not in CLIP_SUFFIXES:
        raise ValueError(f"{module_path!r} is not a CLIP encoder layer projection ComfyUI can load a LoRA into")
    return f"{TE_PREFIX}text_model_encoder_layers_{match.group(1)}_{CLIP_SUFFIXES[match.group(2)]}"


def lora_modules(model: nn.Module, adapter: str = "default") -> Iterator[tuple[str, nn.Module]]:
    """``(module path, peft LoRA layer)`` for every layer carrying ``adapter``."""
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and adapter in getattr(module, "lora_A", {}):
            yield name, module


def kohya_state_dict(unet: nn.Module, text_encoder: nn.Module | None = None,
                     adapter: str = "default") -> dict[str, torch.Tensor]:
    """The LoRA weights of peft-wrapped models under kohya names, with each layer's true alpha."""
    out: dict[str, torch.Tensor] = {}
    for model, to_key in ((unet, unet_key), (text_encoder, text_encoder_key)):
        if model is None:
            continue
        for path, layer in lora_modules(model, adapter):
            key = to_key(path)
            out[f"{key}.lora_down.weight"] = layer.lora_A[adapter].weight.detach().float().cpu().contiguous()
            out[f"{key}.lora_up.weight"] = layer.lora_B[adapter].weight.detach().float().cpu().contiguous()
            out[f"{key}.alpha"] = torch.tensor(float(layer.lora_alpha[adapter]))
    if not out:
        raise ValueError("the model carries no LoRA layers to save")
    return out


def save_lora(folder: Path, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, object]) -> Path:
    """Write ``<name>.safetensors`` into ``folder`` (ComfyUI's ``loras``), never replacing a file."""
    return save_new_file(folder, name, tensors, metadata, "LoRA name")


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    check_complete(path, "LoRA")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return load_file(str(path)), metadata


def merge_into(model: nn.Module, tensors: dict[str, torch.Tensor], to_key=unet_key, strength: float = 1.0) -> int:
    """Add ``strength * alpha / rank * up @ down`` to each matching weight, as ComfyUI's loader does.

    Returns how many modules were patched; keys that name no module of ``model`` raise.
    """
    by_key = {to_key(name): module for name, module in model.named_modules()
              if isinstance(module, (nn.Linear, nn.Conv2d))}
    stems = {k.rsplit(".", 2)[0] for k in tensors if k.endswith(".lora_down.weight")}
    unknown = sorted(s for s in stems if s not in by_key)
    if unknown:
        raise KeyError(f"LoRA keys name no module of the model: {unknown[:3]}")
    with torch.no_grad():
        for stem in stems:
            module = by_key[stem]
            down, up = tensors[f"{stem}.lora_down.weight"], tensors[f"{stem}.lora_up.weight"]
            rank = down.shape[0]
            scale = strength * float(tensors.get(f"{stem}.alpha", torch.tensor(rank))) / rank
            if down.dim() == 4:  # conv: [r, in, k, k] and [out, r, 1, 1]
                delta = (up.flatten(1) @ down.flatten(1)).reshape(module.weight.shape)
            else:
                delta = up @ down
            module.weight += (scale * delta).to(module.weight.dtype)
    return len(stems)


def apply_file(unet: nn.Module, text_encoder: nn.Module, path: Path, strength: float = 1.0) -> int:
    """Merge a kohya LoRA file (ours, or any SD 1.5 LoRA ComfyUI's LoraLoader takes) into the UNet and text
    encoder, as LoraLoader does with one strength for both; returns how many modules were patched."""
    tensors, _ = read_lora(path)
    parts = {prefix: {k: v for k, v in tensors.items() if k.startswith(prefix)} for prefix in (UNET_PREFIX, TE_PREFIX)}
    if not any(parts.values()):
        raise ValueError(f"{path.name!r} holds no kohya LoRA keys (lora_unet_*, lora_te_*): give an SD 1.5 LoRA file")
    try:
        return sum(merge_into(model, part, to_key, strength) for model, part, to_key in (
            (unet, parts[UNET_PREFIX], unet_key), (text_encoder, parts[TE_PREFIX], text_encoder_key)) if part)
    except KeyError as exc:
        raise ValueError(f"the LoRA {path.name!r} does not fit this SD 1.5 model ({exc.args[0]}): give a LoRA "
                         "trained for SD 1.5") from exc
