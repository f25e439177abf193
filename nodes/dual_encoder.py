"""Nodes of the bilingual image-text encoders: fine-tuning a CLIP or a vision-text dual encoder on your pairs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.curator.clip_model import ClipModel, refuse_comfy_clip
from ..core.shared import plots
from ..training.curator import encoder_job
from ..training.curator.encoder_job import EncoderJob, read_job_pairs
from ..training.curator.encoder_trainer import PARTS, PRECISIONS, SCHEDULES, EncoderTrainConfig
from . import bridge
from .curator import CLIP, CLIP_INPUT, clip_key
from .declare import AtelierNode, float_input, int_input, seed_input

RUNS_SUBFOLDER = "atelier/encoder_runs"


def _job(folder: str, pairs_file: str, name: str = encoder_job.DEFAULT_NAME,
         config: EncoderTrainConfig | None = None) -> EncoderJob:
    pairs = str(bridge.resolve_input_folder(pairs_file)) if pairs_file.strip() else ""
    return EncoderJob(str(bridge.resolve_input_folder(folder)), pairs, name, config or EncoderTrainConfig())


class DualEncoderNode(AtelierNode):
    CATEGORY = "Atelier/Curate"


class AtelierFineTuneImageTextEncoder(DualEncoderNode):
    DESCRIPTION = ("Fine-tune a CLIP or a vision-text dual encoder (for example a multilingual BERT joined to a ViT) "
                   "on your (caption, picture) pairs with CLIP's symmetric contrastive loss and a learnable "
                   "temperature. Captions come from sidecars (every line of <stem>.txt, <stem>.en.txt, "
                   "<stem>.ko.txt: all are positives of their picture) or a CSV / JSON-lines pairs file. A share of "
                   "the pictures is held out: loss and in-batch accuracy per epoch, and text-to-image MRR@1/5/10 "
                   "before and after. Saved as a model folder in models/atelier/clip; reruns resume from "
                   "output/atelier/encoder_runs.")
    EXAMPLE = ("Put pictures with English and Korean captions (cat.png, cat.en.txt, cat.ko.txt...) in "
               "ComfyUI/input/atelier/pairs, wire Atelier Load CLIP (or Build Dual Encoder) into clip_model and set "
               "folder 'atelier/pairs': the report shows held-out MRR before and after, and clip_model goes on to "
               "Retrieve Images or Label Images.")
    FUNCTION = "train"
    OUTPUT_NODE = True
    OUTPUTS = (
        (CLIP, "clip_model", "The fine-tuned encoder, as Atelier Load CLIP would load its saved folder."),
        ("IMAGE", "curves", "Loss and in-batch accuracy (both ways) per epoch, training and held out, and "
                            "held-out MRR@10."),
        ("STRING", "report", "Held-out MRR@1/5/10 and recall@K before and after, the choices made, the pairs left "
                             "out, each epoch's figures and the saved folder."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        d = EncoderTrainConfig()
        return {
            "required": {
                "clip_model": CLIP_INPUT,
                "folder": ("STRING", {"default": "atelier/pairs", "tooltip": "The pictures, with caption sidecars "
                           "unless a pairs file is given (absolute, or relative to ComfyUI's input folder)."}),
                "name": ("STRING", {"default": "atelier_encoder", "tooltip": "Folder name in models/atelier/clip; "
                                    "never replaces one (name_2, name_3...)."}),
                "epochs": int_input(d.epochs, 1, 10_000, "Passes over the training pictures."),
                "batch_size": int_input(d.batch_size, 2, 4096, "Pictures per step (one caption each); each is "
                                        "contrasted with the others of the batch. Shrinks to the training set."),
                "learning_rate": float_input(d.lr, 1e-7, 1.0, "AdamW learning rate after the warm-up.", 1e-6),
                "train": (list(PARTS), {"default": d.train, "tooltip": "projections: only the projection layers "
                          "and the temperature (the towers stay frozen; fast); last_n: plus the last N layers of "
                          "each tower; all: everything."}),
                "last_n": int_input(d.last_n, 1, 100, "train last_n: how many of each tower's last layers train."),
                "warmup_steps": int_input(d.warmup_steps, 0, 1_000_000, "Steps of linear warm-up from 0."),
                "schedule": (list(SCHEDULES), {"default": d.schedule, "tooltip": "After the warm-up: a constant "
                             "learning rate, or a cosine down to 0 at the last step."}),
                "val_fraction": float_input(d.val_fraction, 0.01, 0.9, "Share of the pictures held out (with all "
                                            "their captions) to measure loss, accuracy and MRR."),
                "seed": seed_input("Seeds the split, the batches, the captions drawn and dropout."),
            },
            "optional": {
                "pairs_file": ("STRING", {"default": "", "tooltip": "(caption, picture) pairs instead of the "
                               "sidecars: a CSV with 'text' and 'image' columns or JSON lines {\"text\", "
                               "\"image\"}, pictures named relative to folder; several rows may name one picture."}),
                "weight_decay": float_input(d.weight_decay, 0.0, 1.0, "AdamW weight decay (not on biases, norms "
                                            "and the temperature)."),
                "precision": (list(PRECISIONS), {"default": d.precision, "tooltip": "fp32, or bf16 autocast (fp32 "
                              "weights; faster on recent GPUs)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, folder: str | None = None, pairs_file: str | None = "", **_: Any) -> str | float:
        # run again when a picture or caption changes, not only a widget; a linked input reaches IS_CHANGED as
        # None, and then nothing can be known (NaN never equals itself, so the node runs)
        if folder is None or pairs_file is None:
            return float("nan")
        try:
            return read_job_pairs(_job(folder, pairs_file)).digest()
        except (ValueError, OSError):
            return "missing"

    def train(self, clip_model: ClipModel, folder: str, name: str, epochs: int, batch_size: int,
              learning_rate: float, train: str, last_n: int, warmup_steps: int, schedule: str, val_fraction: float,
              seed: int, pairs_file: str = "", weight_decay: float = EncoderTrainConfig.weight_decay,
              precision: str = EncoderTrainConfig.precision) -> tuple[Any, ...]:
        refuse_comfy_clip(clip_model)
        if not folder.strip():
            raise ValueError("set 'folder' to the pictures (with caption sidecars, or named by pairs_file)")
        config = EncoderTrainConfig(epochs=epochs, batch_size=batch_size, lr=learning_rate, train=train,
                                    last_n=last_n, warmup_steps=warmup_steps, schedule=schedule,
                                    val_fraction=val_fraction, seed=seed, weight_decay=weight_decay,
                                    precision=precision)
        job = _job(folder, pairs_file, name, config)
        with bridge.training_mode():
            result = encoder_job.run(job, clip_model, Path(bridge.model_folders(clip_key())[0]),
                                     bridge.output_directory() / RUNS_SUBFOLDER, bridge.compute_device(),
                                     lambda total: bridge.progress(total, "fine-tuning encoder"))
        return result.clip, plots.to_image_tensor(result.plot), result.report()


NODE_CLASS_MAPPINGS = {"AtelierFineTuneImageTextEncoder": AtelierFineTuneImageTextEncoder}
NODE_DISPLAY_NAME_MAPPINGS = {"AtelierFineTuneImageTextEncoder": "Atelier Fine-tune Image-Text Encoder"}
