"""Training the audio encoder to land where a frozen image encoder puts the paired pictures.

InfoNCE whose logits are negative Euclidean distances, ``-||a_j - b_k|| / temperature`` (audio to
image; ``symmetric`` adds image to audio; ``learn_scale`` makes the temperature a trained parameter),
or plain L2 regression ``mean ||a - b||^2``. Targets are unit-length image embeddings.

Step ``s`` trains on a slice of epoch ``s // steps_per_epoch``'s permutation, drawn from
``derive_seed(seed, epoch)``; a checkpoint holds the encoder (BatchNorm statistics included), the
optimizer, the step and the history, so a resumed run equals one that never stopped. After every
epoch the held-out split is ranked (audio to image) and R@1 / R@10 go into the history.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...core.audio.encoder import AudioEmbedder, AudioEncoder, AudioEncoderConfig
from ...core.audio.features import MelSpec
from ...core.curator.retrieval import evaluate, score_ranks
from ...core.dataset.augment import derive_seed
from ...core.shared.progress import Progress, SilentProgress
from .. import checkpoints
from ..loop import batching, check_finite, run_steps, seeded, split

LOSSES = ("infonce", "l2")


@dataclass(frozen=True)
class AlignConfig:
    loss: str = "infonce"
    symmetric: bool = False
    learn_scale: bool = False
    temperature: float = 0.1
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    seed: int = 0
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks_per_stage: int = 2
    mel: MelSpec = field(default_factory=MelSpec)

    def __post_init__(self) -> None:
        checkpoints.require([
            (self.loss in LOSSES, f"loss: {LOSSES}"), (self.temperature > 0, "temperature must be above 0"),
            (self.epochs >= 1, "epochs must be at least 1"), (self.batch_size >= 2, "batch_size must be at least 2"),
            (self.lr > 0, "lr must be above 0"), (0 < self.val_fraction < 1, "val_fraction must lie between 0 and 1"),
        ])

    def fingerprint(self) -> str:
        return checkpoints.fingerprint(self, free=("epochs",))


@dataclass
class AlignData:
    features: torch.Tensor  # [N, n_mels, frames] log-mel windows
    targets: torch.Tensor  # [N, D] unit image embeddings
    names: list[str]
    image_encoder: str
    image_embed_norm: float

    def __post_init__(self) -> None:
        if self.features.shape[0] != self.targets.shape[0] or self.features.shape[0] != len(self.names):
            raise ValueError("one image embedding and one name per audio clip are needed")
        if self.features.shape[0] < 4:
            raise ValueError(f"{self.features.shape[0]} pairs: at least 4 are needed (some are held out to measure "
                             "retrieval)")


@dataclass
class AlignResult:
    embedder: AudioEmbedder
    history: list[dict[str, float]]  # per epoch: loss, R@1, R@10, chance R@1
    resumed_from: int
    val_names: list[str]


class Scale(nn.Module):
    """The InfoNCE temperature, as a log so it stays positive when it trains."""

    def __init__(self, temperature: float, learn: bool) -> None:
        super().__init__()
        self.log_t = nn.Parameter(torch.tensor(math.log(temperature)), requires_grad=learn)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        return -distances / self.log_t.exp()


def alignment_loss(audio: torch.Tensor, images: torch.Tensor, config: AlignConfig, scale: Scale) -> torch.Tensor:
    if config.loss == "l2":
        return (audio - images).pow(2).sum(dim=1).mean()
    logits = scale(torch.cdist(audio, images))  # [B, B]: row j's positive is column j
    labels = torch.arange(len(audio), device=audio.device)
    loss = F.cross_entropy(logits, labels)
    return (loss + F.cross_entropy(logits.T, labels)) / 2 if config.symmetric else loss


@torch.no_grad()
def retrieval(encoder: AudioEncoder, features: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Audio-to-image R@1 and R@10 among the held-out pictures, ranked by Euclidean distance."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    audio = torch.cat([encoder(features[i:i + 256].to(device)).float() for i in range(0, len(features), 256)])
    encoder.train(was_training)
    ranks = score_ranks(-torch.cdist(audio, targets.to(device)).cpu(), list(range(len(targets))))
    return {"r1": evaluate(ranks, 1).recall, "r10": evaluate(ranks, 10).recall, "chance_r1": 1 / len(targets)}


def build_encoder(config: AlignConfig, embed_dim: int) -> AudioEncoder:
    with seeded(derive_seed(config.seed, "init")):
        return AudioEncoder(AudioEncoderConfig(embed_dim, config.mel, tuple(config.widths), config.blocks_per_stage))


def train_aligner(data: AlignData, config: AlignConfig, run_dir: Path, device: torch.device | str = "cpu",
                  progress: Progress | None = None,
                  on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> AlignResult:
    """Train (or resume from ``run_dir/checkpoint``) an audio encoder on ``data``."""
    device = torch.device(device)
    if data.features.shape[1:] != (config.mel.n_mels, config.mel.frames):
        raise ValueError(f"features {tuple(data.features.shape[1:])} do not match the settings' "
                         f"{(config.mel.n_mels, config.mel.frames)}")
    train_rows, val_rows = split(len(data.names), config.val_fraction, config.seed)
    batch, per_epoch = batching(len(train_rows), config.batch_size)
    total = config.epochs * per_epoch
    encoder = build_encoder(config, data.targets.shape[1]).to(device).train()
    scale = Scale(config.temperature, config.learn_scale).to(device)
    params = list(encoder.parameters()) + ([scale.log_t] if config.learn_scale else [])
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    checkpoint = run_dir / "checkpoint"
    state = checkpoints.load_matching(checkpoint, config.fingerprint())
    first = 0
    if state is not None:
        encoder.load_state_dict(state["encoder"])
        scale.load_state_dict(state["scale"])
        optimizer.load_state_dict(state["optimizer"])
        history, first = list(state["history"]), int(state["step"])
    epoch_losses: list[float] = list(state["epoch_losses"]) if state is not None else []
    val_features, val_targets = data.features[val_rows], data.targets[val_rows]

    def save(step: int) -> None:
        checkpoints.save(checkpoint, {"fingerprint": config.fingerprint(), "step": step, "history": history,
                                      "epoch_losses": epoch_losses, "encoder": encoder.state_dict(),
                                      "scale": scale.state_dict(), "optimizer": optimizer.state_dict()})

    def step(index: int) -> float:
        epoch, within = divmod(index, per_epoch)
        order = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(derive_seed(config.seed,
                                                                                                   epoch)))
        rows = train_rows[order[within * batch:(within + 1) * batch]]
        audio = encoder(data.features[rows].to(device))
        loss = alignment_loss(audio.float(), data.targets[rows].to(device), config, scale)
        check_finite(loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        epoch_losses.append(loss.item())
        if within == per_epoch - 1:  # the epoch is over: measure before the checkpoint is written
            history.append({"epoch": epoch + 1, "loss": sum(epoch_losses) / len(epoch_losses),
                            **retrieval(encoder, val_features, val_targets)})
            epoch_losses.clear()
        return loss.item()

    def report(done: int, loss: float) -> None:
        if done % per_epoch == 0:
            scores = history[-1]
            progress.status(f"epoch {done // per_epoch}: R@1 {scores['r1']:.2f}, R@10 {scores['r10']:.2f}")
            if on_epoch is not None:
                on_epoch(done // per_epoch, scores)

    run_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or SilentProgress(total)
    run_steps(first, total, step, save, per_epoch, progress, checkpoint, report,
              advice="Lower the learning rate, or raise the temperature.")
    encoder.eval()
    metrics = dict(history[-1]) if history else {}
    metrics["held_out_pairs"] = len(val_rows)
    embedder = AudioEmbedder(encoder, data.image_encoder, data.image_embed_norm, metrics)
    return AlignResult(embedder, history, first, [data.names[i] for i in val_rows.tolist()])
