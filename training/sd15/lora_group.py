"""The LoRA job in a separate process group (Train LoRA's ``gpus``): ``atelier_cli.py train`` under
torch.distributed.run on the chosen GPUs, watched through its ``--events``, and what it wrote read back as
the node returns it after an in-process run (the LoRA file, the loss curve, the final samples, a report).

The ranks cannot be handed ComfyUI's MODEL/CLIP/VAE or an IMAGE batch, so they get files: the checkpoint
that Load Checkpoint loads, and the pictures as a folder (a batch is written once into the run folder).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from PIL import Image

from ...core.dataset.folder_dataset import FolderDataset
from ...core.sd15 import lora_file
from ...core.shared.output_paths import temp_path
from ...core.shared.progress import Progress
from .. import process_group
from .lora_job import LoraJob
from .lora_trainer import ParameterCount, TrainConfig

CLI = Path(__file__).resolve().parents[2] / "atelier_cli.py"
_SWITCHES = ("qlora", "gradient_checkpointing", "train_text_encoder")  # on/off flags without a value


@dataclass
class GroupLora:
    lora_path: Path
    loss_plot: Image.Image
    samples: list[Image.Image]
    report: str


def command_args(job: LoraJob, folder: Path, checkpoint: Path, loras_dir: Path, run_dir: Path,
                 placement: process_group.Placement) -> list[str]:
    """The ``train`` command line that runs ``job`` as the node would run it in its own process."""
    args = ["train", str(folder), "--model", str(checkpoint), "--loras", str(loras_dir), "--run", str(run_dir),
            "--name", job.name, f"--trigger={job.trigger}", "--caption-dropout", repr(job.caption_dropout),
            "--resolution", str(job.resolution), "--sample-every", str(job.sample_every),
            "--sample-steps", str(job.sample_steps), "--device", "auto" if placement.gpus else "cpu"]
    args += [] if job.use_captions else ["--no-captions"]
    args += [] if job.upscale_small else ["--no-upscale"]
    args += [f"--sample-prompt={prompt}" for prompt in job.sample_prompts]  # '=': a prompt may start with '-'
    for item in fields(TrainConfig):  # every field is the command's --field-name (tests hold them equal)
        value = getattr(job.train, item.name)
        flag = "--" + item.name.replace("_", "-")
        if item.name in _SWITCHES:
            args += [flag] if value else []
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return args


def check(job: LoraJob, placement: process_group.Placement) -> None:
    """What the group needs beyond the in-process checks, before it starts."""
    process_group.check_placement(placement)
    if job.train.batch_size < placement.processes:
        raise ValueError(f"batch_size {job.train.batch_size} is the global batch, split across "
                         f"{placement.processes} processes ({placement.describe()}), which needs at least one "
                         f"picture each: raise batch_size to at least {placement.processes}, or choose fewer GPUs")


def write_pictures(dataset: FolderDataset, folder: Path) -> Path:
    """An IMAGE batch as ``<stem>.png`` with ``<stem>.txt`` captions in ``folder``, for the ranks to read. The
    run folder's name holds the pictures' digest, so a folder already there holds these very pictures."""
    if folder.is_dir():
        return folder
    partial = temp_path(folder.parent, folder.name, suffix="")
    partial.mkdir(parents=True)
    for item in dataset.images:
        pixels = (item.image.clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()  # IMAGE values come from 8-bit files
        Image.fromarray(pixels).save(partial / f"{item.stem}.png")
        if item.caption:
            (partial / f"{item.stem}.txt").write_text(item.caption, encoding="utf-8")
    os.replace(partial, folder)
    return folder


def _report(out: process_group.GroupResult, placement: process_group.Placement, lora: Path) -> str:
    _, metadata = lora_file.read_lora(lora)
    params = ParameterCount(*(int(metadata[f"atelier_{key}"]) for key in
                              ("lora_layers", "trainable_params", "targeted_params", "base_params")))
    where = placement.describe() if placement.gpus else "the CPU"
    lines = [f"trained data-parallel in {out.world_size} processes on {where}"]
    if out.losses:
        first_step = out.losses[0][0]
        lines += [f"resumed from step {first_step - 1}"] if first_step > 1 else []
        lines += [params.summary(), f"loss {out.losses[0][1]:.4f} -> {out.losses[-1][1]:.4f} over "
                  f"{len(out.losses)} steps"]
    else:
        lines += [params.summary(), "no step left to train: the run had finished"]
    return "\n".join([*lines, f"wrote {lora}", f"the processes' output: {out.logs}"])


def run(job: LoraJob, folder: Path, checkpoint: Path, loras_dir: Path, run_dir: Path,
        placement: process_group.Placement, progress: Progress, total: int) -> GroupLora:
    """Train ``job`` on the pictures of ``folder`` in a process group; ``progress`` (sized ``total``) gets its
    advances, status and previews, and its cancel ends the group."""
    group = run_dir / "group"
    shutil.rmtree(group, ignore_errors=True)  # the previews and logs of an earlier launch
    out = process_group.run(CLI, command_args(job, folder, checkpoint, loras_dir, run_dir, placement), placement,
                            group / "events.jsonl", progress, total)
    lora = Path(out.result["lora"])
    with Image.open(run_dir / "loss.png") as plot:  # the whole curve, steps of earlier launches included
        loss_plot = plot.convert("RGB")
    samples = []
    for path in out.previews[len(out.previews) - len(job.sample_prompts):]:  # the samples drawn at the end come last
        with Image.open(path) as image:
            samples.append(image.convert("RGB"))
    return GroupLora(lora, loss_plot, samples, _report(out, placement, lora))
