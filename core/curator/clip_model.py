"""A whole image-text encoder (image and text towers with their projections) for labelling and retrieval.

Two kinds of folder load alike: transformers' ``CLIPModel`` (OpenAI's English CLIP, or a Korean CLIP with its
own tokenizer) and ``VisionTextDualEncoderModel`` (any text tower, such as multilingual BERT or XLM-R, joined
to any vision tower by projection layers). fp16 on a GPU. ComfyUI's CLIP_VISION (image tower only) and an SD
checkpoint's CLIP (text tower without a projection) cannot compare pictures with texts, and are refused with
a message that says so.
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
KINDS = {"clip": "CLIPModel", "vision-text-dual-encoder": "VisionTextDualEncoderModel"}
ENCODER_INFO = "atelier_encoder.json"  # what Atelier writes beside the weights: the text tower's languages
LANGUAGES = ("en", "ko")
# a Korean sentence a tokenizer that knows Korean cuts into whole words or syllables (at most one token per
# syllable); English-only vocabularies fall back to bytes, jamo or unknown tokens
_KOREAN_PROBE = "바닷가 마을의 오래된 집에서 고양이가 창밖을 바라본다"


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
    languages: tuple[str, ...] = ("en",)  # what the text tower reads: decides a taxonomy's prompts
    kind: str = "clip"  # a key of KINDS

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

    @property
    def max_tokens(self) -> int:
        """The most tokens the text tower takes; longer texts are truncated."""
        return text_limit(self.model.config.text_config, self.tokenizer)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Unit-length text embeddings ``[T, D]`` (float32, CPU)."""
        out = []
        limit = self.max_tokens
        for start in range(0, len(texts), batch_size):
            # padded to the batch's longest text only: CLIP pools at the end-of-text token, which the
            # causal mask keeps from ever seeing the padding after it; BERT-like towers mask it out
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


def text_language(text: str) -> str:
    """``ko`` for a text with Hangul in it, else ``en``: enough to tell whether a tower can read a query."""
    return "ko" if any("\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e" for ch in text) else "en"


def unread_warning(clip: ClipModel, texts: Sequence[str], what: str = "the query") -> str:
    """A warning when some of ``texts`` are Korean and the text tower reads no Korean ('' otherwise): such a
    tower cuts Korean into bytes or unknown tokens, so the scores say little."""
    korean = sum(text_language(text) == "ko" for text in texts)
    if not korean or "ko" in clip.languages:
        return ""
    share = "is" if len(texts) == 1 else f"has {korean} of {len(texts)} texts"
    return (f"warning: {what} {share} in Korean, but {clip.name!r} reads {' and '.join(clip.languages)} only, so "
            "its scores for Korean text mean little; load a Korean-English dual encoder or a Korean CLIP with "
            "'Atelier Load CLIP' (or --clip)")


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


