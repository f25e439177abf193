"""Audio encoder throughput and training step time: the pack's batched paths against a per-clip loop.

1. Feature extraction: ``--clips`` windows of ``--seconds`` seconds (default mel settings: 16 kHz, 64 mel
   bands) as log-mel features, in one batched librosa call (ours, ``core.audio_features.log_mel``) and
   clip by clip (the reference loop), in seconds of audio per second of compute, and ours / reference.
2. Encoding: the same features through the default encoder, in batches of ``--batch`` (ours,
   ``AudioEmbedder.embed_features``) and one clip per forward pass (reference), same units and ratio.
3. Training: milliseconds per alignment step (InfoNCE, batch ``--batch``, forward, backward, AdamW).

Both sides of each comparison run in the same process on the same data; medians of ``--repeats`` after a
warm-up. Run: ``python benchmarks/bench_audio.py`` (CPU) or ``--device cuda`` on a GPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from atelier_cli import load_pack  # noqa: E402

load_pack()
from atelier.core.audio import features as audio_features  # noqa: E402
from atelier.core.audio.encoder import AudioEmbedder  # noqa: E402
from atelier.core.audio.features import MelSpec  # noqa: E402
from atelier.training.audio.aligner import AlignConfig, Scale, alignment_loss, build_encoder  # noqa: E402

from helpers import synthetic_sound  # noqa: E402


def timed(fn, repeats: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    spec = MelSpec(window_seconds=args.seconds)
    clips = np.stack([synthetic_sound(i % 6, seconds=args.seconds, rate=spec.sample_rate, seed=i)
                      for i in range(args.clips)])
    audio_seconds = args.clips * args.seconds
    print(f"{args.clips} clips of {args.seconds:g} s at {spec.sample_rate} Hz, {spec.n_mels} mel bands, "
          f"device {device}, torch threads {torch.get_num_threads()}")

    batched = timed(lambda: audio_features.log_mel(clips, spec), args.repeats, sync)
    loop = timed(lambda: [audio_features.log_mel(c[None], spec) for c in clips], args.repeats, sync)
    print(f"features: batched {audio_seconds / batched:,.0f} s/s, per-clip loop {audio_seconds / loop:,.0f} s/s, "
          f"ratio {loop / batched:.2f}x")

    config = AlignConfig(mel=spec)
    encoder = build_encoder(config, 768).to(device).eval()
    embedder = AudioEmbedder(encoder, "benchmark", 1.0)
    feats = torch.from_numpy(audio_features.log_mel(clips, spec))
    ours = timed(lambda: embedder.embed_features(feats, args.batch), args.repeats, sync)
    per_clip = timed(lambda: [embedder.embed_features(f[None], 1) for f in feats], args.repeats, sync)
    print(f"encoding: batched ({args.batch}) {audio_seconds / ours:,.0f} s/s, per-clip {audio_seconds / per_clip:,.0f} "
          f"s/s, ratio {per_clip / ours:.2f}x")

    encoder.train()
    scale = Scale(config.temperature, False).to(device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-3)
    targets = torch.nn.functional.normalize(torch.randn(args.batch, 768), dim=-1).to(device)
    batch = feats[:args.batch].to(device)

    def step() -> None:
        loss = alignment_loss(encoder(batch), targets, config, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    print(f"training: {1000 * timed(step, args.repeats, sync):.1f} ms per step of {args.batch} pairs "
          f"({sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M parameters)")


if __name__ == "__main__":
    main()
