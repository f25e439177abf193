"""Colours given as text by users, and the "most frequent colour" used to fill padding."""
from __future__ import annotations

import torch

RGB = tuple[float, float, float]


def parse_color(text: str) -> RGB:
    """``#rrggbb``, ``#rgb`` or ``r,g,b`` (0-255) to an RGB triple in 0..1."""
    value = text.strip()
    if value.startswith("#"):
        digits = value[1:]
        if len(digits) == 3:
            digits = "".join(ch * 2 for ch in digits)
        if len(digits) == 6:
            try:
                return tuple(int(digits[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
            except ValueError:
                pass
    else:
        parts = [p.strip() for p in value.split(",")]
        if len(parts) == 3 and all(p.isdigit() and int(p) <= 255 for p in parts):
            return tuple(int(p) / 255.0 for p in parts)  # type: ignore[return-value]
    raise ValueError(f"colour {text!r} is not '#rrggbb', '#rgb' or 'r,g,b' with values 0-255")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float 0..1 to uint8 with round-half-up, the quantisation every PNG we write goes through."""
    return images.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)


def most_frequent_color(image: torch.Tensor) -> RGB:
    """The commonest 8-bit RGB value of one ``[H, W, 3]`` image; ties go to the smallest value.

    Counted on 8-bit values so that near-identical floats of one flat background count together,
    the same answer Pillow's ``getcolors`` gives on the saved PNG.
    """
    q = to_uint8(image.reshape(-1, 3)).to(torch.int64)
    packed = (q[:, 0] << 16) | (q[:, 1] << 8) | q[:, 2]
    values, counts = torch.unique(packed, return_counts=True)  # values come back sorted
    best = int(values[torch.argmax(counts)])  # argmax takes the first maximum: the smallest value
    return ((best >> 16) / 255.0, ((best >> 8) & 255) / 255.0, (best & 255) / 255.0)
