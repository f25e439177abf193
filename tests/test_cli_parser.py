"""The command line's parser: no torch for --help, help and defaults for every option, ranges at parse time, and
what the CLI checks or says before and after a job (names, recipes, Ctrl-C, flags in errors, progress bars)."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atelier import cli
from atelier.cli import common, dataset, main

from helpers import SAMPLES

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "diffusers", "peft", "numpy", "PIL")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_help_of_every_command_imports_no_heavy_library() -> None:
    # a fresh interpreter, as a user runs it: the entry point, then every command's --help in the same process
    commands = list(_subparsers())
    script = (
        "import sys, runpy\n"
        "sys.argv = ['atelier_cli.py', '--help']\n"
        "try:\n    runpy.run_path('atelier_cli.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "from atelier.cli import main\n"
        f"for command in {commands!r}:\n"
        "    try:\n        main([command, '--help'])\n    except SystemExit:\n        pass\n"
        f"print('HEAVY', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert "usage: atelier [-h]" in result.stdout and "usage: atelier story-strip" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_defaults_read_from_source_equal_the_imported_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = set()
    read = common.declared

    def recording(module: str, name: str):
        asked.add((module, name))
        return read(module, name)

    for part in (common, *cli._PARTS):  # every module that builds options reads them through its own name
        if hasattr(part, "declared"):
            monkeypatch.setattr(part, "declared", recording)
    cli._parser()
    assert len(asked) >= 20
    for module, name in sorted(asked):
        value = getattr(importlib.import_module(f"atelier.{module}"), name)
        if dataclasses.is_dataclass(value):
            defaults = {f.name: f.default for f in dataclasses.fields(value) if f.default is not dataclasses.MISSING}
            assert vars(read(module, name)) == defaults, (module, name)
        else:
            assert read(module, name) == value, (module, name)


def test_every_option_has_help_and_shows_its_default() -> None:
    for command, sub in _subparsers().items():
        text = "".join(sub.format_help().split())  # argparse wraps long defaults anywhere
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), (command, action.dest)
            shown = action.option_strings and not action.required and action.default is not None and \
                not isinstance(action, argparse._StoreTrueAction)
            if shown:
                assert "(default:" + "".join(str(action.default).split()) + ")" in text, (command, action.dest)


def test_every_numeric_option_is_range_checked_as_it_is_parsed() -> None:
    for command, sub in _subparsers().items():
        for action in sub._actions:
            if action.type in (int, float):
                pytest.fail(f"{command} {action.option_strings}: a number without a range")
            if isinstance(action.default, (int, float)) and not isinstance(action.default, bool):
                assert action.type is not None and action.type.__qualname__.startswith("number."), \
                    (command, action.dest)
                assert action.type(str(action.default)) == action.default, (command, action.dest)


@pytest.mark.parametrize(("argv", "message"), [
    (["text-train", "c.txt", "--out-dir", "o", "--run", "r", "--max-len", "0"], "argument --max-len: must be at "
                                                                                 "least 1, got 0"),
    (["multiply", "f", "--random", "-1"], "argument --random: must be at least 0, got -1"),
    (["text-sample", "m.safetensors", "--top-p", "0"], "argument --top-p: must be above 0"),
    (["train", "f", "--model", "m", "--loras", "l", "--run", "r", "--lr", "nan"], "'nan' is not a finite number"),
    (["multiply", "f", "--saturation-up", "2"], "must be from -1 to 1, got 2"),
    (["curate", "f", "--batch-size", "two"], "'two' is not a whole number"),
])
def test_out_of_range_numbers_are_refused_before_anything_runs(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_recipe_needs_random_and_a_known_form(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"hflip": 1.0}))
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(["multiply", str(SAMPLES), "--output", str(out), "--recipe", str(recipe)])
    assert "--recipe is drawn from for random variants only: give --random N" in capsys.readouterr().err
    recipe.write_text(json.dumps({"hflip": 1.0, "rotate": {"p": 1, "low": 0, "high": 5}}))
    assert main(["multiply", str(SAMPLES), "--output", str(out), "--random", "1", "--recipe", str(recipe)]) == 2
    assert "unknown key 'rotate'; the keys are hflip, vflip" in capsys.readouterr().err
    recipe.write_text(json.dumps({"rotation": [0, 5]}))
    assert main(["multiply", str(SAMPLES), "--output", str(out), "--random", "1", "--recipe", str(recipe)]) == 2
    assert "'rotation' must be an object with 'p', 'low' and 'high' numbers, not a list" in capsys.readouterr().err
    recipe.write_text("{hflip: 1}")
    assert main(["multiply", str(SAMPLES), "--output", str(out), "--random", "1", "--recipe", str(recipe)]) == 2
    assert "line 1: not valid JSON" in capsys.readouterr().err
    assert not out.exists()  # refused before a folder was made


def test_the_recipe_documented_in_help_is_valid(tmp_path: Path) -> None:
    example = dataset.RECIPE_HELP.split("Example (samples/recipe.json): ")[1]
    recipe = tmp_path / "recipe.json"
    recipe.write_text(" ".join(example.split()))
    spec = dataset.recipe_option(str(recipe))
    assert spec.hflip == 0.5 and spec.rotation.low == -15 and spec.brightness.high == 1.2
    assert dataset.recipe_option(str(ROOT / "samples" / "recipe.json")) == spec


def test_names_are_checked_before_any_work(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small boat leaves the harbour.\n" * 70, encoding="utf-8")
    run = tmp_path / "run"
    assert main(["text-train", str(corpus), "--out-dir", str(tmp_path / "models"), "--run", str(run), "--name",
                 "stories/mine", "--device", "cpu"]) == 2
    assert "--name 'stories/mine' may not contain '/'" in capsys.readouterr().err
    assert not run.exists() and not (tmp_path / "models").exists()
    assert main(["multiply", str(SAMPLES), "--output", str(tmp_path / "out"), "--subfolder", "../up"]) == 2
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").write_text("a file where the model folder should be")
    assert main(["text-train", str(corpus), "--out-dir", str(tmp_path / "taken" / "models"), "--run", str(run),
                 "--device", "cpu"]) == 2
    assert "is not writable" in capsys.readouterr().err and not run.exists()


@pytest.mark.parametrize(("command", "said"), [("text-train", "stopped; run the same command to resume"),
                                               ("multiply", "stopped")])
def test_ctrl_c_says_stopped_and_exits_130(command: str, said: str, monkeypatch: pytest.MonkeyPatch,
                                           capsys, tmp_path: Path) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.JOBS, command, interrupted)
    argv = {"text-train": ["text-train", "c.txt", "--out-dir", str(tmp_path / "o"), "--run", "r"],  # checked writable
            "multiply": ["multiply", "f"]}
    assert main(argv[command]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == said and "Traceback" not in err


def test_core_errors_name_the_cli_flags(tmp_path: Path, capsys) -> None:
    (tmp_path / "inner").mkdir()
    shutil.copy(SAMPLES / "rocket.png", tmp_path / "inner" / "rocket.png")
    assert main(["multiply", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "turn on --recursive to look in sub-folders" in err and "'recursive'" not in err
    flags = common._flags(cli._parser(), "curate")
    assert common.cli_spelling("keep_best 'score' needs sort_by; lower batch_size or turn on 'recursive' for "
                            "my_batch_size.png; --name 'a/b'", flags) == \
        "--keep-best score needs --sort-by; lower --batch-size or turn on --recursive for my_batch_size.png; " \
        "--name 'a/b'"
    flags = common._flags(cli._parser(), "convert")
    assert common.cli_spelling("choose resize 'exact', pad 'to_size' or 'square' with crop 'center'", flags) == \
        "choose --resize exact, --pad to_size or 'square' with --crop center"


def test_an_error_starts_on_its_own_line_after_a_progress_bar(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from atelier.core.shared.progress import TqdmProgress

    def fails_midway(args: argparse.Namespace) -> int:
        bar = TqdmProgress(10, "working")
        bar.advance(3)
        raise ValueError("the fourth picture is broken")

    monkeypatch.setitem(cli.JOBS, "convert", fails_midway)
    assert main(["convert", "f"]) == 2
    err = capsys.readouterr().err
    assert "working" in err  # the bar was drawn...
    assert err.split("\r")[-1].strip() == "atelier: the fourth picture is broken"  # ...and cleared before the error


def test_ctrl_c_in_a_real_training_run_exits_130_with_the_resume_hint(tmp_path: Path) -> None:
    import signal
    import time

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small boat leaves the harbour at dawn.\nthe sea is calm and grey.\n" * 20, encoding="utf-8")
    run = tmp_path / "run"
    command = [sys.executable, "atelier_cli.py", "text-train", str(corpus), "--out-dir", str(tmp_path / "models"),
               "--run", str(run), "--batch-size", "8", "--emb-dim", "8", "--hidden-dim", "8", "--mle-epochs", "100000",
               "--checkpoint-every", "1", "--device", "cpu"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ})
    deadline = time.monotonic() + 600
    while not (run.is_dir() and any(run.iterdir())) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # until the first checkpoint: training is under way
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "stopped; run the same command to resume"
    assert "Traceback" not in err and not any((tmp_path / "models").iterdir())


def test_text_train_progress_covers_every_phase_at_its_cost_from_the_start(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.core.shared.progress import SilentProgress
    from atelier.nodes import bridge
    from atelier.training.story.seqgan_trainer import SeqGANTrainConfig

    bars: list[SilentProgress] = []

    def bar(total: int, desc: str = "") -> SilentProgress:
        bars.append(SilentProgress(total, desc))
        return bars[-1]

    monkeypatch.setattr(bridge, "progress", bar)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small boat leaves the harbour at dawn.\nthe sea is calm and grey.\n" * 8, encoding="utf-8")
    args = ["text-train", str(corpus), "--out-dir", str(tmp_path / "models"), "--run", str(tmp_path / "run"),
            "--batch-size", "4", "--emb-dim", "8", "--hidden-dim", "8", "--max-len", "12", "--mle-epochs", "2",
            "--dis-rounds", "1", "--d-steps", "1", "--d-epochs", "1", "--rollouts", "2", "--device", "cpu"]
    assert main([*args, "--adversarial-epochs", "1"]) == 0
    config = SeqGANTrainConfig(batch_size=4, mle_epochs=2, dis_rounds=1, adversarial_epochs=1, d_steps=1, d_epochs=1,
                               rollouts=2)
    costs = config.step_costs(16, 12)
    assert bars[-1].total == sum(costs) == bars[-1].done  # the bar is sized for every phase and ends full
    assert costs[0] < costs[2] < costs[3]  # an MLE epoch, a discriminator round, an adversarial epoch
    assert main([*args, "--adversarial-epochs", "2"]) == 0  # extends the finished run: resumes after step 4
    longer = SeqGANTrainConfig(**{**config.__dict__, "adversarial_epochs": 2}).step_costs(16, 12)
    assert bars[-1].total == sum(longer) == bars[-1].done and longer[:4] == costs
    readme = SeqGANTrainConfig(mle_epochs=120, adversarial_epochs=50).step_costs(512, 32)
    assert sum(readme[:120]) < 0.05 * sum(readme)  # the README's run: pretraining is a small share of the bar
