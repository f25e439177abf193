"""Training the image-embedding adapter on pictures alone, against a frozen SD 1.5.

Each step: latents of some pictures, their (unit) image embeddings through the adapter to K tokens,
appended to the caption's text encoding (or the empty prompt's, with probability ``text_dropout``, so
the tokens learn to carry the picture on their own), and the ordinary noise-prediction MSE of the
frozen UNet; only the adapter learns. A share ``embed_dropout`` of the embeddings is zeroed, as
IP-Adapter does, so the adapter also knows 'no picture'.

Random draws of step ``s`` come from ``derive_seed(seed, s)``, so a resumed run equals one that never
stopped (the checkpoint holds the adapter, the optimizer, the step and the losses). Data-parallel as the LoRA
trainer is (training/distributed.py): each rank its share of every batch, the adapter's gradients all-reduced.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ...core.dataset.augment import derive_seed
from ...core.sd15.embedding_adapter import AdapterConfig, EmbeddingAdapter
from ...core.shared.progress import Progress, SilentProgress
from .. import checkpoints, distributed
from ..loop import check_finite, run_steps, seeded
from .latents import TrainData
from .lora_trainer import PRECISIONS, add_training_noise, autocast_dtype, noise_scheduler, pick_batch


@dataclass(frozen=True)
class AdapterTrainConfig:
    tokens: int = 4
    steps: int = 2000
    batch_size: int = 4
    lr: float = 1e-4
    text_dropout: float = 0.5
    embed_dropout: float = 0.05
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        checkpoints.require([
            (1 <= self.tokens <= 77, "tokens must lie in 1..77"), (self.steps >= 1, "steps must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"), (self.lr > 0, "lr must be above 0"),
            (0 <= self.text_dropout <= 1, "text_dropout must lie in 0..1"),
            (0 <= self.embed_dropout < 1, "embed_dropout must lie in 0..1"),
            (self.mixed_precision in PRECISIONS, f"mixed_precision: {PRECISIONS}"),
            (self.checkpoint_every >= 1, "checkpoint_every must be at least 1"),
        ])

    def fingerprint(self) -> str:
        return checkpoints.fingerprint(self)


@dataclass
class AdapterResult:
    adapter: EmbeddingAdapter
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    resumed: str = ""  # distributed.resume_note


def adapter_loss(unet: nn.Module, adapter: EmbeddingAdapter, data: TrainData, embeds: torch.Tensor,
                 config: AdapterTrainConfig, sched, step: int) -> torch.Tensor:
    """This rank's part of the step's mean loss (all of it in one process): see ``distributed.share``."""
    device = next(adapter.parameters()).device
    gen = torch.Generator().manual_seed(derive_seed(config.seed, step))
    bucket, idx = pick_batch(data, config.batch_size, gen)
    latents = bucket.latents[idx].to(device, torch.float32)
    text = bucket.conditioning[idx].clone()
    text[torch.rand(config.batch_size, generator=gen) < config.text_dropout] = data.unconditional.to(text.dtype)
    picture = embeds[bucket.index[idx]].clone()
    picture[torch.rand(config.batch_size, generator=gen) < config.embed_dropout] = 0.0
    noise, t, noisy = add_training_noise(latents, sched, gen)
    noise, t, noisy, text, picture = distributed.take_share(config.batch_size, noise, t, noisy, text, picture)
    dtype = autocast_dtype(config)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        cond = torch.cat([text.to(device), adapter(picture.to(device))], dim=1)
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
    return (pred.float() - noise).pow(2).mean(dim=(1, 2, 3)).sum() / config.batch_size


def train_adapter(unet: nn.Module, data: TrainData, embeds: torch.Tensor, config: AdapterTrainConfig,
                  run_dir: Path, progress: Progress | None = None,
                  on_step: Callable[[int, float], None] | None = None) -> AdapterResult:
    """Train (or resume from ``run_dir/checkpoint``) an adapter for ``embeds [N, D]`` (row i is the picture
    given to ``data``'s build at position i) on the frozen ``unet``."""
    device = next(unet.parameters()).device
    unet.requires_grad_(False)
    if config.gradient_checkpointing and hasattr(unet, "enable_gradient_checkpointing"):
        unet.enable_gradient_checkpointing()
        unet.train()  # diffusers checkpoints only in training mode; the UNet has no dropout to switch on
    distributed.check_batch(config.batch_size)
    with seeded(derive_seed(config.seed, "init")):
        adapter = EmbeddingAdapter(AdapterConfig(embeds.shape[1], config.tokens)).to(device)
    params = list(adapter.parameters())
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=config.lr, weight_decay=1e-2)
    sched = noise_scheduler()
    scaler = torch.amp.GradScaler("cuda", enabled=config.mixed_precision == "fp16" and device.type == "cuda")
    checkpoint = run_dir / "checkpoint"
    result = AdapterResult(adapter)
    state = distributed.load_checkpoint(checkpoint, config.fingerprint())
    if state is not None:
        adapter.load_state_dict(state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        result = AdapterResult(adapter, list(state["losses"]), state["step"],
                               distributed.resume_note(state["step"], state.get("world_size", 1)))
    distributed.broadcast_parameters(params)
    step_done = result.resumed_from

    def save(step: int) -> None:
        if distributed.is_main():  # every rank holds the same adapter and optimizer
            checkpoints.save(checkpoint, {"fingerprint": config.fingerprint(), "step": step, "losses": result.losses,
                                          "adapter": adapter.state_dict(), "optimizer": optimizer.state_dict(),
                                          "world_size": distributed.world_size()})

    def step(index: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = adapter_loss(unet, adapter, data, embeds, config, sched, index)
        scaler.scale(loss).backward()
        loss = loss.detach()
        distributed.reduce_gradients(params, loss)  # the global batch's gradient and loss on every rank
        check_finite(loss.item())
        scaler.step(optimizer)
        scaler.update()
        result.losses.append(loss.item())
        return loss.item()

    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    run_steps(step_done, config.steps, step, save, config.checkpoint_every,
              progress or SilentProgress(config.steps), checkpoint, on_step,
              "Lower the learning rate or use bf16/fp32.")
    adapter.eval()
    return result
