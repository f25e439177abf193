"""Where a sound comes from: the left-right balance of a clip as a pan value in -1..1, and what a picture makes
of it (a soft mask over the source's side, and position words for a prompt).

Channels: the first two are left and right (the WAV/FFmpeg order of stereo, 5.1 and 7.1, whose further
channels are centre, LFE and surrounds); a mono clip is centred (pan 0).

Two cues, as hearing uses them:
- the level difference (ILD): each channel's gated RMS (``loudness.measure_level``), read back through the
  constant-power pan law (``L = cos t, R = sin t``, t from 0 at hard left to pi/2 at hard right):
  ``pan = 4 / pi * atan2(rms_R, rms_L) - 1``. Hard left (R silent) is -1, equal levels 0; half left (-0.5)
  is the left channel 7.7 dB louder, and in general ``ILD = 20 log10(cot((pan + 1) pi / 4))``.
- the time difference (ITD): the lag, within +-1 ms, of the peak of the channels' normalised
  cross-correlation (summed over 0.25 s blocks, sub-sample by a parabola through the peak), when that peak
  is clear (correlation 0.5 or more, inside the lags searched, no other peak within 90% of it: a tone whose
  period is under 2 ms has several); ``pan = -lag / 0.7 ms`` clamped to -1..1 (0.7 ms: the largest delay a
  human head makes, from a source at the side), negative when the left channel leads.
The pan is the stronger of the two cues (the one further from 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import features as audio_features
from .loudness import measure_level

MAX_LAG_SECONDS = 1e-3  # the time differences searched
FULL_SIDE_SECONDS = 0.7e-3  # the time difference of a source at the side: pan -1 or 1
CLEAR_PEAK, RIVAL_PEAK = 0.5, 0.9  # a time difference counts when its peak is clear
CORRELATION_BLOCK_SECONDS = 0.25
_BLOCKS_AT_ONCE = 64
CENTRE, SIDE = 0.2, 0.6  # |pan| under CENTRE is the centre, from SIDE on the far side
SILENT_SIDE_DB = 60.0  # a level difference beyond this is said as one side silent


@dataclass(frozen=True)
class Position:
    pan: float  # -1 hard left .. 0 centre .. 1 hard right
    channels: int
    level_difference_db: float | None = None  # left minus right; None for mono
    time_difference_ms: float | None = None  # positive: the left channel leads; None: mono, or no clear peak

    def words(self) -> str:
        """Position words for a prompt: 'in the centre', 'on the left', 'on the far right', ..."""
        if abs(self.pan) < CENTRE:
            return "in the centre"
        side = "left" if self.pan < 0 else "right"
        return f"on the far {side}" if abs(self.pan) >= SIDE else f"on the {side}"

    def note(self, what: str = "the sound") -> str:
        if self.channels == 1:
            return f"{what}: mono, centred (pan 0)"
        ild = self.level_difference_db or 0.0
        cues = [f"level difference {ild:+.1f} dB (left minus right)" if abs(ild) <= SILENT_SIDE_DB else
                f"the {'right' if ild > 0 else 'left'} channel silent (over {SILENT_SIDE_DB:g} dB under the other)"]
        cues.append("no clear time difference" if self.time_difference_ms is None
                    else f"time difference {self.time_difference_ms:+.2f} ms (left leads when positive)")
        more = f", channels 1-2 of {self.channels} taken as left-right" if self.channels > 2 else ""
        return f"{what}: pan {round(self.pan, 2) + 0.0:+.2f}, {self.words()} ({', '.join(cues)}{more})"


def _correlation(left: np.ndarray, right: np.ndarray, max_lag: int, block: int) -> np.ndarray:
    """Normalised cross-correlation ``sum L(t) R(t + lag) / sqrt(E_L E_R)`` for lags ``-max_lag..max_lag``,
    summed over blocks of ``block`` samples (a fixed amount of memory for any length; the last part block is
    left out unless it is the whole clip)."""
    block = min(block, left.size)
    fft = 1 << int(math.ceil(math.log2(block + max_lag + 1)))  # no wrap-around within the lags searched
    blocks = left.size // block
    spectrum = np.zeros(fft // 2 + 1, np.complex128)
    energy_l = energy_r = 0.0
    for first in range(0, blocks, _BLOCKS_AT_ONCE):
        last = min(blocks, first + _BLOCKS_AT_ONCE)
        a = left[first * block:last * block].astype(np.float64).reshape(last - first, block)
        b = right[first * block:last * block].astype(np.float64).reshape(last - first, block)
        spectrum += (np.conj(np.fft.rfft(a, fft)) * np.fft.rfft(b, fft)).sum(axis=0)
        energy_l += float(np.square(a).sum())
        energy_r += float(np.square(b).sum())
    full = np.fft.irfft(spectrum, fft)
    lags = np.concatenate([full[fft - max_lag:], full[:max_lag + 1]])
    return lags / math.sqrt(max(energy_l * energy_r, 1e-30))


def _time_difference(left: np.ndarray, right: np.ndarray, sample_rate: int) -> float | None:
    """Seconds by which the left channel leads (the right lags), or None when no clear peak says so."""
    max_lag = max(1, int(round(MAX_LAG_SECONDS * sample_rate)))
    rho = _correlation(left, right, max_lag, max(4 * max_lag, round(CORRELATION_BLOCK_SECONDS * sample_rate)))
    best = int(np.argmax(rho))
    if rho[best] < CLEAR_PEAK or best in (0, rho.size - 1):  # at the edge: the true peak lies beyond +-1 ms
        return None
    inner = rho[1:-1]
    peaks = np.flatnonzero((inner >= rho[:-2]) & (inner >= rho[2:])) + 1
    if any(p != best and rho[p] >= RIVAL_PEAK * rho[best] for p in peaks):
        return None
    below, above = rho[best - 1], rho[best + 1]  # a parabola through the peak and its neighbours
    curve = below - 2 * rho[best] + above
    shift = 0.5 * (below - above) / curve if curve < 0 else 0.0
    return (best - max_lag + shift) / sample_rate


def measure_position(waveform: np.ndarray, sample_rate: int, what: str = "the audio") -> Position:
    """The pan of one clip ``[C, T]`` (the module docstring says how); silence is an error naming ``what``."""
    wave = np.asarray(waveform)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2 or wave.shape[0] < 1:
        raise ValueError(f"audio must be [channels, samples], not {tuple(wave.shape)}")
    audio_features.check_length(wave.shape[-1], int(sample_rate), what)
    audio_features.check_samples(wave, what)
    audio_features.check_not_silent(wave, what)
    if wave.shape[0] == 1:
        return Position(0.0, 1)
    left, right = wave[0], wave[1]
    rms_l, rms_r = (10 ** (measure_level(c, sample_rate) / 20) for c in (left, right))
    pan_level = 4 / math.pi * math.atan2(rms_r, rms_l) - 1
    level_db = 20 * math.log10(rms_l / rms_r)
    lead = _time_difference(left, right, sample_rate)
    pan_time = 0.0 if lead is None else -max(-1.0, min(1.0, lead / FULL_SIDE_SECONDS))
    pan = pan_level if abs(pan_level) >= abs(pan_time) else pan_time
    return Position(float(pan), wave.shape[0], level_db, None if lead is None else float(1000 * lead))


def position_mask(pan: float, width: int, height: int, source_width: float = 0.5,
                  softness: float = 0.2) -> torch.Tensor:
    """``[height, width]`` float32 MASK placing a source at ``pan``: 1 over a band ``source_width`` of the
    picture wide, its centre at ``0.5 + pan * (1 - source_width) / 2`` (hard left: the band touches the left
    edge; centre: the middle), falling to 0 by a raised cosine over ``softness`` of the width on each side;
    the same in every row. For core's ConditioningSetMask."""
    if not -1.0 <= pan <= 1.0:
        raise ValueError(f"pan {pan} is outside -1..1")
    if not 0 < source_width <= 1 or not 0 <= softness <= 1 or width < 1 or height < 1:
        raise ValueError(f"unusable mask settings: source_width {source_width} (0..1], softness {softness} (0..1), "
                         f"{width}x{height}")
    x = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    centre = 0.5 + pan * (1 - source_width) / 2
    outside = ((x - centre).abs() - source_width / 2).clamp(min=0)
    if softness > 0:
        row = torch.where(outside < softness, 0.5 * (1 + torch.cos(math.pi * outside / softness)), 0.0)
    else:
        row = (outside == 0).double()
    return row.float().expand(height, width).clone()
