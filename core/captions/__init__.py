"""Captions and curation text: BLIP-2, the curator's text and JSON, the safety filter."""
