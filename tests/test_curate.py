"""Curating a labelled folder: rules, near-duplicates, the plan, and the new dataset version on disk."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from atelier.core.curator.curate import (
    REPORT,
    CurateOptions,
    Rule,
    near_duplicate_clusters,
    parse_rules,
    plan_curation,
    write_curated,
)
from atelier.core.curator.image_index import FolderIndex
from atelier.core.curator.taxonomy import Taxonomy, TaxonomyError, parse_taxonomy
from atelier.core.dataset.image_files import image_size

from helpers import SAMPLES

TAXONOMY = """\
name: rooms
groups:
  space:
    labels:
      home: {display: {en: home, ko: 집}, synonyms: [house]}
      bedroom: {parent: home, display: {en: bedroom, ko: 침실}, synonyms: [sleeping room]}
      living_room: {parent: home, display: {en: living room, ko: 거실}}
      office: {display: {en: office, ko: 사무실}, synonyms: [workplace]}
  mood:
    mode: multi
    threshold: 0.3
    labels:
      calm: {display: {en: calm, ko: 차분한}}
      cozy: {display: {en: cozy, ko: 아늑한}}
  feature:
    mode: multi
    labels: [bedroom, window]
"""


@pytest.fixture
def taxonomy() -> Taxonomy:
    return parse_taxonomy(TAXONOMY)


def result(taxonomy: Taxonomy, space: str | None, moods: dict[str, float], space_score: float = 0.6) -> dict[str, Any]:
    """A picture's labels as label_embeddings reports them: ``space`` chosen (or none), mood scores given."""
    group = taxonomy.groups["space"]
    space_scores = {label: 0.05 for label in group.labels}
    chosen = []
    if space is not None:
        for label in [*group.ancestors(space), space]:
            space_scores[label] = space_score
        chosen = [{"label": space, "name": space, "score": space_score, "path": [*group.ancestors(space), space]}]
    mood_scores = {"calm": 0.0, "cozy": 0.0, **moods}
    mood_chosen = [{"label": m, "name": m, "score": s, "path": [m]}
                   for m, s in sorted(mood_scores.items(), key=lambda p: -p[1]) if s >= 0.3]
    return {"labels": {"space": chosen, "mood": mood_chosen, "feature": []},
            "scores": {"space": space_scores, "mood": mood_scores, "feature": {"bedroom": 0.1, "window": 0.1}}}


def folder_index(names: list[str], embeddings: torch.Tensor | None = None,
                 sizes: list[tuple[int, int]] | None = None) -> FolderIndex:
    count = len(names)
    if embeddings is None:
        embeddings = torch.eye(max(count, 2))[:count]  # every picture unlike every other
    return FolderIndex([Path("/pictures") / n for n in names], embeddings, sizes or [(64, 64)] * count)


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


def _parsed(rules: list[Rule]) -> list[tuple[tuple[tuple[str, str], ...], float | None]]:
    return [(rule.labels, rule.min_score) for rule in rules]


def test_parse_rules_qualified_unqualified_scores_and_synonyms(taxonomy: Taxonomy) -> None:
    rules = parse_rules("space:bedroom, cozy>=0.25\nworkplace,  sleeping room >= .5", taxonomy)
    assert _parsed(rules) == [((("space", "bedroom"),), None), ((("mood", "cozy"),), 0.25),
                              ((("space", "office"),), None),
                              ((("space", "bedroom"),), 0.5)]  # the synonym is space's bedroom's only
    assert [str(r) for r in rules[:2]] == ["space:bedroom", "cozy>=0.25"]  # as written


def test_unqualified_rule_matches_the_label_in_every_group(taxonomy: Taxonomy) -> None:
    assert _parsed(parse_rules("bedroom", taxonomy)) == [((("space", "bedroom"), ("feature", "bedroom")), None)]
    assert _parsed(parse_rules("feature:bedroom", taxonomy)) == [((("feature", "bedroom"),), None)]
    assert _parsed(parse_rules("침실", taxonomy)) == [((("space", "bedroom"),), None)]  # a display name
    assert parse_rules("  ,\n", taxonomy) == []


