"""bitsandbytes for training: 8-bit AdamW, and QLoRA's frozen base in 4-bit NF4 with double quantization.

bitsandbytes is optional (``pip install bitsandbytes``); both modes fail with a message naming it
when it is missing, before any long work starts.
"""
from __future__ import annotations

import torch
from torch import nn

from ...core.shared.bitsandbytes_support import require_bitsandbytes


def quantize_linear_nf4(model: nn.Module, compute_dtype: torch.dtype) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a frozen bitsandbytes ``Linear4bit`` holding its weights in
    NF4 with double quantization (QLoRA), quantized on the layer's own device; return how many were replaced.

    Convolutions have no 4-bit form and keep their dtype. Matmuls run in ``compute_dtype``.
    """
    bnb = require_bitsandbytes("QLoRA")
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Linear]  # exactly nn.Linear: an already quantized layer subclasses it
    for parent, name, old in swaps:
        new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=old.bias is not None,
                                compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                                device="meta")
        new.weight = bnb.nn.Params4bit(old.weight.data, requires_grad=False, compress_statistics=True,
                                       quant_type="nf4")
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.data, requires_grad=False)
        setattr(parent, name, new.to(old.weight.device))  # Params4bit quantizes when moved to a device
    model.is_loaded_in_4bit = True  # what peft looks for to wrap these layers with its bitsandbytes LoRA layer
    return len(swaps)
