"""The CLIP taxonomy curator: taxonomies, image-text encoders (CLIP, Korean CLIP, dual encoders built from parts),
pixels, the image index, zero-shot labels, curating a folder, retrieval and the FAISS vector search under both;
embedding and captioning a collection on a Ray cluster."""
