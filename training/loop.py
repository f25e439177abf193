"""The step loop every trainer shares: progress, cancel, checkpoints, and stopping on a non-finite loss.

A trainer gives one function that performs optimizer step ``s`` and returns its loss (calling
``check_finite`` before it updates any weight), and one that saves a checkpoint after ``s`` steps.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from ..core.progress import Progress


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


def run_steps(first: int, last: int, step: Callable[[int], float], save: Callable[[int], None],
              checkpoint_every: int, progress: Progress, checkpoint: Path,
              on_step: Callable[[int, float], None] | None = None, advice: str = "Lower the learning rate.") -> None:
    """Steps ``first`` .. ``last - 1``; a checkpoint every ``checkpoint_every`` steps and at the end.

    A cancel (ours or the host's), Ctrl-C or a crash saves the finished steps before it propagates;
    a non-finite loss raises TrainingDiverged naming the step and the checkpoint kept.
    """
    done = saved = first
    progress.advance(first)
    try:
        while done < last:
            progress.check_cancel()
            try:
                loss = step(done)
            except NonFiniteLoss as exc:
                raise TrainingDiverged(
                    f"loss became {exc.value} at step {done + 1}; stopped, and the last good checkpoint (step {saved}) "
                    f"is kept in {checkpoint}. {advice}") from None
            done += 1
            progress.advance()
            if done % checkpoint_every == 0 or done == last:
                save(done)
                saved = done
            if on_step is not None:
                on_step(done, loss)
    except TrainingDiverged:
        raise
    except BaseException:
        if done > saved:
            save(done)
        raise
