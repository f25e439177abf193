"""Sound as the audio encoder sees it: mono at a fixed rate, cut into fixed windows, as log-mel features
that keep the absolute level.

The features are ``power_to_db`` with a fixed reference (1.0) and no ``top_db`` clamp, then a fixed
affine scaling: nothing depends on the clip itself, so a clip 20 dB louder gives features 20 dB higher
and loudness reaches the embedding. (Per-clip normalisation, ``ref=np.max`` or a ``top_db`` clamp
would erase it.)

Channels are folded to mono: stereo and other layouts by the mean of the channels; six channels are
taken as 5.1 in the WAV/FFmpeg order (L, R, C, LFE, Ls, Rs) and folded down as ITU-R BS.775 does,
without the LFE, scaled so that a signal equal in every channel keeps its level.

Limits, checked from the length and rate alone before anything is decoded or resampled (a 72 KB WAV
declaring 1 Hz would otherwise resample to ten hours of sound): a sample rate of at least
MIN_SAMPLE_RATE (4 kHz) and at most MAX_SECONDS (3 hours) of sound. Within them memory stays bounded:
a sound is downmixed and resampled BLOCK_SECONDS at a time (the mono result costs 4 bytes a sample:
230 MB for an hour at 16 kHz), and its windows are turned into features WINDOW_BATCH at a time.
Samples must be finite and within MAX_PEAK (+80 dBFS): far above full scale (1.0) the features
overflow and the embedding becomes NaN.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_SAMPLE_RATE = 4000  # Hz: the lowest rate a sound may declare (MelSpec's own floor)
MAX_SECONDS = 3 * 3600  # the longest sound read or embedded
MAX_PEAK = 1e4  # +80 dBFS: mixes may exceed full scale (1.0), but not by this much
BLOCK_SECONDS = 30.0  # input downmixed and resampled this much at a time
WINDOW_BATCH = 64  # windows turned into features at a time
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


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} hours"
    return f"{seconds / 60:.3g} minutes" if seconds >= 60 else f"{seconds:.3g} s"


def check_length(samples: int, sample_rate: int, what: str = "the audio") -> None:
    """Refuse a sound by its rate and length alone, before it is decoded or resampled (see the limits in
    the module docstring). Every reader of sound calls it: ``read_audio`` from a file's header,
    ``prepare`` from a waveform's shape."""
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"{what} declares a sample rate of {sample_rate} Hz, below the {MIN_SAMPLE_RATE} Hz that "
                         "sound needs (the file's header may be damaged): save it again at a rate of 16000 Hz or more")
    seconds = samples / sample_rate
    if seconds > MAX_SECONDS:
        raise ValueError(f"{what} lasts {_duration(seconds)} ({samples} samples at {sample_rate} Hz), over the "
                         f"limit of {_duration(MAX_SECONDS)}: cut it into shorter files")
    if samples == 0:
        raise ValueError(f"{what} holds no samples")


def peak(wave: np.ndarray) -> float:
    """The largest absolute sample of ``[..., T]``, a block at a time (no copy of a long sound); NaN if any is."""
    block = 1 << 20
    tops = [np.abs(wave[..., i:i + block]).max(initial=0.0) for i in range(0, wave.shape[-1], block)]
    return float(np.max(tops)) if tops else 0.0  # np.max keeps a NaN


def check_samples(wave: np.ndarray, what: str) -> None:
    """Samples must be finite and within MAX_PEAK (see the module docstring); any shape."""
    top = peak(wave)
    if not np.isfinite(top):
        raise ValueError(f"{what} holds NaN or infinite samples: the file or the node before this one is broken")
    if top > MAX_PEAK:
        raise ValueError(f"{what} peaks at {top:.3g} ({20 * np.log10(top):+.0f} dBFS), far above full scale (1.0; "
                         f"the limit is {20 * np.log10(MAX_PEAK):+.0f} dBFS): samples must lie around -1..1; lower "
                         "the gain before this node (integer samples: divide by 32768)")


