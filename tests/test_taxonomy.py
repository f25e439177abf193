"""Taxonomy files: what a valid file means, and errors that point at the line to fix."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from atelier.core.curator.taxonomy import (
    DEFAULT_TEMPLATES,
    TaxonomyError,
    load_taxonomy,
    parse_taxonomy,
    shipped_taxonomies,
)

from helpers import many_labels

ROOMS_YAML = """\
name: rooms
description: rooms and moods
templates: ["a photo of {}.", "art hung in {}."]
groups:
  space:
    display: {en: space, ko: 공간}
    mode: exclusive
    labels:
      home: {display: {en: home, ko: 집}, prompts: [a home], synonyms: [house]}
      bedroom: {parent: home, display: {en: bedroom, ko: 침실}, prompts: [a bedroom]}
      bunk_room: {parent: bedroom, prompts: [a room with bunk beds]}
      office: {display: {en: office, ko: 사무실}, prompts: [an office], synonyms: [workplace], threshold: 0.4}
  mood:
    mode: multi
    score: cosine
    threshold: 0.2
    top_k: 2
    templates: ["a {} picture."]
    labels: [calm, {cozy: {synonyms: [cosy], display: {ko: 아늑한}}}, cheerful]
"""

ROOMS_DICT: dict[str, Any] = {
    "name": "rooms",
    "description": "rooms and moods",
    "templates": ["a photo of {}.", "art hung in {}."],
    "groups": {
        "space": {
            "display": {"en": "space", "ko": "공간"},
            "mode": "exclusive",
            "labels": {
                "home": {"display": {"en": "home", "ko": "집"}, "prompts": ["a home"], "synonyms": ["house"]},
                "bedroom": {"parent": "home", "display": {"en": "bedroom", "ko": "침실"}, "prompts": ["a bedroom"]},
                "bunk_room": {"parent": "bedroom", "prompts": ["a room with bunk beds"]},
                "office": {"display": {"en": "office", "ko": "사무실"}, "prompts": ["an office"],
                           "synonyms": ["workplace"], "threshold": 0.4},
            },
        },
        "mood": {
            "mode": "multi", "score": "cosine", "threshold": 0.2, "top_k": 2, "templates": ["a {} picture."],
            "labels": ["calm", {"cozy": {"synonyms": ["cosy"], "display": {"ko": "아늑한"}}}, "cheerful"],
        },
    },
}


def _shape(taxonomy: Any) -> dict[str, Any]:
    """Everything a taxonomy means, without the source lines (which differ between files)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "line"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip({"name": taxonomy.name, "description": taxonomy.description,
                  "groups": {n: dataclasses.asdict(g) for n, g in taxonomy.groups.items()}})


def _error(text: str, source: str = "rooms.yaml") -> str:
    with pytest.raises(TaxonomyError) as info:
        parse_taxonomy(text, source)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# A valid file
# --------------------------------------------------------------------------------------------


def test_yaml_taxonomy_groups_modes_and_defaults() -> None:
    tax = parse_taxonomy(ROOMS_YAML, "rooms.yaml")
    assert tax.name == "rooms" and tax.description == "rooms and moods"
    assert list(tax.groups) == ["space", "mood"]
    space, mood = tax.groups["space"], tax.groups["mood"]
    assert (space.mode, space.score, space.threshold, space.top_k) == ("exclusive", "softmax", 0.0, 0)
    assert (mood.mode, mood.score, mood.threshold, mood.top_k) == ("multi", "cosine", 0.2, 2)
    assert space.templates == ["a photo of {}.", "art hung in {}."]  # top-level templates inherited
    assert mood.templates == ["a {} picture."]  # the group's own win
    assert space.display == {"en": "space", "ko": "공간"} and mood.display == {"en": "mood"}
    assert list(space.labels) == ["home", "bedroom", "bunk_room", "office"]
    assert list(mood.labels) == ["calm", "cozy", "cheerful"]  # list shorthand, plain and one-key mappings
    assert space.labels["office"].threshold == 0.4 and space.labels["home"].threshold is None


