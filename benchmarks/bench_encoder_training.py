"""Image-text encoder fine-tuning: step time and peak memory against transformers' contrastive example, labelling
throughput with a dual encoder against a CLIP, and (on CUDA) a short fine-tune with held-out MRR before and after.

The reference is the training step of transformers' ``examples/pytorch/contrastive-image-text/run_clip.py``
written out without the Trainer: captions tokenized up front padded to ``max_length`` (its
``max_seq_length``, here the text tower's limit when that is shorter than its default 128; or, with
``--reference-padding longest``, to the longest caption, which compares the loops alone),
``model(input_ids, pixel_values, attention_mask, return_loss=True).loss``, backward, AdamW, the scheduler,
zero_grad; ``--train projections`` freezes both towers as its ``--freeze_vision_model --freeze_text_model``
do. Ours is ``train_encoder`` on the same model, pictures (decoded once for both), captions, batch size,
precision and device. Each side runs in a fresh process so peak memory is its own: on CUDA
``max_memory_allocated`` during the loop, on the CPU the process's peak resident set. Reported: median step
time, peak memory and ours / reference ratios (goal: both at most 1.0).

Labelling throughput: pictures per second of zero-shot labelling (``zero_shot.label_folder``, no cache) with
a dual encoder and with a CLIP whose vision towers are the same.

Run: ``python benchmarks/bench_encoder_training.py`` (small random towers, CPU); ``--size tiny`` is what the
test runs; on a GPU ``--device cuda --model FOLDER [--pairs-folder PICTURES]`` (a CLIP or dual-encoder
folder; without ``--model`` the real-model part says what it would need).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from atelier_cli import load_pack  # noqa: E402

load_pack()
from atelier.core.curator.clip_model import load_clip  # noqa: E402
from atelier.training.curator import encoder_job, encoder_trainer  # noqa: E402
from atelier.training.curator.pairs import decode  # noqa: E402

ENGLISH = ["cat", "dog", "house", "sea", "village", "window", "boat", "tree"]
KOREAN = ["고양이", "개", "집", "바다", "마을", "창문", "배", "나무"]
SIZES = {  # text width and layers, vision width and layers, picture size, patch, pictures per class, steps, batch
    "tiny": (32, 1, 32, 1, 32, 8, 6, 8, 8),
    "small": (256, 4, 256, 4, 96, 16, 32, 12, 32),
}


def _peak(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def class_pairs(folder: Path, per_class: int, size: int) -> Path:
    """Eight picture classes (a colour and a stripe pattern each, with seeded noise), captioned in English and
    Korean with the class's name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for kind in range(len(ENGLISH)):
        colour = np.array([(kind * 97) % 256, (kind * 53 + 80) % 256, (kind * 31 + 160) % 256], dtype=np.float32)
        stripes = ((xx + yy * (kind % 3)) // (2 + kind)) % 2
        for i in range(per_class):
            picture = colour * (0.5 + 0.5 * stripes[..., None]) + rng.normal(0, 8, (size, size, 3))
            Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(folder / f"{kind}_{i}.png")
            (folder / f"{kind}_{i}.en.txt").write_text(f"a photo of the {ENGLISH[kind]}", encoding="utf-8")
            (folder / f"{kind}_{i}.ko.txt").write_text(f"{KOREAN[kind]} 사진", encoding="utf-8")
    return folder


def _tokenizer(folder: Path):  # -> transformers.BertTokenizer
    """A cased word-piece vocabulary of the captions' words, Latin letters and Hangul syllables."""
    from transformers import BertTokenizer

    syllables = sorted({ch for word in KOREAN + ["사진"] for ch in word})
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "the", *ENGLISH, *KOREAN, "사진",
             *syllables, *(f"##{s}" for s in syllables), *letters, *(f"##{c}" for c in letters)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=False, model_max_length=64)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _processor(folder: Path, size: int) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}, "do_center_crop": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))


