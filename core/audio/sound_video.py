"""Video from sound: one conditioning per frame of a sound, and the frame-by-frame sampling loop.

Frame ``i`` of a video at ``fps`` frames per second shows the sound at ``i / fps`` seconds: its encoder window
(``MelSpec.window_seconds`` long) is centred there, padded with silence before the start and after the end. A
sound of ``T`` seconds gives ``floor(T * fps)`` frames, so the video (``frames / fps`` seconds) never outlasts
the sound; shorter than one frame (``T < 1 / fps``) is an error. The windows are embedded ``WINDOW_BATCH`` at a
time (one encoder pass per batch, not per frame), so a long sound never holds all its windows at once.

Smoothing over time: a centred Gaussian with its standard deviation in seconds (``smoothing_seconds``). Centred
because a causal filter such as an exponential moving average delays the picture behind the sound by about its
time constant; Gaussian because it has no ringing (a box filter's side lobes let a fast change through with its
sign flipped); in seconds so the same setting smooths alike at 8 or 24 fps. Near the ends the weights that would
fall outside the sound are dropped and the rest renormalised, so the first and last frames are not pulled
towards zero. Consecutive windows already overlap (at 12 fps a 2 s window shares 1.92 s with the next); the
filter removes what jitter is left (``flicker`` measures it).

Loudness over time: the adapter's LayerNorm gives every frame's tokens the same scale whatever the sound's level,
so the level reaches the picture through each frame's token strength, by the same law as a still picture from a
sound (``loudness.strength_for``): the RMS level in dBFS of the frame's window (smoothed alike) doubles the
strength every 10 dB over ``reference_db`` (-20 dBFS by default), within x1/16..x4. A passage 10 dB louder than
another draws with twice its strength, and a steady sound at -20 dBFS draws every frame at the given strength,
exactly as Encode Audio gives its still picture. The level is measured on the samples the encoder sees, not read
from the embedding's length: a random encoder's embedding length does not follow the level at all (measured), and
a trained one's need not.

Every frame's tokens come from one batched pass through ``LoadedAdapter.tokens`` and are appended with the one
``condition`` every other node uses. ``render_frames`` draws the frames one at a time from a fixed seed (the
caller's sampler), optionally each from the previous frame's latent at a denoise below 1 (chaining), or from
given start latents (a video's own frames, for the video + sound edit); progress advances per frame and a
cancel is honoured between frames.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..sd15.embedding_adapter import LoadedAdapter, condition
from ..shared.progress import Progress
from . import features as audio_features
from .encoder import AudioEmbedder, blend
from .features import FLOOR_DB
from .loudness import DEFAULT_REFERENCE_DB, strength_for


@dataclass(frozen=True)
class FramePlan:
    """How many frames a sound gives at a frame rate, and the time each shows."""

    fps: float
    count: int

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.count) / self.fps

    @property
    def seconds(self) -> float:
        return self.count / self.fps

    def samples(self, sample_rate: int) -> int:
        """The length of the sound that goes with the frames, at ``sample_rate``."""
        return int(round(self.seconds * sample_rate))


def plan_frames(samples: int, sample_rate: int, fps: float, max_seconds: float = 0.0,
                what: str = "the sound") -> FramePlan:
    """``floor(seconds * fps)`` frames of a sound of ``samples`` at ``sample_rate``, at most ``max_seconds`` of it
    (0: all). A frame rate that is not above 0, or a sound shorter than one frame, is an error."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"the frame rate must be above 0 frames per second, not {fps:g} (8 to 12 is usual)")
    if max_seconds < 0:
        raise ValueError("the longest video must be 0 s (the whole sound) or more")
    seconds = samples / sample_rate
    if max_seconds > 0:
        seconds = min(seconds, max_seconds)
    count = int(math.floor(seconds * fps + 1e-9))
    if count < 1:
        raise ValueError(f"{what} lasts {seconds:.3g} s, shorter than one frame at {fps:g} fps ({1 / fps:.3g} s): "
                         "give a longer sound, or raise the frame rate")
    return FramePlan(float(fps), count)


