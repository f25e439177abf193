"""The step loop every trainer shares: progress, cancel, checkpoints, and stopping on a non-finite loss.

A trainer gives one function that performs optimizer step ``s`` and returns its loss (calling
``check_finite`` before it updates any weight), and one that saves a checkpoint after ``s`` steps.
A step must not talk to the host (progress, previews): whatever the host may raise (ComfyUI's cancel)
then arrives between steps, and the reporting goes into ``on_step``.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..core.dataset.augment import derive_seed
from ..core.shared.progress import Progress


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class NonFiniteLoss(ArithmeticError):
    def __init__(self, value: float) -> None:
        super().__init__(f"loss {value}")
        self.value = value


def check_finite(loss: float) -> None:
    """Raise before a NaN or infinite loss reaches the weights."""
    if not math.isfinite(loss):
        raise NonFiniteLoss(loss)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global generator (layer initialisation, dropout) seeded from the run's seed, and given back
    afterwards, so what the host drew before (or draws after) changes nothing."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# the held-out split and the batches every trainer with a validation set shares
def held_out(n: int, val_fraction: float) -> int:
    """How many of ``n`` pairs are held out: at least 2, leaving at least 2 to train on."""
    return min(max(2, round(n * val_fraction)), n - 2)


def split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``(train, val)`` row indices."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "split")))
    n_val = held_out(n, val_fraction)
    return order[n_val:].sort().values, order[:n_val].sort().values


def batching(train_pairs: int, batch_size: int) -> tuple[int, int]:
    """``(batch, steps per epoch)``: the batch is at most the training set; a partial last batch is dropped."""
    batch = min(batch_size, train_pairs)
    return batch, max(1, train_pairs // batch)


class _HeldCtrlC:
    """A SIGINT handler: Ctrl-C during a step is held until the step ends, so what is saved holds whole steps
    only; a second Ctrl-C stops at once (that step's part is then not saved: the last checkpoint is kept)."""

    def __init__(self) -> None:
        self.in_step = False
        self.pending = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.in_step and not self.pending:
            self.pending = True
            print("\nCtrl-C: stopping once this step is done, and saving it (Ctrl-C again stops at once, "
                  "keeping the last checkpoint)", file=sys.stderr, flush=True)
            return
        raise KeyboardInterrupt


@contextlib.contextmanager
def _ctrl_c_between_steps() -> Iterator[_HeldCtrlC]:
    handler = _HeldCtrlC()
    # only where Python's own Ctrl-C handling is in place and can be replaced: not in a worker thread
    # (ComfyUI's, whose cancel comes through the progress between steps) nor over a handler of the host's
    if not (signal.getsignal(signal.SIGINT) is signal.default_int_handler
            and threading.current_thread() is threading.main_thread()):
        yield handler
        return
    signal.signal(signal.SIGINT, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_steps(first: int, last: int, step: Callable[[int], float], save: Callable[[int], None],
              checkpoint_every: int, progress: Progress, checkpoint: Path,
              on_step: Callable[[int, float], None] | None = None, advice: str = "Lower the learning rate.") -> None:
    """Steps ``first`` .. ``last - 1``; a checkpoint every ``checkpoint_every`` steps and at the end.

    A cancel (ours or the host's), Ctrl-C or a crash between steps saves the finished steps before it
    propagates; Ctrl-C during a step lets the step finish first. A step that raises may have changed part
    of the state, so nothing is saved then and the last checkpoint stays the one to resume from. A
    non-finite loss raises TrainingDiverged naming the step and the checkpoint kept.
    """
    done = saved = first
    progress.advance(first)
    with _ctrl_c_between_steps() as ctrl_c:
        try:
            while done < last:
                progress.check_cancel()
                ctrl_c.in_step = True
                try:
                    loss = step(done)
                except NonFiniteLoss as exc:
                    raise TrainingDiverged(
                        f"loss became {exc.value} at step {done + 1}; stopped, and the last good checkpoint (step "
                        f"{saved}) is kept in {checkpoint}. {advice}") from None
                ctrl_c.in_step = False
                done += 1
                progress.advance()
                if done % checkpoint_every == 0 or done == last:
                    save(done)
                    saved = done
                if ctrl_c.pending:
                    raise KeyboardInterrupt
                if on_step is not None:
                    on_step(done, loss)
        except TrainingDiverged:
            raise
        except BaseException:
            if done > saved and not ctrl_c.in_step:
                save(done)
            raise
