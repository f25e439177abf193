"""A stand-in for a training command under torch.distributed.run, for test_process_group.py: rank 0 writes the
events a training command writes with ``--events`` (one JSON line per event, flushed), every rank sleeps
between steps as a real one computes.

    python -m torch.distributed.run --nproc-per-node 2 group_child.py [--steps N] [--sleep S] [--grandchild]
        [--error-at K | --crash-at K] --events EVENTS

Step k (1-based) writes advance, loss 1/k, and on even steps a status and a preview: a 4x4 PNG of grey level
10 * k next to EVENTS. ``--grandchild``: each rank first starts a process of its own that ignores SIGTERM and
sleeps, as a data-loader worker or a compiler might (only SIGKILL ends it); rank 0 names its own and its
grandchild's process ids in the first status. ``--error-at K``: at step K rank 0 writes an error event and
exits 1. ``--crash-at K``: at step K rank 0 raises (a traceback on stderr, no event).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

IGNORE_TERM_AND_SLEEP = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--grandchild", action="store_true")
    parser.add_argument("--error-at", type=int, default=0)
    parser.add_argument("--crash-at", type=int, default=0)
    parser.add_argument("--events", type=Path, required=True)
    args = parser.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    grandchild = subprocess.Popen([sys.executable, "-c", IGNORE_TERM_AND_SLEEP]) if args.grandchild else None
    handle = open(args.events, "a", encoding="utf-8") if rank == 0 else None

    def emit(**event: object) -> None:
        if handle is not None:
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")
            handle.flush()

    emit(event="start", total=args.steps, world_size=world)
    if grandchild is not None:
        emit(event="status", text=f"pids {os.getpid()} {grandchild.pid}")
    for step in range(1, args.steps + 1):
        time.sleep(args.sleep)
        if rank == 0 and step == args.crash_at:
            raise RuntimeError(f"fake crash at step {step}")
        if rank == 0 and step == args.error_at:
            emit(event="error", message=f"the loss is NaN at step {step}; 검사 the pictures")
            return 1
        emit(event="advance", done=step, total=args.steps)
        emit(event="loss", step=step, loss=1.0 / step)
        if step % 2 == 0:
            emit(event="status", text=f"loss {1.0 / step:.4f}")
            if rank == 0:
                from PIL import Image

                path = args.events.parent / f"preview_{step:03d}.png"
                Image.new("RGB", (4, 4), (10 * step,) * 3).save(path.with_suffix(".tmp.png"))
                path.with_suffix(".tmp.png").replace(path)
                emit(event="preview", path=str(path))
    if grandchild is not None:
        grandchild.kill()
        grandchild.wait()
    emit(event="done", result={"lora": str(args.events.parent / "fake.safetensors"), "steps": args.steps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
