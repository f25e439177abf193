"""BLIP-2 captions: load offline (fp16, 8-bit or 4-bit), caption pictures in batches, caption a dataset.

transformers' ``Blip2ForConditionalGeneration`` does the work. Pictures are resized and normalised
on tensors a batch at a time (the processor's numbers from the model folder); the prompt is
tokenised once and put after the image tokens, as ``Blip2Processor`` does.
"""
from __future__ import annotations

import gc
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..curator.clip_model import precision_dtype
from ..curator.pixels import PixelSpec, read_pixel_spec, to_pixels
from ..dataset.image_files import CAPTION_EXTENSION, ImageFolderError, Skipped, list_images, load_image
from ..shared.bitsandbytes_support import require_bitsandbytes
from ..shared.hf_folders import WEIGHT_FILES, ModelFolderError, check_files, dtype_argument, loading_weights
from ..shared.output_paths import refuse_stem_clashes, remove_stale, write_text_atomic
from ..shared.progress import Progress, SilentProgress

DEFAULT_BLIP2 = "Salesforce/blip2-opt-2.7b"
PRECISIONS = ("auto", "fp16", "bf16", "fp32", "8bit", "4bit")
QUANTIZED = ("8bit", "4bit")


@dataclass
class Blip2Model:
    model: Any  # transformers Blip2ForConditionalGeneration; None while unloaded
    tokenizer: Any
    pixels: PixelSpec
    folder: Path
    load_device: torch.device
    precision: str

    @property
    def name(self) -> str:
        return self.folder.name

    def _live(self) -> Any:
        """The network, read from disk again after an unload (ComfyUI hands the same cached loader output to
        the next run, so an unloaded model must come back by itself)."""
        if self.model is None:
            self.model = _network(self.folder, self.load_device, self.precision)
        return self.model

    @property
    def device(self) -> torch.device:
        return next(self._live().parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self._live().vision_model.parameters()).dtype

    def unload(self) -> None:
        """Free the network's memory (GPU and CPU); the next caption loads it again."""
        cuda = self.model is not None and self.device.type == "cuda"
        self.model = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


@dataclass(frozen=True)
class CaptionSettings:
    prompt: str = ""  # e.g. "Question: what is in this picture? Answer:"; empty: a plain caption
    max_new_tokens: int = 40
    min_new_tokens: int = 0
    num_beams: int = 3
    sampling: bool = False
    temperature: float = 1.0
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if self.max_new_tokens < 1 or self.min_new_tokens < 0 or self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"need 0 <= min_new_tokens ({self.min_new_tokens}) <= max_new_tokens "
                             f"({self.max_new_tokens}), and max_new_tokens >= 1")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {self.num_beams}")
        if self.sampling and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens,
                                  "num_beams": self.num_beams, "do_sample": self.sampling,
                                  "repetition_penalty": self.repetition_penalty}
        if self.sampling:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        return kwargs


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision in QUANTIZED:
        if device.type != "cuda":
            raise RuntimeError(f"BLIP-2 in {precision} runs through bitsandbytes on a CUDA GPU, and this device is "
                               f"{device.type}: choose fp32 (CPU) or run on a GPU")
        require_bitsandbytes(f"BLIP-2 in {precision}")


def _quantization(precision: str) -> Any:
    """bitsandbytes' settings for a quantized precision (weights in 8-bit, or NF4 with double quantization)."""
    if precision not in QUANTIZED:
        return None
    from transformers import BitsAndBytesConfig

    if precision == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float16)


def _network(folder: Path, device: torch.device, precision: str) -> Any:
    from transformers import Blip2ForConditionalGeneration

    quantization = _quantization(precision)
    if quantization is not None:
        target = (device.index or 0) if device.type == "cuda" else device.type
        kwargs: dict[str, Any] = {"quantization_config": quantization, "device_map": {"": target},
                                  **dtype_argument(torch.float16)}
    else:
        kwargs = dtype_argument(precision_dtype(precision, device))
    with loading_weights(folder, "BLIP-2", DEFAULT_BLIP2):
        model = Blip2ForConditionalGeneration.from_pretrained(str(folder), local_files_only=True, **kwargs)
    if quantization is None:
        model.to(device)
    return model.eval().requires_grad_(False)


