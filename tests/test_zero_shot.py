"""Zero-shot scoring arithmetic on fixed numbers: group scores, the hierarchy, exclusive and multi choice."""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch

from atelier.core.curator.taxonomy import parse_taxonomy
from atelier.core.curator.zero_shot import (
    LabelBank,
    build_label_bank,
    choose,
    hierarchical_scores,
    label_embeddings,
    own_scores,
    tags,
    to_json,
)

ROOMS = """\
groups:
  space:
    mode: exclusive
    labels:
      home: {display: {en: home, ko: 집}}
      bedroom: {parent: home, display: {en: bedroom, ko: 침실}}
      living_room: {parent: home, display: {en: living room, ko: 거실}}
      bunk_room: {parent: bedroom}
      office: {display: {en: office, ko: 사무실}}
  mood:
    mode: multi
    score: cosine
    threshold: 0.5
    labels:
      calm: {display: {en: calm, ko: 차분한}}
      cozy: {display: {en: cozy, ko: 아늑한}}
      loud: {display: {en: loud, ko: 시끄러운}, threshold: 0.05}
"""


def _group(text: str = ROOMS, name: str = "space"):
    return parse_taxonomy(text).groups[name]


def _scores(group, values: dict[str, float]) -> tuple[list[str], torch.Tensor]:
    rows = list(group.labels)
    return rows, torch.tensor([[values[r] for r in rows]], dtype=torch.float64)


def test_softmax_own_scores_are_clip_probabilities() -> None:
    group = _group()
    cos = torch.tensor([[0.21, 0.25, 0.19, 0.30, 0.22], [0.1, 0.1, 0.1, 0.1, 0.1]])
    own = own_scores(cos, group, 100.0)
    assert torch.allclose(own, torch.softmax(100.0 * cos, dim=-1), atol=1e-6)
    assert own.dtype == cos.dtype
    assert torch.allclose(own.sum(-1), torch.ones(2), atol=1e-6)
    assert torch.allclose(own[1], torch.full((5,), 0.2), atol=1e-6)


def test_cosine_own_scores_are_the_similarities() -> None:
    group = _group(name="mood")
    cos = torch.tensor([[0.3, -0.1, 0.6]])
    own = own_scores(cos, group, 100.0)
    assert torch.equal(own, cos)
    own[0, 0] = 9.0
    assert cos[0, 0] == pytest.approx(0.3)  # a copy, not the caller's tensor


def test_softmax_parent_score_is_its_subtree_probability() -> None:
    group = _group()
    rows, own = _scores(group, {"home": 0.1, "bedroom": 0.2, "living_room": 0.25, "bunk_room": 0.05, "office": 0.4})
    tree = dict(zip(rows, hierarchical_scores(own, group, rows)[0].tolist()))
    assert tree["bunk_room"] == pytest.approx(0.05)
    assert tree["bedroom"] == pytest.approx(0.25)  # own + grandchild
    assert tree["living_room"] == pytest.approx(0.25)
    assert tree["home"] == pytest.approx(0.1 + 0.2 + 0.05 + 0.25)  # children and grandchildren
    assert tree["office"] == pytest.approx(0.4)


def test_hierarchy_does_not_depend_on_row_order() -> None:
    group = _group()
    rows = ["bunk_room", "office", "living_room", "bedroom", "home"]  # children before parents
    values = {"home": 0.1, "bedroom": 0.2, "living_room": 0.25, "bunk_room": 0.05, "office": 0.4}
    own = torch.tensor([[values[r] for r in rows]])
    tree = dict(zip(rows, hierarchical_scores(own, group, rows)[0].tolist()))
    assert tree["home"] == pytest.approx(0.6) and tree["bedroom"] == pytest.approx(0.25)


def test_cosine_parent_score_is_the_best_in_its_subtree() -> None:
    text = ROOMS.replace("    mode: exclusive\n", "    mode: exclusive\n    score: cosine\n", 1)
    group = _group(text)
    rows, own = _scores(group, {"home": 0.2, "bedroom": 0.22, "living_room": 0.18, "bunk_room": 0.27, "office": 0.1})
    tree = dict(zip(rows, hierarchical_scores(own, group, rows)[0].tolist()))
    assert tree["home"] == pytest.approx(0.27)  # the grandchild's
    assert tree["bedroom"] == pytest.approx(0.27)
    assert tree["living_room"] == pytest.approx(0.18)
    assert tree["office"] == pytest.approx(0.1)
    assert own[0, 0] == pytest.approx(0.2)  # the input is not changed


