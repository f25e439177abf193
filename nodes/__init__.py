"""The ComfyUI face of the pack: node classes only, one module per part."""
from . import augmentation, lora

NODE_CLASS_MAPPINGS = {**augmentation.NODE_CLASS_MAPPINGS, **lora.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**augmentation.NODE_DISPLAY_NAME_MAPPINGS, **lora.NODE_DISPLAY_NAME_MAPPINGS}
