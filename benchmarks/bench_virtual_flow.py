"""The seed's whole flow on a CUDA GPU with a real SD 1.5 file: time and peak GPU memory per stage.

Stages, each run through the command line's own jobs (``atelier.cli.main``) in this process, so what is measured is
what a user runs:

1. ``adain``      AdaIN virtual data (``style``): every picture of ``--content`` painted in each original's style;
                  only with ``--content`` and the AdaIN weights (``vgg_normalised.pth``, ``decoder.pth``).
2. ``adapter``    the embedding adapter, ``--adapter-steps`` steps on the originals (``adapter-train``), unless
                  ``--adapter`` names a trained one.
3. ``diffusion``  diffusion virtual data (``virtual-data``): each original x ``--change`` prompts x ``--samples``.
4. ``multiply``   originals + virtual data (both kinds, copied into one folder) multiplied (``multiply``).
5. ``caption``    BLIP-2 captions (``caption``), only with ``--blip2``.
6. ``train``      a LoRA, ``--steps`` steps (``train``).
7. ``sample``     pictures from SD 1.5 with that LoRA merged (diffusers DDIM, as ``train``'s samples).
8. ``fid``        FID and KID of the samples against the originals (``fid``), when the FID Inception weights are
                  found.

Peak memory is ``torch.cuda.max_memory_allocated`` within the stage. The SD 1.5 file is ``--model``, else the first
SD 1.5 ``.safetensors`` (recognised from its header, nothing loaded) in the checkpoints folders of ``--comfyui`` /
``$COMFYUI_PATH`` / the ComfyUI this pack sits in / ``./models`` / ``~/ComfyUI/models``. Without a CUDA GPU or
without such a file it says so and exits 0 having measured nothing.

    .venv/bin/python benchmarks/bench_virtual_flow.py --comfyui ~/ComfyUI --content path/to/photos --steps 50
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from atelier_cli import load_pack  # noqa: E402

load_pack()
from atelier.cli import main as cli  # noqa: E402
from atelier.nodes import bridge  # noqa: E402

ORIGINALS = ROOT / "samples" / "originals"
CHANGES = ("in a forest", "at night", "in the snow", "on a city street")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help="SD 1.5 checkpoint file; default: the first SD 1.5 file in the checkpoints folders")
    p.add_argument("--comfyui", help="your ComfyUI folder (its models/ folder is searched)")
    p.add_argument("--originals", default=str(ORIGINALS), help="folder of originals")
    p.add_argument("--content", help="folder of content pictures (photographs) for the AdaIN stage; none: skipped")
    p.add_argument("--clip", default="openai/clip-vit-large-patch14", help="image encoder of the adapter")
    p.add_argument("--adapter", help="a trained embedding adapter; none: one is trained for --adapter-steps")
    p.add_argument("--adapter-steps", type=int, default=50, help="steps of the adapter stage")
    p.add_argument("--blip2", help="BLIP-2 model for the caption stage; none: skipped")
    p.add_argument("--change", action="append", help=f"change prompt (repeatable); default: {', '.join(CHANGES)}")
    p.add_argument("--samples", type=int, default=1, help="diffusion pictures per original and change")
    p.add_argument("--steps", type=int, default=20, help="LoRA training steps")
    p.add_argument("--resolution", type=int, default=512, help="pictures and training resolution")
    p.add_argument("--sample-count", type=int, default=8, help="pictures drawn in the sample stage")
    p.add_argument("--trigger", default="sks", help="trigger word of the style")
    p.add_argument("--work", help="folder for everything written; default: a temporary folder, removed after")
    p.add_argument("--json", help="also write the measurements to this JSON file")
    return p.parse_args(argv)


def _header_shapes(path: Path) -> dict[str, object]:
    """A safetensors file's tensors as empty meta tensors of their shapes, from its header alone."""
    import torch

    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    return {k: torch.empty(v["shape"], device="meta") for k, v in header.items() if k != "__metadata__"}