def window_batches(mono: np.ndarray, spec: audio_features.MelSpec, plan: FramePlan,
                   batch: int = audio_features.WINDOW_BATCH) -> Iterator[np.ndarray]:
    """``[<=batch, window_samples]``: the window centred on each frame's time, silence outside the sound."""
    size = spec.window_samples
    half = size // 2
    padded = np.pad(mono, (half, size - half))
    centres = np.round(plan.times * spec.sample_rate).astype(np.int64)
    for i in range(0, plan.count, batch):
        yield np.stack([padded[c:c + size] for c in centres[i:i + batch]])


def pick_frames(available: int, source_fps: float, fps: float) -> list[int]:
    """Which of ``available`` frames at ``source_fps`` show each time ``i / fps``: the last frame at or before it
    (every third frame of a 30 fps video at 10 fps)."""
    if not (math.isfinite(source_fps) and source_fps > 0):
        raise ValueError(f"the video's frame rate must be above 0 frames per second, not {source_fps:g}")
    if available < 1:
        raise ValueError("the video has no frames")
    count = int(math.floor(available * fps / source_fps + 1e-9))
    return [min(available - 1, int(math.floor(i * source_fps / fps + 1e-9))) for i in range(max(count, 1))]


@dataclass
class FrameEmbeddings:
    embeds: torch.Tensor  # [N, D], one per frame, unsmoothed
    levels: torch.Tensor  # [N], the RMS level of each frame's window
    plan: FramePlan
    notes: list[str]


def embed_frames(embedder: AudioEmbedder, waveform: np.ndarray, sample_rate: int, fps: float,
                 max_seconds: float = 0.0, what: str = "the sound") -> FrameEmbeddings:
    """The embedding of each frame's window of a ``[C, T]`` sound, a batch of windows per encoder pass. The frame
    rate and the length are checked before anything is resampled; silence is an error naming ``what``."""
    spec = embedder.config.mel
    plan = plan_frames(np.asarray(waveform).shape[-1], sample_rate, fps, max_seconds, what)
    mono, notes = audio_features.prepare(waveform, sample_rate, spec.sample_rate, what)
    mono = mono[:plan.samples(spec.sample_rate)]
    audio_features.check_not_silent(mono, what)
    parts, levels = [], []
    for windows in window_batches(mono, spec, plan):
        levels.append(torch.from_numpy(np.sqrt(np.square(windows, dtype=np.float64).mean(axis=1))))
        feats = audio_features.log_mel(windows, spec)
        if not np.isfinite(feats).all():
            raise ValueError(f"the features of {what} are not finite: its samples are out of range")
        parts.append(embedder.embed_features(feats, len(windows)))
    embeds = torch.cat(parts)
    if not torch.isfinite(embeds).all():
        raise ValueError(f"the audio encoder gave a NaN or infinite embedding for {what}: its weights are damaged; "
                         "load the encoder file again, or train it again")
    return FrameEmbeddings(embeds, torch.cat(levels).float(), plan, notes)


def smooth(values: torch.Tensor, fps: float, seconds: float) -> torch.Tensor:
    """``[N, ...]`` values per frame through a centred Gaussian of standard deviation ``seconds`` (the module
    docstring says why), cut at 3 standard deviations and renormalised at the ends; ``seconds`` 0 returns them
    unchanged. Convolved through the FFT, so memory grows with N alone, not with N times the kernel's length (a
    3-minute sound at 10 fps would otherwise unfold 700 MB)."""
    if seconds < 0:
        raise ValueError("the smoothing must be 0 s (none) or more")
    if seconds == 0 or len(values) < 2:
        return values
    sigma = seconds * fps  # in frames
    radius = max(1, math.ceil(3 * sigma))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    rows = values.double().reshape(len(values), -1)
    size = len(rows) + 2 * radius  # the full convolution's length: no wrap-around

    def convolve(x: torch.Tensor) -> torch.Tensor:
        full = torch.fft.irfft(torch.fft.rfft(x, n=size, dim=0) * torch.fft.rfft(kernel, n=size)[:, None], n=size,
                               dim=0)
        return full[radius:radius + len(rows)]

    weight = convolve(torch.ones(len(rows), 1, dtype=torch.float64))
    return (convolve(rows) / weight).reshape(values.shape).to(values.dtype)


