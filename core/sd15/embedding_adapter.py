"""The image-embedding adapter: one embedding to K extra 768-d tokens for SD 1.5's cross-attention.

As IP-Adapter's image projection (a linear map to K tokens, then LayerNorm), but the tokens are
appended to the text conditioning instead of feeding a separate attention branch, so the result is
an ordinary (longer) CONDITIONING that core samplers, LoRAs and text prompts work with unchanged.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..shared.state_dicts import load_exactly, read_tagged, save_new_file

KIND = "atelier_embedding_adapter"
TOKEN_DIM = 768  # SD 1.5's cross-attention width


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


def append_tokens(cond: torch.Tensor, tokens: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``[B, T, C]`` conditioning with ``[E, K, C]`` tokens times ``strength`` appended: ``[max(B, E), T+K, C]``.

    One embedding steers every row; E embeddings on a one-row prompt give E rows (one picture per
    embedding). Strength 0 appends nothing (zero tokens would still take a share of the attention)."""
    if cond.ndim != 3 or tokens.ndim != 3 or cond.shape[-1] != tokens.shape[-1]:
        raise ValueError(f"cannot append tokens {tuple(tokens.shape)} to conditioning {tuple(cond.shape)}: the "
                         f"conditioning must be [batch, tokens, {tokens.shape[-1]}] (an SD 1.5 text encoding)")
    if 1 not in (tokens.shape[0], cond.shape[0]) and tokens.shape[0] != cond.shape[0]:
        raise ValueError(f"{tokens.shape[0]} embeddings for a conditioning batch of {cond.shape[0]}: give one "
                         "prompt, one embedding, or as many of each")
    if strength == 0:
        return cond
    rows = max(cond.shape[0], tokens.shape[0])
    tokens = (tokens * strength).to(cond.device, cond.dtype).expand(rows, -1, -1)
    return torch.cat([cond.expand(rows, -1, -1), tokens], dim=1)


def save_adapter(folder: Path, name: str, adapter: EmbeddingAdapter, image_encoder: str,
                 extra: dict[str, object]) -> Path:
    state = {k: v.detach().float().cpu().contiguous() for k, v in adapter.state_dict().items()}
    metadata = {"atelier_kind": KIND, "atelier_config": json.dumps(asdict(adapter.config)),
                "atelier_image_encoder": image_encoder, **extra}
    return save_new_file(folder, name, state, metadata, "adapter name")


@dataclass
class LoadedAdapter:
    adapter: EmbeddingAdapter
    image_encoder: str

    @torch.no_grad()
    def tokens(self, embeds: torch.Tensor) -> torch.Tensor:
        self.adapter.eval()
        return self.adapter(embeds.reshape(-1, embeds.shape[-1]).float())


def load_adapter(path: str | Path) -> LoadedAdapter:
    path = Path(path)
    meta, state = read_tagged(path, KIND, "image-embedding adapter", "train one with Atelier Train Embedding Adapter")
    adapter = EmbeddingAdapter(AdapterConfig(**json.loads(meta["atelier_config"])))
    load_exactly(adapter, state, path)
    return LoadedAdapter(adapter.eval(), meta.get("atelier_image_encoder", "unknown"))


def condition(conditioning: list, tokens: torch.Tensor, strength: float = 1.0) -> list:
    """A ComfyUI CONDITIONING (``[[tensor [B, T, 768], options], ...]``) with the tokens appended to every
    entry's tensor; the options (pooled output, areas, masks) are kept as they are."""
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError("the conditioning is empty: wire a CLIP Text Encode (an empty prompt is fine)")
    return [[append_tokens(cond, tokens, strength), dict(options)] for cond, options in conditioning]
