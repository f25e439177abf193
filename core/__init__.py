"""The engine: image, model and text code that never imports ComfyUI."""
