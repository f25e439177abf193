"""Video from sound, measured: the conditioning path's speed against a per-frame loop, its memory for a 3-minute
sound, the flicker with and without smoothing; with ``--gpu``, a short real run on a CUDA GPU with an SD 1.5 file.

CPU part (always), with an audio encoder of the default size (random weights; its speed and memory do not depend on
training) and a 768-d, 4-token adapter, on a synthetic sound whose kind changes every 0.5-2 s:

- ``speed``: frames per second of ``sound_conditionings`` (windows embedded ``WINDOW_BATCH`` at a time, one adapter
  pass) against a loop that embeds each frame's window and makes its tokens on its own, for ``--seconds`` of sound
  at ``--fps``; both give the same conditionings (checked) and the ratio is printed.
- ``memory``: the peak resident memory that ``sound_conditionings`` adds for a ``--long-seconds`` sound (default
  180 s at 44.1 kHz stereo, as Load Audio hands it over), from the process's peak RSS, measured first so nothing
  before it raised the peak.
- ``flicker``: the mean L2 change of the conditioning between consecutive frames, with 0, 0.25, 0.5 and 1 s of
  smoothing, the token strength steady and following the loudness (random weights: the ratios are what transfer,
  not the absolute values).

``--gpu``: the same path then ``render_frames`` through diffusers (DDIM, 512 px, ``--gpu-steps`` steps, chained at
denoise 0.6) for ``--gpu-seconds`` of sound at 8 fps, on the SD 1.5 file ``--model`` or the first one found in the
checkpoints folders (by its header, as bench_virtual_flow.py finds it): seconds per frame and peak GPU memory.
Without a CUDA GPU or without a file it says so and exits 0.

    python benchmarks/bench_sound_video.py [--seconds 30] [--fps 10] [--long-seconds 180] [--gpu [--model SD15]]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from atelier_cli import load_pack  # noqa: E402

load_pack()
from atelier.core.audio import features as audio_features  # noqa: E402
from atelier.core.audio import sound_video as sv  # noqa: E402
from atelier.core.audio.encoder import AudioEmbedder  # noqa: E402
from atelier.core.sd15.embedding_adapter import AdapterConfig, EmbeddingAdapter, LoadedAdapter, condition  # noqa: E402
from atelier.training.audio.aligner import AlignConfig, build_encoder  # noqa: E402

RATE = 16000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def models() -> tuple[AudioEmbedder, LoadedAdapter]:
    torch.manual_seed(0)
    embedder = AudioEmbedder(build_encoder(AlignConfig(), 768).eval(), "random", 1.0)
    return embedder, LoadedAdapter(EmbeddingAdapter(AdapterConfig(768)).eval(), "random")


def changing_sound(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Mono: tones and noise bands of 0.5-2 s each, at levels 0.1-0.6, one after another."""
    rng = np.random.default_rng(seed)
    out, done = np.zeros(int(seconds * rate), np.float32), 0
    while done < out.size:
        n = min(out.size - done, int(rng.uniform(0.5, 2.0) * rate))
        t = np.arange(n) / rate
        if rng.random() < 0.5:
            piece = np.sin(2 * np.pi * rng.uniform(200, 3000) * t)
        else:
            piece = np.convolve(rng.standard_normal(n), np.ones(int(rng.integers(2, 40))), "same")
            piece /= np.abs(piece).max()
        out[done:done + n] = rng.uniform(0.1, 0.6) * piece
        done += n
    return out


def prompt() -> list:
    return [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(0)), {}]]


def per_frame_loop(embedder: AudioEmbedder, adapter: LoadedAdapter, wave: np.ndarray, fps: float,
                   smoothing: float) -> list[list]:
    """The path one frame at a time: each window embedded alone, then smoothed, then tokens per frame."""
    spec = embedder.config.mel
    mono, _ = audio_features.prepare(wave[None], RATE, spec.sample_rate)
    plan = sv.plan_frames(mono.size, spec.sample_rate, fps)
    windows = list(sv.window_batches(mono, spec, plan, batch=1))
    embeds = torch.stack([embedder.embed_features(audio_features.log_mel(w, spec))[0] for w in windows])
    levels = torch.tensor([float(np.sqrt(np.square(w, dtype=np.float64).mean())) for w in windows])
    smoothed = sv.smooth(embeds, fps, smoothing)
    strengths = sv.frame_strengths(sv.smooth(levels, fps, smoothing), 1.0, True)
    return [condition(prompt(), adapter.tokens(smoothed[i:i + 1]), float(s)) for i, s in enumerate(strengths)]


def memory(embedder: AudioEmbedder, adapter: LoadedAdapter, seconds: float, fps: float) -> dict[str, object]:
    sv.sound_conditionings(embedder, adapter, prompt(), changing_sound(5.0)[None], RATE, fps)  # warm up
    rate = 44100
    wave = np.stack([changing_sound(seconds, rate), changing_sound(seconds, rate, 1)])
    before = rss_mb()
    start = time.perf_counter()
    frames = sv.sound_conditionings(embedder, adapter, prompt(), wave, rate, fps)
    took = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"sound_seconds": seconds, "sound_mb": round(wave.nbytes / 2**20), "frames": len(frames.conditionings),
            "peak_added_mb": round(peak - before), "seconds": round(took, 1)}