@pytest.mark.parametrize("text, message", [
    ("bedroom<0.3", "is not 'label'"),
    ("bedroom>=high", "is not 'label'"),
    ("bedroom>=1.2.3", "is not a number"),
    ("bedroom=0.3", "is not 'label'"),
    ("kitchen", "no label 'kitchen'"),
    ("space:kitchen", "group 'space'"),
])
def test_bad_rules_are_errors(taxonomy: Taxonomy, text: str, message: str) -> None:
    with pytest.raises(TaxonomyError, match=message):
        parse_rules(text, taxonomy)


def test_rule_matches_chosen_labels_with_their_parents_and_scores(taxonomy: Taxonomy) -> None:
    picture = result(taxonomy, "bedroom", {"cozy": 0.4})

    def rule(group: str, label: str, min_score: float | None = None) -> Rule:
        return Rule(f"{group}:{label}", ((group, label),), min_score)

    assert rule("space", "bedroom").matches(picture)
    assert rule("space", "home").matches(picture)  # a chosen child counts for its parent
    assert not rule("space", "living_room").matches(picture)
    assert rule("mood", "cozy", 0.4).matches(picture)
    assert not rule("mood", "cozy", 0.41).matches(picture)
    assert rule("mood", "calm", 0.0).matches(picture)  # a score rule needs no choice


# --------------------------------------------------------------------------------------------
# Near-duplicate clusters
# --------------------------------------------------------------------------------------------


def _at_angle(degrees: float, plane: tuple[int, int], dim: int = 8) -> torch.Tensor:
    v = torch.zeros(dim)
    v[plane[0]], v[plane[1]] = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return v


def _clusters_as_sets(clusters: list[list[int]]) -> set[frozenset[int]]:
    return {frozenset(c) for c in clusters}


def _dedup_embeddings() -> torch.Tensor:
    """Rows 0, 3, 6 in a chain (0-3 and 3-6 at 20 degrees, 0-6 at 40); rows 2, 5 nearly equal; 1, 4, 7 alone."""
    rows = [_at_angle(0, (0, 1)), _at_angle(0, (2, 3)), _at_angle(0, (4, 5)), _at_angle(20, (0, 1)),
            _at_angle(90, (2, 3)), _at_angle(5, (4, 5)), _at_angle(40, (0, 1)), _at_angle(0, (6, 7))]
    return torch.stack(rows) * torch.linspace(0.5, 3.0, 8)[:, None]  # lengths do not matter


def test_near_duplicate_clusters_link_transitively() -> None:
    embeddings = _dedup_embeddings()
    assert math.cos(math.radians(40)) < 0.9 < math.cos(math.radians(20))
    clusters = near_duplicate_clusters(embeddings, 0.9)
    assert _clusters_as_sets(clusters) == {frozenset({0, 3, 6}), frozenset({2, 5})}
    assert all(c == sorted(c) for c in clusters)


def test_near_duplicate_clusters_threshold_and_singletons() -> None:
    embeddings = _dedup_embeddings()
    assert _clusters_as_sets(near_duplicate_clusters(embeddings, 0.99)) == {frozenset({2, 5})}
    assert near_duplicate_clusters(embeddings, 0.9999) == []
    assert near_duplicate_clusters(torch.eye(4), 0.5) == []


@pytest.mark.parametrize("block", [1, 2, 3, 5, 8, 100])
def test_near_duplicate_clusters_do_not_depend_on_the_block_size(block: int) -> None:
    embeddings = _dedup_embeddings()
    assert _clusters_as_sets(near_duplicate_clusters(embeddings, 0.9, block=block)) == \
        {frozenset({0, 3, 6}), frozenset({2, 5})}