def _choose(group, values: dict[str, float]) -> list[tuple[str, float]]:
    rows, own = _scores(group, values)
    tree = hierarchical_scores(own, group, rows)
    return choose(group, rows, own[0].tolist(), tree[0].tolist())


def test_exclusive_parent_wins_through_its_children_then_descends() -> None:
    """office has the best single score (0.35), but home's subtree (0.1 + 0.2 + 0.25) beats it; living
    room (0.25) is at least home's own 0.1, so the choice goes down to it."""
    group = _group()
    chosen = _choose(group, {"home": 0.1, "bedroom": 0.2, "living_room": 0.25, "bunk_room": 0.0, "office": 0.35})
    assert [label for label, _ in chosen] == ["living_room"]
    assert chosen[0][1] == pytest.approx(0.25)


def test_exclusive_descends_through_grandchildren() -> None:
    group = _group()
    chosen = _choose(group, {"home": 0.05, "bedroom": 0.1, "living_room": 0.2, "bunk_room": 0.3, "office": 0.35})
    assert chosen == [("bunk_room", pytest.approx(0.3))]


def test_exclusive_stops_at_the_parent_when_no_child_beats_its_own_score() -> None:
    group = _group()
    chosen = _choose(group, {"home": 0.4, "bedroom": 0.15, "living_room": 0.2, "bunk_room": 0.0, "office": 0.25})
    assert chosen == [("home", pytest.approx(0.75))]  # reported with its subtree score


def test_exclusive_descends_when_the_child_ties_the_parents_own_score() -> None:
    group = _group()  # "at least" the parent's own score: a tie goes down
    chosen = _choose(group, {"home": 0.25, "bedroom": 0.125, "living_room": 0.25, "bunk_room": 0.0, "office": 0.375})
    assert chosen == [("living_room", 0.25)]


def test_exclusive_single_best_root_without_children() -> None:
    group = _group()
    chosen = _choose(group, {"home": 0.1, "bedroom": 0.1, "living_room": 0.1, "bunk_room": 0.0, "office": 0.7})
    assert chosen == [("office", pytest.approx(0.7))]


def test_exclusive_under_the_threshold_gives_no_label() -> None:
    text = ROOMS.replace("    mode: exclusive\n", "    mode: exclusive\n    threshold: 0.5\n", 1)
    group = _group(text)
    assert _choose(group, {"home": 0.05, "bedroom": 0.05, "living_room": 0.05, "bunk_room": 0.05, "office": 0.45}) == []
    assert _choose(group, {"home": 0.0, "bedroom": 0.0, "living_room": 0.0, "bunk_room": 0.0, "office": 0.5}) == \
        [("office", pytest.approx(0.5))]


def test_exclusive_falls_back_to_the_deepest_label_that_clears_the_threshold() -> None:
    """Down to living room (0.3 >= home's own 0.1), which is under 0.5; home's subtree (0.65) clears it."""
    text = ROOMS.replace("    mode: exclusive\n", "    mode: exclusive\n    threshold: 0.5\n", 1)
    chosen = _choose(_group(text), {"home": 0.1, "bedroom": 0.25, "living_room": 0.3, "bunk_room": 0.0,
                                    "office": 0.35})
    assert chosen == [("home", pytest.approx(0.65))]


def test_exclusive_label_threshold_overrides_the_groups() -> None:
    text = ROOMS.replace("      office: {display: {en: office, ko: 사무실}}",
                         "      office: {display: {en: office, ko: 사무실}, threshold: 0.8}")
    group = _group(text)
    values = {"home": 0.05, "bedroom": 0.05, "living_room": 0.05, "bunk_room": 0.05, "office": 0.7}
    assert _choose(group, values) == []


def test_multi_keeps_every_label_at_or_over_the_threshold_best_first() -> None:
    group = _group(name="mood")
    rows = ["calm", "cozy", "loud"]
    own = [0.5, 0.7, 0.04]
    assert choose(group, rows, own, own) == [("cozy", 0.7), ("calm", 0.5)]


