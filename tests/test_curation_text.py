"""The safety filter and the curator texts: what leaves the pack for people never holds a URL, an e-mail
address, a price or a blocked word, and the paragraph, record and hashtags carry the facts given."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from atelier.core.captions.curation_text import (
    MAX_HASHTAGS,
    METADATA_FIELDS,
    Metadata,
    curate_text,
    describe_folder,
    hashtag,
    read_metadata,
)
from atelier.core.captions.safety import DEFAULT_BLOCKED, SafetyFilter, parse_blocked
from atelier.core.shared.progress import SilentProgress

from helpers import SAMPLES

CALM = "The sea is calm."


@pytest.fixture(scope="module")
def safety() -> SafetyFilter:
    return SafetyFilter()


def _choice(label: str, name: str, score: float = 0.5) -> dict[str, Any]:
    return {"label": label, "name": name, "score": score, "path": [label]}


LABELS = {
    "medium": [_choice("oil_painting", "oil painting", 0.81)],
    "style": [_choice("impressionism", "Impressionism")],
    "genre": [_choice("landscape", "landscape")],
    "subject": [_choice("sea", "sea"), _choice("boat", "boats")],
    "palette": [_choice("cool", "cool blues"), _choice("warm", "warm ochres")],
    "space": [_choice("study", "study", 0.4)],
    "mood": [_choice("calm", "calm")],
}
META = Metadata(title="Evening Tide", artist="Kim Minji", year="2021", material="canvas", technique="impasto",
                size="60 x 90 cm", artist_note="I painted the tide as it turned.")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# --------------------------------------------------------------------------------------------
# The safety filter
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offending", [
    "Visit http://example.com/shop for the catalogue.",
    "See https://gallery.example.org/works?id=3 today.",
    "Go to www.gallery.net to see more.",
    "Find the series at kimminji.com now.",
    "The studio is online at atelier-kim.co.kr.",
    "Write to kim.minji+art@example.com for details.",
    "It went for $5,000 last spring.",
    "The edition costs 300,000원 each.",
    "A print is €250 framed.",
    "The prices were set by the gallery.",
    "It was auctioned in 2020.",
    "It is now for sale.",
    "이 작품은 경매는 끝났다.",
    "판매 문의는 갤러리로 하세요.",
])
def test_a_sentence_with_a_url_address_price_or_blocked_word_is_dropped(safety: SafetyFilter,
                                                                        offending: str) -> None:
    text = f"A boat rests on the shore. {offending} {CALM}"
    assert safety.clean(text) == f"A boat rests on the shore. {CALM}"
    assert not safety.allows(offending)
    assert safety.clean(offending) == ""


@pytest.mark.parametrize(("title", "cleaned"), [
    ("Sunset sale", "Sunset"),
    ("Harbour (for sale)", "Harbour"),
    ("Harbour, price $500", "Harbour"),
    ("Mountains http://example.com", "Mountains"),
    ("Mountains, www.example.com", "Mountains"),
    ("Portrait contact me@example.com", "Portrait contact"),
    ("Auctions of Light", "of Light"),
    ("Blue Hour", "Blue Hour"),
    ("Salamander", "Salamander"),
])
def test_a_title_loses_only_the_offending_words(safety: SafetyFilter, title: str, cleaned: str) -> None:
    assert safety.clean(title) == cleaned


def test_sale_does_not_touch_salamander_and_whole_words_are_needed(safety: SafetyFilter) -> None:
    text = "A salamander rests on a wholesome stone. A bidet stands by the wall."
    assert safety.allows(text)
    assert safety.clean(text) == text
    assert not safety.allows("Sale") and not safety.allows("SALES") and not safety.allows("buying")


def test_a_custom_list_replaces_the_default(safety: SafetyFilter) -> None:
    moon = SafetyFilter(["moon", " "])
    assert moon.blocked == ["moon"]
    assert moon.clean("A moon rises. The sale ends. A sun sets.") == "The sale ends. A sun sets."
    assert moon.clean("Moons over the bay") == "over the bay"
    # URLs, e-mail addresses and prices go whatever the list
    assert moon.clean("Call me@example.com today. Calm.") == "Calm."
    assert not SafetyFilter([]).allows("see www.example.com") and SafetyFilter([]).allows("for sale")
    assert "sale" in DEFAULT_BLOCKED and "경매" in DEFAULT_BLOCKED


def test_blocked_phrases_match_across_spaces(safety: SafetyFilter) -> None:
    assert not safety.allows("now  for\tsale")
    assert safety.allows("made for salt flats")


def test_hashtags_holding_a_blocked_word_are_dropped(safety: SafetyFilter) -> None:
    tags = ["#sale2024", "#Sunset", "#ForSale", "#Salamander", "#경매작품", "#OilPainting", "#BuyArt", "#www"]
    assert safety.hashtags(tags) == ["#Sunset", "#Salamander", "#OilPainting", "#www"]
    # the tag's own words are checked: #MoonRiver holds 'moon', #Moonlight does not (as #Forbidden and 'bid')
    assert SafetyFilter(["moon"]).hashtags(["#sale2024", "#MoonRiver", "#Moonlight"]) == ["#sale2024", "#Moonlight"]


def test_clean_value_cleans_nested_values_and_drops_emptied_items(safety: SafetyFilter) -> None:
    value = {"title": "Sunset sale", "tags": ["sale", "sea", "http://example.com", "sky", "가격"],
             "nested": {"note": "Buy it now. A calm sea.", "year": 2021, "empty": None},
             "scores": [0.5, 1], "flag": True}
    assert safety.clean_value(value) == {
        "title": "Sunset", "tags": ["sea", "sky"], "nested": {"note": "A calm sea.", "year": 2021, "empty": None},
        "scores": [0.5, 1], "flag": True}


def test_parse_blocked() -> None:
    assert parse_blocked("sale, price\nauction ,, \n for sale \n") == ["sale", "price", "auction", "for sale"]
    assert parse_blocked(" ,\n ") == []
    assert SafetyFilter(parse_blocked(", ".join(DEFAULT_BLOCKED))).blocked == SafetyFilter().blocked


def test_currency_words_need_a_word_edge(safety: SafetyFilter) -> None:
    prose = f"The painting holds 2 wonderful blues. {CALM}"
    assert safety.clean(prose) == prose
    assert safety.clean("2 Wonders of the Sea") == "2 Wonders of the Sea"


# --------------------------------------------------------------------------------------------
# Curator texts
# --------------------------------------------------------------------------------------------


def test_the_paragraph_carries_the_metadata_labels_description_and_note(safety: SafetyFilter) -> None:
    text = curate_text(LABELS, "a boat on a calm sea at dusk", META, safety)
    paragraph = text.paragraph
    assert paragraph.startswith("\u201cEvening Tide\u201d (2021) by Kim Minji is an oil painting in impasto on "
                                "canvas, 60 x 90 cm. ")
    assert "A boat on a calm sea at dusk." in paragraph  # capitalised, with a full stop
    assert "It draws on the language of Impressionism and the landscape tradition." in paragraph
    assert "Among its subjects are sea and boats." in paragraph
    assert "Its palette is cool blues and warm ochres." in paragraph
    assert "It would sit well in a study." in paragraph
    assert "Mood: calm." in paragraph  # a group the sentences do not know still appears
    assert paragraph.endswith("In the artist\u2019s words: \u201cI painted the tide as it turned.\u201d")
    assert paragraph.index("Evening Tide") < paragraph.index("A boat") < paragraph.index("palette")


def test_the_medium_label_that_is_deepest_names_the_work(safety: SafetyFilter) -> None:
    labels = {"medium": [_choice("painting", "painting"), _choice("ink", "ink wash")]}
    paragraph = curate_text(labels, "", Metadata(title="Rain", material="paper"), safety).paragraph
    assert paragraph == "\u201cRain\u201d is an ink wash on paper."


def test_only_a_description_gives_no_filler(safety: SafetyFilter) -> None:
    text = curate_text({}, "  a boat   on a calm sea ", Metadata(), safety)
    assert text.paragraph == "A boat on a calm sea."
    assert "This work" not in text.paragraph and "a work" not in text.paragraph
    assert text.hashtags == [] and text.record["description"] == "a boat on a calm sea"
    assert curate_text({}, "", Metadata(), safety).paragraph == ""
    assert curate_text({}, "", Metadata(title="Sea", year="1999"), safety).paragraph == "\u201cSea\u201d (1999)."


def test_a_material_alone_gives_no_filler(safety: SafetyFilter) -> None:
    paragraph = curate_text({}, "", Metadata(material="paper"), safety).paragraph
    assert "is a work" not in paragraph


@pytest.mark.parametrize("note", [
    "This piece is not for sale. I painted the tide as it turned.",
    "I painted the tide as it turned. Prices on request.",
    "I painted the tide as it turned. Write to kim@example.com.",
    "Buy it now",
    "see www.kimminji.com",
    "Selling now. Buy it.",
    "\u201cSale\u201d",
])
def test_a_blocked_word_in_the_artist_note_never_leaves_a_half_open_quote(safety: SafetyFilter, note: str) -> None:
    paragraph = curate_text(LABELS, "a boat", Metadata(title="Tide", artist_note=note), safety).paragraph
    assert paragraph.count("\u201c") == paragraph.count("\u201d")
    assert safety.allows(paragraph)
    assert paragraph.startswith("\u201cTide\u201d is an oil painting.")
    if "I painted the tide" in note:
        assert paragraph.endswith("In the artist\u2019s words: \u201cI painted the tide as it turned.\u201d")


def test_a_note_that_is_all_blocked_is_left_out(safety: SafetyFilter) -> None:
    text = curate_text({}, "a boat", Metadata(artist_note="Selling now. Buy it."), safety)
    assert text.paragraph == "A boat."
    assert text.record["artist_note"] == ""


def test_the_record_holds_every_field_and_nothing_blocked(safety: SafetyFilter) -> None:
    meta = Metadata(title="Evening Tide (for sale)", artist="Kim Minji www.kimminji.com", year="2021",
                    material="canvas", technique="impasto, price $5,000", size="60 x 90 cm, 300,000원",
                    artist_note="I painted the tide. Mail kim@example.com to buy it.")
    labels = {**LABELS, "mood": [_choice("calm", "calm"), _choice("war", "bidding war")]}
    text = curate_text(labels, "a boat on the sea with a price tag at http://shop.example.com", meta, safety)
    record = text.record
    assert set(record) == {*METADATA_FIELDS, "description", "labels", "tags", "hashtags", "paragraph"}
    assert record["title"] == "Evening Tide" and record["artist"] == "Kim Minji" and record["year"] == "2021"
    assert record["technique"] == "impasto" and record["size"] == "60 x 90 cm"
    assert record["artist_note"] == "I painted the tide."
    assert record["labels"]["medium"] == [{"label": "oil_painting", "name": "oil painting", "score": 0.81}]
    assert "oil painting" in record["tags"] and "bidding war" not in record["tags"]
    assert record["paragraph"] == text.paragraph and record["hashtags"] == text.hashtags
    for value in [*_strings(record), text.paragraph, *text.hashtags]:
        assert safety.allows(value), value
    dumped = text.record_json().lower()
    for word in ("sale", "price", "buy", "bidding", "http", "www", "@", "$", "원"):
        assert word not in dumped and word not in text.paragraph.lower()
    assert json.loads(text.record_json()) == record
    assert "\u201cI painted the tide.\u201d" in text.paragraph


def test_hashtags_are_camel_case_unique_korean_kept_and_at_most_fifteen(safety: SafetyFilter) -> None:
    text = curate_text(LABELS, "", META, safety)
    assert text.hashtags[:4] == ["#KimMinji", "#Impasto", "#Canvas", "#OilPainting"]
    assert "#CoolBlues" in text.hashtags and "#WarmOchres" in text.hashtags
    korean = {"space": [_choice("study", "\uc11c\uc7ac")], "mood": [_choice("calm", "\ucc28\ubd84\ud55c"),
                                                                   _choice("calm2", "calm")]}
    tags = curate_text(korean, "", Metadata(technique="calm"), safety).hashtags
    assert tags == ["#Calm", "#\uc11c\uc7ac", "#\ucc28\ubd84\ud55c"]  # '#Calm' once
    many = {"subject": [_choice(f"thing{i}", f"thing number {i}") for i in range(30)]}
    tags = curate_text(many, "", Metadata(artist="Kim"), safety).hashtags
    assert len(tags) == MAX_HASHTAGS and len(set(tags)) == len(tags)
    assert tags[:2] == ["#Kim", "#ThingNumber0"]
    assert hashtag("oil painting") == "#OilPainting" and hashtag("아이 방") == "#아이방"
    assert hashtag("...") == ""


def test_a_hashtag_keeps_a_possessive_whole() -> None:
    assert hashtag("children's room") == "#ChildrensRoom"


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def test_metadata_from_dict() -> None:
    meta = Metadata.from_dict({"title": " Tide ", "year": 2021, "artist": None})
    assert meta == Metadata(title="Tide", year="2021")
    with pytest.raises(ValueError, match="unknown metadata field.*titel.*known: title"):
        Metadata.from_dict({"titel": "Tide"})


def test_read_metadata_from_json_by_name_or_stem(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"chelsea.jpg": {"title": "Chelsea", "year": 2020},
                                "coffee": {"artist": "Kim", "artist_note": "Morning."}}), encoding="utf-8")
    assert read_metadata(path) == {"chelsea.jpg": Metadata(title="Chelsea", year="2020"),
                                   "coffee": Metadata(artist="Kim", artist_note="Morning.")}  # keys as written


def test_read_metadata_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "metadata.csv"
    path.write_text("\ufefffile,title,year,size\nchelsea.jpg,Chelsea,2020,\ncoffee,\"Cup, morning\",,10 x 10 cm\n",
                    encoding="utf-8")
    assert read_metadata(path) == {"chelsea.jpg": Metadata(title="Chelsea", year="2020"),
                                   "coffee": Metadata(title="Cup, morning", size="10 x 10 cm")}
    bad = tmp_path / "names.csv"
    bad.write_text("name,title\nchelsea.jpg,Chelsea\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs a 'file' column"):
        read_metadata(bad)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("file,price\nchelsea.jpg,5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="entry 'chelsea.jpg': unknown metadata field.*price"):
        read_metadata(unknown)


def test_read_metadata_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{\n "chelsea.jpg": {\n  "title": "Chelsea",\n }\n}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json', line 4: not valid JSON"):
        read_metadata(broken)
    listed = tmp_path / "list.json"
    listed.write_text('["chelsea.jpg"]', encoding="utf-8")
    with pytest.raises(ValueError, match="must map picture names to objects"):
        read_metadata(listed)
    with pytest.raises(ValueError, match="cannot read metadata file"):
        read_metadata(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------
# A whole folder
# --------------------------------------------------------------------------------------------


@pytest.fixture
def version(tmp_path: Path) -> Path:
    """A dataset version by hand: three pictures with captions (one selling), a manifest with labels."""
    folder = tmp_path / "v001"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.webp", "rocket.png"):
        shutil.copy(SAMPLES / name, folder / name)
        shutil.copy(SAMPLES / f"{Path(name).stem}.txt", folder / f"{Path(name).stem}.txt")
    (folder / "rocket.txt").write_text("a rocket poster for sale at www.example.com\n", encoding="utf-8")
    manifest = [
        {"file": "chelsea.jpg", "labels": {"space": [_choice("study", "study", 0.7)],
                                           "mood": [_choice("cozy", "cozy", 0.4)]}, "sha256": "x"},
        {"file": "coffee.webp", "labels": {"space": [_choice("cafe", "cafe", 0.9)], "mood": []}},
    ]  # rocket.png has no manifest entry
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest), encoding="utf-8")
    return folder


def test_describe_folder_writes_records_and_a_catalogue(safety: SafetyFilter, version: Path) -> None:
    metadata = {"chelsea": Metadata(title="Chelsea", artist="Kim Minji"), "other": Metadata(title="Unused")}
    progress = SilentProgress(3)
    records = describe_folder(version, safety, metadata, progress)
    assert progress.done == 3
    assert [r["file"] for r in records] == ["chelsea.jpg", "coffee.webp", "rocket.png"]
    written = [json.loads(line) for line in (version / "curation.jsonl").read_text(encoding="utf-8").splitlines()]
    assert written == records
    chelsea, coffee, rocket = records
    assert chelsea["title"] == "Chelsea" and chelsea["artist"] == "Kim Minji"
    assert chelsea["description"] == "a tabby cat looking to the side"
    assert chelsea["labels"]["space"] == [{"label": "study", "name": "study", "score": 0.7}]
    assert chelsea["tags"] == ["study", "cozy"] and chelsea["hashtags"] == ["#KimMinji", "#Study", "#Cozy"]
    assert chelsea["paragraph"].startswith("\u201cChelsea\u201d by Kim Minji. A tabby cat looking to the side.")
    assert "It would sit well in a study." in chelsea["paragraph"]
    assert coffee["title"] == "" and "It would sit well in a cafe." in coffee["paragraph"]
    # a caption is a sentence: one holding a blocked word or a URL goes whole
    assert rocket["labels"] == {} and rocket["description"] == ""
    for record in records:
        assert all(safety.allows(s) for s in _strings(record))
    catalogue = (version / "curation.md").read_text(encoding="utf-8")
    assert "## Chelsea\n" in catalogue and "## coffee\n" in catalogue and "## rocket\n" in catalogue
    assert chelsea["paragraph"] in catalogue and "#KimMinji #Study #Cozy" in catalogue
    assert "sale" not in catalogue and "www" not in catalogue
    assert not [p for p in version.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_describe_folder_without_a_manifest_or_metadata(safety: SafetyFilter, version: Path) -> None:
    (version / "manifest.jsonl").unlink()
    records = describe_folder(version, safety)
    assert [r["labels"] for r in records] == [{}, {}, {}]
    assert records[0]["paragraph"] == "A tabby cat looking to the side."
    assert (version / "curation.jsonl").is_file()


@pytest.mark.parametrize(("bad", "problem"), [
    ('{"file": "coffee.webp", "labels": ', r"not valid JSON \(Expecting value, column 35\)"),
    ('["coffee.webp"]', "a JSON object is needed, not list"),
    ('{"labels": {}}', "names no 'file'"),
    ('{"file": "coffee.webp", "labels": ["cafe"]}', "'labels' must map each group to a list"),
    ('{"file": "coffee.webp", "labels": {"space": [{"name": "cafe"}]}}', "'labels' must map each group"),
])
def test_a_damaged_manifest_line_is_named_before_any_work(safety: SafetyFilter, version: Path, bad: str,
                                                          problem: str) -> None:
    manifest = version / "manifest.jsonl"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    manifest.write_text("\n".join([lines[0], "", bad, lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"manifest\.jsonl', line 3: .*{problem}.*\. Repair or delete that line"):
        describe_folder(version, safety)
    assert not (version / "curation.jsonl").exists()
    # doing what the message says works: the line deleted, the other pictures keep their labels
    manifest.write_text("\n".join([lines[0], "", lines[1]]) + "\n", encoding="utf-8")
    records = describe_folder(version, safety)
    assert records[1]["labels"]["space"][0]["name"] == "cafe"


def test_a_manifest_that_is_not_utf8_is_named(safety: SafetyFilter, version: Path) -> None:
    (version / "manifest.jsonl").write_bytes(b'{"file": "\xff"}\n')
    with pytest.raises(ValueError, match=r"cannot read .*manifest\.jsonl.*delete it to describe the pictures"):
        describe_folder(version, safety)
    (version / "manifest.jsonl").unlink()
    assert len(describe_folder(version, safety)) == 3
