"""A whole audio-encoder run: a folder of paired sounds and pictures, or of videos, in; an encoder file out.

For videos, frames are chosen first (see ``core.audio_pairs``): scored with the encoder given as
``scorer``, or else with one warmed up for ``warmup_epochs`` on every candidate frame, then the
encoder trains on the chosen frames alone. Both stages checkpoint in the run folder, so a rerun of
the same job resumes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ...core.audio import pairs as audio_pairs
from ...core.audio.encoder import AudioEmbedder, save_audio_encoder
from ...core.audio.image_embedding import ImageEmbedder, embed_pictures
from ...core.shared import plots
from ...core.shared.output_paths import safe_name
from ...core.shared.progress import Progress, SilentProgress
from ..loop import batching, held_out
from .aligner import AlignConfig, AlignData, AlignResult, train_aligner

TRAINER_VERSION = "atelier-audio-encoder 0.1"


@dataclass(frozen=True)
class AudioJob:
    folder: str
    name: str = "atelier_audio"
    align: AlignConfig = field(default_factory=AlignConfig)
    frames_per_second: float = 1.0  # videos: candidate frames per second
    top_k: int = 8  # videos: frames kept per video
    threshold: float = 0.0  # videos: lowest score (cosine) a kept frame may have
    warmup_epochs: int = 3  # videos without a scorer: epochs on all candidates before scoring


@dataclass
class AudioJobResult:
    path: Path
    align: AlignResult
    notes: list[str]
    selected: list[str]  # videos: the frames kept
    plot: object  # PIL image of R@1 / R@10 per epoch


def _digest(files: list[Path]) -> str:
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:12]


def run_name(job: AudioJob, files: list[Path], image_encoder: str) -> str:
    """``<name>-<key>``: the same job on the same files and image encoder finds its checkpoints again."""
    settings = {k: v for k, v in asdict(job).items() if k != "align"}
    key = json.dumps([job.align.fingerprint(), settings, _digest(files), image_encoder], sort_keys=True)
    return f"{safe_name(job.name, 'audio encoder name')}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def job_files(folder: Path) -> tuple[list[Path], bool]:
    """The folder's videos (and True) if it holds any, else all its files (paired sounds and pictures)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {str(folder)!r}")
    videos = audio_pairs.video_files(folder)
    return (videos, True) if videos else (sorted(p for p in folder.iterdir() if p.is_file()), False)


def estimated_steps(job: AudioJob) -> int:
    """Progress units of a run: pairs loaded plus optimizer steps (exact for paired folders; for videos, which
    give an unknown number of frames, a guess of four steps per epoch)."""
    files, videos = job_files(Path(job.folder))
    if videos:
        return len(files) + 4 * (job.warmup_epochs + job.align.epochs)
    sounds, pictures = audio_pairs.paired_files(Path(job.folder))
    n = len(set(sounds) & set(pictures))
    if n < 4:  # too few to train on: the run itself says so
        return n
    return n + job.align.epochs * batching(n - held_out(n, job.align.val_fraction), job.align.batch_size)[1]


def epoch_lines(history: list[dict[str, float]]) -> list[str]:
    """One line per epoch: mean loss, held-out R@1 and R@10, and chance R@1."""
    return [f"epoch {h['epoch']}: loss {h['loss']:.4f}, R@1 {h['r1']:.3f}, R@10 {h['r10']:.3f} "
            f"(chance R@1 {h['chance_r1']:.3f})" for h in history]


def frame_scores(scorer: AudioEmbedder, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Cosine between each window's audio embedding and its frame's image embedding."""
    return F.cosine_similarity(scorer.embed_features(features), images, dim=-1)


def retrieval_plot(history: list[dict[str, float]]):  # -> PIL.Image.Image
    return plots.loss_curve([h["r1"] for h in history], title="held-out R@1 (audio to image) per epoch")


def run(job: AudioJob, images: ImageEmbedder, encoders_dir: Path, runs_dir: Path, device: torch.device | str = "cpu",
        progress: Progress | None = None, scorer: AudioEmbedder | None = None) -> AudioJobResult:
    folder = Path(job.folder)
    files, videos = job_files(folder)
    spec = job.align.mel
    steps_guess = len(files) + job.align.epochs * 4
    progress = progress or SilentProgress(steps_guess)
    run_dir = runs_dir / run_name(job, files, images.name)
    if videos and scorer is not None and scorer.config.mel != spec:
        raise ValueError(f"the scorer was trained on other audio features ({scorer.config.mel}); train with the same "
                         "sample rate, window and mel bands, or score with a warm-up instead")
    pairs = audio_pairs.video_candidates(files, spec, job.frames_per_second, progress) if videos else \
        audio_pairs.paired_folder(folder, spec, progress)
    embedded = embed_pictures(images, pairs.pictures)
    features = torch.from_numpy(pairs.features)
    selected: list[str] = []
    if videos:
        if scorer is None:
            warm = replace(job.align, epochs=job.warmup_epochs)
            scorer = train_aligner(AlignData(features, embedded.unit, pairs.names, images.name, embedded.mean_norm),
                                   warm, run_dir / "warmup", device, progress).embedder
        scorer.check_image_dim(images.dim, images.name)
        scores = frame_scores(scorer, features, embedded.unit)
        keep = audio_pairs.select_frames(scores, pairs.groups, job.top_k, job.threshold)
        if len(keep) < 4:
            raise ValueError(f"only {len(keep)} frames reach the threshold {job.threshold}: lower it, or give more "
                             "or longer videos")
        selected = [f"{pairs.names[i]} ({float(scores[i]):.3f})" for i in keep]
        rows = torch.tensor(keep)
        features, unit = features[rows], embedded.unit[rows]
        names = [pairs.names[i] for i in keep]
    else:
        unit, names = embedded.unit, pairs.names
    data = AlignData(features, unit, names, images.name, embedded.mean_norm)
    result = train_aligner(data, job.align, run_dir / "main", device, progress)
    extra = {"atelier_trainer_version": TRAINER_VERSION, "atelier_align_config": json.dumps(asdict(job.align)),
             "atelier_pairs": len(names), "atelier_history": result.history}
    path = save_audio_encoder(encoders_dir, job.name, result.embedder, extra)
    plot = retrieval_plot(result.history)
    plot.save(run_dir / "retrieval.png")
    return AudioJobResult(path, result, pairs.notes, selected, plot)