def find_sd15(args: argparse.Namespace) -> tuple[Path | None, list[Path]]:
    """The SD 1.5 file to use and the folders searched."""
    from atelier.core.sd15.checkpoint import SD15_FILE, identify

    if args.model:
        return Path(args.model).expanduser(), []
    folders = [*bridge.model_folders("checkpoints"), Path.home() / "ComfyUI" / "models" / "checkpoints"]
    folders = list(dict.fromkeys(f for f in folders))
    for folder in folders:
        files = sorted(folder.glob("*.safetensors"), key=lambda p: (p.name != SD15_FILE, p.name)) \
            if folder.is_dir() else []
        for file in files:
            try:
                if identify(_header_shapes(file)) == "sd15":
                    return file, folders
            except (OSError, ValueError, KeyError, struct.error):
                continue
    return None, folders


class Stages:
    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def run(self, name: str, job: Callable[[], object]) -> bool:
        import torch

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            result = job()
        except Exception as exc:  # noqa: BLE001 - a failed stage is reported and stops the flow
            result = f"failed: {exc}"
        seconds = time.perf_counter() - start
        ok = result in (0, None)
        self.rows.append({"stage": name, "seconds": round(seconds, 2),
                          "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
                          "note": "" if ok else f"exit {result}" if isinstance(result, int) else str(result)})
        print(f"{name:10s} {seconds:9.1f} s  {self.rows[-1]['peak_gpu_mib']:7d} MiB  {self.rows[-1]['note']}",
              flush=True)
        return ok

    def skip(self, name: str, why: str) -> None:
        self.rows.append({"stage": name, "seconds": None, "peak_gpu_mib": None, "note": f"skipped: {why}"})
        print(f"{name:10s} skipped: {why}", flush=True)


def _latest(parent: Path) -> Path:
    """The newest version folder a stage wrote under ``parent``."""
    return max(parent.glob("v[0-9][0-9][0-9]*"), key=lambda p: int(p.name[1:]))


def _combine(folders: list[Path], into: Path) -> Path:
    """One training folder from several dataset versions (pictures with their caption sidecars)."""
    into.mkdir(parents=True)
    for folder in folders:
        for file in folder.iterdir():
            if file.suffix in (".png", ".txt") and not (into / file.name).exists():
                shutil.copy2(file, into / file.name)
    return into


def _sample(model: Path, lora: Path, prompts: list[str], size: int, out: Path) -> None:
    import torch

    from atelier.core.sd15 import checkpoint as sd15_checkpoint
    from atelier.core.sd15 import lora_file
    from atelier.training.sd15.lora_job import sample_images

    parts, _ = sd15_checkpoint.load(model, torch.float16)
    lora_file.apply_file(parts.unet, parts.text_encoder, lora)
    parts.unet.to("cuda")
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(sample_images(parts, prompts, 0, 25, size)):
        image.save(out / f"sample_{i + 1:02d}.png")


