"""The style part's diffusion form (the seed's first model as latent diffusion): SD 1.5 conditioned on an original's
image embedding through the embedding adapter, as conditioning and as a folder of virtual data in the originals'
style. Kept beside nodes/style.py (the AdaIN form) under the same category."""
from __future__ import annotations

from typing import Any

import torch

from ..core.curator.pixels import check_image_batch
from ..core.dataset.image_files import load_image
from ..core.sd15 import virtual_data as vd
from ..core.sd15.embedding_adapter import LoadedAdapter
from ..core.shared.output_paths import safe_subfolder
from . import bridge
from .audio import ADAPTER, _image_encoder_inputs, image_embedder
from .augmentation import DATASET, DatasetInfo, originals_from_batch
from .declare import float_input, int_input, seed_input
from .style import StyleNode

COMBINE = ("per_image", "average")
DEFAULT_CHANGES = "in a forest\nat night\nin the snow\non a city street"


class AtelierImageConditioning(StyleNode):
    DESCRIPTION = ("Append the embedding adapter's tokens for pictures to a CONDITIONING (any prompt's, even an empty "
                   "one): image-only conditioning, no sound needed. 'per_image' gives one conditioning per picture "
                   "(use a latent batch of the same size); 'average' steers every image by the pictures' mean "
                   "embedding (the style of the whole set). An adapter trained with another image encoder is refused, "
                   "naming both.")
    EXAMPLE = ("Wire CLIP Text Encode ('in a forest, at night'), Atelier Load Embedding Adapter, an original from Load "
               "Image and the image encoder the adapter was trained with (Load CLIP Vision) into this node, strength "
               "1, and its output into KSampler's positive: new pictures of the change asked for, in the original's "
               "look.")
    FUNCTION = "apply"
    OUTPUTS = (
        ("CONDITIONING", "conditioning", "The conditioning with the pictures' tokens appended, for KSampler's "
                                         "positive."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING", {"tooltip": "From CLIP Text Encode (SD 1.5): the change wanted, or "
                                 "an empty prompt."}),
                "adapter": (ADAPTER, {"tooltip": "From Load or Train Embedding Adapter."}),
                "images": ("IMAGE", {"tooltip": "The pictures whose look steers the sampler (one, or a batch)."}),
                "strength": float_input(1.0, 0.0, 5.0, "Scale of the appended tokens; 0 appends nothing."),
                "combine": (list(COMBINE), {"default": "per_image", "tooltip": "per_image: one conditioning per "
                            "picture; average: one for all, from the pictures' mean embedding."}),
            },
            "optional": _image_encoder_inputs(),
        }

    def apply(self, conditioning: list, adapter: LoadedAdapter, images: torch.Tensor, strength: float,
              combine: str, clip_vision: Any = None, clip_model: Any = None) -> tuple[list]:
        check_image_batch(images)
        embedder = image_embedder(clip_vision, clip_model)
        embeds = adapter.embed_images(embedder, images, whole_set=combine == "average")
        return (adapter.condition(conditioning, embeds, strength, f"the embedding of {embedder.name!r}"),)


def comfy_draw(model: Any, clip: Any, vae: Any, adapter: LoadedAdapter | None, strength: float,
               negative_prompt: str, steps: int, cfg: float, sampler_name: str, scheduler: str) -> vd.Draw:
    """Drawing with ComfyUI's own text encoder, KSampler and VAE: the change prompt's CONDITIONING with the
    original's tokens, against the negative prompt's with the adapter's 'no picture' tokens; without an adapter
    (the first-LoRA form) the two prompts alone."""
    negative = bridge.encode_text(clip, negative_prompt)
    if adapter is not None:
        negative = adapter.condition(negative, adapter.no_picture(), strength)

    def draw(embedding: torch.Tensor | None, prompt: str, seed: int, count: int, size: tuple[int, int]
             ) -> torch.Tensor:
        positive = bridge.encode_text(clip, prompt)
        if adapter is not None and embedding is not None:
            positive = adapter.condition(positive, embedding, strength)
        return bridge.sample_pictures(model, vae, positive, negative, count, size, seed, steps, cfg, sampler_name,
                                      scheduler)

    return draw


