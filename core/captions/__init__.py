"""Captions and curation text: BLIP-2, the curator's text and JSON from the analyses (template, BLIP-2 and SeqGAN
writers, English and Korean), the safety filter."""
