"""A training command in a separate process group (training/process_group.py), with tests/group_child.py as the
command: two CPU ranks under the real torch.distributed.run, rank 0 writing the events of ``--events``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import psutil
import pytest

from atelier.core.shared.progress import Cancelled
from atelier.training import process_group as pg

CHILD = Path(__file__).resolve().parent / "group_child.py"
TWO_CPU = pg.Placement(cpu_processes=2)


class Recorder:
    """A host's progress: records every call in order; cancels (as the host's button) after ``cancel_after``
    advances, listing this test's whole process tree at that moment."""

    def __init__(self, cancel_after: int = 0) -> None:
        self.calls: list[tuple[str, object]] = []
        self.cancel_after = cancel_after
        self.advanced = 0
        self.tree: list[psutil.Process] = []

    def advance(self, steps: int = 1) -> None:
        self.advanced += steps
        self.calls.append(("advance", steps))

    def check_cancel(self) -> None:
        if self.cancel_after and self.advanced >= self.cancel_after:
            self.tree = psutil.Process().children(recursive=True)
            raise Cancelled("cancelled by the test")

    def status(self, text: str) -> None:
        self.calls.append(("status", text))

    def preview(self, image: object) -> None:
        self.calls.append(("preview", int(np.asarray(image)[0, 0, 0])))


def _run(tmp_path: Path, progress: Recorder, *args: str, total: int = 4, grace_s: float = 2.0) -> pg.GroupResult:
    return pg.run(CHILD, list(args), TWO_CPU, tmp_path / "group" / "events.jsonl", progress, total, grace_s)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_events_reach_the_progress_in_order(tmp_path: Path) -> None:
    progress = Recorder()
    out = _run(tmp_path, progress, "--steps", "4", total=8)  # the child's 4 units on a bar of 8
    assert progress.calls == [("advance", 2), ("advance", 2), ("status", "loss 0.5000"), ("preview", 20),
                              ("advance", 2), ("advance", 2), ("status", "loss 0.2500"), ("preview", 40)]
    assert out.result == {"lora": str(tmp_path / "group" / "fake.safetensors"), "steps": 4}
    assert out.world_size == 2 and out.losses == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    assert [p.name for p in out.previews] == ["preview_002.png", "preview_004.png"]


def test_cancel_ends_the_ranks_and_their_children(tmp_path: Path) -> None:
    progress = Recorder(cancel_after=2)
    with pytest.raises(Cancelled):
        _run(tmp_path, progress, "--steps", "2000", "--grandchild", total=2000)
    rank0, grandchild = (int(p) for p in next(t for k, t in progress.calls if k == "status").split()[1:])
    seen = {p.pid for p in progress.tree}
    # the launcher, two ranks and one grandchild each (which ignore SIGTERM) were running when the user cancelled
    assert {rank0, grandchild} <= seen and len(seen) >= 5, progress.tree
    assert [p.pid for p in progress.tree if _running(p.pid)] == []
    assert progress.advanced < 2000


def test_an_error_event_is_raised_with_its_message(tmp_path: Path) -> None:
    with pytest.raises(pg.GroupError, match="stopped with an error: the loss is NaN at step 3; 검사 the pictures"):
        _run(tmp_path, Recorder(), "--steps", "6", "--error-at", "3")


def test_a_crash_is_raised_with_the_tail_of_stderr(tmp_path: Path) -> None:
    shown = r"exited with code 1\nlast lines of rank 0.s stderr(.|\n)*RuntimeError: fake crash at step 2$"
    with pytest.raises(pg.GroupError, match=shown):
        _run(tmp_path, Recorder(), "--steps", "4", "--crash-at", "2")


@pytest.mark.parametrize("text, message", [
    ("0,0", "names a GPU twice"), ("a,b", "not a list of GPU indices"), ("cpu:0", "takes a number of processes"),
    ("cpu:two", "takes a number of processes")])
def test_bad_placements_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pg.parse_placement(text)


def test_placements_parse() -> None:
    assert pg.parse_placement(" ") is None
    assert pg.parse_placement("0, 1") == pg.Placement(gpus=(0, 1))
    assert pg.parse_placement("CPU:2") == TWO_CPU and TWO_CPU.processes == 2


def test_a_gpu_that_is_not_there_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    pg.check_placement(pg.Placement(gpus=(0, 1)))
    with pytest.raises(ValueError, match="GPU 2 is not present; this machine has GPUs 0 to 1"):
        pg.check_placement(pg.Placement(gpus=(1, 2)))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="GPU 0 is not present; this machine has no CUDA GPU; use 'cpu:N'"):
        pg.check_placement(pg.Placement(gpus=(0,)))
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no torch.distributed"):
        pg.check_placement(TWO_CPU)


def test_chosen_gpus_are_mapped_through_the_hosts_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    assert pg.child_environment(pg.Placement(gpus=(0, 2)))["CUDA_VISIBLE_DEVICES"] == "3,7"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert pg.child_environment(pg.Placement(gpus=(1,)))["CUDA_VISIBLE_DEVICES"] == "1"
    assert pg.child_environment(TWO_CPU)["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