def test_display_names_fall_back_to_english_then_the_id() -> None:
    tax = parse_taxonomy(ROOMS_YAML)
    space, mood = tax.groups["space"], tax.groups["mood"]
    assert space.labels["bedroom"].name("ko") == "침실"
    assert space.labels["bedroom"].name("fr") == "bedroom"
    assert space.labels["bunk_room"].name("ko") == "bunk room"  # no display at all: the id with spaces
    assert mood.labels["cozy"].name("ko") == "아늑한"
    assert mood.labels["cozy"].name("en") == "cozy"
    assert mood.labels["calm"].prompts == ["calm"]  # no prompts: the English display name


def test_hierarchy_links_parents_children_and_ancestors() -> None:
    space = parse_taxonomy(ROOMS_YAML).groups["space"]
    assert space.labels["bedroom"].parent == "home"
    assert space.labels["home"].children == ["bedroom"]
    assert space.labels["bedroom"].children == ["bunk_room"]
    assert [label.id for label in space.roots()] == ["home", "office"]
    assert space.ancestors("bunk_room") == ["home", "bedroom"]
    assert space.ancestors("office") == []


def test_label_texts_cross_prompts_and_synonyms_with_templates() -> None:
    tax = parse_taxonomy(ROOMS_YAML)
    home = tax.groups["space"].labels["home"]
    assert home.texts(tax.groups["space"].templates) == [
        "a photo of a home.", "art hung in a home.", "a photo of house.", "art hung in house."]
    cozy = tax.groups["mood"].labels["cozy"]
    assert cozy.texts(["a {} picture."]) == ["a cozy picture.", "a cosy picture."]


def test_label_texts_drop_repeats_that_differ_only_in_case_or_underscores() -> None:
    tax = parse_taxonomy("groups:\n  g:\n    labels:\n      cafe: {prompts: [Coffee shop], synonyms: [coffee_shop, "
                         "coffee  shop, bistro]}\n")
    assert tax.groups["g"].labels["cafe"].texts(["{}"]) == ["Coffee shop", "bistro"]


def test_default_templates_when_none_are_given() -> None:
    tax = parse_taxonomy("groups:\n  g:\n    labels: [cat]\n")
    assert tax.groups["g"].templates == list(DEFAULT_TEMPLATES)
    assert tax.name == "<taxonomy>"


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "my_rooms.yaml"
    path.write_text("groups:\n  g:\n    labels: [cat]\n", encoding="utf-8")
    assert load_taxonomy(path).name == "my_rooms"


@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_the_same_taxonomy_as_json_parses_identically(tmp_path: Path, ensure_ascii: bool) -> None:
    path = tmp_path / "rooms.json"
    path.write_text(json.dumps(ROOMS_DICT, ensure_ascii=ensure_ascii, indent=2), encoding="utf-8")
    from_json = load_taxonomy(path)
    from_yaml = parse_taxonomy(ROOMS_YAML, "rooms.yaml")
    assert _shape(from_json) == _shape(from_yaml)
    assert from_json.groups["space"].labels["home"].name("ko") == "집"


def test_compact_json_on_one_line_parses() -> None:
    tax = parse_taxonomy(json.dumps(ROOMS_DICT, separators=(",", ":"), ensure_ascii=False), "rooms.json")
    assert _shape(tax) == _shape(parse_taxonomy(ROOMS_YAML))


def test_json_numbers_in_exponent_form_are_numbers() -> None:
    doc = {"groups": {"mood": {"mode": "multi", "threshold": 1e-05, "labels": ["calm"]}}}
    text = json.dumps(doc)
    assert "1e-05" in text
    assert parse_taxonomy(text, "t.json").groups["mood"].threshold == pytest.approx(1e-05)


# --------------------------------------------------------------------------------------------
# Synonyms and references
# --------------------------------------------------------------------------------------------

FOLDING_YAML = """\
groups:
  space:
    labels:
      home: {display: {en: home, ko: 집}, prompts: [a home], synonyms: [house]}
      house: {prompts: [a house, a cottage], synonyms: [dwelling]}
      bedroom: {parent: house, display: {en: bedroom, ko: 침실}}
      office: {synonyms: [workplace]}
  feature:
    mode: multi
    labels: [bedroom, window]
"""