def prepare(waveform: np.ndarray, sample_rate: int, target_rate: int,
            what: str = "the audio") -> tuple[np.ndarray, list[str]]:
    """Mono float32 at ``target_rate`` and notes on what was changed (downmixed, resampled).

    Checked first (``check_length``), then downmixed and resampled BLOCK_SECONDS at a time by soxr's
    stream (librosa's ``soxr_hq`` in one piece gives the same samples), so nothing but the result grows
    with the length of the sound."""
    import soxr

    wave = np.asarray(waveform)
    if wave.ndim not in (1, 2) or wave.ndim == 2 and wave.shape[0] < 1:
        raise ValueError(f"audio must be [channels, samples], not {tuple(wave.shape)}")
    samples = wave.shape[-1]
    check_length(samples, int(sample_rate), what)
    notes = []
    if wave.ndim == 2 and wave.shape[0] > 1:
        notes.append(f"{wave.shape[0]} channels downmixed to mono")
    block = max(1, int(BLOCK_SECONDS * sample_rate))
    if sample_rate == target_rate:
        mono = downmix(wave)  # a mono float32 clip is itself, not a copy
        for start in range(0, samples, block):
            check_samples(mono[start:start + block], what)
        return mono, notes
    size = math.ceil(samples * target_rate / sample_rate)
    out = np.zeros(size, np.float32)  # a stream's last samples fall short of ceil(): zeros, as librosa pads
    stream = soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32", quality="HQ")
    done = 0
    for start in range(0, samples, block):
        part = downmix(wave[..., start:start + block])
        check_samples(part, what)
        part = stream.resample_chunk(part, last=start + block >= samples)[:size - done]
        out[done:done + part.size] = part
        done += part.size
    return out, [*notes, f"resampled from {sample_rate} Hz to {target_rate} Hz"]


def check_not_silent(wave: np.ndarray, what: str = "the audio") -> None:
    """Refuse a sound (``[..., T]``, any channels) whose every sample lies under SILENCE_PEAK."""
    top = peak(wave)
    if top < SILENCE_PEAK:
        raise SilentAudio(f"{what} is silent (peak {20 * np.log10(max(top, 1e-12)):.0f} dBFS, below -80 dBFS): "
                          "there is no sound to turn into a picture")


def window_starts(samples: int, spec: MelSpec, hop_seconds: float | None = None) -> list[int]:
    """Where each window of a clip of ``samples`` starts: ``hop_seconds`` apart (default: back to back),
    the last one ending at the clip's end; one window for a clip no longer than a window."""
    size = spec.window_samples
    if samples <= size:
        return [0]
    hop = size if hop_seconds is None else max(1, int(round(hop_seconds * spec.sample_rate)))
    starts = list(range(0, samples - size + 1, hop))
    if starts[-1] != samples - size:
        starts.append(samples - size)
    return starts


def windows(mono: np.ndarray, spec: MelSpec, hop_seconds: float | None = None) -> tuple[np.ndarray, list[str]]:
    """``[N, window_samples]``: the clip cut into windows (``window_starts``); a clip shorter than one window
    is padded with silence (and said so)."""
    size = spec.window_samples
    if mono.size <= size:
        return np.pad(mono, (0, size - mono.size))[None], padding_notes(mono.size, spec)
    return np.stack([mono[s:s + size] for s in window_starts(mono.size, spec, hop_seconds)]), []


def padding_notes(samples: int, spec: MelSpec) -> list[str]:
    """What ``windows`` says of a clip of ``samples``: padded when shorter than a window."""
    if samples >= spec.window_samples:
        return []
    return [f"{samples / spec.sample_rate:.2f} s is shorter than the {spec.window_seconds:g} s window: padded with "
            "silence"]


def feature_batches(mono: np.ndarray, spec: MelSpec, what: str = "the audio") -> Iterator[np.ndarray]:
    """The log-mel features of a clip's windows (as ``windows`` cuts them), WINDOW_BATCH windows at a time,
    so a long clip never holds all its windows' spectra at once. Features that are not finite are an
    error naming ``what``."""
    if mono.size <= spec.window_samples:
        batches = [windows(mono, spec)[0]]
    else:
        starts = window_starts(mono.size, spec)
        batches = (np.stack([mono[s:s + spec.window_samples] for s in starts[i:i + WINDOW_BATCH]])
                   for i in range(0, len(starts), WINDOW_BATCH))
    for batch in batches:
        features = log_mel(batch, spec)
        if not np.isfinite(features).all():
            raise ValueError(f"the features of {what} are not finite: its samples are out of range")
        yield features


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
        info = soundfile.info(str(path))
        check_length(info.frames, int(info.samplerate), repr(str(path)))  # from the header, before decoding
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(rate)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        from .video_frames import read_audio_track

        data, rate = read_audio_track(path)
        check_length(data.shape[-1], rate, repr(str(path)))
        return data, rate
