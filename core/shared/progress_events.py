"""Progress as JSON lines appended to a file, for a parent process that watches a training it launched.

One JSON object per line, each line flushed as it is written, so a reader polling the file never sees half
an event it could act on (a last line without its newline is still being written):

    {"event": "start", "total": 120, "world_size": 2}          units of work (pictures to encode + steps)
    {"event": "advance", "done": 37, "total": 120}              units done so far
    {"event": "status", "text": "loss 0.1234"}
    {"event": "preview", "path": "/runs/events.preview-0001.png"}  a PNG written next to the events file
    {"event": "loss", "step": 12, "loss": 0.1234}
    {"event": "done", "result": {"lora": "/models/loras/x.safetensors", ...}}
    {"event": "error", "message": "..."}

Nothing here can cancel the work: the watching process ends the process group instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def append(events: str | Path, name: str, /, **fields: Any) -> None:
    """One event as one line, flushed (``fields`` may hold a ``path``: the file is positional only)."""
    line = json.dumps({"event": name, **fields}, ensure_ascii=False)
    with open(events, "a", encoding="utf-8") as handle:  # opened per line: a reader sees whole lines
        handle.write(line + "\n")
        handle.flush()


class JsonLinesProgress:
    """A ``Progress`` that appends events to ``path`` (created with its folder if missing)."""

    def __init__(self, path: str | Path, total: int, world_size: int = 1) -> None:
        self.path = Path(path)
        self.total = total
        self.done = 0
        self._previews = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.event("start", total=total, world_size=world_size)

    def event(self, name: str, **fields: Any) -> None:
        append(self.path, name, **fields)

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        self.event("advance", done=self.done, total=self.total)

    def check_cancel(self) -> None:
        return None

    def status(self, text: str) -> None:
        self.event("status", text=text)

    def preview(self, image: Any) -> None:
        """``image`` (PIL) saved as ``<events stem>.preview-NNNN.png`` beside the events file, then announced."""
        self._previews += 1
        target = self.path.with_name(f"{self.path.stem}.preview-{self._previews:04d}.png")
        partial = target.with_name(f".{target.name}.partial")
        image.save(partial, format="PNG")
        partial.replace(target)  # whole before it is announced
        self.event("preview", path=str(target))

    def loss(self, step: int, loss: float) -> None:
        self.event("loss", step=step, loss=loss)

    def finished(self, result: dict[str, Any]) -> None:
        self.event("done", result=result)

    def error(self, message: str) -> None:
        self.event("error", message=message)


def last_event(path: str | Path) -> dict[str, Any] | None:
    """The last whole event of an events file (None when there is none yet)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return None
    whole = [line for line in lines if line.endswith("\n") and line.strip()]
    return json.loads(whole[-1]) if whole else None