def frame_strengths(levels: torch.Tensor, strength: float, follow_loudness: bool,
                    reference_db: float = DEFAULT_REFERENCE_DB) -> torch.Tensor:
    """``[N]`` token strength per frame from the frames' ``[N]`` RMS levels (linear): ``strength`` times what a
    still picture of a clip at that level draws with (``strength_for``: doubled every 10 dB over ``reference_db``),
    or ``strength`` on every frame."""
    if not follow_loudness:
        return torch.full((len(levels),), float(strength))
    db = 20 * torch.log10(levels.double().clamp_min(10 ** (FLOOR_DB / 20)))
    return torch.tensor([strength * strength_for(float(d), reference_db) for d in db], dtype=torch.float32)


class FrameConditionings(Sequence):
    """One CONDITIONING per frame, built when asked for: the prompt's with frame ``i``'s tokens at ``strengths[i]``
    appended (the one ``condition`` every node uses). Only the tokens are kept (``[N, K, 768]``), not N copies of
    the prompt: 1800 frames (3 minutes at 10 fps) hold 22 MB of tokens instead of 450 MB of conditionings."""

    def __init__(self, conditioning: list, tokens: torch.Tensor, strengths: torch.Tensor) -> None:
        self.conditioning, self.tokens, self.strengths = conditioning, tokens, strengths

    def __len__(self) -> int:
        return len(self.strengths)

    def __getitem__(self, i):  # -> list, or FrameConditionings for a slice
        if isinstance(i, slice):
            return FrameConditionings(self.conditioning, self.tokens[i], self.strengths[i])
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} of {len(self)}")
        i %= len(self)
        return condition(self.conditioning, self.tokens[i:i + 1], float(self.strengths[i]))


def frame_conditionings(adapter: LoadedAdapter, conditioning: list, embeds: torch.Tensor,
                        strengths: torch.Tensor, what: str = "the sound's embedding") -> FrameConditionings:
    """The conditioning of every frame, from one adapter pass over all frames' embeddings."""
    return FrameConditionings(conditioning, adapter.tokens(embeds, what), strengths)


@dataclass
class SoundFrames:
    conditionings: FrameConditionings
    strengths: torch.Tensor  # [N]
    plan: FramePlan
    notes: list[str]


def sound_conditionings(embedder: AudioEmbedder, adapter: LoadedAdapter, conditioning: list, waveform: np.ndarray,
                        sample_rate: int, fps: float, max_seconds: float = 0.0, smoothing_seconds: float = 0.5,
                        strength: float = 1.0, follow_loudness: bool = True, what: str = "the sound",
                        pictures: torch.Tensor | None = None, sound_weight: float = 1.0,
                        reference_db: float = DEFAULT_REFERENCE_DB) -> SoundFrames:
    """The whole path from a sound to one conditioning per frame: windows, embeddings, smoothing (of the
    embeddings and of the windows' levels), strengths and tokens. ``pictures`` (``[N, D]`` unit image embeddings, one
    per frame, for the video + sound edit) are blended with the smoothed sound at ``sound_weight``."""
    framed = embed_frames(embedder, waveform, sample_rate, fps, max_seconds, what)
    plan = framed.plan
    embeds = smooth(framed.embeds, plan.fps, smoothing_seconds)
    strengths = frame_strengths(smooth(framed.levels, plan.fps, smoothing_seconds), strength, follow_loudness,
                                reference_db)
    if pictures is not None:
        count = min(plan.count, len(pictures))
        plan = FramePlan(plan.fps, count)
        embeds = blend(pictures[:count], embeds[:count], sound_weight)
        strengths = strengths[:count]
    return SoundFrames(frame_conditionings(adapter, conditioning, embeds, strengths, what), strengths, plan,
                       framed.notes)


