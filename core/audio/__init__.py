"""Pictures and video from sound: log-mel features, the audio encoder, loudness and position, paired data, mixing,
thumbnails, video frames, video from sound and the image-embedding space it aligns with."""
