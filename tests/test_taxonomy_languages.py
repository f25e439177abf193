"""Per-language prompts, synonyms and templates in taxonomies, and the label bank a text tower's languages pick."""
from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import torch
import yaml

from atelier.core.curator.taxonomy import (
    DEFAULT_LANGUAGE_TEMPLATES,
    SHIPPED,
    TaxonomyError,
    load_taxonomy,
    parse_taxonomy,
    shipped_taxonomies,
)
from atelier.core.curator.zero_shot import build_label_bank, prompt_report

ROOMS = """\
name: rooms
templates: {en: ["a photo of {}."], ko: ["{}의 사진."]}
groups:
  space:
    templates: ["art hung in {}."]
    labels:
      bedroom: {display: {en: bedroom, ko: 침실}, prompts: {en: [a bedroom], ko: [침실, 잠자는 방]}}
      kitchen: {display: {en: kitchen, ko: 부엌}, prompts: [a kitchen]}
      attic: {prompts: {en: [an attic]}, synonyms: {en: [a loft], ko: [다락방]}}
      cellar: {prompts: [a cellar]}
  mood:
    templates: {ko: ["{} 분위기의 그림."]}
    labels:
      calm: {display: {en: calm, ko: 차분한}}
"""


class FakeClip:
    """Deterministic unit vectors per text, reading ``languages``; remembers what it was asked to embed."""

    logit_scale = 100.0
    fingerprint = "fake"

    def __init__(self, languages: tuple[str, ...]) -> None:
        self.languages = languages
        self.asked: list[str] = []

    def vector(self, text: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(text.encode("utf-8")))
        return torch.nn.functional.normalize(torch.randn(8, generator=generator), dim=0)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        self.asked += texts
        return torch.stack([self.vector(t) for t in texts])


def _error(text: str) -> str:
    with pytest.raises(TaxonomyError) as info:
        parse_taxonomy(text, "방.yaml")
    return str(info.value)


def test_prompts_synonyms_and_templates_per_language() -> None:
    tax = parse_taxonomy(ROOMS)
    space, mood = tax.groups["space"], tax.groups["mood"]
    bedroom = space.labels["bedroom"]
    assert bedroom.prompts == ["a bedroom"] and bedroom.prompt_sets["ko"] == ["침실", "잠자는 방"]
    # a group's plain list is its English templates; its Korean ones come from the file's top level
    assert space.template_sets == {"en": ["art hung in {}."], "ko": ["{}의 사진."]}
    assert mood.template_sets == {"en": ["a photo of {}."], "ko": ["{} 분위기의 그림."]}
    assert bedroom.texts(space.templates_in("ko"), "ko") == ["침실의 사진.", "잠자는 방의 사진."]
    attic = space.labels["attic"]
    assert attic.synonyms == ["a loft", "다락방"] and attic.languages == ("en", "ko")
    assert attic.texts(["{}"], "ko") == ["다락방"]  # no Korean name or prompt: its Korean synonym alone
    assert tax.resolve("다락방") == [("space", "attic")]  # a Korean synonym names the label
    assert tax.prompt_languages() == ("en", "ko")


def test_a_language_without_prompts_falls_back_to_its_display_name_then_to_english() -> None:
    tax = parse_taxonomy(ROOMS)
    space = tax.groups["space"]
    assert space.labels["kitchen"].prompt_sets == {"en": ["a kitchen"], "ko": ["부엌"]}  # the Korean name
    assert space.labels["cellar"].languages == ("en",)  # neither: no Korean texts
    bilingual = ("en", "ko")
    assert space.ensemble("kitchen", bilingual) == {"en": ["art hung in a kitchen."], "ko": ["부엌의 사진."]}
    assert space.ensemble("cellar", bilingual) == {"en": ["art hung in a cellar."]}
    assert space.ensemble("cellar", ("ko",)) == {"en": ["art hung in a cellar."]}  # English stands in
    assert space.ensemble("kitchen", ("en",)) == {"en": ["art hung in a kitchen."]}
    # a language no file gives templates for uses Atelier's defaults for it
    plain = parse_taxonomy("groups:\n  g:\n    labels:\n      sea: {display: {en: sea, ko: 바다}}\n").groups["g"]
    assert plain.templates_in("ko") == list(DEFAULT_LANGUAGE_TEMPLATES["ko"])
    assert plain.ensemble("sea", bilingual)["ko"] == ["바다의 사진.", "바다의 이미지.", "바다의 그림."]


