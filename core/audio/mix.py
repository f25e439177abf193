"""Mixing sounds with per-source gains, so their relative loudness reaches the embedding (and the picture)."""
from __future__ import annotations

import numpy as np

from . import features as audio_features


def mix(sources: list[tuple[np.ndarray, int, float]]) -> tuple[np.ndarray, int, list[str]]:
    """``[(waveform [C, T], sample_rate, gain), ...]`` to one mono ``[1, T]`` at the highest rate among them,
    as long as the longest source, and notes. Nothing is normalised or clipped: a mix louder than full
    scale stays louder (say so in the notes), since level is what the encoder listens to."""
    if not sources:
        raise ValueError("nothing to mix: wire at least one sound")
    rate = max(r for _, r, _ in sources)
    tracks = [gain * audio_features.prepare(wave, r, rate, f"sound {i + 1}")[0]
              for i, (wave, r, gain) in enumerate(sources)]
    out = np.zeros(max(t.size for t in tracks), np.float32)
    for track in tracks:
        out[:track.size] += track
    notes = []
    peak = float(np.abs(out).max(initial=0.0))
    if peak > 1.0:
        notes.append(f"the mix peaks at {20 * np.log10(peak):+.1f} dBFS (above full scale); it is kept as it is, "
                     "lower the gains to save it as a file without clipping")
    return out[None], rate, notes
