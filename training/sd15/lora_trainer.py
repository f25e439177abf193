"""LoRA fine-tuning of an SD 1.5 UNet (diffusers + peft) on cached latents.

Noise-prediction MSE on the DDPM forward process (T = 1000, SD 1.5's scaled-linear betas), with
optional min-SNR weighting and noise offset; AdamW or 8-bit AdamW; QLoRA (the frozen UNet's linear
layers in 4-bit NF4); diffusers' LR schedulers; gradient accumulation and clipping; fp16 (loss-scaled)
or bf16 autocast.

Every random draw of step ``s`` (which latents, noise, timesteps, caption dropout, LoRA dropout)
comes from generators seeded with ``derive_seed(seed, s, micro_step)``, so a run resumed from a
checkpoint continues exactly as a run that never stopped: a checkpoint needs only the LoRA
weights, the optimizer, the LR scheduler and the step.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ...core.dataset.augment import derive_seed
from ...core.shared.bitsandbytes_support import require_bitsandbytes
from ...core.shared.progress import Progress, SilentProgress
from .. import checkpoints, distributed
from ..loop import check_finite, run_steps, seeded
from .latents import Bucket, TrainData
from .quantize import quantize_linear_nf4

TARGETS = {
    "attention": ["to_q", "to_k", "to_v", "to_out.0"],
    "all_linear": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                   "time_emb_proj"],
    "all_linear_and_conv": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                            "time_emb_proj", "conv1", "conv2", "conv_shortcut", "conv"],
    # kohya sd-scripts' default LoRA (networks/lora.py, no conv_dim): every Linear and 1x1 Conv2d inside the UNet's
    # Transformer2DModel blocks, which in SD 1.5 are these (192 layers), and CLIPAttention/CLIPMLP in the text encoder
    "kohya_default": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"],
}
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")  # CLIP's attention projections
TEXT_ENCODER_EXTRA_TARGETS = {"kohya_default": ("fc1", "fc2")}  # and CLIP's MLP, as kohya's default takes it
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
OPTIMIZERS = ("adamw", "adamw8bit")
PRECISIONS = ("no", "fp16", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str = "attention"
    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-4
    scheduler: str = "constant"
    warmup_steps: int = 0
    optimizer: str = "adamw"
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: str = "no"
    min_snr_gamma: float = 0.0  # 0: plain MSE
    noise_offset: float = 0.0
    seed: int = 0
    checkpoint_every: int = 100
    gradient_checkpointing: bool = False
    train_text_encoder: bool = False  # also a LoRA on the text encoder's attention, and MLP with kohya_default
    text_encoder_lr: float = 5e-5
    qlora: bool = False  # the frozen UNet's linear layers in 4-bit NF4 with double quantization

    def __post_init__(self) -> None:
        checks = [
            (self.rank >= 1, "rank must be at least 1"), (self.alpha > 0, "alpha must be above 0"),
            (0 <= self.dropout < 1, "dropout must lie in 0..1"), (self.targets in TARGETS, f"targets: {list(TARGETS)}"),
            (self.steps >= 1, "steps must be at least 1"), (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.grad_accum >= 1, "grad_accum must be at least 1"), (self.lr > 0, "lr must be above 0"),
            (self.scheduler in SCHEDULERS, f"scheduler: {SCHEDULERS}"),
            (self.optimizer in OPTIMIZERS, f"optimizer: {OPTIMIZERS}"),
            (self.mixed_precision in PRECISIONS, f"mixed_precision: {PRECISIONS}"),
            (self.checkpoint_every >= 1, "checkpoint_every must be at least 1"),
            (self.text_encoder_lr > 0, "text_encoder_lr must be above 0"),
        ]
        checkpoints.require(checks)

    def fingerprint(self) -> str:
        return checkpoints.fingerprint(self)


@dataclass(frozen=True)
class ParameterCount:
    """What a LoRA trains against what it adapts: rank 16 on a 2560x2560 weight trains 16 * (2560 + 2560) =
    81,920 parameters instead of the 6,553,600 a full fine-tune of that weight would."""

    layers: int = 0  # layers carrying a LoRA
    trainable: int = 0  # the LoRA's own parameters (down and up matrices)
    targeted: int = 0  # the weights of those layers (biases left out), what a full fine-tune of them trains
    base: int = 0  # every parameter of the networks that carry the LoRA, as loaded (before any 4-bit packing)

    def __add__(self, other: ParameterCount) -> ParameterCount:
        return ParameterCount(self.layers + other.layers, self.trainable + other.trainable,
                              self.targeted + other.targeted, self.base + other.base)

    def summary(self) -> str:
        layers = f"{self.layers} layer{'s' * (self.layers != 1)}"
        share = 100 * self.trainable / self.targeted
        return (f"LoRA trains {self.trainable:,} parameters in {layers} instead of their {self.targeted:,} weights "
                f"({share:.2f} %); the base networks have {self.base:,} parameters")


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    params: ParameterCount = field(default_factory=ParameterCount)
    resumed: str = ""  # distributed.resume_note: the step resumed from, and the world sizes when they differ


def noise_scheduler():  # -> diffusers.DDPMScheduler
    """SD 1.5's training noise schedule, built from its config (no hub access)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False)


