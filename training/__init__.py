"""Training loops over core models (LoRA, AdaIN decoder, SeqGAN, audio aligner) live here."""
