"""Thumbnails for a long sound: segments, their embeddings, K-means, one representative per cluster.

The sound is cut into ``segment_seconds`` segments overlapping by ``overlap_seconds``; each segment's
embedding is the mean over its encoder windows. K-means (scikit-learn, seeded) groups them; each
cluster's representative is the segment nearest its centre, and clusters are ordered largest first,
so the first representative (the sound that fills most of the file) is the thumbnail. Each representative's
level (``loudness.measure_level`` of its segment) gives the strength it draws with, as Encode Audio's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..shared.progress import Progress
from . import features as audio_features
from .encoder import AudioEmbedder
from .loudness import measure_level


@dataclass
class Clusters:
    representatives: torch.Tensor  # [K, D], largest cluster first
    sizes: list[int]  # segments per cluster, in the same order
    starts: list[float]  # seconds: where each representative segment starts
    labels: list[int]  # per segment, the (ordered) cluster it belongs to
    levels_db: list[float]  # each representative segment's level (gated RMS, dBFS)

    def report(self) -> str:
        lines = [f"{len(self.labels)} segments in {len(self.sizes)} clusters (largest first):"]
        lines += [f"  cluster {i + 1}: {size} segments, representative at {start:.1f} s, level {level:.1f} dBFS"
                  for i, (size, start, level) in enumerate(zip(self.sizes, self.starts, self.levels_db))]
        return "\n".join(lines)


def segment_starts(samples: int, rate: int, segment_seconds: float, overlap_seconds: float) -> list[int]:
    if segment_seconds <= 0 or not 0 <= overlap_seconds < segment_seconds:
        raise ValueError("segments must be longer than 0 s and overlap by less than their length")
    size, hop = int(round(segment_seconds * rate)), int(round((segment_seconds - overlap_seconds) * rate))
    if samples <= size:
        return [0]
    starts = list(range(0, samples - size + 1, hop))
    return starts if starts[-1] + size >= samples else starts + [samples - size]


def cluster(embeddings: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K-means labels ``[N]`` and centres ``[K, D]``."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(embeddings.double().numpy())
    return model.labels_, model.cluster_centers_


def thumbnails(embedder: AudioEmbedder, waveform: np.ndarray, sample_rate: int, segment_seconds: float,
               overlap_seconds: float, k: int, seed: int = 0, progress: Progress | None = None) -> Clusters:
    """Cluster the segments of a long ``[C, T]`` sound; fewer segments than ``k`` is an error saying how many."""
    if k < 1:
        raise ValueError("the number of clusters must be at least 1")
    mono, _ = audio_features.prepare(waveform, sample_rate, embedder.config.mel.sample_rate)
    audio_features.check_not_silent(mono)
    rate = embedder.config.mel.sample_rate
    starts = segment_starts(mono.size, rate, segment_seconds, overlap_seconds)
    if len(starts) < k:
        raise ValueError(f"{mono.size / rate:.1f} s of sound gives {len(starts)} segments of {segment_seconds:g} s "
                         f"(overlap {overlap_seconds:g} s): too few for {k} clusters; lower K or the segment length")
    size = int(round(segment_seconds * rate))
    embeds = []
    for start in starts:
        if progress is not None:
            progress.check_cancel()
        segment = mono[start:start + size]
        if np.abs(segment).max(initial=0.0) < audio_features.SILENCE_PEAK:  # a silent stretch still gets a point
            segment = np.zeros_like(segment)
        wins, _ = audio_features.windows(segment, embedder.config.mel)
        embeds.append(embedder.embed_features(audio_features.log_mel(wins, embedder.config.mel)).mean(0))
        if progress is not None:
            progress.advance()
    points = torch.stack(embeds)
    labels, centres = cluster(points, k, seed)
    sizes = np.bincount(labels, minlength=k)
    order = sorted(range(k), key=lambda c: (-sizes[c], c))
    rank = {c: i for i, c in enumerate(order)}
    reps = []
    for c in order:
        members = np.flatnonzero(labels == c)
        distances = np.linalg.norm(points[members].double().numpy() - centres[c], axis=1)
        reps.append(int(members[int(np.argmin(distances))]))
    levels = [measure_level(mono[starts[r]:starts[r] + size], rate) for r in reps]
    return Clusters(points[reps], [int(sizes[c]) for c in order], [starts[r] / rate for r in reps],
                    [rank[int(c)] for c in labels], levels)
