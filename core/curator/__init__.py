"""The CLIP taxonomy curator: taxonomies, CLIP loading, pixels, the image index, zero-shot
labels, curating a folder, retrieval and the FAISS vector search under both."""
