"""Every trainer, in fresh processes with the host's global generator in different states: a run stopped by a
real Ctrl-C in the middle of a step, then resumed, writes the very bytes of a run that never stopped (the
Ctrl-C save holds whole steps only, and every random start comes from the run's seed); a LoRA run killed
outright resumes from its last checkpoint to the same file."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from atelier.training import checkpoints

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals sent to the child itself")

CHILD = Path(__file__).with_name("training_child.py")
TRAINERS = ("lora", "cli_lora", "seqgan", "adain", "aligner", "adapter")
# the step each interrupted run must have saved: the step during which Ctrl-C came, finished
HELD_STEP = {"lora": 2, "cli_lora": 2, "seqgan": 2, "adain": 2, "aligner": 5, "adapter": 2}


def _child(work: Path, run: str, host_seed: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHILD), str(work), run, "--host-seed", str(host_seed), *extra],
                          capture_output=True, text=True, timeout=900)


def _lines(done: subprocess.CompletedProcess) -> dict[str, dict]:
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]  # not the CLI's own
    return {line["trainer"]: line for line in lines}


def _content(path: Path) -> bytes:
    """The file byte for byte (the pack writes safetensors headers with sorted keys)."""
    return path.read_bytes()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, dict]]]:
    work = tmp_path_factory.mktemp("fresh")
    ended = {"whole": _lines(_child(work, "whole", 1)),
             "cut": _lines(_child(work, "cut", 2, "--interrupt", "sigint")),
             "resumed": _lines(_child(work, "cut", 3))}
    return work, ended


@pytest.mark.parametrize("trainer", TRAINERS)
def test_ctrl_c_mid_step_then_resume_equals_a_run_that_never_stopped(runs, trainer: str) -> None:
    work, ended = runs
    assert ended["cut"][trainer]["ended"] == "interrupted" and ended["resumed"][trainer]["ended"] == "finished"
    whole, resumed = work / trainer / "whole.safetensors", work / trainer / "cut.safetensors"
    assert _content(whole) == _content(resumed)
    assert ended["cut"][trainer]["checkpoint_step"] == HELD_STEP[trainer]  # nothing of the finished step lost


def test_a_killed_lora_run_resumes_to_the_file_of_a_run_that_never_stopped(runs) -> None:
    work, _ = runs
    killed = _child(work, "killed", 4, "--interrupt", "kill", "--only", "lora")
    assert killed.returncode == -signal.SIGKILL
    assert checkpoints.load(work / "lora" / "killed" / "checkpoint")["step"] == 4  # killed during step 6
    assert _lines(_child(work, "killed", 5, "--only", "lora"))["lora"]["ended"] == "finished"
    assert _content(work / "lora" / "killed.safetensors") == _content(work / "lora" / "whole.safetensors")
