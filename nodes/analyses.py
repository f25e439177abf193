"""Nodes of the curator's analyses: one node per analysis of a work (colour, emotion, style by templates, objects,
intent, space from the text), each giving its JSON record and, where it helps, a picture of what it found."""
from __future__ import annotations

from .declare import AtelierNode


class AnalysisNode(AtelierNode):
    CATEGORY = "Atelier/Curate/Analyses"


NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
