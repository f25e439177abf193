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


def tiny_sd15_folder(root: Path) -> Path:
    """A diffusers SD 1.5 folder with SD 1.5's signature (768-d text, 4 latent channels) but tiny layers
    and random weights, and a byte-level BPE tokenizer made from scratch."""
    import json

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    chars = sorted(ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (root / "tokenizer").mkdir(parents=True)
    vocab_file, merges_file = root / "tokenizer" / "vocab.json", root / "tokenizer" / "merges.txt"
    vocab_file.write_text(json.dumps(vocab))
    merges_file.write_text("#version: 0.2\n")
    try:  # transformers 5 builds from the vocabulary itself, 4 from the files
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    except TypeError:
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)
    tokenizer.save_pretrained(root / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=768, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=77, eos_token_id=len(vocab) - 1,
                                 bos_token_id=len(vocab) - 2)).save_pretrained(root / "text_encoder")
    UNet2DConditionModel(sample_size=8, layers_per_block=1, block_out_channels=(8, 16),
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=768,
                         attention_head_dim=4, norm_num_groups=4).save_pretrained(root / "unet")
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                  sample_size=32).save_pretrained(root / "vae")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(root / "scheduler")
    return root
