"""What every command shares: the parser classes, options read from the engine's source without importing it,
range-checked numbers, where models are looked for, and core messages said with the command's own flags."""
from __future__ import annotations

import argparse
import ast
import functools
import math
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..core.shared.progress import Progress

_ROOT = Path(__file__).resolve().parents[1]  # the pack
# rerun with --run to resume
RESUMABLE = {"train", "train-decoder", "text-train", "audio-train", "adapter-train", "encoder-train"}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (not for required options, on/off flags, or options whose help
    says what their absence means); epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or isinstance(action, argparse._StoreTrueAction):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def _top_level(module: str) -> dict[str, ast.AST]:
    tree = ast.parse((_ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            names.update((t.id, node.value) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            names[node.target.id] = node.value
    return names


def declared(module: str, name: str) -> Any:
    """A literal constant of ``module`` (``"core.dataset.preprocess"``), or a dataclass's literal field defaults as a
    namespace, read from the source without importing it (the engine imports torch; ``--help`` must not).
    tests/test_cli_parser.py holds every value read here equal to the imported one."""
    node = _top_level(module)[name]
    if not isinstance(node, ast.ClassDef):
        return ast.literal_eval(node)
    fields = {}
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
            try:
                fields[item.target.id] = ast.literal_eval(item.value)
            except ValueError:  # field(default_factory=...): not an option's default
                continue
    return SimpleNamespace(**fields)



def number(kind: type, low: float | None = None, high: float | None = None,
           above: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type`` that parses ``kind`` and refuses values outside ``low..high`` (or not ``above``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and value < low or high is not None and value > high:
            where = (f"from {low} to {high}" if low is not None and high is not None
                     else f"at least {low}" if low is not None else f"at most {high}")
            raise argparse.ArgumentTypeError(f"must be {where}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be above {above}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_numbers(parser: argparse.ArgumentParser, kind: type, low: float | None = None, high: float | None = None,
                above: float | None = None, **options: tuple[Any, str]) -> None:
    """``--some-name`` options of one numeric type and range, from ``some_name=(default, help)``."""
    for name, (value, text) in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=number(kind, low, high, above), default=value,
                            help=text)


# every command that reads a model takes --comfyui: the ComfyUI folder whose models it looks in
MODEL_COMMANDS = ("train", "style", "train-decoder", "fid", "label", "curate", "caption", "embed", "retrieve",
                  "evaluate-retrieval", "text-sample", "text-story", "audio-train", "adapter-train", "audio-encode",
                  "virtual-data", "encoder-train")


def add_comfyui_option(sub: argparse._SubParsersAction) -> None:
    env = declared("nodes.bridge", "COMFYUI_ENV")
    for name in MODEL_COMMANDS:
        sub.choices[name].add_argument(
            "--comfyui", help="your ComfyUI folder: models are looked for in its models/ folder (checkpoints, "
            f"atelier/clip, atelier/adain...). Default: ${env}, else the ComfyUI this pack is installed in and "
            "./models")


def use_models_of(args: argparse.Namespace) -> None:
    """Models from the ComfyUI folder given with --comfyui (checked before any work starts)."""
    if getattr(args, "comfyui", None):
        from ..nodes import bridge

        bridge.set_comfyui_directory(args.comfyui)


def model_file(text: str, kind: str, what: str) -> Path:
    """A model option: a name in the model folders of ``kind`` (an Atelier kind such as ``adain``, or ComfyUI's
    ``checkpoints``), else a path; the error names every place looked in and how to get the file."""
    from ..nodes import bridge

    if kind == "checkpoints":  # a single file, or a diffusers folder
        from ..core.sd15.checkpoint import SD15_DOWNLOAD, SD15_FILE

        folder = bridge.model_folders("checkpoints")[0]
        return bridge.find_model_file("checkpoints", text, what, (
            f"put the checkpoint file (or diffusers folder) {text.strip()!r} in {str(folder)!r}; SD 1.5 itself comes "
            f'with `{SD15_DOWNLOAD} --local-dir "{folder}"`, then --model {SD15_FILE}'), Path.exists)
    if kind == "adain":
        from ..core.style.adain_model import find_weights

        return find_weights(text, bridge.model_folders("atelier_adain"), what)
    folder = bridge.model_folders(f"atelier_{kind}")[0]
    return bridge.find_model_file(f"atelier_{kind}", text, what, f"train one into {str(folder)!r} (--out-dir)")


def _flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """The command's option names as core and node messages spell them (``max_megapixels``) -> the flag."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: a.option_strings[0] for a in sub._actions if a.option_strings and a.dest != "help"}


# how core and node messages name settings: resize 'exact'; 'recursive' or batch_size
_SETTING_VALUE = re.compile(r"(?<![-\w])([a-z][a-z0-9_]*) '([^'\n]*)'")
_SETTING = re.compile(r"(?<![-\w])(?:'([a-z][a-z0-9_]*)'|([a-z][a-z0-9]*_[a-z0-9_]+))(?![\w-])")


def cli_spelling(message: str, flags: dict[str, str]) -> str:
    """Core errors name settings as the node inputs do (turn on 'recursive', lower batch_size, resize 'exact'):
    say them as typed on the command line (--recursive, --batch-size, --resize exact)."""
    def setting_value(match: re.Match[str]) -> str:
        flag = flags.get(match.group(1))
        return f"{flag} {match.group(2)}" if flag else match.group(0)

    def setting(match: re.Match[str]) -> str:
        return flags.get(match.group(1) or match.group(2), match.group(0))

    return _SETTING.sub(setting, _SETTING_VALUE.sub(setting_value, message))


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    """``--gpus`` and ``--events`` of a trainer's command (see ``launch_group`` and ``TrainingRun``)."""
    parser.add_argument("--gpus", type=number(int, 1), default=1,
                        help="train data-parallel in this many processes on this machine, one GPU each (with "
                        "--device cpu: CPU processes, for testing), launched through torchrun; --batch-size stays "
                        "the global batch, split across them. Several machines: start the command with torchrun "
                        "yourself (README, Several GPUs)")
    parser.add_argument("--events", help="also append progress as JSON lines to this file (start, advance, status, "
                        "preview, loss, done, error; previews as PNGs beside it), for a program watching the run")


def launch_group(args: argparse.Namespace, argv: list[str]) -> int:
    """Run this same command as ``--gpus`` processes through torchrun; a process that dies stops the others, and
    the error names its rank and the checkpoint kept (also as an ``error`` event with --events)."""
    from ..core.shared.progress_events import append, last_event
    from ..training import checkpoints, distributed

    if distributed.launched():
        raise ValueError("this command was started by torchrun already: leave out --gpus (torchrun's "
                         "--nproc-per-node sets the number of processes)")
    import torch

    cuda = args.device != "cpu" and torch.cuda.is_available()
    try:  # the processes get the same options, and --gpus 1 (the last one given counts), so none launches again
        distributed.launch(args.gpus, _ROOT / "atelier_cli.py", [*argv, "--gpus", "1"], cuda)
    except distributed.LaunchFailed as exc:
        message = str(exc)
        run = getattr(args, "run", None)
        if run is not None:
            step = checkpoints.saved_step(Path(run) / "checkpoint")
            message += (f". No checkpoint was written in {run} yet" if step is None else
                        f". The last checkpoint (step {step}) in {run} is intact: run the same command to resume "
                        "(with any number of --gpus)")
        if args.events and (last_event(args.events) or {}).get("event") != "error":  # unless rank 0 said it
            append(args.events, "error", message=message)
        raise distributed.LaunchFailed(message, exc.exitcode) from None
    return 0


class TrainingRun:
    """A trainer command's process, alone or one rank of a group: its device (``cuda:LOCAL_RANK`` under torchrun),
    its progress (rank 0: the console bar, or the JSON-lines writer with --events; silent elsewhere), an ``error``
    event when the work fails, and the group left at the end.

        run = TrainingRun(args, lambda: steps + len(list_images(folder)), "training")
        with run:
            result = job(..., run.device, run.progress, on_loss=run.on_loss)
        run.finished({"lora": str(path)})
        if run.main: print(...)
    """

    def __init__(self, args: argparse.Namespace, total: Callable[[], int], desc: str) -> None:
        """``total()`` counts the units of work (reading the pictures): what it raises is an ``error`` event too."""
        from ..core.shared.progress import SilentProgress
        from ..core.shared.progress_events import JsonLinesProgress, append
        from ..nodes import bridge
        from ..training import distributed

        self.device = distributed.init(bridge.compute_device(args.device))
        self.main, self.world = distributed.is_main(), distributed.world_size()
        try:
            total = total()
        except Exception as exc:
            if self.main and args.events:
                append(args.events, "error", message=str(exc))
            raise
        self.events = JsonLinesProgress(args.events, total, self.world) if self.main and args.events else None
        self.progress: Progress = self.events or (bridge.progress(total, desc) if self.main else
                                                  SilentProgress(total))
        self.on_loss = self.events.loss if self.events else None

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, trace: object) -> None:
        from ..training import distributed

        if exc is not None and self.events and not distributed.reported_by_launcher(exc):
            self.events.error(str(exc) or "stopped; run the same command to resume")
        distributed.close()

    def finished(self, result: dict[str, Any]) -> None:
        """The ``done`` event (with --events): what the run wrote."""
        if self.events:
            self.events.finished({**result, "world_size": self.world})
