"""The image dataset tools: reading pictures, preprocessing, transforms and warps,
augmentation, the named variants, Multiply Dataset and the dataset writer."""
