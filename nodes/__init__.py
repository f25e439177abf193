"""The ComfyUI face of the pack: node classes only, one module per part."""
from . import (
    analyses,
    audio,
    augmentation,
    captioner,
    curator,
    dual_encoder,
    fid,
    lora,
    sound_video,
    story,
    style,
    style_diffusion,
)

_PARTS = (augmentation, style, style_diffusion, lora, fid, curator, dual_encoder, analyses, captioner, story, audio,
          sound_video)
NODE_CLASS_MAPPINGS = {k: v for part in _PARTS for k, v in part.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: v for part in _PARTS for k, v in part.NODE_DISPLAY_NAME_MAPPINGS.items()}
