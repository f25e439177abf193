"""Training pairs for the audio encoder: paired files in a folder, or frames of videos with the sound
around each frame, and the choice of the frames whose sound matches them.

Frame choice: each candidate frame is scored by the cosine between the audio embedding of the window
centred on it (from the encoder given, or one warmed up on all candidates) and the frame's image
embedding; per video the ``top_k`` best at or above ``threshold`` are kept. Frames whose sound is
unrelated (narration over a title card, music over a cut) score low and are dropped, which is what a
correlation measure between the two streams is for.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..dataset.folder_dataset import skip_lines
from ..dataset.image_files import IMAGE_EXTENSIONS, ImageFolderError, Skipped, load_image
from ..shared.progress import Progress
from . import features as audio_features
from .features import AUDIO_SUFFIXES, MelSpec, SilentAudio
from .video_frames import VIDEO_SUFFIXES, read_video


@dataclass
class Pairs:
    names: list[str]
    features: np.ndarray  # [N, n_mels, frames]
    pictures: list[torch.Tensor]  # [H, W, 3] float 0..1
    groups: list[str]  # the video (or the file) each pair comes from
    notes: list[str]


def centre_window(mono: np.ndarray, spec: MelSpec, centre: int | None = None) -> np.ndarray:
    """The window centred on sample ``centre`` (default: the clip's middle), shifted to stay inside the
    clip and padded with silence where the clip is shorter."""
    size = spec.window_samples
    if mono.size <= size:
        return np.pad(mono, (0, size - mono.size))
    start = (mono.size - size) // 2 if centre is None else min(max(centre - size // 2, 0), mono.size - size)
    return mono[start:start + size]


def paired_files(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(sounds, pictures)`` of a folder by stem."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {str(folder)!r}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return ({p.stem: p for p in files if p.suffix.lower() in AUDIO_SUFFIXES},
            {p.stem: p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS})


class _BadPair(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.skipped = Skipped(str(path), reason)


def _pair(sound: Path, picture: Path, spec: MelSpec) -> tuple[np.ndarray, torch.Tensor]:
    """The sound's mono samples at ``spec.sample_rate`` and the picture, read by the pack's one picture reader
    (16-bit, palette, alpha, EXIF and the megapixel limit as everywhere else); raises ``_BadPair`` naming the
    file that cannot be used and why."""
    try:
        image = load_image(picture)
    except (ImageFolderError, OSError) as exc:
        raise _BadPair(picture, str(exc)) from exc
    try:
        wave, rate = audio_features.read_audio(sound)
        mono, _ = audio_features.prepare(wave, rate, spec.sample_rate)
        audio_features.check_not_silent(mono, "the sound")
    except (ValueError, OSError, RuntimeError, EOFError) as exc:  # unreadable, empty, NaN, silent, too long
        raise _BadPair(sound, str(exc)) from exc
    return mono, image


def paired_folder(folder: Path, spec: MelSpec, progress: Progress | None = None) -> Pairs:
    """``<stem>.wav|.flac|.mp3|.ogg`` beside ``<stem>.png|.jpg|...``: one pair per stem, the centre window of
    each sound. Unpaired files are noted; a pair whose picture or sound cannot be read, or whose sound is
    silent, is skipped and named in the notes; a folder with no usable pair is an error naming the skips."""
    sounds, images = paired_files(folder)
    stems = sorted(set(images) & set(sounds))
    notes = [f"{len(set(sounds) - set(images))} sounds without a picture skipped"] if set(sounds) - set(images) else []
    if set(images) - set(sounds):
        notes.append(f"{len(set(images) - set(sounds))} pictures without a sound skipped")
    if not stems:
        raise ValueError(f"{str(folder)!r} holds no <stem>.wav/.flac/.mp3/.ogg beside a <stem>.png/.jpg: no pairs "
                         "to train on")
    names, windows, pictures, skips = [], [], [], []
    for stem in stems:
        if progress is not None:
            progress.check_cancel()
        try:
            mono, picture = _pair(sounds[stem], images[stem], spec)
        except _BadPair as exc:
            skips.append(exc.skipped)
        else:
            if mono.size < spec.window_samples:
                notes.append(f"{sounds[stem].name} is shorter than the {spec.window_seconds:g} s window: padded")
            names.append(stem)
            windows.append(centre_window(mono, spec))
            pictures.append(picture)
        if progress is not None:
            progress.advance()
    if not names:
        raise ValueError(f"no usable pair in {str(folder)!r}: " + "; ".join(skip_lines(skips[:5]))
                         + (f" (and {len(skips) - 5} more)" if len(skips) > 5 else ""))
    return Pairs(names, audio_features.log_mel(np.stack(windows), spec), pictures, names, notes + skip_lines(skips))


def video_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) if folder.is_dir() else []


def video_candidates(paths: list[Path], spec: MelSpec, frames_per_second: float,
                     progress: Progress | None = None) -> Pairs:
    """Every sampled frame of every video with the audio window centred on it. A video without an audio
    track is an error naming it; one whose sound is silent throughout is skipped and noted."""
    names, windows, pictures, groups, notes = [], [], [], [], []
    for path in paths:
        if progress is not None:
            progress.check_cancel()
        video = read_video(path, frames_per_second)
        mono, _ = audio_features.prepare(video.audio, video.sample_rate, spec.sample_rate)
        try:
            audio_features.check_not_silent(mono, path.name)
        except SilentAudio as exc:
            notes.append(f"skipped: {exc}")
            continue
        for t, frame in zip(video.times, video.frames):
            names.append(f"{path.stem}@{t:.2f}s")
            windows.append(centre_window(mono, spec, int(round(t * spec.sample_rate))))
            pictures.append(torch.from_numpy(frame.astype(np.float32) / 255.0))
            groups.append(path.stem)
        if progress is not None:
            progress.advance()
    if not names:
        raise ValueError("no video gave a frame with sound")
    return Pairs(names, audio_features.log_mel(np.stack(windows), spec), pictures, groups, notes)


def select_frames(scores: torch.Tensor, groups: list[str], top_k: int, threshold: float) -> list[int]:
    """Rows to keep: per group the ``top_k`` highest scores that reach ``threshold``, in their first order."""
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    keep: list[int] = []
    for group in dict.fromkeys(groups):
        rows = [i for i, g in enumerate(groups) if g == group and float(scores[i]) >= threshold]
        keep += sorted(rows, key=lambda i: -float(scores[i]))[:top_k]
    return sorted(keep)
