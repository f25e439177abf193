"""The image-embedding adapter: one embedding to K extra 768-d tokens for SD 1.5's cross-attention.

As IP-Adapter's image projection (a linear map to K tokens, then LayerNorm), but the tokens are
appended to the text conditioning instead of feeding a separate attention branch, so the result is
an ordinary (longer) CONDITIONING that core samplers, LoRAs and text prompts work with unchanged.

A file records the image encoder it was trained with: its name, its width (the config's
``embed_dim``) and, since files carry it, its fingerprint (the unit embedding of a fixed probe
picture), so an adapter handed another encoder is refused before any work, naming both. Every
node that appends tokens (picture, sound, picture + sound) goes through ``LoadedAdapter``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..audio.image_embedding import ImageEmbedder, embed_pictures, probe_embedding
from ..shared.state_dicts import load_exactly, read_tagged, save_new_file

KIND = "atelier_embedding_adapter"
TOKEN_DIM = 768  # SD 1.5's cross-attention width
PROBE_KEY = "atelier_image_encoder_probe"
# cosine of two encoders' probe embeddings above which they count as one model. One model with 8-bit input (as
# ComfyUI's CLIP vision preprocessing rounds) or in bf16 agrees to above 0.9999 (measured on tiny models); models
# trained apart have unrelated spaces (two random projections: 0.07), so a slightly fine-tuned copy still passes
SAME_ENCODER = 0.9


@dataclass(frozen=True)
class AdapterConfig:
    embed_dim: int
    tokens: int = 4
    token_dim: int = TOKEN_DIM

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or not 1 <= self.tokens <= 77 or self.token_dim < 1:
            raise ValueError(f"unusable adapter settings: {self} (1 to 77 tokens)")


class EmbeddingAdapter(nn.Module):
    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.embed_dim, config.tokens * config.token_dim)
        self.norm = nn.LayerNorm(config.token_dim)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` to ``[B, K, token_dim]``."""
        if embeds.shape[-1] != self.config.embed_dim:
            raise ValueError(f"the adapter takes {self.config.embed_dim}-d embeddings, not {embeds.shape[-1]}-d")
        tokens = self.proj(embeds.to(self.proj.weight.dtype))
        return self.norm(tokens.reshape(*embeds.shape[:-1], self.config.tokens, self.config.token_dim))


