"""The curator's analyses of one work: colour from the pixels, emotion, style by template matching, objects,
intent and exhibition space, each a result with a JSON record that the curator's text is written from."""