def test_a_label_listed_as_a_synonym_folds_into_the_canonical_label() -> None:
    space = parse_taxonomy(FOLDING_YAML).groups["space"]
    assert list(space.labels) == ["home", "bedroom", "office"]  # 'house' is gone
    home = space.labels["home"]
    assert home.prompts == ["a home", "a house", "a cottage"]
    assert {s.casefold() for s in home.synonyms} == {"house", "dwelling"}
    assert "a photo of a cottage." in home.texts(["a photo of {}."])
    # the folded label's child moves to the canonical label
    assert space.labels["bedroom"].parent == "home"
    assert space.labels["home"].children == ["bedroom"]


def test_folding_works_whichever_label_comes_first() -> None:
    text = "groups:\n  g:\n    labels:\n      house: {prompts: [a house]}\n      home: {synonyms: [house]}\n"
    group = parse_taxonomy(text).groups["g"]
    assert list(group.labels) == ["home"]
    assert group.labels["home"].prompts == ["home", "a house"]


def test_a_folded_label_keeps_its_names_and_threshold() -> None:
    text = ("groups:\n  g:\n    labels:\n      home: {display: {en: home, ko: 집}, synonyms: [house]}\n"
            "      house: {display: {en: house, ko: 주택}, threshold: 0.3}\n")
    taxonomy = parse_taxonomy(text)
    assert taxonomy.resolve("주택") == [("g", "home")]
    assert taxonomy.groups["g"].labels["home"].threshold == 0.3


def test_a_folded_label_with_a_different_parent_is_an_error() -> None:
    text = ("groups:\n  g:\n    labels:\n      indoor: {}\n      outdoor: {}\n      home: {parent: indoor, "
            "synonyms: [house]}\n      house: {parent: outdoor}\n")
    message = _error(text)
    assert "line 7" in message and "'house'" in message and "different parent" in message


def test_a_parent_may_be_named_by_a_synonym() -> None:
    text = "groups:\n  g:\n    labels:\n      home: {synonyms: [dwelling]}\n      bedroom: {parent: Dwelling}\n"
    assert parse_taxonomy(text).groups["g"].labels["bedroom"].parent == "home"


def test_resolve_synonym_qualified_and_korean_display_name() -> None:
    tax = parse_taxonomy(FOLDING_YAML)
    assert tax.resolve("house") == [("space", "home")]
    assert tax.resolve("HOUSE") == [("space", "home")]
    assert tax.resolve("space:workplace") == [("space", "office")]
    assert tax.resolve("집") == [("space", "home")]
    assert tax.resolve("침실") == [("space", "bedroom")]  # only the space label has that Korean name
    assert tax.resolve("bedroom") == [("space", "bedroom"), ("feature", "bedroom")]
    assert tax.resolve("feature:bedroom") == [("feature", "bedroom")]
    assert tax.resolve(" space:home ") == [("space", "home")]


def test_resolve_unknown_label_names_the_group() -> None:
    tax = parse_taxonomy(FOLDING_YAML)
    with pytest.raises(TaxonomyError, match=r"no label 'kitchen' in group 'space'"):
        tax.resolve("space:kitchen")
    with pytest.raises(TaxonomyError, match=r"no label 'kitchen' in any group"):
        tax.resolve("kitchen")
    with pytest.raises(TaxonomyError) as info:
        tax.resolve("rooms:home")
    assert "'rooms'" in str(info.value) and "space, feature" in str(info.value)


# --------------------------------------------------------------------------------------------
# Errors with the line to fix
# --------------------------------------------------------------------------------------------


def test_yaml_syntax_error_names_line_and_column() -> None:
    message = _error("name: x\ngroups:\n  a:\n    labels: [one, two\n  b: 3\n")
    assert message.startswith("rooms.yaml, line 5, column")
    assert "not valid YAML" in message


def test_json_syntax_error_names_the_line() -> None:
    message = _error('{\n "groups": {\n  "a": {"labels": ["one",]}\n }\n}', "rooms.json")
    assert message.startswith("rooms.json, line 3, column")
    assert "not valid JSON" in message


