"""How long work reports progress and notices a cancel, without knowing who is watching.

Core functions take a ``Progress``; the ComfyUI bridge supplies one backed by ComfyUI's
ProgressBar and interrupt flag, everything else gets a tqdm bar with no cancel.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Protocol

_OPEN_BARS: weakref.WeakSet[Any] = weakref.WeakSet()  # tqdm bars not yet closed (see close_bars)


class Cancelled(RuntimeError):
    """Raised by ``Progress.check_cancel`` when the user asked the work to stop."""


class Progress(Protocol):
    def advance(self, steps: int = 1) -> None: ...

    def check_cancel(self) -> None:
        """Raise (``Cancelled`` or the host's own interrupt) if the user pressed cancel."""

    def status(self, text: str) -> None:
        """A short live figure beside the bar (the current loss)."""

    def preview(self, image: Any) -> None:
        """A PIL image shown while the work runs (ComfyUI's node preview); ignored elsewhere."""


class TqdmProgress:
    """Console progress for headless runs; nothing can cancel it but Ctrl-C."""

    def __init__(self, total: int, desc: str = "") -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, leave=False)
        _OPEN_BARS.add(self._bar)

    def advance(self, steps: int = 1) -> None:
        self._bar.update(steps)
        if self._bar.n >= self._bar.total:
            self._bar.close()

    def check_cancel(self) -> None:
        return None

    def status(self, text: str) -> None:
        self._bar.set_postfix_str(text, refresh=False)

    def preview(self, image: Any) -> None:
        return None


class WeightedSteps:
    """Steps of unequal cost on one bar: each step advances ``inner`` by its cost, so the bar's total, and an ETA
    drawn from it, cover every phase from the first step (the caller sizes ``inner`` to ``sum(costs)``)."""

    def __init__(self, inner: Progress, costs: Sequence[int]) -> None:
        self._inner = inner
        self._costs = costs
        self._done = 0

    def advance(self, steps: int = 1) -> None:
        self._inner.advance(sum(self._costs[self._done:self._done + steps]))
        self._done += steps

    def check_cancel(self) -> None:
        self._inner.check_cancel()

    def status(self, text: str) -> None:
        self._inner.status(text)

    def preview(self, image: Any) -> None:
        self._inner.preview(image)


def close_bars() -> None:
    """Clear every unfinished console bar, so a message printed next (an error, "stopped") starts on a line of its
    own instead of being glued to a half-drawn bar."""
    for bar in list(_OPEN_BARS):
        bar.close()
    _OPEN_BARS.clear()


class SilentProgress:
    """For library calls and tests that want no output."""

    def __init__(self, total: int = 0, desc: str = "") -> None:
        self.total = total
        self.done = 0
        self.last_status = ""
        self.previews: list[Any] = []

    def advance(self, steps: int = 1) -> None:
        self.done += steps

    def check_cancel(self) -> None:
        return None

    def status(self, text: str) -> None:
        self.last_status = text

    def preview(self, image: Any) -> None:
        self.previews.append(image)
