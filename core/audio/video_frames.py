"""Frames and the audio track of a video file, through PyAV (which ComfyUI installs)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import check_length

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")


class NoAudioTrack(ValueError):
    """The video has no audio stream to pair its frames with."""


@dataclass
class Video:
    times: list[float]  # seconds, one per frame
    frames: list[np.ndarray]  # [H, W, 3] uint8
    audio: np.ndarray  # [C, T] float32
    sample_rate: int


def _open(path: Path):  # -> av.container.InputContainer
    import av

    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"cannot read {str(path)!r} as audio or video: {exc}") from exc


def _decode_audio(container, path: Path) -> tuple[np.ndarray, int]:
    import av

    if not container.streams.audio:
        raise NoAudioTrack(f"{str(path)!r} has no audio track: its frames cannot be paired with sound")
    stream = container.streams.audio[0]
    rate = int(stream.rate)
    to_float = av.AudioResampler(format="fltp")  # planar float32 whatever the codec gives
    chunks, samples = [], 0
    for frame in itertools.chain(container.decode(stream), [None]):  # None: what the resampler still holds
        for f in to_float.resample(frame):
            chunks.append(f.to_ndarray())
            samples += chunks[-1].shape[-1]
            if samples:  # the rate and length limits, while decoding: a compressed file may declare neither
                check_length(samples, rate, f"the audio track of {str(path)!r}")
    if not chunks:
        raise ValueError(f"the audio track of {str(path)!r} holds no samples")
    return np.concatenate(chunks, axis=1).astype(np.float32), rate


def read_audio_track(path: str | Path) -> tuple[np.ndarray, int]:
    """``([C, T] float32, sample_rate)`` of the first audio track of any file FFmpeg reads."""
    path = Path(path)
    with _open(path) as container:
        return _decode_audio(container, path)


def read_video(path: str | Path, frames_per_second: float, max_frames: int = 10_000) -> Video:
    """Frames sampled ``frames_per_second`` apart (the first decoded frame at or after each sample time)
    and the whole audio track; a video without audio is an error before any frame is decoded."""
    path = Path(path)
    if frames_per_second <= 0:
        raise ValueError("frames_per_second must be above 0")
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{str(path)!r} has no video stream")
        if not container.streams.audio:
            raise NoAudioTrack(f"{str(path)!r} has no audio track: its frames cannot be paired with sound")
        times, frames = [], []
        next_time = 0.0
        for frame in container.decode(video=0):
            if frame.time is None or frame.time + 1e-6 < next_time:
                continue
            times.append(float(frame.time))
            frames.append(frame.to_ndarray(format="rgb24"))
            next_time = frame.time + 1.0 / frames_per_second
            if len(frames) >= max_frames:
                break
    with _open(path) as container:
        audio, rate = _decode_audio(container, path)
    if not frames:
        raise ValueError(f"no frame could be decoded from {str(path)!r}")
    return Video(times, frames, audio, rate)


def write_video(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int) -> Path:
    """An MP4 of ``[N, H, W, 3]`` uint8 frames (H.264 where this FFmpeg has it, else MPEG-4 Part 2; odd sizes
    cropped to even) with the ``[C, T]`` float sound as AAC (its first two channels), written under a temporary
    name and renamed into place."""
    from fractions import Fraction

    import av

    from ..shared.output_paths import write_atomic

    path = Path(path)
    frames = frames[:, :frames.shape[1] // 2 * 2, :frames.shape[2] // 2 * 2]  # yuv420p wants even sizes

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as out:
            codec = "h264" if "h264" in av.codecs_available or "libx264" in av.codecs_available else "mpeg4"
            video = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
            video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            layout = "stereo" if audio.shape[0] > 1 else "mono"
            sound = out.add_stream("aac", rate=sample_rate, layout=layout)
            for frame in frames:
                out.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            out.mux(video.encode())
            planes = np.ascontiguousarray(np.clip(audio[:2], -1, 1).astype(np.float32))
            chunk = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
            chunk.sample_rate = sample_rate
            out.mux(sound.encode(chunk))
            out.mux(sound.encode())

    write_atomic(path, write)
    return path
