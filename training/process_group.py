"""A training command run as a separate process group on chosen GPUs (or CPU processes), watched from here.

The node that asks for it cannot share its process with the ranks of a data-parallel run (torch.distributed
wants one process per device), so the command line's job runs under PyTorch's launcher in a session of its
own: ``python -m torch.distributed.run --nproc-per-node N --master-port P SCRIPT ARGS --events FILE``. Rank 0
appends JSON lines to FILE (``core.shared.progress_events.JsonLinesProgress``): start, advance, status,
preview, loss, then done with the result or error with a message; each rank's own output goes to files
beside FILE (the launcher's log, and ``<FILE stem>.logs/``). ``run`` follows that file into a
``Progress`` (the host's bar, previews and cancel), and ends the whole group when the host cancels, the
child reports an error, or anything else interrupts the watch.

Ending the group: the launcher starts each rank in a session of its own (torch.distributed.elastic's
SubprocessHandler uses ``start_new_session``), so one ``killpg`` of the launcher's group does not reach the
ranks or what they spawned. Every process of the tree is listed first (psutil) and each of their process
groups gets SIGTERM, then SIGKILL after a grace period, so nothing is left holding a GPU.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.shared.progress import Progress

POLL_S = 0.1  # how often the events file and the host's cancel are looked at
GRACE_S = 10.0  # SIGTERM to SIGKILL: long enough for a rank to leave a step, short enough for a user waiting
STDERR_TAIL_LINES = 30


class GroupError(RuntimeError):
    """The child reported an error or exited without a result; the message carries its stderr's tail."""


@dataclass(frozen=True)
class Placement:
    """Where the ranks run: the chosen GPU indices (as this process numbers them), or CPU processes (gloo)."""

    gpus: tuple[int, ...] = ()
    cpu_processes: int = 0

    @property
    def processes(self) -> int:
        return len(self.gpus) or self.cpu_processes

    def describe(self) -> str:
        if self.gpus:
            return f"GPU{'s' * (len(self.gpus) > 1)} {', '.join(map(str, self.gpus))}"
        return f"{self.cpu_processes} CPU process{'es' * (self.cpu_processes > 1)}"


def parse_placement(text: str) -> Placement | None:
    """The node's ``gpus`` text: "" (None: train in this process), "0,1" (those GPUs), or "cpu:N"."""
    text = text.strip().replace(" ", "")
    if not text:
        return None
    example = "leave it empty to train in ComfyUI's process, or write GPU indices such as '0,1', or 'cpu:2'"
    if text.lower().startswith("cpu:"):
        count = text[4:]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"gpus {text!r}: 'cpu:' takes a number of processes, such as 'cpu:2'; {example}")
        return Placement(cpu_processes=int(count))
    pieces = text.split(",")
    if not all(p.isdigit() for p in pieces):
        raise ValueError(f"gpus {text!r} is not a list of GPU indices; {example}")
    gpus = tuple(int(p) for p in pieces)
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"gpus {text!r} names a GPU twice; each GPU runs one process")
    return Placement(gpus=gpus)


def check_placement(placement: Placement) -> None:
    """What the launch needs, checked before it: torch.distributed, and every chosen GPU present."""
    import torch

    if os.name == "nt":  # the group is ended through POSIX process groups (and NCCL has no Windows build)
        raise ValueError("training in a separate process group runs on Linux and macOS only; clear 'gpus' to train "
                         "in ComfyUI's process")
    if not torch.distributed.is_available():
        raise ValueError("this PyTorch build has no torch.distributed (some macOS and Windows builds lack it), so "
                         "it cannot train in a process group; clear 'gpus' to train in ComfyUI's process")
    if not placement.gpus:
        return
    count = torch.cuda.device_count()
    missing = [g for g in placement.gpus if g >= count]
    if missing:
        present = f"GPUs 0 to {count - 1}" if count > 1 else "GPU 0" if count else "no CUDA GPU"
        raise ValueError(f"gpus: GPU {missing[0]} is not present; this machine has {present}"
                         + ("; use 'cpu:N' to train in N CPU processes" if not count else ""))


def child_environment(placement: Placement) -> dict[str, str]:
    """This process's environment with CUDA_VISIBLE_DEVICES naming the chosen GPUs (none for CPU ranks). GPU
    indices are this process's own: where CUDA_VISIBLE_DEVICES already narrows them, they are mapped through it."""
    env = dict(os.environ)
    visible = [v for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if placement.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[g] if visible else str(g) for g in placement.gpus)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONUNBUFFERED"] = "1"  # the stderr tail of a failed run ends where it failed
    return env


def free_port() -> int:
    """A TCP port free on this machine now, for the ranks' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_command(script: Path, args: Sequence[str], placement: Placement, events: Path, logs: Path) -> list[str]:
    """``python -m torch.distributed.run ... -- SCRIPT ARGS --events EVENTS`` ("--": else the launcher may take the
    script's own options, such as --run, for abbreviations of its own), each rank's stdout and stderr in a file
    of its own under ``logs`` (``<run id>/attempt_0/<rank>/stderr.log``), so a failure can show the rank's own
    traceback rather than the launcher's report."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(placement.processes),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--log-dir", str(logs),
            "--redirects", "3", "--", str(script), *args, "--events", str(events)]


@dataclass
class GroupResult:
    """What the group's rank 0 reported: the "done" result, and what came before it."""

    result: dict[str, Any]
    world_size: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) in the order they came
    previews: list[Path] = field(default_factory=list)
    logs: Path | None = None  # every rank's stdout and stderr (torch.distributed.run's --log-dir)