class AtelierVirtualData(StyleNode):
    DESCRIPTION = ("Virtual data in the originals' style with SD 1.5 as the first model: for each original, 'samples' "
                   "pictures per change prompt, drawn by KSampler from the prompt (trigger word, then the change) "
                   "with the original's image-embedding tokens appended, and decoded by the VAE; written with "
                   "caption sidecars (the same text) and a manifest.jsonl into a new version folder (v001, v002, "
                   "...) that Atelier Multiply Dataset, Caption Dataset and Train LoRA can take. The same seed gives "
                   "the same pictures. Wire a LoraLoader between Load Checkpoint and this node to sample an SD already "
                   "fine-tuned on the originals (the seed's other form of the first model). Refused before any "
                   "drawing when the pictures cannot fit on the disk.")
    EXAMPLE = ("Load Checkpoint (SD 1.5) into model, clip and vae, Atelier Load Embedding Adapter, the image encoder "
               "it was trained with (Load CLIP Vision) and the originals from Atelier Load Image Folder (images and "
               "dataset); changes 'in a forest' and 'at night', samples 2, trigger 'sks': four originals give 16 "
               "virtual pictures plus the originals in output/atelier/virtual/v001, for Train LoRA's folder.")
    FUNCTION = "run"
    OUTPUT_NODE = True
    OUTPUTS = (
        ("IMAGE", "preview", "The first original's virtual pictures (up to 8)."),
        ("STRING", "folder", "The version folder written."),
        ("INT", "files", "How many pictures were written."),
        ("STRING", "report", "What was written and how."),
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        samplers, schedulers = bridge.sampler_choices()
        d = vd.VirtualDataSettings(changes=("-",))
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "SD 1.5 from Load Checkpoint (through a LoraLoader for a first LoRA "
                          "fine-tuned on the originals)."}),
                "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP; encodes the change prompts."}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE; decodes the pictures."}),
                "images": ("IMAGE", {"tooltip": "The originals (Load Image Folder's images)."}),
                "changes": ("STRING", {"default": DEFAULT_CHANGES, "multiline": True, "tooltip": "Change prompts, "
                            "one per line: what should differ (content, pose, setting); the original gives the "
                            "look."}),
                "samples": int_input(d.samples, 1, 64, "Pictures per original and change prompt."),
                "seed": seed_input("Seed of every picture (each original and change draws from its own seed "
                                   "derived from this one)."),
                "steps": int_input(25, 1, 150, "KSampler steps."),
                "cfg": float_input(7.0, 0.0, 30.0, "Classifier-free guidance scale.", 0.1),
                "sampler_name": (samplers, {"default": "dpmpp_2m", "tooltip": "KSampler's sampler."}),
                "scheduler": (schedulers, {"default": "karras", "tooltip": "KSampler's scheduler."}),
                "width": int_input(d.width, 64, 2048, "Picture width.", 8),
                "height": int_input(d.height, 64, 2048, "Picture height.", 8),
                "strength": float_input(1.0, 0.0, 5.0, "Scale of the original's tokens; 0: the change prompt alone."),
                "trigger": ("STRING", {"default": d.trigger, "tooltip": "Trigger word naming the originals' style, "
                            "put before each change prompt (in the prompt and the caption)."}),
                "negative_prompt": ("STRING", {"default": "", "tooltip": "What the pictures should not show."}),
                "subfolder": ("STRING", {"default": "atelier/virtual", "tooltip": "Inside ComfyUI's output folder; "
                              "each run adds a new vNNN folder here."}),
                "include_original": ("BOOLEAN", {"default": d.include_original, "tooltip": "Also write each "
                                     "original (with its caption)."}),
            },
            "optional": {
                "adapter": (ADAPTER, {"tooltip": "From Load or Train Embedding Adapter: the diffusion form, each "
                            "original's look given by its image embedding. Leave it out for the first-LoRA form "
                            "(model and clip already fine-tuned on the originals, say Train LoRA's outputs): the "
                            "change prompts alone."}),
                **_image_encoder_inputs(),
                "dataset": (DATASET, {"tooltip": "Names and captions from Load Image Folder; without it files are "
                                      "named image_0001..."}),
            },
        }

    def run(self, model: Any, clip: Any, vae: Any, images: torch.Tensor, changes: str,
            samples: int, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, width: int,
            height: int, strength: float, trigger: str, negative_prompt: str, subfolder: str, include_original: bool,
            adapter: LoadedAdapter | None = None, clip_vision: Any = None, clip_model: Any = None,
            dataset: DatasetInfo | None = None) -> tuple[Any, ...]:
        check_image_batch(images)
        if adapter is None and (clip_vision is not None or clip_model is not None):
            raise ValueError("an image encoder is wired but no adapter: wire Atelier Load Embedding Adapter too (the "
                             "diffusion form), or unwire the encoder (the first-LoRA form draws from the prompts)")
        settings = vd.VirtualDataSettings(vd.parse_changes(changes), samples, width, height, seed, trigger,
                                          include_original)
        originals = originals_from_batch(images, dataset)
        parent = safe_subfolder(bridge.output_directory(), subfolder)
        vd.check_disk(parent, settings.pictures(len(originals)), width, height)  # before the image encoder runs
        embeds = None if adapter is None else adapter.embed_images(image_embedder(clip_vision, clip_model), images)
        draw = comfy_draw(model, clip, vae, adapter, strength, negative_prompt, steps, cfg, sampler_name, scheduler)
        details = {"steps": steps, "guidance": cfg, "strength": strength, "negative": negative_prompt,
                   "sampler": f"ComfyUI {sampler_name} {scheduler}", "adapter": adapter and adapter.file}
        written = vd.write_virtual_data(originals, embeds, settings, draw, parent, details,
                                        bridge.progress(len(originals) * len(settings.prompts), "virtual data"))
        first = [f for f, r in zip(written.files, written.records)
                 if r["stem"] == written.records[0]["stem"] and r["variant"] != "original"]
        preview = torch.stack([load_image(f) for f in first[:8]])
        report = (f"wrote {len(written.files)} pictures to {written.folder}: {len(originals)} originals x "
                  f"{len(settings.prompts)} change prompts x {samples} samples"
                  f"{' + the originals' if include_original else ''}"
                  f"{'' if adapter else '; no adapter: drawn from the change prompts alone (the first-LoRA form)'}")
        return preview, str(written.folder), len(written.files), report


NODE_CLASS_MAPPINGS = {
    "AtelierImageConditioning": AtelierImageConditioning,
    "AtelierVirtualData": AtelierVirtualData,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierImageConditioning": "Atelier Image to Conditioning",
    "AtelierVirtualData": "Atelier Virtual Data (SD 1.5)",
}
