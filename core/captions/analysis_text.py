"""The curator's sentences from the six analyses (colour, emotion, style, objects, intent, space), in English or
Korean, from fixed patterns: every fact comes from an analysis record (``record()`` of core/analyses), none is
invented, and an analysis that is missing is simply left out."""
from __future__ import annotations

from functools import lru_cache
from pathlib import PurePath
from typing import Any

from . import korean

ANALYSES = ("colour", "emotion", "style", "objects", "intent", "space")
LANGUAGES = ("en", "ko")
PALETTE_COLOURS = 3  # the palette colours a paragraph names (the record keeps them all)
SUMMARY_LABELS = {
    "en": {"artist_note": "Summary of the artist\u2019s note", "expert_review": "Summary of the expert review"},
    "ko": {"artist_note": "작가 노트 요약", "expert_review": "전문가 평론 요약"},
}


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    return language


def check_analyses(analyses: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The analyses that are there (``None`` ones dropped); an unknown key or a record that is not an object is an
    error naming it."""
    unknown = set(analyses) - set(ANALYSES)
    if unknown:
        raise ValueError(f"unknown analysis/analyses {', '.join(sorted(unknown))}; known: {', '.join(ANALYSES)}")
    for name, record in analyses.items():
        if record is not None and not isinstance(record, dict):
            raise ValueError(f"the {name} analysis must be its JSON record (an object), not {type(record).__name__}")
    return {name: analyses[name] for name in ANALYSES if analyses.get(name) is not None}


@lru_cache(maxsize=4)
def _shipped_names(language: str) -> dict[str, str]:
    """Label id -> display name in ``language`` over the shipped taxonomies (the first taxonomy naming an id
    wins), so records that keep label ids read in Korean too."""
    from ..curator.taxonomy import load_taxonomy, shipped_taxonomies

    names: dict[str, str] = {}
    for taxonomy in shipped_taxonomies():
        for label in load_taxonomy(taxonomy).labels():
            names.setdefault(label.id, label.name(language))
    return names


def label_name(label_id: str, language: str, fallback: str | None = None) -> str:
    """A label id's display name: the shipped taxonomies' in ``language`` (for Korean), else ``fallback`` (the
    record's own name), else the id with spaces."""
    if language != "en" and label_id in _shipped_names(language):
        return _shipped_names(language)[label_id]
    return fallback or label_id.replace("_", " ")


def join_en(words: list[str]) -> str:
    """``a, b and c``."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def article(word: str) -> str:
    """``a cafe``, ``an office``; a word in another script as it is."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word if word.isascii() else word


def _emotion_readings(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """(fused, picture, text) readings of an emotion record (a lone reading counts as the fused one)."""
    if "fused" in record:
        return record["fused"], record.get("picture"), record.get("text")
    return record, None, None


def _step(reading: dict[str, Any], language: str) -> str:
    return str(reading.get("step_ko") or reading["step"]) if language == "ko" else str(reading["step"])


def _space_names(record: dict[str, Any], language: str) -> tuple[str | None, str | None]:
    named = {e["space"]: e.get("name") for e in [*record.get("from_text", []), *record.get("from_picture", [])]}
    return tuple(label_name(c, language, named.get(c)) if c else None  # type: ignore[return-value]
                 for c in (record.get("text_choice"), record.get("picture_choice")))


def colour_sentences(record: dict[str, Any], language: str) -> list[str]:
    out = []
    words = list(record.get("words_ko") or []) if language == "ko" else list(record.get("words") or [])
    gap = " " if language == "en" else ""  # Korean puts the share's bracket right after the colour
    palette = [f"{c['hex']}{gap}({round(100 * c['share'])}%)" for c in record.get("palette", [])[:PALETTE_COLOURS]]
    if language == "ko":
        if words:
            out.append(f"{' '.join(korean.connective(w) for w in words[:-1])} {words[-1]} 색조가 두드러진다.".lstrip())
        if palette:
            out.append(f"주요 색은 비중 순으로 {korean.copula(', '.join(palette))}.")
    else:
        if words:
            out.append(f"Its colour tone is {join_en(words)}.")
        if palette:
            out.append(f"Its main colours are {join_en(palette)}.")
    return out


def emotion_sentences(record: dict[str, Any], language: str) -> list[str]:
    fused, picture, text = _emotion_readings(record)
    numbers = (f"valence {fused['valence']:.2f}, arousal {fused['arousal']:.2f}" if language == "en" else
               f"정서가 {fused['valence']:.2f}, 각성도 {fused['arousal']:.2f}")
    if language == "ko":
        out = [f"작품은 {_step(fused, language)} 정서를 자아낸다({numbers})."]
    else:
        out = [f"Its emotional tone is {_step(fused, language)} ({numbers})."]
    if picture and text:
        seen, read = _step(picture, language), _step(text, language)
        if picture["step"] == text["step"]:
            out.append("그림과 글에서 읽은 정서가 일치한다." if language == "ko" else
                       "The picture and the text agree on it.")
        else:
            out.append(f"그림에서는 {seen} 정서가, 글에서는 {read} 정서가 읽힌다." if language == "ko" else
                       f"The picture reads as {seen}, the text as {read}.")
    return out


def style_sentences(record: dict[str, Any], language: str) -> list[str]:
    sentence = " ".join(str(record.get("sentence") or "").split())
    if not sentence:
        return []
    return [sentence if sentence[-1] in ".!?。" else sentence + "."]


def objects_sentences(record: dict[str, Any], language: str) -> list[str]:
    main = [label_name(label, language) for label in record.get("main", [])]
    auxiliary = [label_name(label, language) for label in record.get("auxiliary", [])]
    out = []
    if language == "ko":
        if main:
            out.append(f"주된 대상은 {korean.copula(korean.join(main))}.")
        if auxiliary:
            out.append(f"보조 대상으로 {korean.josa(korean.join(auxiliary), '이', '가')} 보인다.")
    else:
        # "the" reads right before any label, count noun or not ("the cat", "the water", "the flowers")
        if main:
            out.append(f"Its main object{'s are' if len(main) > 1 else ' is'} {join_en([f'the {m}' for m in main])}.")
        if auxiliary:
            out.append(f"Also present {'are' if len(auxiliary) > 1 else 'is'} "
                       f"{join_en([f'the {a}' for a in auxiliary])}.")
    return out


def intent_sentences(record: dict[str, Any], language: str) -> list[str]:
    out = []
    for field, label in SUMMARY_LABELS[language].items():
        part = record.get(field)
        if part and str(part.get("summary") or "").strip():
            out.append(f"{label}: \u201c{' '.join(str(part['summary']).split())}\u201d")
    return out


def space_sentences(record: dict[str, Any], language: str) -> list[str]:
    by_text, by_picture = _space_names(record, language)
    if not by_text:
        return []
    if language == "ko":
        if by_picture is None:
            return [f"글로 보면 {korean.josa(by_text, '이', '가')} 전시 공간으로 어울린다."]
        if by_picture == by_text:
            return [f"글과 그림 모두 {korean.josa(by_text, '을', '를')} 전시 공간으로 가리킨다."]
        return [f"글로는 {by_text}, 그림으로는 {korean.josa(by_picture, '이', '가')} 전시 공간으로 어울린다."]
    if by_picture is None:
        return [f"By its text, it suits {article(by_text)}."]
    if by_picture == by_text:
        return [f"By its text and its picture alike, it suits {article(by_text)}."]
    return [f"By its text it suits {article(by_text)}; by its picture, {article(by_picture)}."]


WRITERS = {"colour": colour_sentences, "emotion": emotion_sentences, "style": style_sentences,
           "objects": objects_sentences, "intent": intent_sentences, "space": space_sentences}


def analysis_sentences(analyses: dict[str, dict[str, Any]], language: str) -> list[str]:
    """The sentences of every analysis there is, in the order of ``ANALYSES``."""
    return [s for name in ANALYSES if name in analyses for s in WRITERS[name](analyses[name], language)]


def analysis_tags(analyses: dict[str, dict[str, Any]], language: str) -> list[str]:
    """Hashtag words: tone words, the fused emotion step, main objects, the best style template's name, the
    space chosen by the text."""
    tags: list[str] = []
    if colour := analyses.get("colour"):
        tags += list(colour.get("words_ko") or []) if language == "ko" else list(colour.get("words") or [])
    if emotion := analyses.get("emotion"):
        tags.append(_step(_emotion_readings(emotion)[0], language))
    if objects := analyses.get("objects"):
        tags += [label_name(label, language) for label in objects.get("main", [])]
    if (style := analyses.get("style")) and style.get("matches"):
        tags.append(PurePath(str(style["matches"][0]["template"])).stem.replace("_", " "))
    if (space := analyses.get("space")) and (by_text := _space_names(space, language)[0]):
        tags.append(by_text)
    return tags