def check_blip2_folder(folder: Path) -> None:
    """A clear error unless ``folder`` holds a current BLIP-2 (config, weights, tokenizer); reads no weights."""
    check_files(folder, "BLIP-2", {"config": ("config.json",), "weights": WEIGHT_FILES,
                                   "tokenizer": ("tokenizer.json", "vocab.json")})
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "blip-2":
        raise ModelFolderError(f"{str(folder)!r} holds a {config.get('model_type')!r} model, not BLIP-2")
    if config.get("image_token_index") is None:
        raise ModelFolderError(f"{str(folder)!r} is a BLIP-2 saved before transformers placed image tokens in the "
                               "prompt (its config has no image_token_index): use a current copy of the model")


def load_blip2(folder: Path, device: torch.device | str = "cpu", precision: str = "auto") -> Blip2Model:
    """Load a BLIP-2 folder (config, weights, tokenizer, preprocessor config) offline, in the precision asked."""
    from transformers import AutoTokenizer

    device = torch.device(device)
    check_precision(precision, device)  # before reading gigabytes: the error comes first
    check_blip2_folder(folder)
    model = _network(folder, device, precision)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.padding_side = "left"  # generation continues each prompt from its end
    image_size = int(model.config.vision_config.image_size)
    return Blip2Model(model, tokenizer, read_pixel_spec(folder, image_size, square=True), folder, device, precision)


def _prompt_ids(blip: Blip2Model, prompt: str, count: int) -> torch.Tensor:
    config = blip._live().config
    text = blip.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ids = [config.image_token_index] * config.num_query_tokens + list(text)
    return torch.tensor([ids] * count, dtype=torch.long, device=blip.device)


def _clean(text: str) -> str:
    return " ".join(text.split())


def caption_images(blip: Blip2Model, images: Sequence[torch.Tensor] | torch.Tensor, settings: CaptionSettings,
                   batch_size: int = 8, progress: Progress | None = None) -> list[str]:
    """One caption per ``[H, W, 3]`` picture. The same seed and batch size give the same captions."""
    settings.check()
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    model = blip._live()
    progress = progress or SilentProgress(len(images))
    captions: list[str] = []
    devices = [blip.device] if blip.device.type == "cuda" else []
    for start in range(0, len(images), batch_size):
        progress.check_cancel()
        batch = images[start:start + batch_size]
        pixels = to_pixels(batch, blip.pixels).to(blip.device, blip.dtype)
        input_ids = _prompt_ids(blip, settings.prompt, pixels.shape[0])
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(settings.seed + start)
            out = model.generate(pixel_values=pixels, input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 **settings.generate_kwargs())
        if out.shape[1] >= input_ids.shape[1] and torch.equal(out[:, :input_ids.shape[1]], input_ids):
            out = out[:, input_ids.shape[1]:]  # transformers 5 returns the prompt too
        captions += [_clean(t) for t in blip.tokenizer.batch_decode(out, skip_special_tokens=True)]
        progress.advance(len(batch))
    return captions


