"""Run checkpoints: what a step that fails half-way leaves, what a killed save leaves, and damaged checkpoints."""
from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

from atelier.core.shared.progress import Cancelled, SilentProgress
from atelier.training import checkpoints
from atelier.training.loop import run_steps
from atelier.training.sd15 import lora_trainer as lt

from helpers import CancelAfter, tiny_data, tiny_unet

CONFIG = lt.TrainConfig(rank=2, lr=1e-2, steps=3, checkpoint_every=1, seed=7)


def test_a_step_that_fails_half_way_is_not_saved() -> None:
    state, saved = [0], []

    def step(index: int) -> float:  # each step adds 2 to the state, in two halves
        state[0] += 1
        if index == 3:
            raise RuntimeError("out of memory half-way through the step")
        state[0] += 1
        return 0.0

    with pytest.raises(RuntimeError, match="half-way"):
        run_steps(0, 10, step, lambda done: saved.append((done, state[0])), 100, SilentProgress(10), Path("c"))
    assert saved == []  # steps 0..2 finished, but the state holds half of step 3: the last checkpoint stays


def test_a_cancel_between_steps_saves_exactly_the_finished_steps() -> None:
    state, saved = [0], []

    def step(index: int) -> float:
        state[0] += 2
        return 0.0

    with pytest.raises(Cancelled):
        run_steps(0, 10, step, lambda done: saved.append((done, state[0])), 100, CancelAfter(4), Path("c"))
    assert saved == [(4, 8)]


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX SIGINT sent to this process")
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_a_step_lets_it_finish_and_a_second_stops_at_once(presses: int) -> None:
    state, saved = [0], []

    def step(index: int) -> float:
        state[0] += 1
        if index == 2:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        state[0] += 1
        return 0.0

    with pytest.raises(KeyboardInterrupt):
        run_steps(0, 10, step, lambda done: saved.append((done, state[0])), 100, SilentProgress(10), Path("c"))
    assert saved == ([(3, 6)] if presses == 1 else [])  # step 3 saved whole, or nothing of it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _lora_weights(run: Path, steps: int = 3) -> tuple[dict[str, torch.Tensor], lt.TrainResult]:
    unet = tiny_unet()
    result = lt.train_lora(unet, tiny_data(), lt.TrainConfig(**{**CONFIG.__dict__, "steps": steps}), run)
    return {k: v for k, v in unet.state_dict().items() if "lora_" in k}, result


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(("file", "damage"), [("tensors.safetensors", _empty), ("tensors.safetensors", _truncate),
                                              ("state.json", _empty), ("state.json", _truncate),
                                              ("state.json", Path.unlink)])
def test_an_unreadable_checkpoint_is_set_aside_by_name_and_the_run_starts_over(tmp_path: Path, file, damage) -> None:
    fresh, _ = _lora_weights(tmp_path / "fresh")
    run = tmp_path / "run"
    _lora_weights(run, steps=2)
    damage(run / "checkpoint" / file)
    with pytest.warns(UserWarning, match=rf"{file}.*moved to .*checkpoint\.unreadable.*delete it.*starts from step 0"):
        weights, result = _lora_weights(run)
    assert result.resumed_from == 0 and len(result.losses) == 3
    assert weights.keys() == fresh.keys() and all(torch.equal(weights[k], fresh[k]) for k in fresh)
    assert (run / "checkpoint.unreadable" / "tensors.safetensors").exists()  # kept for the user to look at
    assert checkpoints.load(run / "checkpoint")["step"] == 3


def _state(step: int) -> dict:
    return {"fingerprint": "f", "step": step, "weights": torch.full((3,), float(step))}


def test_an_unreadable_checkpoint_falls_back_to_the_previous_one_a_killed_save_left(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    checkpoints.save(tmp_path / "previous" / "checkpoint", _state(1))
    checkpoints.save(folder, _state(2))
    shutil.move(tmp_path / "previous" / "checkpoint", tmp_path / ".checkpoint.old")  # killed before it went
    _empty(folder / "tensors.safetensors")
    with pytest.warns(UserWarning, match="starts from the checkpoint saved before it"):
        state = checkpoints.load_matching(folder, "f")
    assert state["step"] == 1 and torch.equal(state["weights"], torch.full((3,), 1.0))
    assert checkpoints.load(folder)["step"] == 1 and not (tmp_path / ".checkpoint.old").exists()


def test_the_next_run_clears_what_a_killed_save_left(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    checkpoints.save(folder, _state(2))
    shutil.copytree(folder, tmp_path / ".checkpoint.old")
    partial = tmp_path / ".checkpoint.partial-x1y2"
    partial.mkdir()
    (partial / "tensors.safetensors").write_bytes(b"\0" * 10)
    assert checkpoints.load_matching(folder, "f")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    shutil.move(folder, tmp_path / ".checkpoint.old")  # killed between the two renames: no checkpoint left
    assert checkpoints.load_matching(folder, "f")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
