"""Fine-tuning an image-text encoder (a CLIP or a vision-text dual encoder) on caption-picture pairs."""