def append_tokens(cond: torch.Tensor, tokens: torch.Tensor, strength: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``[B, T, C]`` conditioning with ``[E, K, C]`` tokens times ``strength`` appended: ``[max(B, E), T+K, C]``.

    One embedding steers every row; E embeddings on a one-row prompt give E rows (one picture per
    embedding). ``strength`` is one number or one per embedding (``[E]``: a sound's loudness scales its
    own tokens, see ``core/audio/loudness.py``). Strength 0 appends nothing (zero tokens would still take
    a share of the attention)."""
    if cond.ndim != 3 or tokens.ndim != 3 or cond.shape[-1] != tokens.shape[-1]:
        raise ValueError(f"cannot append tokens {tuple(tokens.shape)} to conditioning {tuple(cond.shape)}: the "
                         f"conditioning must be [batch, tokens, {tokens.shape[-1]}] (an SD 1.5 text encoding)")
    if 1 not in (tokens.shape[0], cond.shape[0]) and tokens.shape[0] != cond.shape[0]:
        raise ValueError(f"{tokens.shape[0]} embeddings for a conditioning batch of {cond.shape[0]}: give one "
                         "prompt, one embedding, or as many of each")
    if isinstance(strength, torch.Tensor):
        if strength.numel() not in (1, tokens.shape[0]):
            raise ValueError(f"{strength.numel()} strengths for {tokens.shape[0]} embeddings: give one, or one each")
        strength = strength.to(tokens.device, tokens.dtype).reshape(-1, 1, 1)
    elif strength == 0:
        return cond
    rows = max(cond.shape[0], tokens.shape[0])
    tokens = (tokens * strength).to(cond.device, cond.dtype).expand(rows, -1, -1)
    return torch.cat([cond.expand(rows, -1, -1), tokens], dim=1)


def save_adapter(folder: Path, name: str, adapter: EmbeddingAdapter, image_encoder: str,
                 extra: dict[str, object], probe: torch.Tensor | None = None) -> Path:
    """``probe``: the training encoder's ``probe_embedding``, recorded so another encoder can be refused."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in adapter.state_dict().items()}
    fingerprint = {} if probe is None else {PROBE_KEY: json.dumps([round(float(v), 6) for v in probe])}
    metadata = {"atelier_kind": KIND, "atelier_config": json.dumps(asdict(adapter.config)),
                "atelier_image_encoder": image_encoder, **fingerprint, **extra}
    return save_new_file(folder, name, state, metadata, "adapter name")


_OTHER_ENCODER = ("wire the image encoder it was trained with, or train an adapter for this one with Atelier Train "
                  "Embedding Adapter")


@dataclass
class LoadedAdapter:
    adapter: EmbeddingAdapter
    image_encoder: str
    probe: torch.Tensor | None = None  # the training encoder's fingerprint; files written before it have none
    file: str = ""  # the file's name, for errors and manifests ("" for one trained in this run)

    def _trained_with(self) -> str:
        return f"the adapter{f' {self.file!r}' if self.file else ''} was trained with the image encoder " \
               f"{self.image_encoder!r} ({self.adapter.config.embed_dim}-d)"

    def check_encoder(self, embedder: ImageEmbedder) -> None:
        """Refuse an image encoder other than the one the adapter was trained with, naming both: by width, and
        by the probe picture's embedding where the file records it."""
        given = f"{embedder.name!r} ({embedder.dim}-d)"
        if embedder.dim != self.adapter.config.embed_dim:
            raise ValueError(f"{self._trained_with()}, but the image encoder given is {given}: {_OTHER_ENCODER}")
        if self.probe is not None:
            agreement = float(self.probe @ probe_embedding(embedder))
            if agreement < SAME_ENCODER:
                raise ValueError(f"{self._trained_with()}, but the image encoder given, {given}, is another model "
                                 f"(their embeddings of one test picture agree to {agreement:.2f}; one model's agree "
                                 f"to above 0.9): {_OTHER_ENCODER}")

    def no_picture(self) -> torch.Tensor:
        """The zero embedding ``[1, D]``: 'no picture', as training's ``embed_dropout`` shows it. A negative prompt
        carries its tokens, so both sides of classifier-free guidance have the same length."""
        return torch.zeros(1, self.adapter.config.embed_dim)

    def embed_images(self, embedder: ImageEmbedder, images: torch.Tensor, whole_set: bool = False) -> torch.Tensor:
        """Unit embeddings ``[B, D]`` of an IMAGE batch, once the encoder is checked against the adapter; with
        ``whole_set``, one ``[1, D]`` for them all: their mean, made unit again (the adapter takes unit ones)."""
        self.check_encoder(embedder)
        embeds = embed_pictures(embedder, images).unit
        return F.normalize(embeds.mean(dim=0, keepdim=True), dim=-1) if whole_set else embeds

    @torch.no_grad()
    def tokens(self, embeds: torch.Tensor, what: str = "the embedding") -> torch.Tensor:
        """``[E, K, 768]`` tokens of ``E`` embeddings; ``what`` names them in the error for another width."""
        dim = self.adapter.config.embed_dim
        if embeds.shape[-1] != dim:
            raise ValueError(f"{self._trained_with()} and takes {dim}-d embeddings, but {what} is "
                             f"{embeds.shape[-1]}-d: {_OTHER_ENCODER}")
        self.adapter.eval()
        return self.adapter(embeds.reshape(-1, dim).float())

    def condition(self, conditioning: list, embeds: torch.Tensor, strength: float | torch.Tensor = 1.0,
                  what: str = "the embedding") -> list:
        """``conditioning`` with the tokens of ``embeds`` appended (see ``condition``)."""
        return condition(conditioning, self.tokens(embeds, what), strength)


def load_adapter(path: str | Path) -> LoadedAdapter:
    path = Path(path)
    meta, state = read_tagged(path, KIND, "image-embedding adapter", "train one with Atelier Train Embedding Adapter")
    adapter = EmbeddingAdapter(AdapterConfig(**json.loads(meta["atelier_config"])))
    load_exactly(adapter, state, path)
    probe = torch.tensor(json.loads(meta[PROBE_KEY]), dtype=torch.float32) if PROBE_KEY in meta else None
    return LoadedAdapter(adapter.eval(), meta.get("atelier_image_encoder", "unknown"), probe, path.name)


def condition(conditioning: list, tokens: torch.Tensor, strength: float | torch.Tensor = 1.0) -> list:
    """A ComfyUI CONDITIONING (``[[tensor [B, T, 768], options], ...]``) with the tokens appended to every
    entry's tensor; the options (pooled output, areas, masks) are kept as they are."""
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError("the conditioning is empty: wire a CLIP Text Encode (an empty prompt is fine)")
    return [[append_tokens(cond, tokens, strength), dict(options)] for cond, options in conditioning]
