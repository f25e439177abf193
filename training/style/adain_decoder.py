"""Training (or fine-tuning) the AdaIN decoder on a content folder and a style folder.

Loss = content loss (MSE between the relu4_1 features of the output and the AdaIN target) +
``style_weight`` x style loss (MSE of channel means plus MSE of channel stds at relu1_1, relu2_1,
relu3_1 and relu4_1), as Huang and Belongie train it; Adam with the learning rate
``lr / (1 + lr_decay * step)``; random ``crop`` squares of pictures resized to ``resize_to`` on
the shorter side; the encoder stays frozen. Every draw of step ``s`` comes from a generator seeded
with ``derive_seed(seed, s)``, so a resumed run equals one that never stopped.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ...core.dataset.augment import derive_seed
from ...core.dataset.folder_dataset import skip_lines
from ...core.dataset.image_files import ImageFolderError, Skipped, folder_fingerprint, list_images, load_image
from ...core.dataset.preprocess import resize
from ...core.shared import plots
from ...core.shared.progress import Progress, SilentProgress
from ...core.style.adain_model import AdaINModel, save_decoder
from ...core.style.feature_transfer import StyleTarget, adain, mean_std
from .. import checkpoints, distributed
from ..loop import check_finite, run_steps

CACHE_LIMIT = 512  # pictures kept decoded in memory; larger sets are read from disk each step


@dataclass(frozen=True)
class DecoderConfig:
    steps: int = 20_000
    batch_size: int = 8
    lr: float = 1e-4
    lr_decay: float = 5e-5
    style_weight: float = 10.0
    resize_to: int = 512
    crop: int = 256
    seed: int = 0
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        checks = [(self.steps >= 1, "steps must be at least 1"),
                  (self.batch_size >= 1, "batch_size must be at least 1"),
                  (self.lr > 0, "lr must be above 0"), (self.lr_decay >= 0, "lr_decay must not be negative"),
                  (self.style_weight >= 0, "style_weight must not be negative"),
                  (self.crop >= 16 and self.crop % 8 == 0, "crop must be a multiple of 8, at least 16"),
                  (self.resize_to >= self.crop, "resize_to must be at least the crop size"),
                  (self.checkpoint_every >= 1, "checkpoint_every must be at least 1")]
        checkpoints.require(checks)

    def fingerprint(self) -> str:
        return checkpoints.fingerprint(self)


@dataclass
class DecoderResult:
    step: int
    losses: list[tuple[float, float]] = field(default_factory=list)  # (content, style) per step
    resumed_from: int = 0
    skipped: list[Skipped] = field(default_factory=list)  # pictures that failed to decode, content then style
    resumed: str = ""  # distributed.resume_note

    def report(self) -> str:
        """The steps trained, then every picture passed over and why."""
        resumed = f" ({self.resumed})" if self.resumed else ""
        return "\n".join([f"trained {self.step} steps{resumed}", *skip_lines(self.skipped)])


def run_name(name: str, config: DecoderConfig, model: AdaINModel, content_folder: Path, style_folder: Path) -> str:
    """``<name>-<key>``: the same settings, pictures and starting weights find the same run folder (and resume)."""
    key = json.dumps([config.fingerprint(), folder_fingerprint(list_images(content_folder)),
                      folder_fingerprint(list_images(style_folder)), model.encoder_sha256, model.decoder_sha256])
    return f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class PicturePool:
    """The pictures of a folder resized to ``resize_to`` on the shorter side. Every file is decoded once up
    front, so what is usable is settled before training: a file that fails to decode is skipped and listed
    in ``skipped`` (never met mid-run, where it would stop every rerun at the same seeded step), and a folder
    with nothing usable fails before the first step."""

    def __init__(self, folder: str | Path, resize_to: int, what: str, progress: Progress | None = None) -> None:
        self.resize_to = resize_to
        self.paths: list[Path] = []
        self.skipped: list[Skipped] = []
        self._cache: dict[int, torch.Tensor] = {}
        for path in list_images(folder):
            if progress is not None:
                progress.check_cancel()
            try:
                image = load_image(path)
            except ImageFolderError as exc:
                self.skipped.append(Skipped(str(path), str(exc)))
                continue
            except OSError as exc:
                self.skipped.append(Skipped(str(path), f"cannot be read: {exc}"))
                continue
            if len(self._cache) < CACHE_LIMIT:  # the check's decode is the cache, when the set is small enough
                self._cache[len(self.paths)] = self._resized(image)
            self.paths.append(path)
        if len(self.paths) > CACHE_LIMIT:
            self._cache.clear()
        if not self.paths:
            reasons = "; ".join(skip_lines(self.skipped[:5]))
            raise ImageFolderError(f"no readable picture in the {what} folder {str(folder)!r}: {reasons}")

    def __len__(self) -> int:
        return len(self.paths)

    def _resized(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[:2]
        scale = self.resize_to / min(h, w)
        return resize(image[None], max(self.resize_to, round(w * scale)), max(self.resize_to, round(h * scale)))[0]

    def get(self, index: int) -> torch.Tensor:
        if index in self._cache:
            return self._cache[index]
        path = self.paths[index]
        try:
            return self._resized(load_image(path))
        except (ImageFolderError, OSError) as exc:  # it decoded when the run started
            raise ImageFolderError(f"{str(path)!r} changed or went missing during training ({exc}): put it back "
                                   "as it was, or remove it and run again") from exc


def _crops(pool: PicturePool, count: int, size: int, gen: torch.Generator) -> torch.Tensor:
    picks = torch.randint(0, len(pool), (count,), generator=gen).tolist()
    out = []
    for i in picks:
        image = pool.get(i)
        top = int(torch.randint(0, image.shape[0] - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, image.shape[1] - size + 1, (1,), generator=gen))
        out.append(image[top:top + size, left:left + size])
    return torch.stack(out).permute(0, 3, 1, 2)


def decoder_losses(model: AdaINModel, content: torch.Tensor, style: torch.Tensor,
                   batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(content loss, style loss) of decoding the AdaIN target of ``content`` in the style of ``style``: means
    over the pairs, or their sums divided by ``batch`` (a rank's part of the global batch's means)."""
    style_levels = model.encode_levels(style)
    with torch.no_grad():
        mean, std = mean_std(style_levels[-1])
        target = adain(model.encode(content), StyleTarget(mean, std))
    out_levels = model.encode_levels(model.decode(target))
    content_loss = (out_levels[-1] - target).pow(2).mean(dim=(1, 2, 3))
    style_loss = sum(((a_m - b_m).pow(2) + (a_s - b_s).pow(2)).mean(dim=(1, 2, 3)) for (a_m, a_s), (b_m, b_s) in
                     ((mean_std(o), mean_std(s)) for o, s in zip(out_levels, style_levels)))
    divisor = batch or content.shape[0]
    return content_loss.sum() / divisor, style_loss.sum() / divisor


