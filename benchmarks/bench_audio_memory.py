"""Memory of embedding a long recording, as Encode Audio does: ``--minutes`` of stereo at ``--rate`` Hz
(default: an hour at 44.1 kHz) downmixed, resampled to 16 kHz and embedded by an encoder of the default
size (random weights) on the CPU.

Reports the peak resident memory the embedding added beyond the recording itself (which ComfyUI's Load
Audio already holds), from the process's peak RSS, and the seconds it took. The sound is resampled in
blocks and embedded a batch of windows at a time, so the added peak is about 4 bytes per resampled
sample plus a batch's features: a few hundred MB for an hour. Run:
``python benchmarks/bench_audio_memory.py [--minutes 60] [--rate 44100]``.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from atelier_cli import load_pack  # noqa: E402

load_pack()
from atelier.core.audio.encoder import AudioEmbedder  # noqa: E402
from atelier.training.audio.aligner import AlignConfig, build_encoder  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the recording (default 60)")
    parser.add_argument("--rate", type=int, default=44100, help="its sample rate in Hz (default 44100)")
    args = parser.parse_args()
    embedder = AudioEmbedder(build_encoder(AlignConfig(), 768).eval(), "random", 1.0)
    samples = int(args.minutes * 60 * args.rate)
    wave = np.empty((2, samples), np.float32)
    for start in range(0, samples, 1 << 20):  # in blocks, so making it peaks at the recording's own size
        t = np.arange(start, min(start + (1 << 20), samples)) / args.rate
        wave[0, start:start + t.size] = 0.3 * np.sin(2 * np.pi * 440 * t)
        wave[1, start:start + t.size] = 0.3 * np.sin(2 * np.pi * 660 * t)
    embedder.embed_clip(wave[:, :args.rate * 5], args.rate)  # libraries loaded and warmed up before measuring
    before = rss_mb()
    start = time.perf_counter()
    embedding, notes = embedder.embed_clip(wave, args.rate, "the recording")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({"minutes": args.minutes, "rate": args.rate, "recording_mb": round(wave.nbytes / 2**20),
                      "peak_added_mb": round(peak - before), "seconds": round(seconds, 1),
                      "finite": bool(np.isfinite(embedding.numpy()).all()), "notes": notes}, indent=1))


if __name__ == "__main__":
    main()