def test_json_errors_after_parsing_name_the_line_too() -> None:
    text = '{\n "groups": {\n  "a": {\n   "labels": ["one"],\n   "thresold": 0.3\n  }\n }\n}\n'
    message = _error(text, "rooms.json")
    assert "line 5" in message and "'thresold'" in message


def test_unknown_key_typo_names_its_line_and_the_allowed_keys() -> None:
    message = _error("groups:\n  a:\n    mode: multi\n    thresold: 0.2\n    labels: [one, two]\n")
    assert "line 4" in message and "unknown key 'thresold'" in message and "threshold" in message


def test_unknown_label_key_names_its_line() -> None:
    message = _error("groups:\n  a:\n    labels:\n      one:\n        prompt: [a one]\n")
    assert "line 5" in message and "'prompt'" in message and "prompts" in message


def test_unknown_top_level_key_names_its_line() -> None:
    message = _error("name: x\ngroup:\n  a:\n    labels: [one]\n")
    assert "line 2" in message and "'group'" in message


def test_label_in_two_exclusive_groups_names_both_groups() -> None:
    message = _error("groups:\n  a:\n    labels: [one, two]\n  b:\n    labels:\n      three: {}\n      One: {}\n")
    assert "line 7" in message and "(line 3)" in message
    assert "'a'" in message and "'b'" in message and "two exclusive groups" in message


def test_label_in_two_exclusive_groups_block_list_names_the_items_line() -> None:
    message = _error("groups:\n  a:\n    labels: [one, two]\n  b:\n    labels:\n      - three\n      - One\n")
    assert "two exclusive groups" in message
    assert "line 7" in message


def test_a_label_may_be_in_an_exclusive_and_a_multi_group() -> None:
    tax = parse_taxonomy("groups:\n  a:\n    labels: [one, two]\n  b:\n    mode: multi\n    labels: [one]\n")
    assert tax.resolve("one") == [("a", "one"), ("b", "one")]


def test_cycle_in_the_hierarchy_shows_the_cycle() -> None:
    message = _error("groups:\n  a:\n    labels:\n      x: {parent: z}\n      y: {parent: x}\n      z: {parent: y}\n")
    assert "line 4" in message and "cycle" in message
    assert "x -> z -> y -> x" in message


def test_a_label_that_is_its_own_parent_is_a_cycle() -> None:
    message = _error("groups:\n  a:\n    labels:\n      x: {}\n      y: {parent: y}\n")
    assert "line 5" in message and "y -> y" in message


def test_parent_in_another_group_names_the_line_and_group() -> None:
    message = _error("groups:\n  a:\n    labels: [one, two]\n  b:\n    mode: multi\n    labels:\n"
                     "      three: {parent: one}\n")
    assert "line 7" in message and "'one'" in message and "group 'b'" in message and "same group" in message


def test_unknown_parent_names_the_line() -> None:
    message = _error("groups:\n  space:\n    labels:\n      home: {}\n      bedroom: {parent: hom}\n")
    assert "line 5" in message and "parent 'hom'" in message


@pytest.mark.parametrize("labels", ["labels: []", "labels:", "labels: {}"])
def test_empty_label_list_names_the_group_and_its_line(labels: str) -> None:
    message = _error(f"groups:\n  a:\n    labels: [x]\n  b:\n    {labels}\n")
    assert "line 4" in message and "group 'b' has an empty label list" in message


def test_bad_mode_names_its_line() -> None:
    message = _error("groups:\n  a:\n    labels: [one]\n    mode: single\n")
    assert "line 4" in message and "'single'" in message and "exclusive, multi" in message


def test_bad_score_names_its_line() -> None:
    message = _error("groups:\n  a:\n    score: logits\n    labels: [one]\n")
    assert "line 3" in message and "softmax, cosine" in message


@pytest.mark.parametrize("value", ["1.5", "-0.1", "high", "true"])
def test_group_threshold_out_of_range_names_its_line(value: str) -> None:
    message = _error(f"groups:\n  a:\n    labels: [one]\n    threshold: {value}\n")
    assert "line 4" in message and "threshold of group 'a' must be a number from 0 to 1" in message