def train_decoder(model: AdaINModel, content_folder: str | Path, style_folder: str | Path, config: DecoderConfig,
                  run_dir: Path, device: torch.device | str = "cpu", progress: Progress | None = None,
                  preview_every: int = 0) -> DecoderResult:
    """Train ``model.decoder`` in place (or resume, if ``run_dir/checkpoint`` holds a matching checkpoint)."""
    contents = PicturePool(content_folder, config.resize_to, "content", progress)
    styles = PicturePool(style_folder, config.resize_to, "style", progress)
    device = torch.device(device)
    model.to(device)
    model.encoder.requires_grad_(False)
    model.decoder.requires_grad_(True).train()
    distributed.check_batch(config.batch_size)
    params = list(model.decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    checkpoint = run_dir / "checkpoint"
    result = DecoderResult(step=0)
    state = distributed.load_checkpoint(checkpoint, config.fingerprint())
    if state is not None:
        model.decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        result = DecoderResult(state["step"], [tuple(v) for v in state["losses"]], state["step"],
                               resumed=distributed.resume_note(state["step"], state.get("world_size", 1)))
    distributed.broadcast_parameters(params)
    result.skipped = contents.skipped + styles.skipped
    progress = progress or SilentProgress(config.steps)

    def save(step: int) -> None:
        if distributed.is_main():  # every rank holds the same decoder and optimizer
            checkpoints.save(checkpoint, {"fingerprint": config.fingerprint(), "step": step, "losses": result.losses,
                                          "decoder": model.decoder.state_dict(), "optimizer": optimizer.state_dict(),
                                          "world_size": distributed.world_size()})

    def step(index: int) -> float:
        gen = torch.Generator().manual_seed(derive_seed(config.seed, index))
        content, style = distributed.take_share(config.batch_size,  # the global batch's pairs this rank trains on
                                                _crops(contents, config.batch_size, config.crop, gen),
                                                _crops(styles, config.batch_size, config.crop, gen))
        content, style = content.to(device), style.to(device)
        for group in optimizer.param_groups:
            group["lr"] = config.lr / (1 + config.lr_decay * index)
        content_loss, style_loss = decoder_losses(model, content, style, config.batch_size)
        optimizer.zero_grad(set_to_none=True)
        (content_loss + config.style_weight * style_loss).backward()
        parts = torch.stack([content_loss.detach(), style_loss.detach()])
        distributed.reduce_gradients(params, parts)  # the global batch's gradient and losses on every rank
        content_value, style_value = parts.tolist()
        loss = content_value + config.style_weight * style_value
        check_finite(loss)
        optimizer.step()
        result.step = index + 1
        result.losses.append((content_value, style_value))
        return loss

    def on_step(done: int, loss: float) -> None:
        progress.status(f"content {result.losses[-1][0]:.3f}  style {result.losses[-1][1]:.3f}")
        if preview_every and done % preview_every == 0 and distributed.is_main():
            progress.preview(preview(model, contents, styles, config, device))

    run_steps(result.step, config.steps, step, save, config.checkpoint_every, progress, checkpoint, on_step,
              "Lower the learning rate or the style weight.")
    model.decoder.eval()
    return result


@torch.no_grad()
def preview(model: AdaINModel, contents: PicturePool, styles: PicturePool, config: DecoderConfig,
            device: torch.device) -> Image.Image:
    """The first content crop, the first style crop and the decoder's result, side by side."""
    was_training = model.decoder.training
    model.decoder.eval()
    gen = torch.Generator().manual_seed(config.seed)
    content = _crops(contents, 1, config.crop, gen).to(device)
    style = _crops(styles, 1, config.crop, gen).to(device)
    mean, std = mean_std(model.encode(style))
    out = model.decode(adain(model.encode(content), StyleTarget(mean, std))).clamp(0, 1)
    model.decoder.train(was_training)
    row = torch.cat([content, style, out[..., :config.crop, :config.crop]], dim=3)[0]
    return Image.fromarray((row.permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8"))


def loss_plot(result: DecoderResult, config: DecoderConfig) -> Image.Image:
    return plots.loss_curve([c + config.style_weight * s for c, s in result.losses],
                            title="decoder loss (content + style_weight x style)")


def save_trained(model: AdaINModel, result: DecoderResult, config: DecoderConfig, folder: Path, name: str,
                 init: str) -> Path:
    """The trained decoder as safetensors in ``folder`` (ComfyUI's models/atelier/adain)."""
    metadata = {"steps": result.step, "config": asdict(config), "encoder_sha256": model.encoder_sha256,
                "initialised_from": init, "trainer": "atelier-adain-decoder 0.1"}
    return save_decoder(model.decoder, folder, name, metadata)
