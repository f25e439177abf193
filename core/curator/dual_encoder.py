"""A bilingual image-text encoder built from parts, as the webtoon thesis builds its own CLIP: any text tower
(multilingual BERT, XLM-R, a Korean RoBERTa) and a CLIP vision tower (or any vision transformer), joined by new
projection layers of one size (512 by default) into transformers' ``VisionTextDualEncoderModel``.

The towers keep their pretrained weights; only the projections and the temperature start fresh (seeded), so
the result needs fine-tuning on caption-picture pairs before its text and image embeddings mean anything
together.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..shared.hf_folders import (
    WEIGHT_FILES,
    ModelFolderError,
    check_files,
    dtype_argument,
    loading_weights,
    weights_sha256,
)
from .clip_model import ClipModel, load_tokenizer, precision_dtype, text_languages
from .pixels import read_pixel_spec

DEFAULT_PROJECTION = 512  # the thesis's shared space
VISION_KINDS = ("clip", "clip_vision_model", "vit", "siglip_vision_model", "dinov2")


def _model_type(folder: Path, what: str) -> str:
    check_files(folder, what, {"config": ("config.json",), "weights": WEIGHT_FILES})
    return str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") or "")


def _vision_tower(folder: Path, dtype: torch.dtype) -> Any:
    from transformers import AutoModel, CLIPConfig, CLIPVisionModel

    kind = _model_type(folder, "vision tower")
    if kind not in VISION_KINDS:
        raise ModelFolderError(f"{str(folder)!r} holds a {kind!r} model, not a vision tower; give a CLIP folder (its "
                               "image tower is taken), a CLIP vision folder or a ViT folder")
    with loading_weights(folder, "vision tower", "openai/clip-vit-base-patch32"):
        if kind == "clip":  # a whole CLIP: its image tower, without the text tower and projections
            config = CLIPConfig.from_pretrained(str(folder), local_files_only=True).vision_config
            return CLIPVisionModel.from_pretrained(str(folder), config=config, local_files_only=True,
                                                   **dtype_argument(dtype))
        return AutoModel.from_pretrained(str(folder), local_files_only=True, **dtype_argument(dtype))


def _text_tower(folder: Path, dtype: torch.dtype) -> Any:
    from transformers import AutoModel

    kind = _model_type(folder, "text tower")
    if kind in ("clip", "clip_vision_model", "vision-text-dual-encoder") or kind in VISION_KINDS:
        raise ModelFolderError(f"{str(folder)!r} holds a {kind!r} model, not a text tower; give a text model folder "
                               "such as bert-base-multilingual-cased or xlm-roberta-base")
    with loading_weights(folder, "text tower", "google-bert/bert-base-multilingual-cased"):
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, **dtype_argument(dtype))
    if getattr(model, "pooler", None) is None:
        raise ModelFolderError(f"the text model in {str(folder)!r} ({type(model).__name__}) has no pooler, which a "
                               "dual encoder reads its sentence embedding from; use a BERT, RoBERTa or XLM-R model")
    return model


def build_dual_encoder(text_folder: Path, vision_folder: Path, projection_dim: int = DEFAULT_PROJECTION,
                       seed: int = 0, device: torch.device | str = "cpu",
                       precision: str = "auto") -> tuple[ClipModel, str]:
    """A dual encoder of the two towers with new seeded ``projection_dim`` projections, and a report of the
    joint (towers of any widths meet in the projection size)."""
    from transformers import VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    if projection_dim < 1:
        raise ValueError(f"projection_dim must be at least 1, got {projection_dim}")
    text_folder, vision_folder = Path(text_folder), Path(vision_folder)
    device = torch.device(device)
    dtype = precision_dtype(precision, device)
    tokenizer = load_tokenizer(text_folder, None, "vision-text-dual-encoder")  # before the weights: fail fast
    vision, text = _vision_tower(vision_folder, dtype), _text_tower(text_folder, dtype)
    config = VisionTextDualEncoderConfig.from_vision_text_configs(vision.config, text.config,
                                                                   projection_dim=projection_dim)
    # the projections are drawn from torch's global generator: seeded here and given back afterwards
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = VisionTextDualEncoderModel(config=config, vision_model=vision, text_model=text)
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    pixels = read_pixel_spec(vision_folder, vision.config.image_size)
    parts = f"{weights_sha256(text_folder)}|{weights_sha256(vision_folder)}|{projection_dim}|{seed}"
    fingerprint = f"built:{hashlib.sha256(parts.encode()).hexdigest()}:{dtype}"
    languages = text_languages(text_folder, tokenizer, "vision-text-dual-encoder")
    name = f"{text_folder.name}+{vision_folder.name}"
    report = (f"dual encoder {name}: text tower {type(text).__name__} {text.config.hidden_size}-d, vision tower "
              f"{type(vision).__name__} {vision.config.hidden_size}-d, joined at {projection_dim}-d by new projections "
              f"(seed {seed}); the text tower reads {' and '.join(languages)}. The projections are untrained: "
              "fine-tune it on caption-picture pairs before using its scores.")
    return ClipModel(model, tokenizer, pixels, fingerprint, name, languages, "vision-text-dual-encoder"), report
