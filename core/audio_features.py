"""Sound as the audio encoder sees it: mono at a fixed rate, cut into fixed windows, as log-mel features
that keep the absolute level.

The features are ``power_to_db`` with a fixed reference (1.0) and no ``top_db`` clamp, then a fixed
affine scaling: nothing depends on the clip itself, so a clip 20 dB louder gives features 20 dB higher
and loudness reaches the embedding. (Per-clip normalisation, ``ref=np.max`` or a ``top_db`` clamp
would erase it.)

Channels are folded to mono: stereo and other layouts by the mean of the channels; six channels are
taken as 5.1 in the WAV/FFmpeg order (L, R, C, LFE, Ls, Rs) and folded down as ITU-R BS.775 does,
without the LFE, scaled so that a signal equal in every channel keeps its level.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SILENCE_PEAK = 1e-4  # -80 dBFS: quieter than this everywhere is silence
FLOOR_DB = -100.0  # power_to_db's amin of 1e-10
_OFFSET_DB, _SCALE_DB = 40.0, 40.0  # fixed, so features of ordinary sound lie around -1..2
_ITU_51 = np.array([1.0, 1.0, 0.7071, 0.0, 0.7071, 0.7071])
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


class SilentAudio(ValueError):
    """The sound is silent (peak below -80 dBFS): nothing to embed."""


@dataclass(frozen=True)
class MelSpec:
    sample_rate: int = 16000
    window_seconds: float = 2.0
    n_mels: int = 64
    n_fft: int = 512
    hop_length: int = 160

    def __post_init__(self) -> None:
        if self.sample_rate < 4000 or self.window_seconds <= 0 or self.n_mels < 8 or self.hop_length < 1:
            raise ValueError(f"unusable audio feature settings: {self}")
        if self.n_fft > self.window_samples:
            raise ValueError(f"n_fft {self.n_fft} is longer than the {self.window_seconds} s window")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        return 1 + self.window_samples // self.hop_length


def downmix(waveform: np.ndarray) -> np.ndarray:
    """``[C, T]`` (or ``[T]``) to mono ``[T]`` float32, as the module docstring says."""
    wave = np.asarray(waveform, dtype=np.float32)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2 or wave.shape[0] < 1:
        raise ValueError(f"audio must be [channels, samples], not {tuple(wave.shape)}")
    if wave.shape[0] == 6:
        return (_ITU_51.astype(np.float32) @ wave) / np.float32(_ITU_51.sum())
    return wave.mean(axis=0)


def prepare(waveform: np.ndarray, sample_rate: int, target_rate: int) -> tuple[np.ndarray, list[str]]:
    """Mono float32 at ``target_rate`` and notes on what was changed (downmixed, resampled)."""
    import librosa

    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, not {sample_rate}")
    wave = np.asarray(waveform, dtype=np.float32)
    notes = []
    if wave.ndim == 2 and wave.shape[0] > 1:
        notes.append(f"{wave.shape[0]} channels downmixed to mono")
    mono = downmix(wave)
    if mono.size == 0:
        raise ValueError("the audio holds no samples")
    if not np.isfinite(mono).all():
        raise ValueError("the audio holds NaN or infinite samples")
    if sample_rate != target_rate:
        mono = librosa.resample(mono, orig_sr=sample_rate, target_sr=target_rate, res_type="soxr_hq")
        notes.append(f"resampled from {sample_rate} Hz to {target_rate} Hz")
    return mono.astype(np.float32, copy=False), notes


def check_not_silent(mono: np.ndarray, what: str = "the audio") -> None:
    peak = float(np.abs(mono).max()) if mono.size else 0.0
    if peak < SILENCE_PEAK:
        raise SilentAudio(f"{what} is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS, below -80 dBFS): "
                          "there is no sound to turn into a picture")


def windows(mono: np.ndarray, spec: MelSpec, hop_seconds: float | None = None) -> tuple[np.ndarray, list[str]]:
    """``[N, window_samples]``: the clip cut into windows ``hop_seconds`` apart (default: back to back), the
    last one ending at the clip's end; a clip shorter than one window is padded with silence (and said so)."""
    size = spec.window_samples
    if mono.size <= size:
        notes = [] if mono.size == size else [
            f"{mono.size / spec.sample_rate:.2f} s is shorter than the {spec.window_seconds:g} s window: padded "
            "with silence"]
        return np.pad(mono, (0, size - mono.size))[None], notes
    hop = size if hop_seconds is None else max(1, int(round(hop_seconds * spec.sample_rate)))
    starts = list(range(0, mono.size - size + 1, hop))
    if starts[-1] != mono.size - size:
        starts.append(mono.size - size)
    return np.stack([mono[s:s + size] for s in starts]), []


def log_mel(batch: np.ndarray, spec: MelSpec) -> np.ndarray:
    """``[N, n_mels, frames]`` float32 features of ``[N, window_samples]`` windows, in one librosa call."""
    import librosa

    power = librosa.feature.melspectrogram(y=np.asarray(batch, dtype=np.float32), sr=spec.sample_rate,
                                           n_fft=spec.n_fft, hop_length=spec.hop_length, n_mels=spec.n_mels,
                                           power=2.0)
    db = librosa.power_to_db(power, ref=1.0, amin=10 ** (FLOOR_DB / 10), top_db=None)
    return ((db + _OFFSET_DB) / _SCALE_DB).astype(np.float32)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """``([C, T] float32, sample_rate)`` of an audio file: soundfile (WAV, FLAC, OGG, MP3 with libsndfile
    1.1+), else PyAV (MP3, M4A and the audio track of a video)."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file {str(path)!r}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(rate)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        from .video_frames import read_audio_track

        return read_audio_track(path)
