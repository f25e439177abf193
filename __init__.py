"""Atelier: grow a few originals into a trained LoRA, a style, a curated and captioned collection.

ComfyUI imports this package under a name of its own, so every import inside it is relative.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