def targeted_layers(model: nn.Module, config: TrainConfig, text_encoder: bool = False) -> list[tuple[str, nn.Module]]:
    """The layers the LoRA wraps; a clear error when none match or the rank is above what they allow."""
    targets = TEXT_ENCODER_TARGETS + TEXT_ENCODER_EXTRA_TARGETS.get(config.targets, ()) if text_encoder \
        else TARGETS[config.targets]
    matched = [(n, m) for n, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)) and any(n == t or n.endswith("." + t) for t in targets)]
    if not matched:
        raise ValueError(f"no layer of the {'text encoder' if text_encoder else 'UNet'} matches the LoRA targets")
    smallest = min(min(m.in_features, m.out_features) if isinstance(m, nn.Linear) else
                   min(m.in_channels, m.out_channels) for _, m in matched)
    if config.rank > smallest:
        raise ValueError(f"rank {config.rank} is above what the targeted layers allow (at most {smallest})")
    return matched


def base_count(model: nn.Module, config: TrainConfig, text_encoder: bool = False) -> ParameterCount:
    """The layers a LoRA targets in ``model``, their weights and all of ``model``'s parameters (``trainable`` is
    left 0: the LoRA's own size is counted once it exists)."""
    matched = targeted_layers(model, config, text_encoder)
    return ParameterCount(layers=len(matched), targeted=sum(m.weight.numel() for _, m in matched),
                          base=sum(p.numel() for p in model.parameters()))


def add_lora(unet: nn.Module, config: TrainConfig, text_encoder: bool = False) -> list[nn.Parameter]:
    """Wrap the targeted layers (of the UNet, or the text encoder) with a zero-initialised LoRA (B = 0)
    and return its parameters; A's random start comes from ``config.seed``."""
    from peft import LoraConfig, inject_adapter_in_model

    matched = targeted_layers(unet, config, text_encoder)
    unet.requires_grad_(False)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, init_lora_weights=True,
                      target_modules=[n for n, _ in matched])
    with seeded(derive_seed(config.seed, "lora", "text encoder" if text_encoder else "unet")):
        inject_adapter_in_model(lora, unet)
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
        p.data = p.data.float()  # LoRA weights train in fp32 whatever the base dtype
    return params


def _check_disk(run_dir: Path, params: list[nn.Parameter]) -> None:
    """A checkpoint holds the LoRA and two Adam moments, written beside the previous one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    need = sum(p.numel() for p in params) * 4 * 3 * 2 + (16 << 20)
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise OSError(f"not enough disk for a checkpoint in {run_dir}: {free >> 20} MiB free, {need >> 20} MiB needed")


def _optimizer(groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw8bit":
        return require_bitsandbytes("8-bit AdamW").optim.AdamW8bit(groups, lr=config.lr, weight_decay=1e-2)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=1e-2)


def _lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    from diffusers.optimization import get_scheduler

    return get_scheduler(config.scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                         num_training_steps=config.steps)


def autocast_dtype(config) -> torch.dtype | None:  # any settings with a mixed_precision field
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision)


def pick_batch(data: TrainData, batch_size: int, gen: torch.Generator) -> tuple[Bucket, torch.Tensor]:
    """A bucket (one shape per batch), drawn by its size, and ``batch_size`` rows of it."""
    bucket = data.buckets[int(torch.multinomial(data.sizes, 1, generator=gen))]
    return bucket, torch.randint(0, bucket.latents.shape[0], (batch_size,), generator=gen)


def add_training_noise(latents: torch.Tensor, sched, gen: torch.Generator,
                       noise_offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noise, timesteps, noisy latents)`` of the DDPM forward process, drawn from ``gen``."""
    device = latents.device
    noise = torch.randn(latents.shape, generator=gen).to(device)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=gen).to(device)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen).to(device)
    return noise, t, sched.add_noise(latents, noise, t)


