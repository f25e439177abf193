"""How loud a sound is, and how strongly it draws: a measured level in dBFS becomes the strength of the sound's
tokens on the conditioning.

Why a measured level and not the embedding's length: the adapter ends in a LayerNorm, so every token it makes
has the same length whatever embedding goes in, and a louder sound could only turn the tokens, by as much as
its encoder's training happened to teach. A level measured from the samples is exact, the same for every
encoder, and can be checked with any meter.

The level (``measure_level``) is a gated RMS, as ITU-R BS.1770 measures loudness but without its K-weighting
filter: the mean square of 400 ms blocks every 100 ms, averaged over the channels (6 channels are 5.1 and
leave out the LFE), the blocks gated (absolute gate -70 dBFS, then a relative gate 10 dB under the mean of the
blocks that passed) so pauses do not make a sound quieter. A full-scale sine reads -3.01 dBFS; a mono file
and its two-channel copy read the same; a sound panned with the constant-power law keeps its level. A clip
shorter than one block is one block; a clip quieter than -70 dBFS everywhere is measured ungated.

The strength (``strength_for``) follows Stevens' loudness law, perceived loudness doubling every 10 dB:
``2 ** ((level - reference) / 10)``, clamped to 1/16..4 (40 dB under to 20 dB over the reference). At the
default reference of -20 dBFS: -20 dBFS -> x1, -26 (half the amplitude) -> x0.66, -30 -> x0.5, -14 (twice
the amplitude) -> x1.52, -10 -> x2, 0 dBFS -> x4. ``loudness_strength`` does both for one clip; silence
(peak under -80 dBFS) stays an error there, a quiet sound only draws weakly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import features as audio_features

DEFAULT_REFERENCE_DB = -20.0  # dBFS drawn at strength 1: a typical recorded level (speech, field recordings)
BLOCK_SECONDS, HOP_SECONDS = 0.4, 0.1  # BS.1770's gating blocks: 400 ms, overlapping by 75%
ABSOLUTE_GATE_DB, RELATIVE_GATE_DB = -70.0, -10.0
DB_PER_DOUBLING = 10.0  # Stevens: perceived loudness doubles every 10 dB
MIN_STRENGTH, MAX_STRENGTH = 1 / 16, 4.0  # 40 dB under, 20 dB over the reference
_CHUNK_HOPS = 300  # 30 s of hops squared at a time, so no float64 copy of a long sound is made
_LFE = 3  # 5.1 in WAV/FFmpeg order: L, R, C, LFE, Ls, Rs


@dataclass(frozen=True)
class Loudness:
    level_db: float  # gated RMS, dBFS
    reference_db: float  # the level drawn at strength 1
    strength: float  # the factor on the sound's tokens

    def note(self, what: str = "the sound") -> str:
        clamped = " (the limit)" if self.strength in (MIN_STRENGTH, MAX_STRENGTH) else ""
        return (f"{what}: level {self.level_db:.1f} dBFS, {self.level_db - self.reference_db:+.1f} dB from the "
                f"reference {self.reference_db:g} dBFS: token strength x{self.strength:.2f}{clamped}")


def _channels(waveform: np.ndarray) -> np.ndarray:
    wave = np.asarray(waveform)
    if wave.ndim == 1:
        return wave[None]
    if wave.ndim != 2 or wave.shape[0] < 1:
        raise ValueError(f"audio must be [channels, samples], not {tuple(wave.shape)}")
    return np.delete(wave, _LFE, axis=0) if wave.shape[0] == 6 else wave


def _hop_powers(wave: np.ndarray, hop: int, hops: int) -> np.ndarray:
    """Mean square of each of the first ``hops`` stretches of ``hop`` samples, averaged over the channels."""
    out = np.empty(hops)
    for first in range(0, hops, _CHUNK_HOPS):
        last = min(hops, first + _CHUNK_HOPS)
        part = wave[:, first * hop:last * hop].astype(np.float64)
        out[first:last] = np.square(part).reshape(part.shape[0], last - first, hop).mean(axis=(0, 2))
    return out


def _db(power: float) -> float:
    return 10 * math.log10(max(power, 10 ** (audio_features.FLOOR_DB / 10)))


def measure_level(waveform: np.ndarray, sample_rate: int) -> float:
    """The gated RMS level in dBFS of ``[C, T]`` (or ``[T]``) samples, as the module docstring says; never below
    FLOOR_DB (-100), so silence measures -100 rather than minus infinity."""
    wave = _channels(waveform)
    hop = max(1, round(HOP_SECONDS * sample_rate))
    per_block = round(BLOCK_SECONDS / HOP_SECONDS)
    hops = wave.shape[-1] // hop
    if hops < per_block:  # shorter than one block: the whole clip is the block
        return _db(float(np.square(wave.astype(np.float64)).mean())) if wave.size else audio_features.FLOOR_DB
    powers = _hop_powers(wave, hop, hops)
    blocks = np.convolve(powers, np.full(per_block, 1 / per_block), mode="valid")
    gated = blocks[blocks > 10 ** (ABSOLUTE_GATE_DB / 10)]
    if gated.size == 0:
        return _db(float(blocks.mean()))
    gated = gated[gated > gated.mean() * 10 ** (RELATIVE_GATE_DB / 10)]
    return _db(float(gated.mean()))


def strength_for(level_db: float, reference_db: float = DEFAULT_REFERENCE_DB) -> float:
    """The token strength of a sound at ``level_db``: doubled every 10 dB over ``reference_db``, clamped."""
    return float(min(MAX_STRENGTH, max(MIN_STRENGTH, 2 ** ((level_db - reference_db) / DB_PER_DOUBLING))))


def loudness_strength(waveform: np.ndarray, sample_rate: int, reference_db: float = DEFAULT_REFERENCE_DB,
                      what: str = "the audio") -> Loudness:
    """The level of one clip ``[C, T]`` (any rate, any channels) and the strength it draws with; silence (peak
    under -80 dBFS) is an error naming ``what``."""
    wave = np.asarray(waveform)
    audio_features.check_not_silent(wave, what)
    level = measure_level(wave, sample_rate)
    return Loudness(level, float(reference_db), strength_for(level, reference_db))
