"""Pictures from sound: log-mel features, the audio encoder, paired data, mixing, thumbnails,
video frames and the image-embedding space it aligns with."""
