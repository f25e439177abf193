"""Training on a frozen SD 1.5: the LoRA trainer and its job (runs, checkpoints, samples), cached
latents, the QLoRA base, and the image-embedding adapter's trainer and job."""
