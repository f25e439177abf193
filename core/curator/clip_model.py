"""A whole CLIP (image and text towers with their projections) for zero-shot labelling and retrieval.

Loaded with transformers' ``CLIPModel`` from a model folder or the Hugging Face cache; fp16 on a
GPU. ComfyUI's CLIP_VISION (image tower only) and an SD checkpoint's CLIP (text tower without a
projection) cannot compare pictures with texts, and are refused with a message that says so.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..shared.hf_folders import (
    WEIGHT_FILES,
    HoldsModel,
    ModelFolderError,
    check_files,
    dtype_argument,
    loading_weights,
    weights_sha256,
)
from .pixels import PixelSpec, read_pixel_spec, to_pixels

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
OPENAI_VOCAB_SIZE = 49408  # every OpenAI CLIP uses the BPE vocabulary shipped in configs/sd15


def precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on a GPU, fp32 on the CPU (where fp16 matmuls are slow or missing)."""
    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in table:
        raise ValueError(f"precision must be auto, fp16, bf16 or fp32, got {precision!r}")
    return table[precision]


@dataclass
class ClipModel(HoldsModel):
    model: Any  # transformers CLIPModel
    tokenizer: Any
    pixels: PixelSpec
    fingerprint: str  # weights and precision: what cached embeddings are keyed by
    name: str


    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp().clamp(max=100.0))

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def embed_images(self, images: Sequence[torch.Tensor] | torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image embeddings ``[B, D]`` (float32, CPU) of ``[H, W, 3]`` pictures in 0..1, unit-length unless
        ``normalize`` is off (then as CLIP's ``image_embeds``)."""
        pixels = to_pixels(images, self.pixels).to(self.device, self.dtype)
        with torch.inference_mode():
            pooled = self.model.vision_model(pixel_values=pixels).pooler_output
            embeds = self.model.visual_projection(pooled).float()
            return (F.normalize(embeds, dim=-1) if normalize else embeds).cpu()

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Unit-length text embeddings ``[T, D]`` (float32, CPU)."""
        out = []
        limit = int(self.model.config.text_config.max_position_embeddings)
        for start in range(0, len(texts), batch_size):
            # padded to the batch's longest text only: CLIP pools at the end-of-text token, which the
            # causal mask keeps from ever seeing the padding after it
            tokens = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                    max_length=limit, return_tensors="pt")
            with torch.inference_mode():
                pooled = self.model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                               attention_mask=tokens["attention_mask"].to(self.device)).pooler_output
                out.append(F.normalize(self.model.text_projection(pooled).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def to(self, device: torch.device | str) -> "ClipModel":
        self.model.to(device)
        return self


def refuse_comfy_clip(obj: Any) -> None:
    """A clear error when a ComfyUI CLIP_VISION or checkpoint CLIP is given where a whole CLIP is needed."""
    if isinstance(obj, ClipModel):
        return
    kind = type(obj).__name__
    if hasattr(obj, "encode_image") and not hasattr(obj, "tokenize"):
        raise TypeError(f"this is ComfyUI's CLIP_VISION ({kind}): it holds only CLIP's image tower, and zero-shot "
                        "labelling compares pictures with texts, which needs the text tower too. Load a whole CLIP "
                        "model folder with 'Atelier Load CLIP' (models/atelier/clip)")
    if hasattr(obj, "tokenize") and hasattr(obj, "encode_from_tokens"):
        raise TypeError(f"this is a checkpoint's CLIP text encoder ({kind}): it has no image tower and no projection "
                        "into the shared image-text space, so it cannot score pictures against labels. Load a whole "
                        "CLIP model folder with 'Atelier Load CLIP' (models/atelier/clip)")
    raise TypeError(f"expected a CLIP model from 'Atelier Load CLIP', got {kind}")


def _tokenizer(folder: Path, config: Any) -> Any:
    from transformers import CLIPTokenizer

    if (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    if config.text_config.vocab_size == OPENAI_VOCAB_SIZE:
        from ..sd15.tokenizer import sd15_tokenizer

        return sd15_tokenizer()
    raise ModelFolderError(f"CLIP folder {str(folder)!r} has no tokenizer (vocab.json and merges.txt, or "
                           "tokenizer.json), and its vocabulary is not OpenAI CLIP's; copy the tokenizer files too")


def clip_config(folder: Path) -> Any:
    """The ``CLIPConfig`` of a whole-CLIP folder with its weights present; a clear error for anything else."""
    from transformers import CLIPConfig

    check_files(folder, "CLIP", {"config": ("config.json",), "weights": WEIGHT_FILES})
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    kind = raw.get("model_type")
    if kind == "clip_vision_model":
        raise ModelFolderError(f"{str(folder)!r} holds a CLIP vision model only (like ComfyUI's CLIP_VISION); "
                               "zero-shot labelling needs the text tower too: use a whole CLIP folder, such as "
                               f"{DEFAULT_CLIP}")
    if kind != "clip":
        raise ModelFolderError(f"{str(folder)!r} holds a {kind!r} model, not CLIP (model_type 'clip')")
    return CLIPConfig.from_pretrained(str(folder), local_files_only=True)


def clip_fingerprint(folder: Path, dtype: torch.dtype) -> str:
    """What embeddings of this CLIP are keyed by: its weights and the precision it runs in."""
    return f"{weights_sha256(folder)}:{dtype}"


def load_clip(folder: Path, device: torch.device | str = "cpu", precision: str = "auto") -> ClipModel:
    """Load a CLIP folder (``config.json``, weights, tokenizer, ``preprocessor_config.json``) offline."""
    from transformers import CLIPModel

    device = torch.device(device)
    config = clip_config(folder)
    dtype = precision_dtype(precision, device)
    with loading_weights(folder, "CLIP", DEFAULT_CLIP):
        model = CLIPModel.from_pretrained(str(folder), local_files_only=True, **dtype_argument(dtype))
    model.to(device).eval().requires_grad_(False)
    return ClipModel(model, _tokenizer(folder, config), read_pixel_spec(folder, config.vision_config.image_size),
                     clip_fingerprint(folder, dtype), folder.name)
