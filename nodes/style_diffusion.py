"""The style part's diffusion form (the seed's first model as latent diffusion): SD 1.5 conditioned on an original's
image embedding through the embedding adapter, as conditioning and as a folder of virtual data in the originals'
style. Kept beside nodes/style.py (the AdaIN form) under the same category."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core.curator.pixels import check_image_batch
from ..core.sd15.embedding_adapter import LoadedAdapter
from .audio import ADAPTER, _image_encoder_inputs, image_embedder
from .augmentation import _float
from .style import CATEGORY

COMBINE = ("per_image", "average")


class AtelierImageConditioning:
    DESCRIPTION = ("Append the embedding adapter's tokens for pictures to a CONDITIONING (any prompt's, even an empty "
                   "one): image-only conditioning, no sound needed. 'per_image' gives one conditioning per picture "
                   "(use a latent batch of the same size); 'average' steers every image by the pictures' mean "
                   "embedding (the style of the whole set). An adapter trained with another image encoder is refused, "
                   "naming both.")
    EXAMPLE = ("Wire CLIP Text Encode ('in a forest, at night'), Atelier Load Embedding Adapter, an original from Load "
               "Image and the image encoder the adapter was trained with (Load CLIP Vision) into this node, strength "
               "1, and its output into KSampler's positive: new pictures of the change asked for, in the original's "
               "look.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The conditioning with the pictures' tokens appended, for KSampler's positive.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING", {"tooltip": "From CLIP Text Encode (SD 1.5): the change wanted, or "
                                 "an empty prompt."}),
                "adapter": (ADAPTER, {"tooltip": "From Load or Train Embedding Adapter."}),
                "images": ("IMAGE", {"tooltip": "The pictures whose look steers the sampler (one, or a batch)."}),
                "strength": _float(1.0, 0.0, 5.0, "Scale of the appended tokens; 0 appends nothing."),
                "combine": (list(COMBINE), {"default": "per_image", "tooltip": "per_image: one conditioning per "
                            "picture; average: one for all, from the pictures' mean embedding."}),
            },
            "optional": _image_encoder_inputs(),
        }

    def apply(self, conditioning: list, adapter: LoadedAdapter, images: torch.Tensor, strength: float,
              combine: str, clip_vision: Any = None, clip_model: Any = None) -> tuple[list]:
        check_image_batch(images)
        embedder = image_embedder(clip_vision, clip_model)
        embeds = adapter.embed_images(embedder, images)
        if combine == "average":
            embeds = F.normalize(embeds.mean(dim=0, keepdim=True), dim=-1)  # the adapter takes unit embeddings
        return (adapter.condition(conditioning, embeds, strength, f"the embedding of {embedder.name!r}"),)


NODE_CLASS_MAPPINGS = {
    "AtelierImageConditioning": AtelierImageConditioning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierImageConditioning": "Atelier Image to Conditioning",
}