def test_label_threshold_out_of_range_names_its_line() -> None:
    message = _error("groups:\n  a:\n    labels:\n      one:\n        prompts: [a one]\n        threshold: 2\n")
    assert "line 6" in message and "threshold of 'one'" in message


@pytest.mark.parametrize("top_k", ["-1", "1.5", "two"])
def test_bad_top_k_names_its_line(top_k: str) -> None:
    message = _error(f"groups:\n  a:\n    mode: multi\n    top_k: {top_k}\n    labels: [one]\n")
    assert "line 4" in message and "top_k" in message


def test_template_without_placeholder_names_its_line() -> None:
    message = _error('name: x\ntemplates: ["a photo of {}.", "a photo"]\ngroups:\n  a:\n    labels: [one]\n')
    assert "line 2" in message and "'a photo'" in message and "{}" in message


def test_group_template_with_two_placeholders_names_its_line() -> None:
    message = _error("groups:\n  a:\n    labels: [one]\n    templates:\n      - '{} and {}'\n")
    assert "line 5" in message and "exactly once" in message


def test_empty_templates_is_an_error() -> None:
    message = _error("templates: []\ngroups:\n  a:\n    labels: [one]\n")
    assert "line 1" in message and "templates is empty" in message


def test_duplicate_key_names_both_lines() -> None:
    message = _error("groups:\n  a:\n    labels:\n      one: {}\n      two: {}\n      one: {}\n")
    assert "line 6" in message and "'one' is given twice (first on line 4)" in message


def test_duplicate_group_names_both_lines() -> None:
    message = _error("groups:\n  a:\n    labels: [one]\n  a:\n    labels: [two]\n")
    assert "line 4" in message and "first on line 2" in message


def test_duplicate_label_in_list_shorthand() -> None:
    message = _error("groups:\n  a:\n    labels: [one, two]\n  b:\n    mode: multi\n    labels:\n      - x\n"
                     "      - x\n")
    assert "label 'x' is given twice in group 'b'" in message


def test_empty_file_and_missing_groups() -> None:
    assert "empty" in _error("")
    assert "'groups'" in _error("name: x\n")
    assert "'groups'" in _error("name: x\ngroups: {}\n")


def test_bad_display_and_prompts_are_errors() -> None:
    assert "display" in _error("groups:\n  a:\n    labels:\n      one: {display: [x]}\n")
    assert "line 4" in _error("groups:\n  a:\n    labels:\n      one: {prompts: [a one, '']}\n")


# --------------------------------------------------------------------------------------------
# Files and the shipped taxonomies
# --------------------------------------------------------------------------------------------


def test_load_taxonomy_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(TaxonomyError) as info:
        load_taxonomy(missing)
    message = str(info.value)
    assert str(missing) in message and "shipped" in message and "spaces" in message