def random_encoders(root: Path, size: str) -> tuple[Path, Path]:
    """A random dual encoder (BERT text tower) and a random CLIP with the same vision tower."""
    from transformers import (
        BertConfig,
        CLIPConfig,
        CLIPModel,
        CLIPVisionConfig,
        VisionTextDualEncoderConfig,
        VisionTextDualEncoderModel,
    )

    from atelier.core.sd15.tokenizer import sd15_tokenizer

    text_width, text_layers, vision_width, vision_layers, picture, patch = SIZES[size][:6]
    vision = {"hidden_size": vision_width, "intermediate_size": 4 * vision_width, "num_hidden_layers": vision_layers,
              "num_attention_heads": max(2, vision_width // 64), "image_size": picture, "patch_size": patch}
    dual, clip = root / "dual", root / "clip"
    tokenizer = _tokenizer(dual)
    text = BertConfig(vocab_size=len(tokenizer), hidden_size=text_width, num_hidden_layers=text_layers,
                      num_attention_heads=max(2, text_width // 64), intermediate_size=4 * text_width,
                      max_position_embeddings=64, initializer_range=0.3)
    torch.manual_seed(0)
    VisionTextDualEncoderModel(VisionTextDualEncoderConfig.from_vision_text_configs(
        CLIPVisionConfig(**vision), text, projection_dim=min(512, text_width))).save_pretrained(dual)
    _processor(dual, picture)
    torch.manual_seed(0)
    clip_text = {"vocab_size": 49408, "hidden_size": text_width, "num_hidden_layers": text_layers,
                 "intermediate_size": 4 * text_width, "num_attention_heads": max(2, text_width // 64),
                 "max_position_embeddings": 77, "bos_token_id": 49406, "eos_token_id": 49407}
    CLIPModel(CLIPConfig(text_config=clip_text, vision_config=vision,
                         projection_dim=min(512, text_width))).save_pretrained(clip)
    _processor(clip, picture)
    sd15_tokenizer().save_pretrained(clip)
    return dual, clip


def _setting(args: argparse.Namespace, pairs) -> tuple[encoder_trainer.EncoderTrainConfig, int]:
    """The run's settings and its step count: whole epochs covering at least ``steps`` steps."""
    config = encoder_trainer.EncoderTrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-5, train=args.train,
                                                last_n=1, val_fraction=0.2, precision=args.precision)
    train_rows, _ = encoder_trainer.split(len(pairs.pictures), config.val_fraction, config.seed)
    per_epoch = len(train_rows) // min(config.batch_size, len(train_rows))
    epochs = math.ceil(args.steps / per_epoch)
    return encoder_trainer.EncoderTrainConfig(**{**vars(config), "epochs": epochs}), epochs * per_epoch


class _Stamps:
    """A progress that notes the time of every finished step."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, []

    def advance(self, steps: int = 1) -> None:
        if steps:
            _sync(self.device)
            self.times.append(time.perf_counter())

    def check_cancel(self) -> None:
        return None

    def status(self, text: str) -> None:
        return None

    def preview(self, image) -> None:
        return None


def run_ours(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    clip = load_clip(Path(args.model_folder), "cpu", "fp32")
    pairs = encoder_job.read_job_pairs(encoder_job.EncoderJob(args.pairs_folder))
    pixels = decode(pairs, clip.pixels)
    config, _ = _setting(args, pairs)
    stamps = _Stamps(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        encoder_trainer.train_encoder(clip.model, clip.tokenizer, clip.max_tokens, pixels, pairs.captions, config,
                                      Path(run_dir), device, stamps)
    steps = [b - a for a, b in zip([start, *stamps.times], stamps.times)][1:]  # the first: warm-up
    return {"step_s": statistics.median(steps), "peak_mib": _peak(device)}


def run_reference(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    from transformers import get_scheduler

    clip = load_clip(Path(args.model_folder), "cpu", "fp32")
    pairs = encoder_job.read_job_pairs(encoder_job.EncoderJob(args.pairs_folder))
    pixels = decode(pairs, clip.pixels)
    config, total = _setting(args, pairs)
    model = clip.model.to(device).requires_grad_(True).train()
    if config.train == "projections":
        model.vision_model.requires_grad_(False)
        model.text_model.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler("constant", optimizer, num_warmup_steps=0, num_training_steps=total)
    train_rows, _ = encoder_trainer.split(len(pairs.pictures), config.val_fraction, config.seed)
    texts = [captions[0] for captions in pairs.captions]
    padding = {"padding": "max_length", "max_length": min(128, clip.max_tokens)} if args.reference_padding == \
        "max_length" else {"padding": "longest", "max_length": clip.max_tokens}
    tokens = clip.tokenizer(texts, truncation=True, return_tensors="pt", **padding)
    gen = torch.Generator().manual_seed(0)
    batch = min(config.batch_size, len(train_rows))
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(total):
        start = time.perf_counter()
        rows = train_rows[torch.randperm(len(train_rows), generator=gen)[:batch]]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = model(input_ids=tokens["input_ids"][rows].to(device), pixel_values=pixels[rows].to(device).float(),
                         attention_mask=tokens["attention_mask"][rows].to(device), return_loss=True).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times[1:]), "peak_mib": _peak(device)}


def labelling(dual: Path, clip: Path, pictures: Path, device: torch.device, batch: int) -> dict[str, float]:
    """Pictures per second of zero-shot labelling with each encoder: embedding the pictures and labelling them
    against the taxonomy's label bank, which is built once before (its time is given apart; it depends on the
    text tower and the taxonomy, not on the pictures); a warm-up pass first."""
    from atelier.core.curator import zero_shot
    from atelier.core.curator.image_index import index_folder
    from atelier.core.curator.taxonomy import load_taxonomy
    from atelier.core.dataset.image_files import list_images

    taxonomy = load_taxonomy("artworks")
    files = list_images(pictures)
    rates = {}
    for name, folder in (("dual encoder", dual), ("CLIP", clip)):
        encoder = load_clip(folder, device, "auto")
        start = time.perf_counter()
        bank = zero_shot.build_label_bank(encoder, taxonomy)
        rates[f"{name} bank_s"] = time.perf_counter() - start
        zero_shot.label_embeddings(bank, index_folder(encoder, files[:batch], None, batch).embeddings)
        _sync(device)
        start = time.perf_counter()
        zero_shot.label_embeddings(bank, index_folder(encoder, files, None, batch).embeddings)
        _sync(device)
        rates[name] = len(files) / (time.perf_counter() - start)
    return rates


def real_fine_tune(args: argparse.Namespace, device: torch.device) -> list[str]:
    """A short fine-tune of a real encoder on real pairs, with held-out MRR before and after."""
    if not args.model:
        return ["real encoder: none given (--model FOLDER: a CLIP or dual-encoder folder on this machine)"]
    pairs_folder = args.pairs_folder_real or str(ROOT / "samples" / "originals")
    config = encoder_trainer.EncoderTrainConfig(epochs=args.real_epochs, batch_size=args.batch_size, lr=1e-5,
                                                train="all", val_fraction=0.2, precision=args.precision)
    clip = load_clip(Path(args.model), device, "fp32")
    with tempfile.TemporaryDirectory() as work:
        job = encoder_job.EncoderJob(pairs_folder, name="bench", config=config)
        start = time.perf_counter()
        result = encoder_job.run(job, clip, Path(work) / "models", Path(work) / "runs", device)
        seconds = time.perf_counter() - start
    return [f"real encoder {args.model} on {pairs_folder} ({result.pairs.pairs} pairs, {config.epochs} epochs, "
            f"{seconds:.0f} s):", *encoder_trainer.retrieval_lines(result.train.before, result.train.after)]


def _child(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = (run_ours if args.which == "ours" else run_reference)(args, device)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="random towers' size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train", choices=encoder_trainer.PARTS, default="all")
    parser.add_argument("--precision", choices=encoder_trainer.PRECISIONS, default="fp32")
    parser.add_argument("--steps", type=int, help="steps timed (default: the size's)")
    parser.add_argument("--batch-size", type=int, help="pictures per step (default: the size's)")
    parser.add_argument("--model", help="CUDA: a real CLIP or dual-encoder folder to fine-tune briefly")
    parser.add_argument("--pairs-folder-real", help="CUDA: its pictures with caption sidecars (default: the "
                        "pack's samples/originals)")
    parser.add_argument("--real-epochs", type=int, default=3)
    parser.add_argument("--reference-padding", choices=("max_length", "longest"), default="max_length",
                        help="the reference's captions: padded to max_length as run_clip.py does, or to the longest "
                        "caption (to compare the loops alone; ours pads each batch to its longest)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of each side (default: torch's)")
    parser.add_argument("--which", choices=("ours", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--model-folder", help=argparse.SUPPRESS)
    parser.add_argument("--pairs-folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    *_, per_class, steps, batch = SIZES[args.size]
    args.steps, args.batch_size = args.steps or steps, args.batch_size or batch
    if args.which:
        _child(args)
        return
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        dual, clip = random_encoders(Path(work), args.size)
        pictures = class_pairs(Path(work) / "pairs", per_class, SIZES[args.size][4])
        results = {}
        for which in ("reference", "ours"):
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--which", which, "--model-folder",
                                  str(dual), "--pairs-folder", str(pictures)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            results[which] = json.loads(out.stdout.strip().splitlines()[-1])
        rates = labelling(dual, clip, pictures, device, args.batch_size)
    ours, ref = results["ours"], results["reference"]
    hidden = ("which", "model_folder", "pairs_folder")
    print(f"settings: {json.dumps({k: v for k, v in vars(args).items() if k not in hidden})}")
    print(f"reference: {ref['step_s'] * 1000:.1f} ms/step, peak {ref['peak_mib']:.0f} MiB")
    print(f"ours:      {ours['step_s'] * 1000:.1f} ms/step, peak {ours['peak_mib']:.0f} MiB")
    print(f"ratio ours/reference: step time {ours['step_s'] / ref['step_s']:.2f}x, "
          f"peak memory {ours['peak_mib'] / ref['peak_mib']:.2f}x")
    print(f"labelling: dual encoder {rates['dual encoder']:.1f} pictures/s, CLIP {rates['CLIP']:.1f} pictures/s "
          f"(ratio {rates['dual encoder'] / rates['CLIP']:.2f}x; label bank built once in "
          f"{rates['dual encoder bank_s']:.2f} s and {rates['CLIP bank_s']:.2f} s)")
    if device.type != "cuda" or not torch.cuda.is_available():
        print("real fine-tune: nothing measured: no CUDA GPU on this machine (run with --device cuda --model FOLDER)")
        return
    for line in real_fine_tune(args, device):
        print(line)


if __name__ == "__main__":
    main()
