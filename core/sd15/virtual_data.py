"""Virtual data with SD 1.5 as the first model: the seed's latent-diffusion form.

For each original, SD 1.5 conditioned on its image embedding (the embedding adapter's tokens appended
to a change prompt such as "in a forest" or "at night") draws N seeded pictures, written as a new
``vNNN`` dataset folder exactly as Multiply Dataset writes one: ``<stem>__<change>_NN.png`` with a
caption sidecar (trigger word plus the change prompt, which is also what the picture was drawn
from) and ``manifest.jsonl``. The drawing itself is a callable, so the same plan, names, seeds,
disk check, progress and cancel serve ComfyUI's own sampler and VAE (nodes) and diffusers' pipeline
on the pack's SD 1.5 parts (the command line, tests, benchmarks).
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..dataset import variants
from ..dataset.augment import derive_seed
from ..dataset.multiply import Original, write_originals
from ..dataset.writer import DatasetWriter, WrittenDataset
from ..shared.output_paths import clean_name, unique_stems
from ..shared.progress import Progress, SilentProgress
from .embedding_adapter import LoadedAdapter, append_tokens
from .pipeline import SD15Parts, ddim_pipeline, encode_prompts

# Draw(embedding [1, D] (unit) or None, prompt, seed, count, (width, height)) -> count pictures [count, H, W, 3] in
# 0..1; None: the first-LoRA form, drawn from the prompt alone by an SD already fine-tuned on the originals
Draw = Callable[[torch.Tensor | None, str, int, int, tuple[int, int]], torch.Tensor]
PNG_BOUND = 64 << 10  # per picture beyond its raw RGB bytes: PNG headers and a caption (PNG never grows more)
CHANGE_NAME = 40  # characters of a change prompt kept in file names


@dataclass(frozen=True)
class VirtualDataSettings:
    changes: tuple[str, ...]
    samples: int = 2  # per original and change prompt
    width: int = 512
    height: int = 512
    seed: int = 0
    trigger: str = ""
    include_original: bool = True

    def __post_init__(self) -> None:
        if not any(c.strip() for c in self.changes):
            raise ValueError("give at least one change prompt ('in a forest', 'at night', ...), one per line")
        if self.samples < 1:
            raise ValueError("samples must be at least 1 per original and change prompt")
        if min(self.width, self.height) < 64 or self.width % 8 or self.height % 8:
            raise ValueError(f"width and height must be multiples of 8 from 64 up, not {self.width}x{self.height}")

    @property
    def prompts(self) -> list[str]:
        """The change prompts, blanks and repeats left out (a repeat would draw the very same pictures again)."""
        return list(dict.fromkeys(c.strip() for c in self.changes if c.strip()))

    def caption(self, change: str) -> str:
        """What a virtual picture is drawn from and captioned with: the trigger word, then the change."""
        return ", ".join(p for p in (self.trigger.strip(), change) if p)

    def pictures(self, originals: int) -> int:
        return originals * (len(self.prompts) * self.samples + int(self.include_original))


def parse_changes(text: str) -> tuple[str, ...]:
    """Change prompts, one per line; blank lines are skipped."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def bytes_needed(pictures: int, width: int, height: int) -> int:
    """An upper bound of what ``pictures`` PNGs of ``width`` x ``height`` and their sidecars take on disk."""
    return pictures * (width * height * 3 + PNG_BOUND)


def check_disk(parent: Path, pictures: int, width: int, height: int, free: int | None = None) -> None:
    """Refuse, before any drawing, a run whose pictures cannot fit on the disk of ``parent``."""
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free if free is None else free
    need = bytes_needed(pictures, width, height)
    if need > free:
        raise OSError(f"not enough disk for {pictures} pictures of {width}x{height} in {str(parent)!r}: up to "
                      f"{need / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free. Free some space, lower the "
                      "samples or the number of change prompts, or write to another output folder")


