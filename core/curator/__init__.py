"""The CLIP taxonomy curator: taxonomies, CLIP loading, pixels, the image index, zero-shot
labels, curating a folder and retrieval; embedding and captioning a collection on a Ray cluster."""
