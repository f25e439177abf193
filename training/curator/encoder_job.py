"""A whole fine-tuning run: pairs and an image-text encoder in, a model folder the CLIP loaders read out.

The run folder is keyed by the settings, the pairs (pictures and captions) and the starting weights, so the
same job run again resumes; the result is written with ``save_clip`` into the model folder under a name
that never replaces another (``name_2``...), and loaded back, so what the node hands on is exactly what
'Atelier Load CLIP' would read. Under a process group (``--gpus``) rank 0 alone writes the folder and the curves.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ...core.curator.clip_model import ClipModel, load_clip, new_model_folder, save_clip
from ...core.shared.output_paths import safe_name
from ...core.shared.progress import Progress, SilentProgress, WeightedSteps
from .. import distributed
from ..loop import batching, held_out
from .encoder_trainer import (
    EncoderTrainConfig,
    EncoderTrainResult,
    check_settings,
    curves,
    epoch_lines,
    retrieval_lines,
    train_encoder,
)
from .pairs import PairSet, decode, pairs_from_file, pairs_from_folder

DEFAULT_NAME = "atelier_encoder"


@dataclass(frozen=True)
class EncoderJob:
    folder: str  # the pictures (and their caption sidecars, when no pairs file is given)
    pairs_file: str = ""  # CSV or JSON lines of (text, image); pictures relative to ``folder``
    name: str = DEFAULT_NAME
    config: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    recursive: bool = False


@dataclass
class EncoderJobResult:
    clip: ClipModel  # the saved folder, loaded back
    path: Path
    train: EncoderTrainResult
    pairs: PairSet
    run_dir: Path  # checkpoint and curves.png
    plot: Any  # PIL image: loss and in-batch accuracy per epoch

    def report(self) -> str:
        before, after = self.train.before, self.train.after
        resumed = [self.train.resumed] if self.train.resumed else []
        return "\n".join([*retrieval_lines(before, after), *self.pairs.notes(), *self.train.notes, *resumed,
                          *epoch_lines(self.train.history), f"saved as {self.path}"])


def read_job_pairs(job: EncoderJob) -> PairSet:
    """The job's pairs, before any model work: a bad folder or pairs file fails here."""
    if job.pairs_file.strip():
        return pairs_from_file(Path(job.pairs_file), Path(job.folder))
    return pairs_from_folder(Path(job.folder), job.recursive)


def run_name(job: EncoderJob, pairs: PairSet, clip: ClipModel) -> str:
    key = json.dumps([job.config.fingerprint(), pairs.digest(), clip.fingerprint.split(":")[0]])
    return f"{safe_name(job.name, 'encoder name')}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def steps_of(pairs: PairSet, config: EncoderTrainConfig) -> int:
    train = len(pairs.pictures) - held_out(len(pairs.pictures), config.val_fraction)
    return config.epochs * batching(train, config.batch_size)[1]


def work_costs(pairs: PairSet, config: EncoderTrainConfig) -> list[int]:
    """The units of work: a decoded picture each, about 8 per step."""
    return [1] * len(pairs.pictures) + [8] * steps_of(pairs, config)


def run(job: EncoderJob, clip: ClipModel, models_dir: Path, runs_dir: Path, device: torch.device | str = "cpu",
        make_progress: Callable[[int], Progress] | None = None) -> EncoderJobResult:
    """Fine-tune ``clip`` (left unchanged) on the job's pairs and save the result into ``models_dir``."""
    safe_name(job.name, "encoder name")
    pairs = read_job_pairs(job)
    check_settings(clip.model, job.config, len(pairs.pictures))
    costs = work_costs(pairs, job.config)
    progress = WeightedSteps(make_progress(sum(costs)) if make_progress else SilentProgress(sum(costs)), costs)
    pixels = decode(pairs, clip.pixels, progress)
    run_dir = runs_dir / run_name(job, pairs, clip)
    result = train_encoder(clip.model, clip.tokenizer, clip.max_tokens, pixels, pairs.captions, job.config, run_dir,
                           device, progress)
    trained = replace(clip, model=result.model.to(torch.float32))
    plot = curves(result.history)

    def write() -> Path:  # rank 0 alone; every rank gets the path
        plot.save(run_dir / "curves.png")
        return save_clip(trained, new_model_folder(models_dir, job.name))

    path = distributed.from_rank0(write)
    dtype_name = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(clip.dtype, "fp32")
    return EncoderJobResult(load_clip(path, device, dtype_name), path, result, pairs, run_dir, plot)