class _Lines:
    """The complete lines appended to a file since the last call (a line still being written waits)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def __call__(self) -> Iterator[str]:
        if not self._path.is_file():
            return
        with open(self._path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if line.strip():
                yield line.decode("utf-8")


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def failure_tail(launcher_log: Path, logs: Path) -> str:
    """The end of the stderr of every rank that died on a Python traceback; else that of rank 0 (which says
    what went wrong when the command caught it); else the launcher's own log (the ranks never started)."""
    ranks = sorted(logs.glob("*/attempt_*/*/stderr.log"), key=lambda p: int(p.parent.name))
    crashed = [p for p in ranks if "Traceback (most recent call last)" in p.read_text(errors="replace")]
    chosen = crashed or [p for p in ranks[:1] if p.stat().st_size]
    if not chosen:
        return f"last lines of {launcher_log}:\n{_tail(launcher_log)}"
    return "\n".join(f"last lines of rank {p.parent.name}'s stderr ({p}):\n{_tail(p)}" for p in chosen)


def _running(process: Any) -> bool:
    """Alive and not a zombie (a dead process whose parent has not collected it yet)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_groups(processes: list[Any], sig: signal.Signals) -> None:
    import psutil

    groups = set()
    for process in processes:
        try:
            groups.add(os.getpgid(process.pid))
        except ProcessLookupError:
            continue
    groups.discard(os.getpgrp())  # never the host's own group (ComfyUI), whatever a process of the tree did
    for group in groups:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            continue
    for process in processes:  # one that left its group (setsid) still gets the signal
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            continue


def _wait_gone(processes: list[Any], seconds: float) -> list[Any]:
    deadline = time.monotonic() + seconds
    alive = [p for p in processes if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    return alive


def end_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """End the launcher and every process under it: SIGTERM to all their process groups, SIGKILL to whatever
    is still running ``grace_s`` later; returns once they are all gone."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:  # the launcher already exited: its ranks may still run, but are no longer ours to list
        tree = []
    _signal_groups(tree, signal.SIGTERM)
    left = _wait_gone(tree, grace_s)
    if left:
        _signal_groups(left, signal.SIGKILL)
        _wait_gone(left, grace_s)
    proc.wait()


def _preview(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


class _Follower:
    """Rank 0's events as they come, passed on to the host's ``progress`` (sized ``total``: the child's own
    total is scaled onto it) and kept for the result."""

    def __init__(self, progress: Progress, total: int, out: GroupResult) -> None:
        self.progress, self.total, self.out = progress, total, out
        self.child_total = self.shown = 0
        self.done: dict[str, Any] | None = None
        self.error: str | None = None

    def take(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            self.child_total, self.out.world_size = int(event["total"]), int(event.get("world_size", 0))
        elif kind == "advance":
            self.child_total = int(event.get("total", self.child_total))
            now = round(int(event["done"]) * self.total / self.child_total) if self.child_total else 0
            if now > self.shown:
                self.progress.advance(now - self.shown)
                self.shown = now
        elif kind == "status":
            self.progress.status(str(event["text"]))
        elif kind == "preview":
            self.out.previews.append(Path(event["path"]))
            self.progress.preview(_preview(Path(event["path"])))
        elif kind == "loss":
            self.out.losses.append((int(event["step"]), float(event["loss"])))
        elif kind == "done":
            self.done = dict(event["result"])
        elif kind == "error":
            self.error = str(event["message"])


def run(script: Path, args: Sequence[str], placement: Placement, events: Path, progress: Progress, total: int,
        grace_s: float = GRACE_S) -> GroupResult:
    """Run ``script args`` in ``placement.processes`` ranks, following rank 0's ``events`` into ``progress``
    (sized for ``total`` units). Returns the "done" event's result with what came before it; an error event or
    a non-zero exit raises ``GroupError`` with the failing rank's stderr; the host's cancel
    (``progress.check_cancel``) ends the group and raises whatever the host raised."""
    events.parent.mkdir(parents=True, exist_ok=True)
    events.unlink(missing_ok=True)
    logs, launcher_log = events.with_suffix(".logs"), events.with_suffix(".launcher.log")
    shutil.rmtree(logs, ignore_errors=True)  # a rerun's failure must not show an earlier run's traceback
    out = GroupResult(result={}, logs=logs)
    follow, read = _Follower(progress, total, out), _Lines(events)
    with open(launcher_log, "wb") as launcher:
        proc = subprocess.Popen(launch_command(script, args, placement, events, logs),
                                env=child_environment(placement), stdin=subprocess.DEVNULL, stdout=launcher,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                exited = proc.poll() is not None  # looked at before the last read, so no event is missed
                for line in read():
                    follow.take(json.loads(line))
                if follow.error is not None or exited:
                    break
                progress.check_cancel()
                time.sleep(POLL_S)
            if follow.error is not None:  # rank 0 is leaving: let it finish saying why, then end the others
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    end_group(proc, grace_s)
        except BaseException:  # the host's cancel, Ctrl-C, a damaged events line: nothing may outlive the watch
            end_group(proc, grace_s)
            raise
    if follow.error is None and proc.returncode == 0 and follow.done is not None:
        out.result = follow.done
        return out
    code = proc.returncode
    what = (f"the training processes stopped with an error: {follow.error}" if follow.error is not None else
            f"the training processes exited with code {code}" + (" without a result" if code == 0 else ""))
    raise GroupError(f"{what}\n{failure_tail(launcher_log, logs)}")
