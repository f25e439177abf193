"""Aligning the audio encoder with the image-embedding space, and its job."""
