"""AdaIN stylize speed and the largest picture that fits a memory budget: the pack against a reference.

The reference is the straightforward AdaIN of the PyTorch port's ``test.py``: the whole picture
through the encoder, AdaIN with the style's statistics, the whole feature map through the
decoder. Both sides use the same weights (random ones of the real width, or ``--encoder`` and
``--decoder`` files), pictures, precision and device.

1. Milliseconds per 512x512 picture (median of ``--repeats`` after a warm-up), and ours / reference.
2. For each side, the largest square picture from ``--sizes`` it stylizes within ``--budget-mb``:
   each size runs in a fresh process; on CUDA the peak is ``max_memory_allocated`` over the run,
   on the CPU (Linux) the peak resident set (VmHWM, reset before the run) over the resident set then.

Run: ``python benchmarks/bench_adain.py`` (CPU; ``--width 16`` for a quick look) or on a GPU
``python benchmarks/bench_adain.py --device cuda --budget-mb 8192 --sizes 512,1024,2048,3072,4096``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from atelier_cli import load_pack  # noqa: E402

load_pack()
from atelier.core.dataset.image_files import load_image  # noqa: E402
from atelier.core.dataset.preprocess import resize  # noqa: E402
from atelier.core.style import adain_model  # noqa: E402
from atelier.core.style.stylize import StyleOptions, stylize  # noqa: E402

PICTURES = ROOT / "samples" / "originals"


def reference_stylize(encoder: torch.nn.Module, decoder: torch.nn.Module, content: torch.Tensor,
                      style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """The port's ``style_transfer``: ``[1, 3, H, W]`` in, the decoder's whole output back."""
    def mean_std(feat: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
        n, c = feat.shape[:2]
        var = feat.view(n, c, -1).var(dim=2) + eps
        return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)

    content_f, style_f = encoder(content), encoder(style)
    s_mean, s_std = mean_std(style_f)
    c_mean, c_std = mean_std(content_f)
    feat = (content_f - c_mean) / c_std * s_std + s_mean
    return decoder(feat * alpha + content_f * (1 - alpha))


def build(args: argparse.Namespace) -> adain_model.AdaINModel:
    if args.encoder and args.decoder:
        return adain_model.load_model(Path(args.encoder), Path(args.decoder))
    torch.manual_seed(0)
    return adain_model.AdaINModel(adain_model.build_encoder(args.width), adain_model.build_decoder(args.width))


def pictures(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    content = resize(load_image(PICTURES / "chelsea.jpg")[None], size, size)
    style = resize(load_image(PICTURES / "coffee.webp")[None], 512, 512)
    return content.to(device), style.to(device)


def run_once(side: str, model: adain_model.AdaINModel, content: torch.Tensor, style: torch.Tensor,
             device: torch.device) -> None:
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        if side == "ours":
            stylize(model, content, [style[0]], StyleOptions(), device=device)
        else:
            planar = content.permute(0, 3, 1, 2)
            out = reference_stylize(model.encoder, model.decoder, planar, style.permute(0, 3, 1, 2))
            out.clamp(0, 1).permute(0, 2, 3, 1).cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_run(args: argparse.Namespace) -> None:
    """Child process: one side at one size; prints the peak memory growth in MiB (or 'failed')."""
    device = torch.device(args.device)
    model = build(args).to(device)
    content, style = pictures(args.size, device)
    run_once(args.side, model, content[:, :64, :64], style, device)  # warm-up at a small size
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set to the current one
        base = _status_kib("VmRSS") * 1024
    try:
        run_once(args.side, model, content, style, device)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        print(json.dumps({"failed": str(exc)[:200]}))
        return
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status_kib("VmHWM") * 1024
    print(json.dumps({"peak_mb": (peak - base) / 2**20}))


def largest_within(args: argparse.Namespace, side: str) -> tuple[int, dict[int, float]]:
    fits, peaks = 0, {}
    for size in args.sizes:
        command = [sys.executable, __file__, "--child", "--side", side, "--size", str(size), "--device", args.device,
                   "--width", str(args.width)] + (["--encoder", args.encoder, "--decoder", args.decoder]
                                                  if args.encoder and args.decoder else [])
        result = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        report = json.loads(lines[-1]) if lines else {"failed": result.stderr[-200:]}
        if "peak_mb" not in report:
            break
        peaks[size] = report["peak_mb"]
        if report["peak_mb"] > args.budget_mb:
            break
        fits = size
    return fits, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=64, help="base channel width (64: the real network)")
    parser.add_argument("--encoder")
    parser.add_argument("--decoder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-mb", type=float, default=2048)
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[512, 1024, 1536, 2048])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("ours", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peak_run(args)
        return
    device = torch.device(args.device)
    model = build(args).to(device)
    content, style = pictures(512, device)
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    for side in times:
        run_once(side, model, content, style, device)  # warm-up
    for _ in range(args.repeats):  # interleaved, so drifts in clock speed hit both sides alike
        for side in times:
            start = time.perf_counter()
            run_once(side, model, content, style, device)
            times[side].append((time.perf_counter() - start) * 1000)
    ours, ref = statistics.median(times["ours"]), statistics.median(times["reference"])
    print(f"device {device}, width {args.width}: 512x512 stylize, median of {args.repeats}")
    print(f"  ours {ours:.1f} ms, reference {ref:.1f} ms, ratio {ours / ref:.2f}x (goal: at most 1.0)")
    print(f"largest square picture within {args.budget_mb:.0f} MiB (sizes {args.sizes}):")
    for side in ("ours", "reference"):
        fits, peaks = largest_within(args, side)
        shown = ", ".join(f"{s}: {p:.0f} MiB" for s, p in peaks.items())
        print(f"  {side:9s} {fits or 'none'} px  (peaks {shown})")


if __name__ == "__main__":
    main()