def text_limit(text_config: Any, tokenizer: Any) -> int:
    """Tokens the text tower takes: its position table, less RoBERTa's two offset positions, and no more than
    the tokenizer's own limit."""
    limit = int(text_config.max_position_embeddings)
    if getattr(text_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # positions start after the padding index
    own = getattr(tokenizer, "model_max_length", None)
    return min(limit, int(own)) if own and own < 1_000_000 else limit


def load_tokenizer(folder: Path, config: Any, kind: str) -> Any:
    from transformers import AutoTokenizer, CLIPTokenizer

    declared = {}
    if (folder / "tokenizer_config.json").is_file():
        declared = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    own_class = str(declared.get("tokenizer_class") or "")
    if kind == "clip" and not own_class.startswith(("XLM", "Bert", "Roberta", "Auto")) and (
            (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file()):
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    if any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model",
                                                  "spiece.model", "vocab.json", "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if kind == "clip" and config.text_config.vocab_size == OPENAI_VOCAB_SIZE:
        from ..sd15.tokenizer import sd15_tokenizer

        return sd15_tokenizer()
    raise ModelFolderError(f"model folder {str(folder)!r} has no tokenizer (tokenizer.json, vocab.txt, vocab.json "
                           "and merges.txt, or a sentencepiece model), and its vocabulary is not OpenAI CLIP's; "
                           "copy the text tower's tokenizer files into it")


def text_languages(folder: Path, tokenizer: Any, kind: str) -> tuple[str, ...]:
    """The languages of a folder's text tower: as its ``atelier_encoder.json`` declares, else English for
    OpenAI's vocabulary, else English and Korean when the tokenizer cuts a Korean sentence into at most one
    token per syllable with no unknown token (a vocabulary that learned Korean)."""
    info = folder / ENCODER_INFO
    if info.is_file():
        declared = json.loads(info.read_text(encoding="utf-8")).get("languages") or []
        known = tuple(language for language in LANGUAGES if language in declared)
        if not known:
            raise ModelFolderError(f"{str(info)!r} names no language Atelier knows ({', '.join(LANGUAGES)}); "
                                   'write e.g. {"languages": ["en", "ko"]}')
        return known
    if kind == "clip" and len(tokenizer) == OPENAI_VOCAB_SIZE:
        return ("en",)
    ids = tokenizer(_KOREAN_PROBE, add_special_tokens=False)["input_ids"]
    syllables = sum(1 for ch in _KOREAN_PROBE if "\uac00" <= ch <= "\ud7a3")
    unknown = tokenizer.unk_token_id
    knows_korean = len(ids) <= syllables and (unknown is None or unknown not in ids)
    return ("en", "ko") if knows_korean else ("en",)


def encoder_kind(folder: Path) -> str:
    """``clip`` or ``vision-text-dual-encoder`` from the folder's ``config.json``; any other model is refused,
    naming what it is."""
    check_files(folder, "image-text encoder", {"config": ("config.json",), "weights": WEIGHT_FILES})
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    kind = raw.get("model_type")
    if kind == "clip_vision_model":
        raise ModelFolderError(f"{str(folder)!r} holds a CLIP vision model only (like ComfyUI's CLIP_VISION); "
                               "comparing pictures with texts needs the text tower too: use a whole CLIP folder, such "
                               f"as {DEFAULT_CLIP}, or build a dual encoder from it and a text model")
    if kind not in KINDS:
        raise ModelFolderError(f"{str(folder)!r} holds a {kind!r} model ({', '.join(raw.get('architectures') or [])}), "
                               "which is neither a CLIP (model_type 'clip') nor a vision-text dual encoder (model_type "
                               "'vision-text-dual-encoder'); a text or vision model alone can be joined to the other "
                               "tower with 'Atelier Build Dual Encoder'")
    return kind


def encoder_config(folder: Path) -> tuple[str, Any]:
    """The kind (a key of KINDS) and transformers config of an image-text encoder folder; a clear error for any
    other folder."""
    import transformers

    kind = encoder_kind(folder)
    return kind, getattr(transformers, KINDS[kind]).config_class.from_pretrained(str(folder), local_files_only=True)


def clip_fingerprint(folder: Path, dtype: torch.dtype) -> str:
    """What embeddings of this encoder are keyed by: its weights and the precision it runs in."""
    return f"{weights_sha256(folder)}:{dtype}"


def load_clip(folder: Path, device: torch.device | str = "cpu", precision: str = "auto") -> ClipModel:
    """Load a CLIP or dual-encoder folder (``config.json``, weights, tokenizer, ``preprocessor_config.json``)
    offline."""
    import transformers

    device = torch.device(device)
    kind, config = encoder_config(folder)
    model_class = getattr(transformers, KINDS[kind])
    dtype = precision_dtype(precision, device)
    with loading_weights(folder, "image-text encoder", DEFAULT_CLIP):
        model = model_class.from_pretrained(str(folder), local_files_only=True, **dtype_argument(dtype))
    model.to(device).eval().requires_grad_(False)
    tokenizer = load_tokenizer(folder, config, kind)
    return ClipModel(model, tokenizer, read_pixel_spec(folder, config.vision_config.image_size),
                     clip_fingerprint(folder, dtype), folder.name, text_languages(folder, tokenizer, kind), kind)


def processor_config(spec: PixelSpec) -> dict[str, Any]:
    """``preprocessor_config.json`` contents that ``read_pixel_spec`` reads back as ``spec``."""
    if spec.square:
        return {"size": {"height": spec.size, "width": spec.size}, "do_center_crop": False,
                "image_mean": list(spec.mean), "image_std": list(spec.std)}
    return {"size": {"shortest_edge": spec.size}, "crop_size": {"height": spec.crop, "width": spec.crop},
            "do_center_crop": True, "image_mean": list(spec.mean), "image_std": list(spec.std)}


def new_model_folder(parent: Path, name: str) -> Path:
    """``parent/name`` for a new encoder, or ``name_2``, ``name_3``... when it is taken: nothing a user made is
    replaced, as every trainer's output."""
    from ..shared.output_paths import safe_name

    stem = safe_name(name.strip(), "encoder name")
    number = 1
    while (folder := Path(parent) / (stem if number == 1 else f"{stem}_{number}")).exists():
        number += 1
    return folder


def save_clip(clip: ClipModel, folder: Path) -> Path:
    """Write ``clip`` as a model folder ``load_clip`` reads (weights, configs, tokenizer, pixel spec, languages).

    Written beside ``folder`` and renamed into place, so a crash never leaves half a model where a loader looks;
    an existing ``folder`` is replaced.
    """
    import shutil

    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.saving")
    shutil.rmtree(staging, ignore_errors=True)
    clip.model.save_pretrained(str(staging), safe_serialization=True)
    clip.tokenizer.save_pretrained(str(staging))
    (staging / "preprocessor_config.json").write_text(json.dumps(processor_config(clip.pixels), indent=2))
    (staging / ENCODER_INFO).write_text(json.dumps({"languages": list(clip.languages)}, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder
