"""The audio encoder: log-mel windows through a small ResNet to a point in a frozen image encoder's
embedding space, and its file.

BatchNorm (batch statistics while training, fixed running statistics after) rather than a per-clip
normalisation such as GroupNorm or InstanceNorm: those subtract each clip's own mean and would erase
the loudness that the features keep.

The embedding space is the image encoder's projected embedding scaled to unit length (``image_embeds``
of a CLIP vision model / its norm); audio embeddings are not normalised, so their length is free to
carry level. ``image_embed_norm`` (the mean length of the raw image embeddings seen in training)
scales an audio embedding back when it stands in for a raw ``image_embeds``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..shared.state_dicts import load_exactly, read_tagged, save_new_file
from . import features as audio_features
from .features import MelSpec

KIND = "atelier_audio_encoder"


@dataclass(frozen=True)
class AudioEncoderConfig:
    embed_dim: int
    mel: MelSpec = field(default_factory=MelSpec)
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks_per_stage: int = 2

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or not self.widths or min(self.widths) < 1 or self.blocks_per_stage < 1:
            raise ValueError(f"unusable audio encoder settings: {self}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> AudioEncoderConfig:
        raw = json.loads(text)
        return cls(embed_dim=raw["embed_dim"], mel=MelSpec(**raw["mel"]), widths=tuple(raw["widths"]),
                   blocks_per_stage=raw["blocks_per_stage"])


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class AudioEncoder(nn.Module):
    """``[B, n_mels, frames]`` features to ``[B, embed_dim]`` embeddings."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        # ResNet's stem: a strided convolution and a max-pool bring the mel-time plane down 4x each way
        self.stem = nn.Sequential(nn.Conv2d(1, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        for i, width in enumerate(w):
            for b in range(config.blocks_per_stage):
                first = b == 0
                blocks.append(ResBlock(w[max(i - 1, 0)] if first else width, width, 2 if first and i else 1))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Linear(w[-1], w[-1]), nn.ReLU(), nn.Linear(w[-1], config.embed_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(features.unsqueeze(1)))
        return self.head(x.mean(dim=(2, 3)))


@dataclass
class AudioEmbedder:
    """A trained encoder with what it was aligned to; embeds sounds."""

    encoder: AudioEncoder
    image_encoder: str  # the name of the image encoder whose space it lands in
    image_embed_norm: float
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> AudioEncoderConfig:
        return self.encoder.config

    @property
    def dim(self) -> int:
        return self.config.embed_dim

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.no_grad()
    def embed_features(self, features: np.ndarray | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        self.encoder.eval()
        feats = torch.as_tensor(features, dtype=torch.float32)
        out = [self.encoder(feats[i:i + batch_size].to(self.device)).float().cpu()
               for i in range(0, len(feats), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def embed_clip(self, waveform: np.ndarray, sample_rate: int,
                   what: str = "the audio") -> tuple[torch.Tensor, list[str]]:
        """``[D]`` embedding of one clip ``[C, T]`` and notes (downmixed, resampled, padded): the mean over
        the windows that cover it, computed a batch of windows at a time. Silence, samples out of range and
        an embedding that is not finite are errors naming ``what``."""
        mel = self.config.mel
        mono, notes = audio_features.prepare(waveform, sample_rate, mel.sample_rate, what)
        audio_features.check_not_silent(mono, what)
        embedding = torch.cat([self.embed_features(f, audio_features.WINDOW_BATCH)
                               for f in audio_features.feature_batches(mono, mel, what)]).mean(0)
        if not torch.isfinite(embedding).all():
            raise ValueError(f"the audio encoder gave a NaN or infinite embedding for {what}: its weights are "
                             "damaged; load the encoder file again, or train it again")
        return embedding, notes + audio_features.padding_notes(mono.size, mel)

    def check_image_dim(self, dim: int, what: str) -> None:
        if dim != self.dim:
            raise ValueError(f"{what} gives {dim}-d image embeddings, but this audio encoder was trained for the "
                             f"{self.dim}-d space of {self.image_encoder!r}: use that image encoder, or train an "
                             "encoder for this one")


def save_audio_encoder(folder: Path, name: str, embedder: AudioEmbedder, extra: dict[str, object]) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in embedder.encoder.state_dict().items()}
    metadata = {"atelier_kind": KIND, "atelier_config": embedder.config.to_json(),
                "atelier_image_encoder": embedder.image_encoder, "atelier_image_embed_norm": embedder.image_embed_norm,
                "atelier_metrics": embedder.metrics, **extra}
    return save_new_file(folder, name, state, metadata, "audio encoder name")


def load_audio_encoder(path: str | Path, device: torch.device | str = "cpu") -> AudioEmbedder:
    """An encoder file written by the audio encoder's training; anything else is a clear error."""
    path = Path(path)
    meta, state = read_tagged(path, KIND, "audio encoder", "train one with Atelier Train Audio Encoder")
    encoder = AudioEncoder(AudioEncoderConfig.from_json(meta["atelier_config"]))
    load_exactly(encoder, state, path)
    return AudioEmbedder(encoder.to(device).eval(), meta.get("atelier_image_encoder", "unknown"),
                         float(json.loads(meta.get("atelier_image_embed_norm", "1.0"))),
                         json.loads(meta.get("atelier_metrics", "{}")))


@dataclass
class AudioEmbedding:
    """What Encode Audio hands on: embeddings in an image encoder's (unit) space, and the strength each draws
    with from its sound's loudness (``loudness.loudness_strength``)."""

    embeds: torch.Tensor  # [B, D]
    image_encoder: str
    image_embed_norm: float
    strengths: torch.Tensor | None = None  # [B]; None: every row at 1 (loudness not measured or turned off)

    def row_strengths(self) -> torch.Tensor:
        """``[B]`` token strengths from loudness, 1 where none was measured."""
        return torch.ones(len(self.embeds)) if self.strengths is None else self.strengths.float()

    def blend_weights(self, sound_weight: float) -> torch.Tensor:
        """``[B]`` weights of the sound in a picture-plus-sound blend: ``sound_weight`` times each row's loudness
        strength, at most 1 (a louder sound pulls the edit further towards itself)."""
        if not 0.0 <= sound_weight <= 1.0:
            raise ValueError("the sound weight must lie in 0..1")
        return (sound_weight * self.row_strengths()).clamp(max=1.0)

    def raw_image_embeds(self) -> torch.Tensor:
        """Scaled to the raw length of that encoder's ``image_embeds``, for nodes that take a CLIP vision output."""
        return self.embeds * self.image_embed_norm


def blend(image_unit: torch.Tensor, audio: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """``(1 - weight) * picture + weight * sound``; one side may be a single row broadcast over the other, and
    ``weight`` one number or one per sound (``[B]``, as loudness gives)."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    if not bool(((weight >= 0) & (weight <= 1)).all()):
        raise ValueError("the sound weight must lie in 0..1")
    if image_unit.shape[-1] != audio.shape[-1]:
        raise ValueError(f"the picture's embedding is {image_unit.shape[-1]}-d but the sound's is {audio.shape[-1]}-d:"
                         " the image encoder is not the one the audio encoder was trained for")
    if image_unit.shape[0] not in (1, audio.shape[0]) and audio.shape[0] != 1:
        raise ValueError(f"{image_unit.shape[0]} pictures for {audio.shape[0]} sounds: give one of either, or as many")
    weight = weight.reshape(-1, 1) if weight.ndim else weight
    return (1.0 - weight) * image_unit + weight * audio