def flicker(conditionings: Sequence[list]) -> float:
    """How much the conditioning changes from frame to frame: the mean L2 distance between the first entry's
    tensors of consecutive frames (0 for a single frame), two frames at a time."""
    total, previous, pairs = 0.0, None, 0
    for cond in conditionings:
        current = cond[0][0].float().flatten()
        if previous is not None:
            total, pairs = total + float((current - previous).norm()), pairs + 1
        previous = current
    return total / pairs if pairs else 0.0


SampleFrame = Callable[[list, "torch.Tensor | None", float], torch.Tensor]  # (conditioning, start, denoise) -> latent


def render_frames(conditionings: Sequence[list], sample: SampleFrame, decode: Callable[[torch.Tensor], torch.Tensor],
                  progress: Progress, chain_denoise: float = 1.0,
                  starts: Callable[[int], torch.Tensor] | None = None, edit_denoise: float = 1.0) -> torch.Tensor:
    """Frames ``[N, H, W, 3]``, one sampled per conditioning with the caller's fixed seed. Without ``starts``,
    frame 0 starts from noise and each later one from the previous frame's latent at ``chain_denoise`` (1: from
    noise too); with ``starts`` (frame index to latent), every frame starts from its own latent at
    ``edit_denoise``. A cancel is honoured before each frame; progress advances after each."""
    if not 0 < chain_denoise <= 1 or not 0 < edit_denoise <= 1:
        raise ValueError("denoise must lie in (0, 1]")
    frames, previous = [], None
    for i, cond in enumerate(conditionings):
        progress.check_cancel()
        if starts is not None:
            latent = sample(cond, starts(i), edit_denoise)
        elif previous is not None and chain_denoise < 1:
            latent = sample(cond, previous, chain_denoise)
        else:
            latent = sample(cond, None, 1.0)
        previous = latent
        frames.append(decode(latent).float().cpu())
        progress.advance()
    return torch.cat(frames)


def diffusers_frames(parts: Any, negative: torch.Tensor, size: tuple[int, int], seed: int, steps: int = 20,
                     guidance: float = 7.0, device: torch.device | str = "cpu",
                     ) -> tuple[SampleFrame, Callable[[torch.Tensor], torch.Tensor]]:
    """``render_frames``' sampler and decoder outside ComfyUI: diffusers' SD pipeline (DDIM) on the pack's SD 1.5
    parts, from noise, or img2img from a start latent at a denoise below 1; ``negative`` is the ``[1, T, 768]``
    negative conditioning. Each frame draws its noise from a generator seeded with ``seed`` afresh."""
    from diffusers import StableDiffusionImg2ImgPipeline

    from ..sd15.pipeline import ddim_pipeline

    device = torch.device(device)
    parts.unet.to(device).eval()
    parts.text_encoder.eval()
    pipe = ddim_pipeline(parts, device)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    dtype = next(parts.unet.parameters()).dtype

    @torch.no_grad()
    def sample(conditioning: list, start: torch.Tensor | None, denoise: float) -> torch.Tensor:
        common = dict(prompt_embeds=conditioning[0][0].to(device, dtype),
                      negative_prompt_embeds=negative.to(device, dtype), num_inference_steps=steps,
                      guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent")
        if start is None:
            return pipe(width=size[0], height=size[1], **common).images
        return img2img(image=start, strength=denoise, **common).images  # a 4-channel image is taken as latents

    @torch.no_grad()
    def decode(latent: torch.Tensor) -> torch.Tensor:
        images = parts.vae.decode(latent.to(parts.vae.dtype) / parts.vae.config.scaling_factor).sample
        return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu()

    return sample, decode
