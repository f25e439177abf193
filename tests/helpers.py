"""Test helpers: real photographs from the shipped samples, IMAGE batches, 8-bit views."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "originals"


def photo(name: str = "chelsea.jpg", size: tuple[int, int] | None = None) -> np.ndarray:
    """A real photograph from the shipped samples as ``[H, W, 3]`` uint8 (alpha dropped)."""
    with Image.open(SAMPLES / name) as img:
        img = img.convert("RGB")
        if size is not None:
            img = img.resize(size, Image.BICUBIC)
        return np.asarray(img).copy()


def as_batch(*arrays: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` arrays to a float IMAGE batch."""
    return torch.from_numpy(np.stack(arrays)).float() / 255.0


def to_u8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