def _loss(unet: nn.Module, data: TrainData, config: TrainConfig, sched, step: int, micro: int,
          text_encoder: nn.Module | None = None) -> torch.Tensor:
    """This rank's part of the micro-batch's mean loss: its share of the global batch's per-picture losses (every
    rank draws the whole batch, as one process would, and keeps its items), summed and divided by the global
    batch, so the ranks' parts add up to the one-process loss."""
    device = next(unet.parameters()).device
    gen = torch.Generator().manual_seed(derive_seed(config.seed, step, micro))
    bucket, idx = pick_batch(data, config.batch_size, gen)
    latents = bucket.latents[idx].to(device, torch.float32)
    cond = bucket.conditioning[idx].clone()
    drop = torch.rand(config.batch_size, generator=gen) < data.caption_dropout
    cond[drop] = data.unconditional.to(cond.dtype)
    noise, t, noisy = add_training_noise(latents, sched, gen, config.noise_offset)
    noise, t, noisy, cond = distributed.take_share(config.batch_size, noise, t, noisy, cond)
    # LoRA dropout: each rank its own draw (one process draws the whole batch's masks at once, so with dropout a
    # distributed run equals one process in distribution, not value)
    dropout_keys = ("dropout", step, micro) + ((distributed.rank(),) if distributed.world_size() > 1 else ())
    dtype = autocast_dtype(config)
    with seeded(derive_seed(config.seed, *dropout_keys)), \
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        if text_encoder is not None:  # the conditioning is token ids, encoded with the LoRA-carrying encoder
            cond = text_encoder(cond.to(device)).last_hidden_state
        pred = unet(noisy, t, encoder_hidden_states=cond.to(device)).sample
    per_sample = (pred.float() - noise).pow(2).mean(dim=(1, 2, 3))
    if config.min_snr_gamma:
        ac = sched.alphas_cumprod.to(device)[t.to(device)]
        snr = ac / (1 - ac)
        per_sample = per_sample * torch.clamp(snr, max=config.min_snr_gamma) / snr
    return per_sample.sum() / config.batch_size


def train_lora(unet: nn.Module, data: TrainData, config: TrainConfig, run_dir: Path,
               progress: Progress | None = None,
               on_step: Callable[[int, float], None] | None = None,
               text_encoder: nn.Module | None = None) -> TrainResult:
    """Train (or resume, if ``run_dir/checkpoint`` holds a matching one) a LoRA on ``unet`` in place.

    With ``config.train_text_encoder``, ``text_encoder`` gets a LoRA too and ``data`` holds token ids
    (``[n, tokens]``) where it otherwise holds prompt embeddings. ``on_step(step, loss)`` runs after
    every optimizer step (sample images, previews).
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if config.train_text_encoder and text_encoder is None:
        raise ValueError("train_text_encoder needs the text encoder")
    text_encoder = text_encoder if config.train_text_encoder else None
    counted = base_count(unet, config)  # before QLoRA packs the weights
    if config.qlora:
        quantize_linear_nf4(unet, autocast_dtype(config) or torch.float32)
    params = add_lora(unet, config)
    groups = [{"params": params}]
    if text_encoder is not None:
        counted = counted + base_count(text_encoder, config, text_encoder=True)
        te_params = add_lora(text_encoder, config, text_encoder=True)
        groups.append({"params": te_params, "lr": config.text_encoder_lr})
        params = params + te_params
        text_encoder.train()
    counted = replace(counted, trainable=sum(p.numel() for p in params))
    distributed.check_batch(config.batch_size)
    if distributed.is_main():
        _check_disk(run_dir, params)
    if config.gradient_checkpointing and hasattr(unet, "enable_gradient_checkpointing"):
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = _optimizer(groups, config)
    lr_scheduler = _lr_scheduler(optimizer, config)
    sched = noise_scheduler()
    scaler = torch.amp.GradScaler("cuda", enabled=config.mixed_precision == "fp16"
                                  and next(unet.parameters()).device.type == "cuda")
    checkpoint = run_dir / "checkpoint"
    result = TrainResult(step=0)
    state = distributed.load_checkpoint(checkpoint, config.fingerprint())
    if state is not None:
        set_peft_model_state_dict(unet, state["lora"])
        if text_encoder is not None:
            set_peft_model_state_dict(text_encoder, state["lora_te"])
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        result = TrainResult(step=state["step"], losses=list(state["losses"]), resumed_from=state["step"],
                             resumed=distributed.resume_note(state["step"], state.get("world_size", 1)))
    distributed.broadcast_parameters(params)
    result.params = counted

    def save(step: int) -> None:
        if not distributed.is_main():  # every rank holds the same weights and optimizer: rank 0 writes them
            return
        state = {"fingerprint": config.fingerprint(), "step": step, "losses": result.losses,
                 "lora": get_peft_model_state_dict(unet), "optimizer": optimizer.state_dict(),
                 "lr_scheduler": lr_scheduler.state_dict(), "world_size": distributed.world_size()}
        if text_encoder is not None:
            state["lora_te"] = get_peft_model_state_dict(text_encoder)
        checkpoints.save(checkpoint, state)

    def step(index: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=params[0].device)
        for micro in range(config.grad_accum):
            loss = _loss(unet, data, config, sched, index, micro, text_encoder) / config.grad_accum
            scaler.scale(loss).backward()
            total += loss.detach()
        distributed.reduce_gradients(params, total)  # the global batch's gradient and loss on every rank
        check_finite(total.item())
        if config.max_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        lr_scheduler.step()
        result.step = index + 1
        result.losses.append(total.item())
        return total.item()

    run_steps(result.step, config.steps, step, save, config.checkpoint_every,
              progress or SilentProgress(config.steps), checkpoint, on_step,
              "Lower the learning rate or use bf16/fp32.")
    return result
