"""Splitting a batch into pieces that suit the device it lives on."""
from __future__ import annotations

from collections.abc import Iterator

import torch

# On a CPU a chain of element-wise ops is bound by memory traffic: pieces that stay in the
# last-level cache run several times faster than one pass over a whole batch.
CPU_CHUNK_BYTES = 8 << 20


def chunks(images: torch.Tensor) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges over the batch: the whole batch on a GPU, cache-sized on a CPU."""
    batch = images.shape[0]
    if images.device.type != "cpu" or batch == 0:
        yield 0, batch
        return
    per_image = max(1, images[0].numel() * 4)  # float32 working copies
    step = max(1, CPU_CHUNK_BYTES // per_image)
    for start in range(0, batch, step):
        yield start, min(batch, start + step)