def test_load_taxonomy_reports_errors_with_the_file_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("groups:\n  a:\n    labels: [one]\n    mode: single\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match=r"bad\.yaml, line 4"):
        load_taxonomy(path)


def test_shipped_taxonomies_are_artworks_scenes_and_spaces() -> None:
    assert {"artworks", "scenes", "spaces"} <= set(shipped_taxonomies())


@pytest.mark.parametrize("name", ["artworks", "scenes", "spaces"])
def test_each_shipped_taxonomy_loads_with_english_and_korean_names(name: str) -> None:
    tax = load_taxonomy(name)
    assert tax.name == name
    assert tax.groups
    for label in tax.labels():
        assert label.display.get("en"), f"{name}: {label.group}:{label.id} has no English name"
        assert label.display.get("ko"), f"{name}: {label.group}:{label.id} has no Korean name"
        assert label.display["ko"] != label.display["en"], f"{name}: {label.id} Korean name is the English one"


def test_shipped_spaces_has_rooms_under_home() -> None:
    space = load_taxonomy("spaces").groups["space"]
    assert space.mode == "exclusive"
    home = load_taxonomy("spaces").resolve("space:home")[0][1]
    rooms = {label.name("en"): label for label in space.labels.values()}
    for room in ("living room", "children's room", "bedroom"):
        assert room in rooms, f"spaces has no {room!r}"
        assert rooms[room].parent == home
        assert rooms[room].id in space.labels[home].children
    assert load_taxonomy("spaces").resolve("거실") == [("space", rooms["living room"].id)]


# --------------------------------------------------------------------------------------------
# Files built to exhaust memory or the stack, and the work parsing takes
# --------------------------------------------------------------------------------------------


def _laughs(levels: int, fan: int = 9) -> str:
    """The "billion laughs": each level an anchored list of ``fan`` aliases to the level below, so a file of a
    few hundred bytes expands to ``fan ** levels`` values."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fan)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ngroups: {{g: {{labels: *l{levels - 1}}}}}\n"


def test_alias_expansion_past_the_limit_is_refused_naming_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.core.curator import taxonomy

    monkeypatch.setattr(taxonomy, "MAX_VALUES", 2000)
    message = _error(_laughs(4))  # its 4th line expands to 7381 values
    assert message.startswith("rooms.yaml, line 4: the aliases (*name) here expand to more than 2,000 values")
    message = _error(_laughs(3))  # 1750 values in all: within the limit, so read (and refused as no taxonomy)
    assert "unknown key 'l0'" in message and "expand" not in message


def test_the_billion_laughs_is_refused_before_it_expands() -> None:
    """The 500-byte file of the report (10^9 values, memory exhausted before) is refused at the default limit;
    run in a process allowed 1 GiB so a regression fails instead of filling the machine's memory."""
    import subprocess
    import sys

    resource = pytest.importorskip("resource")
    del resource
    bomb = _laughs(10)
    assert len(bomb.encode()) < 600
    from atelier.core.curator import taxonomy

    probe = (  # core/taxonomy.py imports nothing of the pack: load it alone, then cap the memory
        "import importlib.util, resource, sys, yaml\n"
        f"spec = importlib.util.spec_from_file_location('taxonomy', {taxonomy.__file__!r})\n"
        "taxonomy = sys.modules['taxonomy'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(taxonomy)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    taxonomy.parse_taxonomy(sys.stdin.read(), 'laughs.yaml')\n"
        "except taxonomy.TaxonomyError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], input=bomb, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("laughs.yaml, line 7: the aliases (*name) here expand to more than 1,000,000 values")


def test_an_alias_inside_the_value_it_names_is_refused() -> None:
    message = _error("name: x\ngroups: &loop\n  g: {labels: [a, *loop]}\n")
    assert message.startswith("rooms.yaml, line 2: an alias refers to a value that holds it")


def test_aliases_within_the_limit_still_work() -> None:
    tax = parse_taxonomy("groups:\n  g:\n    labels:\n"
                         "      cat: {prompts: &common [a plain photo]}\n"
                         "      dog: {prompts: *common}\n", "shared.yaml")
    assert [tax.groups["g"].labels[n].prompts for n in ("cat", "dog")] == [["a plain photo"]] * 2


@pytest.mark.parametrize("source", ["deep.yaml", "deep.json"])
def test_nesting_50000_deep_is_a_clear_error_naming_the_line(source: str) -> None:
    text = '{"name": "x",\n "groups": ' + "[" * 50_000 + "]" * 50_000 + "}"
    message = _error(text, source)
    assert message.startswith(f"{source}, line 2: nested more than 64 levels deep")


def _traced_lines(text: str) -> int:
    """Lines of core/taxonomy.py executed while parsing ``text``: the work, counted (not timed)."""
    import sys

    from atelier.core.curator import taxonomy

    count = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if frame.f_code.co_filename != taxonomy.__file__:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        tax = parse_taxonomy(text, "many.yaml")
    finally:
        sys.settrace(None)
    labels = tax.groups["g"].labels
    assert len(labels) == text.count("parent:") + 1 and "alias0" not in labels
    assert labels["l0"].prompts == ["p0", "q0"]
    return count


def test_parsing_work_grows_linearly_with_the_labels() -> None:
    """10,000 labels took two minutes: the work grew with the square of the labels (a synonym index rebuilt per
    label, each hierarchy chain walked to its root from every label). Four times the labels must be about four
    times the work: a square law would give 16 times."""
    small, large = _traced_lines(many_labels(300)), _traced_lines(many_labels(1200))
    assert large / small < 5.0, (small, large)