def write_virtual_data(originals: Sequence[Original], embeds: torch.Tensor | None, settings: VirtualDataSettings,
                       draw: Draw, parent: Path, details: dict[str, object] | None = None,
                       progress: Progress | None = None) -> WrittenDataset:
    """Draw ``settings.samples`` pictures per original (its unit embedding, a row of ``embeds``; ``None`` for the
    first-LoRA form, which draws from the change prompt alone) and change prompt and write them, with the
    originals unless told not to, as the next version folder under ``parent``.

    Each (original, change) batch takes the seed ``derive_seed(seed, stem, change)``: the same seed gives the same
    pixels, and adding an original or a change leaves the others' pictures as they were. ``details`` (sampler,
    steps, guidance, LoRA...) go into every manifest record."""
    if not originals:
        raise ValueError("no originals to draw virtual data from")
    if embeds is not None and (embeds.ndim != 2 or embeds.shape[0] != len(originals)):
        raise ValueError(f"{len(originals)} originals but embeddings of shape {tuple(embeds.shape)}")
    changes = settings.prompts
    names = unique_stems([clean_name(c)[:CHANGE_NAME] for c in changes], fallback="change")
    suffixes = [""] + [f"__{name}_{k + 1:02d}" for name in names for k in range(settings.samples)]
    stems = unique_stems([o.stem for o in originals], suffixes)
    total = settings.pictures(len(originals))
    check_disk(parent, total, settings.width, settings.height)
    progress = progress or SilentProgress(len(originals) * len(changes))
    shared = {"width": settings.width, "height": settings.height, "trigger": settings.trigger, **(details or {})}
    with DatasetWriter(parent) as writer:
        if settings.include_original:
            write_originals(writer, stems, originals)
        for i, original in enumerate(originals):
            for change, name in zip(changes, names):
                progress.check_cancel()
                seed = derive_seed(settings.seed, stems[i], change)
                caption = settings.caption(change)
                embedding = None if embeds is None else embeds[i:i + 1]
                pictures = draw(embedding, caption, seed, settings.samples, (settings.width, settings.height))
                if pictures.shape[:3] != (settings.samples, settings.height, settings.width):
                    raise RuntimeError(f"the sampler gave pictures {tuple(pictures.shape)}, not {settings.samples} "
                                       f"of {settings.width}x{settings.height}")
                for k, picture in enumerate(variants.render_original(pictures.float().cpu().clamp(0, 1))):
                    writer.add_image(picture, f"{stems[i]}__{name}_{k + 1:02d}", caption,
                                     {"source": original.source, "stem": stems[i], "variant": f"{name}_{k + 1:02d}",
                                      "parameters": {"change": change, "prompt": caption, "sample": k + 1, **shared},
                                      "seed": seed})
                writer.wait(keep=8)
                progress.advance()
                progress.preview(picture)
        return writer.commit()


def diffusers_draw(parts: SD15Parts, adapter: LoadedAdapter | None, strength: float = 1.0, steps: int = 25,
                   guidance: float = 7.0, negative: str = "", device: torch.device | str = "cpu") -> Draw:
    """Drawing with diffusers' SD pipeline (DDIM) on the pack's SD 1.5 parts: the prompt's encoding with the
    adapter's tokens appended, against the negative prompt's with the adapter's 'no picture' tokens; without an
    adapter, the two prompts alone."""
    device = torch.device(device)
    parts.unet.to(device).eval()
    parts.text_encoder.eval()
    pipe = ddim_pipeline(parts, device)
    dtype = next(parts.unet.parameters()).dtype
    nothing = None if adapter is None else adapter.tokens(adapter.no_picture())

    @torch.no_grad()
    def draw(embedding: torch.Tensor | None, prompt: str, seed: int, count: int, size: tuple[int, int]
             ) -> torch.Tensor:
        text = encode_prompts(parts.text_encoder, parts.tokenizer, [prompt, negative])
        positive, negatives = text[:1], text[1:]
        if adapter is not None and embedding is not None:
            positive = append_tokens(positive, adapter.tokens(embedding), strength)
            negatives = append_tokens(negatives, nothing, strength)
        out = pipe(prompt_embeds=positive.to(device, dtype), negative_prompt_embeds=negatives.to(device, dtype),
                   num_images_per_prompt=count, num_inference_steps=steps, guidance_scale=guidance,
                   width=size[0], height=size[1],
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="pt")
        return out.images.permute(0, 2, 3, 1).float().cpu()

    return draw
