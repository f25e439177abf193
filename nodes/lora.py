"""The LoRA trainer's node: MODEL, CLIP and VAE from Load Checkpoint plus training pictures in; the
model with the new LoRA, its file in ComfyUI's ``loras`` folder, the loss curve and samples out."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..core.dataset.folder_dataset import FolderDataset, batch_dataset, load_folder
from ..core.dataset.image_files import ImageFolderError, folder_fingerprint, list_images
from ..core.shared import plots
from ..core.shared.output_paths import safe_name
from ..core.shared.state_dicts import state_dict_sha256
from ..training import process_group
from ..training.sd15.lora_trainer import OPTIMIZERS, PRECISIONS, SCHEDULERS, TARGETS, TrainConfig
from . import bridge
from .augmentation import DATASET, DatasetInfo
from .declare import AtelierNode, Widget, float_input, int_input, seed_input

if TYPE_CHECKING:
    from ..training.sd15.lora_job import LoraJob


class LoRANode(AtelierNode):
    CATEGORY = "Atelier/LoRA"  # by part: every trainer sits beside the nodes of its part


RUNS_SUBFOLDER = "atelier/lora_runs"
NO_CHECKPOINT = "none"


# What both SD 1.5 trainers (this and the embedding adapter's) take from Load Checkpoint beside its MODEL.
CHECKPOINT_CLIP_VAE: dict[str, Widget] = {
    "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP; encodes the captions."}),
    "vae": ("VAE", {"tooltip": "The checkpoint's VAE; encodes the pictures to latents once."}),
}

def _batch(images: torch.Tensor, captions: str | None, dataset: DatasetInfo | None) -> tuple[FolderDataset, str]:
    """An IMAGE batch with its caption lines as training pictures, and the digest that names them."""
    lines = [line.strip() for line in (captions or "").splitlines()]
    if dataset is not None and not any(lines):
        lines = [c or "" for c in dataset.captions]
    if any(lines) and len(lines) not in (1, len(images)):
        raise ValueError(f"{len(lines)} caption lines for {len(images)} images: give one line per image, "
                         "one line for all, or none")
    per_image = lines * len(images) if len(lines) == 1 else lines or [""] * len(images)
    stems = dataset.stems if dataset is not None and len(dataset.stems) == len(images) else \
        [f"image_{i + 1:04d}" for i in range(len(images))]
    return batch_dataset(images, per_image, stems)


def _folder(folder: str) -> tuple[Path, list[Path]]:
    """The 'folder' input resolved, and its pictures (an error when it has none)."""
    if not folder.strip():
        raise ValueError("no training images: set 'folder' or wire an IMAGE batch into 'images'")
    path = bridge.resolve_input_folder(folder)
    try:
        return path, list_images(path)
    except ImageFolderError as exc:
        raise ValueError(str(exc)) from exc


def _pictures(folder: str, images: torch.Tensor | None, captions: str | None,
              dataset: DatasetInfo | None) -> tuple[FolderDataset, str]:
    """The training pictures and a digest that names them (a rerun on the same pictures resumes)."""
    if images is not None:
        return _batch(images, captions, dataset)
    path, files = _folder(folder)
    return load_folder(path), folder_fingerprint(files)


class AtelierTrainLoRA(LoRANode):
    DESCRIPTION = ("Fine-tune SD 1.5 with a LoRA on a folder of pictures (optional <stem>.txt captions), such as a "
                   "version folder from Multiply Dataset, or on an IMAGE batch with captions. Returns the model and "
                   "CLIP with the LoRA applied, the LoRA file (also listed in Load LoRA), the loss curve, samples "
                   "and a report of how many parameters the LoRA trains against the base. Checkpoints go to "
                   "output/atelier/lora_runs: running the same graph again after a cancel or "
                   "crash resumes where it stopped, and raising 'steps' continues a finished run. With 'gpus' "
                   "(and 'ckpt_name') it trains data-parallel in a separate group of processes on those GPUs, "
                   "its progress and previews shown here; cancel ends them all.")
    EXAMPLE = ("Load Checkpoint (an SD 1.5 model) into model, clip and vae, Atelier Multiply Dataset's folder into "
               "folder, trigger 'sks_style', steps 1000; wire the model and clip outputs into CLIP Text Encode and "
               "KSampler to try the LoRA at once. The file also appears in Load LoRA's list.")
    FUNCTION = "train"
    OUTPUT_NODE = True
    OUTPUTS = (
        ("MODEL", "model", "The input model with the trained LoRA applied at 'strength'."),
        ("CLIP", "clip", "The input CLIP, with the text encoder's LoRA when 'train_text_encoder' is on."),
        ("STRING", "lora_path", "The saved .safetensors file (kohya keys), in ComfyUI's loras folder."),
        ("IMAGE", "loss_curve", "Loss per step (light) and smoothed (dark)."),
        ("IMAGE", "samples", "Images sampled with the LoRA at the end."),
        ("STRING", "report", "How many parameters the LoRA trains against the weights of the layers it adapts and "
                             "the whole base, the loss, the file, and notes on the pictures."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        d = TrainConfig()
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "SD 1.5 model from Load Checkpoint (other families are refused)."}),
                **CHECKPOINT_CLIP_VAE,
                "folder": ("STRING", {"default": "", "tooltip": "Training pictures with optional <stem>.txt captions "
                                      "(absolute, or relative to ComfyUI's input folder). Ignored when 'images' is "
                                      "wired."}),
                "name": ("STRING", {"default": "atelier_lora", "tooltip": "File name in the loras folder; never "
                                    "overwrites (name_2, name_3...)."}),
                "steps": int_input(1000, 1, 1_000_000, "Optimizer steps."),
                "rank": int_input(d.rank, 1, 1024, "LoRA rank (capacity)."),
                "alpha": float_input(d.alpha, 0.01, 1024.0, "LoRA alpha; the update is scaled by alpha / rank.", 0.5),
                "learning_rate": float_input(d.lr, 1e-7, 1.0, "AdamW learning rate.", 1e-5),
                "resolution": int_input(512, 64, 2048, "Training size: buckets of about resolution^2 pixels.", 64),
                "seed": seed_input("Seeds everything: latents, noise, timesteps, dropout."),
                "targets": (list(TARGETS), {"default": d.targets, "tooltip": "attention: to_q/k/v/out; all_linear: "
                            "also feed-forward, projections, time embedding; all_linear_and_conv: also convolutions; "
                            "kohya_default: kohya sd-scripts' default LoRA (the transformer blocks' attention, "
                            "feed-forward and proj_in/proj_out; with train_text_encoder also the text encoder's "
                            "MLP)."}),
                "batch_size": int_input(d.batch_size, 1, 64, "Pictures per step (one bucket shape per batch)."),
                "grad_accum": int_input(d.grad_accum, 1, 128, "Batches accumulated per optimizer step."),
                "scheduler": (list(SCHEDULERS), {"default": d.scheduler, "tooltip": "Learning-rate schedule."}),
                "warmup_steps": int_input(d.warmup_steps, 0, 100_000, "Warm-up steps for the schedule."),
                "optimizer": (list(OPTIMIZERS), {"default": d.optimizer, "tooltip": "adamw8bit (needs bitsandbytes) "
                              "keeps Adam's moments in 8 bits: less memory."}),
                "qlora": ("BOOLEAN", {"default": d.qlora, "tooltip": "QLoRA: keep the frozen UNet's linear layers in "
                          "4-bit NF4 (double quantization) for the least memory; needs bitsandbytes and a CUDA GPU."}),
                "mixed_precision": (list(PRECISIONS), {"default": "fp16", "tooltip": "fp16 (loss-scaled) or bf16 "
                                    "autocast with the frozen weights in that precision; 'no' trains in fp32."}),
                "gradient_checkpointing": ("BOOLEAN", {"default": True, "tooltip": "Trade compute for memory."}),
                "min_snr_gamma": float_input(d.min_snr_gamma, 0.0, 20.0, "Min-SNR loss weighting (5 is usual); 0: off.",
                                        0.5),
                "noise_offset": float_input(d.noise_offset, 0.0, 1.0, "Noise offset (0.05-0.1 helps very dark/bright "
                                       "pictures); 0: off."),
                "train_text_encoder": ("BOOLEAN", {"default": False, "tooltip": "Also train a LoRA on the text "
                                       "encoder's attention (and MLP fc1/fc2 with kohya_default targets; same rank and "
                                       "alpha); the CLIP output then carries it."}),
                "text_encoder_lr": float_input(d.text_encoder_lr, 1e-7, 1.0, "Learning rate of the text encoder's LoRA "
                                          "(usually below the UNet's).", 1e-5),
                "lora_dropout": float_input(d.dropout, 0.0, 0.9, "Dropout inside the LoRA layers."),
                "max_grad_norm": float_input(d.max_grad_norm, 0.0, 100.0, "Gradient clipping; 0: off.", 0.1),
                "trigger": ("STRING", {"default": "", "tooltip": "Trigger word put before every caption."}),
                "use_captions": ("BOOLEAN", {"default": True, "tooltip": "Train on captions; off: the trigger word "
                                 "alone, or the empty prompt (unconditional fine-tuning) without one."}),
                "caption_dropout": float_input(0.0, 0.0, 1.0, "Share of steps trained on the empty prompt."),
                "upscale_small": ("BOOLEAN", {"default": True, "tooltip": "Upscale pictures smaller than their "
                                  "bucket (listed as notes); off: refuse them."}),
                "checkpoint_every": int_input(d.checkpoint_every, 1, 100_000, "Steps between resumable checkpoints."),
                "sample_prompts": ("STRING", {"multiline": True, "default": "", "tooltip": "One prompt per line for "
                                   "sample images; empty: the trigger word."}),
                "sample_every": int_input(0, 0, 100_000, "Also sample every N steps (shown as previews); 0: at the end "
                                     "only."),
                "sample_steps": int_input(20, 1, 150, "DDIM steps per sample image."),
                "strength": float_input(1.0, -4.0, 4.0, "Strength of the LoRA on the returned model and CLIP."),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Training pictures as a batch (instead of 'folder')."}),
                "captions": ("STRING", {"forceInput": True, "tooltip": "Captions for 'images', one line per image "
                             "(or one line for all)."}),
                "dataset": (DATASET, {"tooltip": "Names and captions from Load Image Folder, for 'images'."}),
                "gpus": ("STRING", {"default": "", "tooltip": "Empty: train in ComfyUI's own process. GPU indices "
                         "such as '0,1': train data-parallel in a separate group of processes, one per GPU (batch_size "
                         "is the global batch, split across them), with progress and previews shown here and cancel "
                         "ending them; needs 'ckpt_name'. 'cpu:2': two CPU processes (gloo), for trying it out."}),
                "ckpt_name": ([NO_CHECKPOINT, *bridge.model_files("checkpoints")], {"default": NO_CHECKPOINT,
                              "tooltip": "With 'gpus': the checkpoint file the processes load, the one Load Checkpoint "
                              "loads into 'model' (LoRAs applied to the wired model upstream do not reach them). "
                              "Ignored without 'gpus'."}),
            },
        }

    def train(self, model: Any, clip: Any, vae: Any, folder: str, name: str, steps: int, rank: int, alpha: float,
              learning_rate: float, resolution: int, seed: int, targets: str, batch_size: int, grad_accum: int,
              scheduler: str, warmup_steps: int, optimizer: str, qlora: bool, mixed_precision: str,
              gradient_checkpointing: bool, min_snr_gamma: float, noise_offset: float, train_text_encoder: bool,
              text_encoder_lr: float, lora_dropout: float, max_grad_norm: float, trigger: str,
              use_captions: bool, caption_dropout: float, upscale_small: bool, checkpoint_every: int,
              sample_prompts: str, sample_every: int, sample_steps: int, strength: float,
              images: torch.Tensor | None = None, captions: str | None = None,
              dataset: DatasetInfo | None = None, gpus: str = "", ckpt_name: str = NO_CHECKPOINT) -> tuple[Any, ...]:
        from ..core.sd15 import checkpoint as sd15_checkpoint
        from ..training.sd15 import lora_job

        config = TrainConfig(rank=rank, alpha=alpha, dropout=lora_dropout, targets=targets, steps=steps,
                             batch_size=batch_size, grad_accum=grad_accum, lr=learning_rate, scheduler=scheduler,
                             warmup_steps=warmup_steps, optimizer=optimizer, max_grad_norm=max_grad_norm,
                             mixed_precision=mixed_precision, min_snr_gamma=min_snr_gamma, noise_offset=noise_offset,
                             seed=seed, checkpoint_every=checkpoint_every,
                             gradient_checkpointing=gradient_checkpointing,
                             train_text_encoder=train_text_encoder, text_encoder_lr=text_encoder_lr, qlora=qlora)
        stem = safe_name(name, "LoRA name")
        prompts = tuple(line.strip() for line in sample_prompts.splitlines() if line.strip()) or (trigger.strip(),)
        job = lora_job.LoraJob(images="", name=stem, trigger=trigger, use_captions=use_captions,
                               caption_dropout=caption_dropout, resolution=resolution, upscale_small=upscale_small,
                               train=config, sample_every=sample_every, sample_prompts=prompts,
                               sample_steps=sample_steps, sample_seed=seed)
        placement = process_group.parse_placement(gpus)
        if placement is not None:
            return self._train_in_group(model, clip, job, placement, ckpt_name, folder, images, captions, dataset,
                                        strength)
        device = bridge.compute_device()
        lora_job.check_device(config, device)  # before ComfyUI's weights are copied out
        try:
            pictures, pictures_digest = _pictures(folder, images, captions, dataset)
        except ImageFolderError as exc:
            raise ValueError(str(exc)) from exc
        with bridge.training_mode():
            weights = bridge.sd15_weights(model, clip, vae)
            parts = sd15_checkpoint.parts_from_state_dict(weights, source="the MODEL/CLIP/VAE")
            base_hash = state_dict_sha256(weights)
            del weights
            run_dir = bridge.output_directory() / RUNS_SUBFOLDER / lora_job.run_name(job, pictures_digest, base_hash)
            total = len(pictures.images) + steps
            result = lora_job.run(parts, job, bridge.loras_directory(), run_dir, device, base_hash,
                                  bridge.progress(total, "training LoRA"), pictures)
            del parts
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            report = "\n".join([result.report(), *result.warnings])
            for line in report.splitlines():
                print(f"[Atelier] {line}")
        return _outputs(model, clip, result.lora_path, result.loss_plot, result.samples, report, strength)

    @staticmethod
    def _train_in_group(model: Any, clip: Any, job: LoraJob, placement: process_group.Placement, ckpt_name: str,
                        folder: str, images: torch.Tensor | None, captions: str | None, dataset: DatasetInfo | None,
                        strength: float) -> tuple[Any, ...]:
        """The job as ``atelier_cli.py train`` in a process group on ``placement``; the same outputs."""
        from ..training.sd15 import lora_group, lora_job

        if ckpt_name == NO_CHECKPOINT:
            raise ValueError("training on 'gpus' runs in separate processes that cannot share ComfyUI's loaded "
                             "model: choose in 'ckpt_name' the checkpoint that Load Checkpoint loads")
        lora_group.check(job, placement)
        lora_job.check_device(job.train, torch.device("cuda" if placement.gpus else "cpu"))
        checkpoint = bridge.find_model_file("checkpoints", ckpt_name, "checkpoint", "choose one from ckpt_name's list")
        if images is not None:
            pictures, digest = _batch(images, captions, dataset)
            count = len(pictures.images)
        else:
            path, files = _folder(folder)
            digest, count = folder_fingerprint(files), len(files)
        run_dir = bridge.output_directory() / RUNS_SUBFOLDER / lora_job.run_name(job, digest,
                                                                                 lora_job.model_hash(checkpoint))
        if images is not None:
            path = lora_group.write_pictures(pictures, run_dir / "pictures")
        bridge.free_gpu()  # ComfyUI's models would otherwise hold memory the ranks need
        total = count + job.train.steps
        result = lora_group.run(job, path, checkpoint, bridge.loras_directory(), run_dir, placement,
                                bridge.progress(total, "training LoRA"), total)
        for line in result.report.splitlines():
            print(f"[Atelier] {line}")
        return _outputs(model, clip, result.lora_path, result.loss_plot, result.samples, result.report, strength)


def _outputs(model: Any, clip: Any, lora_path: Path, loss_plot: Any, samples: list[Any], report: str,
             strength: float) -> tuple[Any, ...]:
    """What the node returns, however it trained: the file applied by ComfyUI's loader, the plot, the samples."""
    new_model, new_clip = bridge.apply_lora(model, clip, lora_path, strength)
    images = torch.cat([plots.to_image_tensor(img) for img in samples])  # all at the sample size
    return new_model, new_clip, str(lora_path), plots.to_image_tensor(loss_plot), images, report


NODE_CLASS_MAPPINGS = {"AtelierTrainLoRA": AtelierTrainLoRA}
NODE_DISPLAY_NAME_MAPPINGS = {"AtelierTrainLoRA": "Atelier Train LoRA (SD 1.5)"}