@dataclass
class CaptionReport:
    written: list[Path] = field(default_factory=list)  # sidecars written
    kept: list[Path] = field(default_factory=list)  # pictures whose sidecar already existed and was left alone
    skipped: list[Skipped] = field(default_factory=list)  # pictures that failed to decode
    captions: dict[str, str] = field(default_factory=dict)  # picture path inside the folder -> caption written

    def record(self, folder: Path, captioned: list[tuple[Path, str]], skipped: list[Skipped], trigger: str) -> None:
        """Write each picture's caption (after the trigger word) as its ``<stem>.txt`` sidecar."""
        for path, text in captioned:
            caption = with_trigger(text, trigger)
            sidecar = path.with_suffix(CAPTION_EXTENSION)
            write_text_atomic(sidecar, caption + "\n")
            self.written.append(sidecar)
            self.captions[path.relative_to(folder).as_posix()] = caption
        self.skipped += skipped

    def report(self) -> str:
        lines = [f"wrote {len(self.written)} caption(s), kept {len(self.kept)} existing"]
        lines += [f"skipped {Path(s.path).name}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def with_trigger(caption: str, trigger: str) -> str:
    trigger = trigger.strip()
    return f"{trigger}, {caption}" if trigger and caption else trigger or caption


def plan_captions(folder: str | os.PathLike[str], overwrite: bool = False, recursive: bool = False
                  ) -> tuple[list[Path], list[Path], list[Path]]:
    """The pictures of ``folder``, those whose caption is kept and those to caption; pictures that would share
    one ``<stem>.txt`` (``a.jpg`` and ``a.tif``) are refused here, before a model loads or a caption is written."""
    files = list_images(folder, recursive)
    kept, todo = [], []
    for path in files:
        (kept if path.with_suffix(CAPTION_EXTENSION).exists() and not overwrite else todo).append(path)
    written = {p.with_suffix(CAPTION_EXTENSION) for p in todo}
    refuse_stem_clashes([p for p in files if p.with_suffix(CAPTION_EXTENSION) in written], CAPTION_EXTENSION,
                        "cannot caption this folder")
    return files, kept, todo


def prepare_captions(folder: str | os.PathLike[str], settings: CaptionSettings, overwrite: bool = False,
                     recursive: bool = False) -> tuple[list[Path], list[Path], CaptionReport]:
    """The pictures of ``folder``, those to caption and a report holding those kept; half-written captions of a
    killed run are removed. Bad settings and name clashes are refused first."""
    settings.check()
    files, kept, todo = plan_captions(folder, overwrite, recursive)
    for parent in {p.parent for p in todo}:
        remove_stale(parent, f".*{CAPTION_EXTENSION}.*.part")
    return files, todo, CaptionReport(kept=kept)


def caption_batch(blip: Blip2Model, group: Sequence[Path], settings: CaptionSettings, start: int,
                  pool: ThreadPoolExecutor | None = None) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    """Captions of one batch of a folder's pictures, seeded as ``caption_folder`` seeds the batch that begins at
    ``start`` (so any process captioning it writes the same text): (picture, caption) for the pictures that decode,
    the others skipped with the reason."""
    decoded = list(pool.map(_decode_or_reason, group) if pool is not None else map(_decode_or_reason, group))
    good = [(p, image) for p, image in zip(group, decoded) if isinstance(image, torch.Tensor)]
    skipped = [Skipped(str(p), image) for p, image in zip(group, decoded) if isinstance(image, str)]
    if not good:
        return [], skipped
    batch_settings = CaptionSettings(**{**settings.__dict__, "seed": settings.seed + start})
    texts = caption_images(blip, [image for _, image in good], batch_settings, batch_size=len(good))
    return [(path, text) for (path, _), text in zip(good, texts)], skipped


def caption_folder(blip: Blip2Model, folder: str | os.PathLike[str], settings: CaptionSettings, trigger: str = "",
                   overwrite: bool = False, batch_size: int = 8, recursive: bool = False,
                   progress: Progress | None = None) -> CaptionReport:
    """Write a ``<stem>.txt`` caption beside every picture of ``folder`` (for the LoRA trainer); existing
    sidecars are kept unless ``overwrite``. Pictures are decoded a batch at a time."""
    files, todo, report = prepare_captions(folder, settings, overwrite, recursive)
    progress = progress or SilentProgress(len(files))
    progress.advance(len(report.kept))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(todo), batch_size):
            progress.check_cancel()
            group = todo[start:start + batch_size]
            report.record(Path(folder), *caption_batch(blip, group, settings, start, pool), trigger)
            progress.advance(len(group))
    return report


def _decode_or_reason(path: Path) -> torch.Tensor | str:
    try:
        return load_image(path)
    except ImageFolderError as exc:
        return str(exc)
