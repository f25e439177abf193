"""One fresh process that fine-tunes the tiny dual encoder, for test_encoder_training.py (no pytest, no fixture).

    python encoder_training_child.py MODEL PICTURES MODELS RUNS --host-seed S [--stop-after STEPS]

Before training the global generator is put in a state of its own (``--host-seed``), as the host's other
work leaves it, so only the trainer's own seeding can make two runs agree. ``--stop-after`` cancels the run
(as ComfyUI's cancel does) before that optimizer step. One JSON line says how it ended.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from atelier_cli import load_pack  # noqa: E402

load_pack()

import torch  # noqa: E402

from atelier.core.curator.clip_model import load_clip  # noqa: E402
from atelier.core.shared.progress import Cancelled, SilentProgress  # noqa: E402
from atelier.training.curator import encoder_job  # noqa: E402
from atelier.training.curator.encoder_trainer import EncoderTrainConfig  # noqa: E402

CONFIG = EncoderTrainConfig(epochs=3, batch_size=6, lr=3e-3, weight_decay=0.05, warmup_steps=2, schedule="cosine",
                            train="all", val_fraction=0.25, seed=11)
STEP_COST = 8  # progress units of a training step (encoder_job.run's weights); a picture decoded is 1


class StopAfter(SilentProgress):
    def __init__(self, total: int, units: int) -> None:
        super().__init__(total)
        self.units = units

    def check_cancel(self) -> None:
        if self.done >= self.units:
            raise Cancelled("stopped by the test")


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("model", "pictures", "models", "runs"):
        parser.add_argument(name)
    parser.add_argument("--host-seed", type=int, required=True)
    parser.add_argument("--stop-after", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: threads only add waiting on a busy machine
    clip = load_clip(Path(args.model))
    job = encoder_job.EncoderJob(args.pictures, name="tuned", config=CONFIG)
    pictures = len(encoder_job.read_job_pairs(job).pictures)

    def progress(total: int) -> SilentProgress:
        return StopAfter(total, pictures + STEP_COST * args.stop_after) if args.stop_after else SilentProgress(total)

    torch.manual_seed(args.host_seed)
    torch.rand(args.host_seed)
    try:
        result = encoder_job.run(job, clip, Path(args.models), Path(args.runs), "cpu", progress)
    except Cancelled:
        print(json.dumps({"ended": "cancelled"}))
        return
    print(json.dumps({"ended": "finished", "path": str(result.path), "history": result.train.history,
                      "before": result.train.before, "after": result.train.after,
                      "resumed_from": result.train.resumed_from}))


if __name__ == "__main__":
    main()