def flow(args: argparse.Namespace, model: Path, work: Path) -> Stages:
    from atelier.core.shared.hf_folders import ModelFolderError, find_model_folder

    stages = Stages()
    out = work / "output"
    common = ["--comfyui", args.comfyui] if args.comfyui else []
    changes = args.change or list(CHANGES)
    virtual: list[Path] = []
    adain = [bridge.model_folders("atelier_adain")[0] / n for n in ("vgg_normalised.pth", "decoder.pth")]
    if not args.content:
        stages.skip("adain", "no --content folder of photographs")
    elif not all(p.is_file() for p in adain):
        stages.skip("adain", f"no {adain[0].name} and {adain[1].name} in {str(adain[0].parent)!r}")
    elif stages.run("adain", lambda: cli(["style", args.content, "--styles", args.originals, "--encoder",
                                          str(adain[0]), "--decoder", str(adain[1]), "--output", str(out),
                                          "--subfolder", "adain", "--no-original", "--device", "cuda", *common])):
        virtual.append(_latest(out / "adain"))
    try:
        find_model_folder(args.clip, bridge.model_folders("atelier_clip"), "CLIP", args.clip)
        clip_found = True
    except ModelFolderError as exc:
        clip_found, why = False, str(exc)
    adapter = args.adapter
    if not clip_found:
        stages.skip("adapter", why)
        stages.skip("diffusion", "no image encoder for the adapter")
    else:
        if adapter is None:
            stages.run("adapter", lambda: cli([
                "adapter-train", args.originals, "--model", str(model), "--clip", args.clip, "--out-dir",
                str(work / "adapters"), "--run", str(work / "adapter_run"), "--steps", str(args.adapter_steps),
                "--resolution", str(args.resolution), "--mixed-precision", "fp16", "--gradient-checkpointing",
                "--batch-size", "2", "--device", "cuda", *common]))
            adapter = str(work / "adapters" / "atelier_adapter.safetensors")
        if Path(adapter).is_file() and stages.run("diffusion", lambda: cli([
                "virtual-data", args.originals, "--model", str(model), "--adapter", adapter, "--clip", args.clip,
                *[a for c in changes for a in ("--change", c)], "--samples", str(args.samples), "--trigger",
                args.trigger, "--width", str(args.resolution), "--height", str(args.resolution), "--output",
                str(out), "--subfolder", "virtual", "--device", "cuda", *common])):
            virtual.append(_latest(out / "virtual"))
    training = _combine(virtual or [Path(args.originals)], work / f"combined_{len(list(work.glob('combined*')))}")
    if not stages.run("multiply", lambda: cli(["multiply", str(training), "--output", str(out), "--subfolder",
                                                "multiplied", "--device", "cuda"])):
        return stages
    multiplied = _latest(out / "multiplied")
    if args.blip2:
        stages.run("caption", lambda: cli(["caption", str(multiplied), "--blip2", args.blip2, "--trigger",
                                           args.trigger, "--device", "cuda", *common]))
    else:
        stages.skip("caption", "no --blip2 model")
    if not stages.run("train", lambda: cli([
            "train", str(multiplied), "--model", str(model), "--loras", str(work / "loras"), "--run",
            str(work / "lora_run"), "--name", "flow", "--trigger", args.trigger, "--steps", str(args.steps),
            "--resolution", str(args.resolution), "--mixed-precision", "fp16", "--gradient-checkpointing",
            "--device", "cuda", *common])):
        return stages
    prompts = [f"{args.trigger}, {changes[i % len(changes)]}" for i in range(args.sample_count)]
    samples = work / "samples"
    lora = max((work / "loras").glob("flow*.safetensors"), key=lambda p: p.stat().st_mtime)  # flow_2... on reruns
    if not stages.run("sample", lambda: _sample(model, lora, prompts, args.resolution, samples)):
        return stages
    fid = bridge.model_folders("atelier_fid")[0]
    if not (fid / "pt_inception-2015-12-05-6726825d.pth").is_file():
        stages.skip("fid", f"no pt_inception-2015-12-05-6726825d.pth in {str(fid)!r}")
    else:
        stages.run("fid", lambda: cli(["fid", str(samples), args.originals, "--weights", str(fid), "--output",
                                       str(out), "--device", "cuda", *common]))
    return stages


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.comfyui:
        bridge.set_comfyui_directory(args.comfyui)
    model, searched = find_sd15(args)
    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU on this machine: this benchmark measures the flow on a GPU")
    if model is None or not model.is_file():
        where = str(model) if model is not None else ", ".join(map(str, searched))
        missing.append(f"no SD 1.5 checkpoint file ({where}): give --model or --comfyui")
    if missing:
        print("nothing measured: " + "; ".join(missing))
        return 0
    print(f"SD 1.5: {model}\nGPU: {torch.cuda.get_device_name()}")
    print(f"{'stage':10s} {'time':>11s}  {'peak':>11s}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="atelier-flow-"))
    try:
        stages = flow(args, model, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(model), "gpu": torch.cuda.get_device_name(),
                                               "stages": stages.rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(run())