def test_multi_per_label_threshold_override() -> None:
    group = _group(name="mood")  # loud has its own threshold 0.05
    rows = ["calm", "cozy", "loud"]
    own = [0.49, 0.2, 0.06]
    assert choose(group, rows, own, own) == [("loud", 0.06)]


def test_multi_top_k_keeps_the_best() -> None:
    text = ROOMS.replace("    threshold: 0.5\n", "    threshold: 0.1\n    top_k: 2\n")
    group = _group(text, "mood")
    rows = ["calm", "cozy", "loud"]
    own = [0.3, 0.2, 0.4]
    assert choose(group, rows, own, own) == [("loud", 0.4), ("calm", 0.3)]


def test_multi_reports_a_parent_and_its_child() -> None:
    text = ROOMS.replace("    mode: exclusive\n", "    mode: multi\n    threshold: 0.2\n", 1)
    group = _group(text)
    chosen = _choose(group, {"home": 0.05, "bedroom": 0.12, "living_room": 0.25, "bunk_room": 0.1, "office": 0.55})
    assert [label for label, _ in chosen] == ["office", "home", "living_room", "bedroom"]  # not bunk room (0.1)
    assert dict(chosen)["home"] == pytest.approx(0.52)


# --------------------------------------------------------------------------------------------
# label_embeddings on a hand-built bank
# --------------------------------------------------------------------------------------------

SPACE_OWN = {"home": 0.1, "bedroom": 0.15, "living_room": 0.3, "bunk_room": 0.1, "office": 0.35}
MOOD_COS = {"calm": 0.6, "cozy": 0.7, "loud": 0.02}


def _bank(logit_scale: float = 100.0) -> tuple[LabelBank, torch.Tensor]:
    """One-hot label embeddings in 9 dimensions, and a unit picture whose similarities are chosen so the
    space softmax gives SPACE_OWN exactly and the mood cosines are MOOD_COS."""
    taxonomy = parse_taxonomy(ROOMS)
    eye = torch.eye(9)
    space_rows, mood_rows = list(taxonomy.groups["space"].labels), list(taxonomy.groups["mood"].labels)
    bank = LabelBank(taxonomy, {"space": space_rows, "mood": mood_rows},
                     {"space": eye[:5], "mood": eye[5:8]}, logit_scale)
    picture = torch.zeros(9)
    for i, label in enumerate(space_rows):
        picture[i] = math.log(SPACE_OWN[label]) / logit_scale
    for i, label in enumerate(mood_rows):
        picture[5 + i] = MOOD_COS[label]
    picture[8] = math.sqrt(1.0 - float(picture[:8].pow(2).sum()))
    return bank, picture


def test_label_embeddings_result_shape_and_values() -> None:
    bank, picture = _bank()
    office = torch.zeros(9)
    office[4] = 1.0  # a second picture: right on office, far from every mood
    results = label_embeddings(bank, torch.stack([picture, office]))
    assert len(results) == 2
    first = results[0]
    assert set(first) == {"labels", "scores"}
    assert first["labels"]["space"] == [
        {"label": "living_room", "name": "living room", "score": pytest.approx(0.3, abs=1e-5),
         "path": ["home", "living_room"]}]
    assert [c["label"] for c in first["labels"]["mood"]] == ["cozy", "calm"]
    assert first["labels"]["mood"][1] == {"label": "calm", "name": "calm", "score": pytest.approx(0.6, abs=1e-6),
                                          "path": ["calm"]}
    assert first["scores"]["space"] == pytest.approx(
        {"home": 0.65, "bedroom": 0.25, "living_room": 0.3, "bunk_room": 0.1, "office": 0.35}, abs=1e-5)
    assert first["scores"]["mood"] == pytest.approx(MOOD_COS, abs=1e-6)
    assert [c["label"] for c in results[1]["labels"]["space"]] == ["office"]
    assert results[1]["labels"]["mood"] == []  # cosines 0, under every threshold
    assert json.loads(to_json(results))[0]["labels"]["space"][0]["path"] == ["home", "living_room"]


def test_label_embeddings_names_in_the_chosen_language_and_tags() -> None:
    bank, picture = _bank()
    result = label_embeddings(bank, picture[None], language="ko")[0]
    assert result["labels"]["space"][0]["name"] == "거실"
    assert tags(result, bank.taxonomy, "ko") == ["집", "거실", "아늑한", "차분한"]
    assert tags(result, bank.taxonomy, "en") == ["home", "living room", "cozy", "calm"]
    assert "거실" in to_json([result])  # Korean kept readable in the JSON