def test_near_duplicate_clusters_block_size_on_random_data() -> None:
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(12, 16, generator=generator)
    embeddings = torch.cat([base, base[:6] + 0.05 * torch.randn(6, 16, generator=generator)])
    whole = _clusters_as_sets(near_duplicate_clusters(embeddings, 0.95))
    assert whole == {frozenset({i, 12 + i}) for i in range(6)}
    for block in (1, 4, 7):
        assert _clusters_as_sets(near_duplicate_clusters(embeddings, 0.95, block=block)) == whole


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


def _plan_inputs(taxonomy: Taxonomy) -> tuple[FolderIndex, list[dict[str, Any]]]:
    results = [
        result(taxonomy, "bedroom", {"cozy": 0.8}),             # 0 a.png
        result(taxonomy, "office", {"calm": 0.5}),               # 1 b.png
        result(taxonomy, "living_room", {"cozy": 0.4, "calm": 0.35}),  # 2 c.png
        result(taxonomy, None, {"cozy": 0.1}),                   # 3 d.png
        result(taxonomy, "home", {"cozy": 0.6}),                 # 4 e.png
    ]
    return folder_index(["a.png", "b.png", "c.png", "d.png", "e.png"]), results


def test_plan_without_rules_keeps_everything_in_folder_order(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    plan = plan_curation(index, results, taxonomy, CurateOptions())
    assert plan.order == [0, 1, 2, 3, 4] and plan.dropped == {} and plan.duplicate_of == {}


def test_plan_keep_any(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    plan = plan_curation(index, results, taxonomy, CurateOptions(keep="bedroom, office"))
    assert plan.order == [0, 1]
    assert plan.dropped == {2: "matches no keep rule", 3: "matches no keep rule", 4: "matches no keep rule"}


def test_plan_keep_a_parent_keeps_its_children(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    plan = plan_curation(index, results, taxonomy, CurateOptions(keep="space:house"))
    assert plan.order == [0, 2, 4]


def test_plan_keep_all(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    plan = plan_curation(index, results, taxonomy, CurateOptions(keep="home, cozy>=0.5", require_all=True))
    assert plan.order == [0, 4]
    assert plan.dropped[2] == "does not match cozy>=0.5"
    assert plan.dropped[1] == "matches no keep rule"


def test_plan_keep_all_with_a_label_that_is_in_two_groups(taxonomy: Taxonomy) -> None:
    index = folder_index(["a.png"])
    results = [result(taxonomy, "bedroom", {"cozy": 0.8})]  # space: bedroom chosen; feature: nothing chosen
    plan = plan_curation(index, results, taxonomy, CurateOptions(keep="bedroom, cozy", require_all=True))
    assert plan.order == [0]


def test_plan_drop(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    plan = plan_curation(index, results, taxonomy, CurateOptions(drop="calm, space:office"))
    assert plan.order == [0, 3, 4]
    assert plan.dropped == {1: "matches drop rule calm, space:office", 2: "matches drop rule calm"}


def test_plan_keep_then_drop(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    plan = plan_curation(index, results, taxonomy, CurateOptions(keep="home", drop="calm"))
    assert plan.order == [0, 4]
    assert set(plan.dropped) == {1, 2, 3}


def test_plan_sort_by_a_score_highest_first(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    plan = plan_curation(index, results, taxonomy, CurateOptions(sort_by="cozy"))
    assert plan.order == [0, 4, 2, 3, 1]


def _duplicates(taxonomy: Taxonomy, sizes: list[tuple[int, int]]) -> tuple[FolderIndex, list[dict[str, Any]]]:
    """Rows 0, 1, 3 near-duplicates, 2 on its own."""
    embeddings = torch.stack([_at_angle(0, (0, 1)), _at_angle(0, (2, 3)), _at_angle(3, (0, 1)),
                              _at_angle(6, (0, 1))])
    embeddings = embeddings[[0, 2, 1, 3]]
    results = [result(taxonomy, "bedroom", {"cozy": s}) for s in (0.3, 0.9, 0.5, 0.4)]
    return folder_index(["a.png", "b.png", "c.png", "d.png"], embeddings, sizes), results


def test_dedup_keeps_the_largest_picture_of_a_cluster(taxonomy: Taxonomy) -> None:
    index, results = _duplicates(taxonomy, [(64, 64), (32, 48), (16, 16), (80, 60)])
    plan = plan_curation(index, results, taxonomy, CurateOptions(dedup_threshold=0.99))
    assert plan.order == [2, 3]
    assert plan.duplicate_of == {0: 3, 1: 3}
    assert plan.dropped == {0: "near-duplicate of d.png", 1: "near-duplicate of d.png"}


def test_dedup_equal_sizes_keep_the_first(taxonomy: Taxonomy) -> None:
    index, results = _duplicates(taxonomy, [(64, 64)] * 4)
    plan = plan_curation(index, results, taxonomy, CurateOptions(dedup_threshold=0.99))
    assert plan.order == [0, 2] and plan.duplicate_of == {1: 0, 3: 0}


def test_dedup_keep_best_score_keeps_the_best_sort_score(taxonomy: Taxonomy) -> None:
    index, results = _duplicates(taxonomy, [(64, 64), (32, 48), (16, 16), (80, 60)])
    plan = plan_curation(index, results, taxonomy, CurateOptions(dedup_threshold=0.99, keep_best="score",
                                                                 sort_by="cozy"))
    assert plan.order == [1, 2]  # b (0.9) then c (0.5): sorted by cozy
    assert plan.duplicate_of == {0: 1, 3: 1}


def test_dedup_only_among_pictures_the_rules_keep(taxonomy: Taxonomy) -> None:
    index, results = _duplicates(taxonomy, [(64, 64), (32, 48), (16, 16), (80, 60)])
    plan = plan_curation(index, results, taxonomy, CurateOptions(drop="cozy>=0.4", dedup_threshold=0.99))
    assert plan.order == [0]  # d (the largest) is dropped by the rule, so a stays
    assert plan.duplicate_of == {}


def test_keep_best_score_needs_sort_by(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    with pytest.raises(ValueError, match="sort_by"):
        plan_curation(index, results, taxonomy, CurateOptions(dedup_threshold=0.9, keep_best="score"))


def test_bad_keep_best_and_threshold(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    with pytest.raises(ValueError, match="keep_best"):
        plan_curation(index, results, taxonomy, CurateOptions(keep_best="sharpest"))
    with pytest.raises(ValueError, match="dedup_threshold"):
        plan_curation(index, results, taxonomy, CurateOptions(dedup_threshold=1.5))


def test_unknown_subfolders_by_group_lists_the_groups(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    with pytest.raises(TaxonomyError) as info:
        plan_curation(index, results, taxonomy, CurateOptions(subfolders_by="room"))
    assert "'room'" in str(info.value) and "space, mood, feature" in str(info.value)


# --------------------------------------------------------------------------------------------
# Writing the curated version
# --------------------------------------------------------------------------------------------

NAMES = ["astronaut.tif", "chelsea.jpg", "coffee.webp", "rocket.png"]


@pytest.fixture
def pictures(tmp_path: Path, taxonomy: Taxonomy) -> tuple[FolderIndex, list[dict[str, Any]]]:
    """The shipped samples (with caption sidecars) copied into a folder, chelsea and coffee near-duplicates."""
    source = tmp_path / "source"
    source.mkdir()
    for name in NAMES:
        shutil.copy2(SAMPLES / name, source / name)
        stem = Path(name).stem
        shutil.copy2(SAMPLES / f"{stem}.txt", source / f"{stem}.txt")
    embeddings = torch.stack([_at_angle(0, (0, 1)), _at_angle(0, (2, 3)), _at_angle(2, (2, 3)),
                              _at_angle(0, (4, 5))])
    files = [source / n for n in NAMES]
    index = FolderIndex(files, embeddings, [image_size(f) for f in files])
    results = [result(taxonomy, "office", {"calm": 0.4}),
               result(taxonomy, "bedroom", {"cozy": 0.8}),
               result(taxonomy, "living_room", {"cozy": 0.6}),
               result(taxonomy, None, {"cozy": 0.1})]
    return index, results


def _manifest(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def test_write_curated_copies_kept_pictures_with_captions_manifest_and_report(
        tmp_path: Path, taxonomy: Taxonomy, pictures: tuple[FolderIndex, list[dict[str, Any]]]) -> None:
    index, results = pictures
    options = CurateOptions(drop="calm>=0.3", sort_by="cozy", dedup_threshold=0.99)
    plan = plan_curation(index, results, taxonomy, options)
    assert plan.order == [1, 3]
    written = write_curated(index, results, taxonomy, plan, options, tmp_path / "curated", language="ko")
    assert written.folder == tmp_path / "curated" / "v001"
    pictures_there = sorted(p.name for p in written.folder.iterdir())
    assert pictures_there == ["1_chelsea.jpg", "1_chelsea.txt", "2_rocket.png", "2_rocket.txt", REPORT,
                              "manifest.jsonl"]
    for copy, original in (("1_chelsea.jpg", "chelsea.jpg"), ("2_rocket.png", "rocket.png")):
        assert (written.folder / copy).read_bytes() == (SAMPLES / original).read_bytes()
    caption = (SAMPLES / "chelsea.txt").read_text(encoding="utf-8").strip()
    assert (written.folder / "1_chelsea.txt").read_text(encoding="utf-8") == caption + "\n"

    manifest = _manifest(written.folder)
    assert [m["file"] for m in manifest] == ["1_chelsea.jpg", "2_rocket.png"]
    chelsea = manifest[0]
    assert chelsea["source"] == str(index.files[1])
    assert chelsea["rank"] == 1
    assert chelsea["labels"] == results[1]["labels"]
    assert chelsea["scores"] == results[1]["scores"]
    assert chelsea["tags"] == ["집", "침실", "아늑한"]
    assert chelsea["near_duplicates"] == ["coffee.webp"]
    assert (chelsea["width"], chelsea["height"]) == (320, 213)
    assert chelsea["caption_file"] == "1_chelsea.txt"
    assert "near_duplicates" not in manifest[1]
    assert manifest[1]["tags"] == []

    report = json.loads((written.folder / REPORT).read_text(encoding="utf-8"))
    assert report["taxonomy"] == "rooms" and report["kept"] == 2
    assert report["dropped"] == [
        {"file": str(index.files[0]), "reason": "matches drop rule calm>=0.3"},
        {"file": str(index.files[2]), "reason": "near-duplicate of chelsea.jpg"}]
    assert report["options"]["sort_by"] == "cozy"


def test_write_curated_in_folder_order_keeps_the_names(
        tmp_path: Path, taxonomy: Taxonomy, pictures: tuple[FolderIndex, list[dict[str, Any]]]) -> None:
    index, results = pictures
    options = CurateOptions(keep="home")
    plan = plan_curation(index, results, taxonomy, options)
    written = write_curated(index, results, taxonomy, plan, options, tmp_path / "curated")
    assert [p.name for p in written.files] == ["chelsea.jpg", "coffee.webp"]
    assert (written.folder / "coffee.webp").read_bytes() == (SAMPLES / "coffee.webp").read_bytes()
    assert (written.folder / "coffee.txt").is_file()
    again = write_curated(index, results, taxonomy, plan, options, tmp_path / "curated")
    assert again.folder.name == "v002"  # a new version, the first untouched
    assert (written.folder / "chelsea.jpg").is_file()


def test_write_curated_subfolders_by_label(
        tmp_path: Path, taxonomy: Taxonomy, pictures: tuple[FolderIndex, list[dict[str, Any]]]) -> None:
    index, results = pictures
    options = CurateOptions(subfolders_by="space")
    plan = plan_curation(index, results, taxonomy, options)
    written = write_curated(index, results, taxonomy, plan, options, tmp_path / "curated")
    folder = written.folder
    expected = {"office/astronaut.tif": "astronaut.tif", "bedroom/chelsea.jpg": "chelsea.jpg",
                "living_room/coffee.webp": "coffee.webp", "unlabelled/rocket.png": "rocket.png"}
    for copy, original in expected.items():
        assert (folder / copy).read_bytes() == (SAMPLES / original).read_bytes()
    assert (folder / "bedroom" / "chelsea.txt").is_file()
    assert {m["file"] for m in _manifest(folder)} == set(expected)


def test_a_plan_that_keeps_nothing_writes_nothing(
        tmp_path: Path, taxonomy: Taxonomy, pictures: tuple[FolderIndex, list[dict[str, Any]]]) -> None:
    index, results = pictures
    options = CurateOptions(keep="cozy>=0.99")
    plan = plan_curation(index, results, taxonomy, options)
    assert plan.order == [] and len(plan.dropped) == 4
    parent = tmp_path / "curated"
    with pytest.raises(ValueError, match="keep none of the 4"):
        write_curated(index, results, taxonomy, plan, options, parent)
    assert not parent.exists() or not any(parent.iterdir())


def test_sort_by_takes_one_label(taxonomy: Taxonomy) -> None:
    index, results = _plan_inputs(taxonomy)
    with pytest.raises(TaxonomyError, match="sort_by takes one label"):
        plan_curation(index, results, taxonomy, CurateOptions(sort_by="cozy, calm"))


KOREAN_ROOMS = """\
name: 방
groups:
  공간:
    labels: [침실, 거실, "★", unlabelled]
"""


def test_korean_label_ids_name_sub_folders_settled_before_labelling(tmp_path: Path) -> None:
    from atelier.core.shared.output_paths import safe_subfolder

    taxonomy = parse_taxonomy(KOREAN_ROOMS)
    options = CurateOptions(subfolders_by="공간")
    options.check(taxonomy)  # what the node and the CLI call before the labelling pass
    assert options.label_folders(taxonomy) == {"침실": "침실", "거실": "거실", "★": "label_0003",
                                               "unlabelled": "unlabelled", "": "unlabelled_2"}
    source = tmp_path / "원본"
    source.mkdir()
    names = ["고양이.jpg", "a.jpg", "a.tif", "b.png"]
    for name, sample in zip(names, ("chelsea.jpg", "coffee.webp", "astronaut.tif", "rocket.png")):
        shutil.copy2(SAMPLES / sample, source / name)
    (source / "a.txt").write_text("the jpeg's caption", encoding="utf-8")
    files = [source / n for n in names]
    index = FolderIndex(files, torch.eye(4), [image_size(f) for f in files])
    group = taxonomy.groups["공간"]

    def labelled(label: str | None) -> dict[str, Any]:
        scores = {k: (0.9 if k == label else 0.05) for k in group.labels}
        chosen = [] if label is None else [{"label": label, "name": label, "score": 0.9, "path": [label]}]
        return {"labels": {"공간": chosen}, "scores": {"공간": scores}}

    results = [labelled("침실"), labelled("★"), labelled("★"), labelled(None)]
    plan = plan_curation(index, results, taxonomy, options)
    parent = safe_subfolder(tmp_path / "output", "큐레이션/결과")  # a Korean output sub-folder is accepted
    written = write_curated(index, results, taxonomy, plan, options, parent)
    assert written.folder == tmp_path / "output" / "큐레이션" / "결과" / "v001"
    assert [m["file"] for m in _manifest(written.folder)] == [
        "침실/고양이.jpg", "label_0003/a.jpg", "label_0003/a_2.tif", "unlabelled_2/b.png"]
    assert (written.folder / "label_0003" / "a_2.tif").read_bytes() == (SAMPLES / "astronaut.tif").read_bytes()
    # a.jpg and a.tif shared a.txt in the source; each copy has its own sidecar name now
    assert (written.folder / "label_0003" / "a.txt").is_file() and (written.folder / "label_0003" / "a_2.txt").is_file()
