"""What every node module declares the same way: the node base class, widget specs and model-file choices.

Each node family (a module of nodes/) subclasses ``AtelierNode`` once with its category, as ComfyUI core's
``comfy_extras`` families share a base class."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from . import bridge

Widget = tuple[Any, dict[str, Any]]
SEED_MAX = 2**31 - 1
DEVICE_INPUT: Widget = (["auto", "cpu"], {"default": "auto", "tooltip": "auto: ComfyUI's GPU when there is one."})


class AtelierNode:
    """A node declares its outputs once, as (type, name, tooltip), so the three tuples ComfyUI reads
    (RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS) cannot drift apart; the family base gives CATEGORY."""

    CATEGORY: ClassVar[str]
    OUTPUTS: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "OUTPUTS" in cls.__dict__:
            cls.RETURN_TYPES = tuple(kind for kind, _, _ in cls.OUTPUTS)
            cls.RETURN_NAMES = tuple(name for _, name, _ in cls.OUTPUTS)
            cls.OUTPUT_TOOLTIPS = tuple(tip for _, _, tip in cls.OUTPUTS)


def int_input(default: int, lo: int, hi: int, tip: str, step: int = 1) -> Widget:
    return ("INT", {"default": default, "min": lo, "max": hi, "step": step, "tooltip": tip})


def float_input(default: float, lo: float, hi: float, tip: str, step: float = 0.01) -> Widget:
    return ("FLOAT", {"default": default, "min": lo, "max": hi, "step": step, "tooltip": tip})


def color_input(default: str, tip: str) -> Widget:
    return ("STRING", {"default": default, "tooltip": tip + " ('#rrggbb' or 'r,g,b')."})


def seed_input(tip: str, largest: int = SEED_MAX) -> Widget:
    return ("INT", {"default": 0, "min": 0, "max": largest, "control_after_generate": True, "tooltip": tip})


def model_input(found: list[str], default: str, tip: str) -> Widget:
    """A model list that always offers the default name (bundled workflows use it before the file exists)."""
    return (found if default in found else [default, *found], {"default": default, "tooltip": tip})


class ModelFileLoader(AtelierNode):
    """A loader of one .safetensors file that an Atelier trainer writes into a registered model folder; each
    subclass says which folder and defines ``load`` with its widget's name."""

    FUNCTION = "load"
    KEY: ClassVar[Callable[[], str]]  # registers the model folder and returns its key
    DEFAULT: ClassVar[str]  # the trainer's default file name
    WIDGET: ClassVar[str]
    TOOLTIP: ClassVar[str]
    WHAT: ClassVar[str]  # the missing-file error's name for the file, and what to do about it
    HOW: ClassVar[str]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        files = [f for f in bridge.model_files(cls.KEY()) if f.endswith(".safetensors")]
        return {"required": {cls.WIDGET: model_input(files, cls.DEFAULT, cls.TOOLTIP)}}

    @classmethod
    def find(cls, name: str) -> Path:
        return bridge.find_model_file(cls.KEY(), name, cls.WHAT, cls.HOW)