def test_tags_list_a_shared_parent_once() -> None:
    bank, _ = _bank()
    result = {"labels": {"space": [{"label": "bunk_room", "path": ["home", "bedroom", "bunk_room"]},
                                   {"label": "living_room", "path": ["home", "living_room"]}],
                         "mood": [{"label": "calm", "path": ["calm"]}]},
              "scores": {}}
    assert tags(result, bank.taxonomy, "ko") == ["집", "침실", "bunk room", "거실", "차분한"]


# --------------------------------------------------------------------------------------------
# build_label_bank with a fake CLIP
# --------------------------------------------------------------------------------------------


class FakeClip:
    """Deterministic unit vectors per text; remembers what it was asked to embed."""

    logit_scale = 42.0
    fingerprint = "fake-clip"

    def __init__(self, dim: int = 6) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def vector(self, text: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        return torch.nn.functional.normalize(torch.randn(self.dim, generator=generator), dim=0)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        return torch.stack([self.vector(t) for t in texts])


SHARED = """\
templates: ["a photo of {}.", "art of {}."]
groups:
  animal:
    labels:
      cat: {prompts: [a cat], synonyms: [kitty]}
      dog: {prompts: [a dog, a puppy]}
  pet_name:
    mode: multi
    labels:
      kitty: {}
      rex: {prompts: [a dog]}
"""


def test_build_label_bank_averages_each_prompt_ensemble() -> None:
    taxonomy = parse_taxonomy(SHARED)
    clip = FakeClip()
    bank = build_label_bank(clip, taxonomy)
    assert bank.logit_scale == 42.0 and bank.taxonomy is taxonomy
    assert bank.rows == {"animal": ["cat", "dog"], "pet_name": ["kitty", "rex"]}
    for group in taxonomy.groups.values():
        assert bank.embeddings[group.name].shape == (2, clip.dim)
        for i, label_id in enumerate(bank.rows[group.name]):
            texts = group.labels[label_id].texts(group.templates)
            mean = torch.stack([clip.vector(t) for t in texts]).mean(0)
            expected = mean / mean.norm()
            assert torch.allclose(bank.embeddings[group.name][i], expected, atol=1e-6), label_id
    assert torch.allclose(bank.embeddings["animal"].norm(dim=-1), torch.ones(2), atol=1e-6)


def test_build_label_bank_embeds_each_distinct_text_once() -> None:
    taxonomy = parse_taxonomy(SHARED)
    clip = FakeClip()
    build_label_bank(clip, taxonomy)
    asked = [t for call in clip.calls for t in call]
    every = {t for g in taxonomy.groups.values() for label in g.labels.values() for t in label.texts(g.templates)}
    assert len(asked) == len(set(asked))  # 'a photo of kitty.' and 'a photo of a dog.' are shared
    assert set(asked) == every
    assert len(every) == 8 and len(clip.calls) == 1


def test_label_texts_are_cached_per_text_and_model(tmp_path: Path) -> None:
    taxonomy = parse_taxonomy(SHARED)
    first = build_label_bank(FakeClip(), taxonomy, tmp_path)
    clip = FakeClip()
    again = build_label_bank(clip, taxonomy, tmp_path)
    assert clip.calls == []  # every text from the cache
    for group in taxonomy.groups:
        assert torch.equal(again.embeddings[group], first.embeddings[group])
    grown = parse_taxonomy(SHARED.replace("rex: {prompts: [a dog]}", "rex: {prompts: [a dog, a hound]}"))
    build_label_bank(clip, grown, tmp_path)
    assert sorted(clip.calls[0]) == ["a photo of a hound.", "art of a hound."]  # only the new texts
    other = FakeClip()
    other.fingerprint = "another-clip"
    build_label_bank(other, taxonomy, tmp_path)
    assert len(other.calls[0]) == 8  # another model shares nothing


def test_label_of_one_text_is_that_texts_embedding() -> None:
    taxonomy = parse_taxonomy('templates: ["{}"]\ngroups:\n  g:\n    labels: [sun, moon]\n')
    clip = FakeClip()
    bank = build_label_bank(clip, taxonomy)
    assert torch.allclose(bank.embeddings["g"][1], clip.vector("moon"), atol=1e-6)