def test_old_files_read_as_before() -> None:
    tax = parse_taxonomy('templates: ["a {}."]\ngroups:\n  g:\n    labels:\n      cat: {prompts: a cat, '
                         "synonyms: [kitty]}\n")
    cat = tax.groups["g"].labels["cat"]
    assert (cat.prompts, cat.synonyms, tax.groups["g"].templates) == (["a cat"], ["kitty"], ["a {}."])
    assert cat.texts(tax.groups["g"].templates) == ["a a cat.", "a kitty."]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("groups:\n  g:\n    labels:\n      cat:\n        prompts: {korean: [고양이]}\n", 5,
     "prompts of 'cat': 'korean' is not a language code"),
    ("groups:\n  g:\n    labels:\n      cat:\n        prompts:\n          en: [a cat]\n          ko: 3\n", 7,
     "prompts of 'cat' in 'ko' must be a text or a list of non-empty texts"),
    ("groups:\n  g:\n    labels:\n      cat:\n        synonyms: {}\n", 5, "synonyms of 'cat' is an empty mapping"),
    ("templates:\n  en: [\"a {}\"]\n  ko: []\ngroups:\n  g:\n    labels: [cat]\n", 3, "templates in 'ko' is empty"),
    ("groups:\n  g:\n    templates:\n      ko: [사진]\n    labels: [cat]\n", 4,
     "template '사진' must hold '{}' exactly once"),
])
def test_bad_language_forms_name_the_file_and_line(text: str, line: int, message: str) -> None:
    error = _error(text)
    assert error.startswith(f"방.yaml, line {line}: ") and message in error, error


def test_the_bank_uses_the_languages_the_text_tower_reads() -> None:
    tax = parse_taxonomy(ROOMS)
    english, bilingual = FakeClip(("en",)), FakeClip(("en", "ko"))
    english_bank, bilingual_bank = build_label_bank(english, tax), build_label_bank(bilingual, tax)
    assert not any("\uac00" <= ch <= "\ud7a3" for text in english.asked for ch in text)  # no Korean at all
    assert "침실의 사진." in bilingual.asked and "a bedroom" not in english.asked
    space = tax.groups["space"]
    for row, label_id in enumerate(english_bank.rows["space"]):  # exactly today's English ensemble
        mean = torch.stack([english.vector(t) for t in space.labels[label_id].texts(space.templates)]).mean(0)
        assert torch.allclose(english_bank.embeddings["space"][row], mean / mean.norm(), atol=1e-6)
    # bilingual: each language's mean, then their mean, renormalised
    english_mean = torch.stack([bilingual.vector("art hung in a bedroom.")]).mean(0)
    korean_mean = torch.stack([bilingual.vector("침실의 사진."), bilingual.vector("잠자는 방의 사진.")]).mean(0)
    expected = (english_mean + korean_mean) / 2
    row = bilingual_bank.rows["space"].index("bedroom")
    assert torch.allclose(bilingual_bank.embeddings["space"][row], expected / expected.norm(), atol=1e-6)
    cellar = bilingual_bank.rows["space"].index("cellar")  # English only: as the English tower has it
    assert torch.allclose(bilingual_bank.embeddings["space"][cellar], english_bank.embeddings["space"][cellar])


def test_cached_texts_stay_right_when_the_towers_languages_change(tmp_path: Path) -> None:
    tax = parse_taxonomy(ROOMS)
    build_label_bank(FakeClip(("en",)), tax, tmp_path)
    clip = FakeClip(("en", "ko"))
    cached = build_label_bank(clip, tax, tmp_path)
    assert clip.asked and all(any("\uac00" <= ch <= "\ud7a3" for ch in t) for t in clip.asked)  # only Korean new
    fresh = build_label_bank(FakeClip(("en", "ko")), tax)
    for group in tax.groups:
        assert torch.allclose(cached.embeddings[group], fresh.embeddings[group], atol=1e-6)


def test_the_report_says_which_prompts_and_why() -> None:
    tax = parse_taxonomy(ROOMS)
    assert prompt_report(tax, ("en",)) == "prompts: en (the text tower reads English)"
    report = prompt_report(tax, ("en", "ko"))
    assert report.startswith("prompts: en+ko (the text tower reads English and Korean); 1 label(s) have no "
                             "Korean prompt or name, so English stands in: space:cellar"), report


@pytest.mark.parametrize("name", shipped_taxonomies())
def test_shipped_taxonomies_have_korean_prompts_and_templates(name: str) -> None:
    raw = yaml.safe_load((SHIPPED / f"{name}.yaml").read_text(encoding="utf-8"))
    tax = load_taxonomy(name)
    for group_name, group in raw["groups"].items():
        templates = tax.groups[group_name].template_sets
        assert templates["ko"] and all(t.count("{}") == 1 for t in templates["ko"]), group_name
        for label_id, spec in group["labels"].items():
            written = spec["prompts"]
            assert isinstance(written, dict) and written.get("ko") and written.get("en"), f"{group_name}:{label_id}"
    assert tax.prompt_languages() == ("en", "ko") and all(
        label.prompt_sets["ko"] and "ko" in label.display for label in tax.labels())
    assert "stands in" not in prompt_report(tax, ("en", "ko"))


@pytest.mark.parametrize("name", shipped_taxonomies())
def test_shipped_taxonomies_follow_the_schema(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = yaml.safe_load((SHIPPED / "schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(yaml.safe_load((SHIPPED / f"{name}.yaml").read_text(encoding="utf-8")), schema)
    with pytest.raises(jsonschema.ValidationError):  # the schema refuses what the parser refuses
        jsonschema.validate({"groups": {"g": {"labels": {"cat": {"prompts": {"korean": ["고양이"]}}}}}}, schema)