def speed(embedder: AudioEmbedder, adapter: LoadedAdapter, seconds: float, fps: float) -> dict[str, object]:
    wave = changing_sound(seconds)
    start = time.perf_counter()
    batched = sv.sound_conditionings(embedder, adapter, prompt(), wave[None], RATE, fps)
    every = [batched.conditionings[i] for i in range(len(batched.conditionings))]
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    looped = per_frame_loop(embedder, adapter, wave, fps, 0.5)
    t_loop = time.perf_counter() - start
    worst = max(float((a[0][0] - b[0][0]).abs().max()) for a, b in zip(every, looped))
    n = len(every)
    return {"frames": n, "batched_fps": round(n / t_batched, 1), "loop_fps": round(n / t_loop, 1),
            "speedup": round(t_loop / t_batched, 2), "largest_difference": worst}


def flicker(embedder: AudioEmbedder, adapter: LoadedAdapter, seconds: float, fps: float) -> dict[str, object]:
    """By smoothing, with the strength steady and following the loudness (whose jumps between pieces are changes
    the video should show, so smoothing cannot remove them)."""
    wave = changing_sound(seconds, seed=2)
    return {name: {f"{s:g}s": round(sv.flicker(sv.sound_conditionings(
        embedder, adapter, prompt(), wave[None], RATE, fps, smoothing_seconds=s, follow_loudness=follow
    ).conditionings), 4) for s in (0.0, 0.25, 0.5, 1.0)} for name, follow in (("steady_strength", False),
                                                                             ("following_loudness", True))}


def gpu(args: argparse.Namespace, embedder: AudioEmbedder, adapter: LoadedAdapter) -> dict[str, object] | str:
    if not torch.cuda.is_available():
        return "nothing measured on a GPU: no CUDA GPU on this machine"
    from bench_virtual_flow import find_sd15

    from atelier.core.sd15 import checkpoint as sd15_checkpoint
    from atelier.core.sd15.embedding_adapter import append_tokens
    from atelier.core.sd15.pipeline import encode_prompts
    from atelier.core.shared.progress import TqdmProgress

    model, searched = find_sd15(args)
    if model is None or not model.is_file():
        return (f"nothing measured on a GPU: no SD 1.5 checkpoint file ({', '.join(map(str, searched)) or args.model});"
                " give one with --model")
    device = torch.device("cuda")
    start = time.perf_counter()
    parts, _ = sd15_checkpoint.load(model, torch.float16)
    load = time.perf_counter() - start
    embedder.encoder.to(device)
    text = encode_prompts(parts.text_encoder.to(device), parts.tokenizer, ["a painting, soft light", ""])
    fps = 8.0
    frames = sv.sound_conditionings(embedder, adapter, [[text[:1], {}]], changing_sound(args.gpu_seconds)[None],
                                    RATE, fps)
    negative = append_tokens(text[1:], adapter.tokens(adapter.no_picture()), 1.0)
    sample, decode = sv.diffusers_frames(parts, negative, (512, 512), 0, args.gpu_steps, 7.0, device)
    sv.render_frames(frames.conditionings[:1], sample, decode, TqdmProgress(1))  # warm up (kernels, allocator)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    images = sv.render_frames(frames.conditionings, sample, decode, TqdmProgress(len(frames.conditionings)), 0.6)
    torch.cuda.synchronize()
    took = time.perf_counter() - start
    return {"model": model.name, "gpu": torch.cuda.get_device_name(), "frames": len(images), "size": 512,
            "steps": args.gpu_steps, "chain_denoise": 0.6, "load_seconds": round(load, 1),
            "seconds_per_frame": round(took / len(images), 3),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20)}


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="sound length of the speed test")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the CPU tests")
    p.add_argument("--long-seconds", type=float, default=180.0, help="sound length of the memory test")
    p.add_argument("--gpu", action="store_true", help="also a short real run on a CUDA GPU")
    p.add_argument("--model", help="SD 1.5 file for --gpu; default: the first found in the checkpoints folders")
    p.add_argument("--comfyui", help="your ComfyUI folder (its models/ folder is searched for --gpu)")
    p.add_argument("--gpu-seconds", type=float, default=2.0, help="sound length of the --gpu run (8 fps)")
    p.add_argument("--gpu-steps", type=int, default=20, help="DDIM steps per frame of the --gpu run")
    p.add_argument("--skip-cpu", action="store_true", help="only the --gpu run")
    args = p.parse_args(argv)
    if args.comfyui:
        from atelier.nodes import bridge

        bridge.set_comfyui_directory(args.comfyui)
    embedder, adapter = models()
    results: dict[str, object] = {}
    if not args.skip_cpu:
        results["memory"] = memory(embedder, adapter, args.long_seconds, args.fps)  # first: nothing before raised it
        results["speed"] = speed(embedder, adapter, args.seconds, args.fps)
        results["flicker"] = flicker(embedder, adapter, args.seconds, args.fps)
    if args.gpu:
        results["gpu"] = gpu(args, embedder, adapter)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run())
