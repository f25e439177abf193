"""Stable Diffusion 1.5: single-file checkpoints, the pipeline parts, the CLIP tokenizer,
LoRA files (kohya keys) and the image-embedding adapter."""
