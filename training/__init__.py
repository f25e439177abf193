"""Training loops over core models (LoRA, AdaIN decoder, SeqGAN, audio aligner, image-text encoders) live here."""
