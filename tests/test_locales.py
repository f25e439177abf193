"""The Korean interface (locales/ko), written by scripts/locales.py from the node classes and locales/ko.source.json."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

import atelier

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("locales_script", ROOT / "scripts" / "locales.py")
assert _spec is not None and _spec.loader is not None
locales = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(locales)

FIX = "python scripts/locales.py --missing, fill the Korean into locales/ko.source.json, then python scripts/locales.py"
LITERAL = re.compile(r"\{'([{}@$|])'\}")  # vue-i18n's literal interpolation of one special character


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return locales.english()


@pytest.fixture(scope="module")
def table() -> dict[str, str]:
    return locales.read_table()


def _committed(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "locales" / "ko" / name).read_text(encoding="utf-8"))


def test_every_english_text_has_korean_and_no_entry_is_stale(source: dict[str, Any], table: dict[str, str]) -> None:
    missing, stale = locales.gaps(table, source)
    assert not missing and not stale, locales.report(missing, stale) + "\nfix: " + FIX


def test_committed_files_are_what_the_script_writes(source: dict[str, Any], table: dict[str, str]) -> None:
    problems = locales.differences(locales.expected(table, source))
    assert not problems, "locales/ko is out of date; run: python scripts/locales.py\n" + "\n".join(problems)


def test_files_have_the_shape_comfyui_reads() -> None:
    # app/custom_node_manager.py takes every folder of locales/ for a language: the table must not look like one
    assert sorted(p.name for p in (ROOT / "locales").iterdir() if p.is_dir()) == ["ko"]
    assert sorted(p.name for p in (ROOT / "locales" / "ko").iterdir()) == ["main.json", "nodeDefs.json"]
    node_defs = _committed("nodeDefs.json")
    assert set(node_defs) == set(atelier.NODE_CLASS_MAPPINGS)
    for node_id, entry in node_defs.items():
        cls = atelier.NODE_CLASS_MAPPINGS[node_id]
        assert set(entry) == {"display_name", "description", "inputs", "outputs"}, node_id
        declared = {g: cls.INPUT_TYPES().get(g, {}) for g in ("required", "optional")}
        names = [name for group in declared.values() for name in group]
        # the frontend's key for an input is its name with dots made underscores; every input is translated
        assert set(entry["inputs"]) == {n.replace(".", "_") for n in names}, node_id
        assert all(set(v) == {"name", "tooltip"} for v in entry["inputs"].values()), node_id
        assert set(entry["outputs"]) == {str(i) for i in range(len(cls.RETURN_TYPES))}, node_id
        for i, (kind, name) in enumerate(zip(cls.RETURN_TYPES, cls.RETURN_NAMES)):
            # an output named as its type takes its label from the frontend's dataTypes, so it has no name here
            assert set(entry["outputs"][str(i)]) == ({"tooltip"} if name == kind else {"name", "tooltip"}), node_id
        for part in ("inputs", "outputs"):  # the table knows no context: two English names may meet in one Korean
            labels = [v["name"] for v in entry[part].values() if "name" in v]
            assert len(labels) == len(set(labels)), f"{node_id} shows two {part} alike: {labels}"
    segments = {s for cls in atelier.NODE_CLASS_MAPPINGS.values() for s in cls.CATEGORY.split("/")}
    assert set(_committed("main.json")) == {"nodeCategories"}
    assert set(_committed("main.json")["nodeCategories"]) == segments - {"Atelier"}


def _leaves(tree: dict[str, Any]) -> list[str]:
    return [x for v in tree.values() for x in (_leaves(v) if isinstance(v, dict) else [v])]


def test_texts_are_korean_messages_that_show_as_written(table: dict[str, str]) -> None:
    for name in ("nodeDefs.json", "main.json"):
        for text in _leaves(_committed(name)):
            assert isinstance(text, str) and text.strip()
            # vue-i18n would read a bare { } @ $ | as its own syntax (a placeholder, a linked message, plurals)
            assert not re.search(r"[{}@$|]", LITERAL.sub("", text)), text
            assert LITERAL.sub(r"\1", text) in table.values(), text
    tooltip = _committed("nodeDefs.json")["AtelierEvaluateRetrieval"]["inputs"]["k"]["tooltip"]
    assert tooltip == "MRR{'@'}K와 recall{'@'}K의 기준 K." and locales.escape("{a|b}") == "{'{'}a{'|'}b{'}'}"
    display = _committed("nodeDefs.json")["AtelierLoadImageFolder"]
    assert display["display_name"] == "Atelier 이미지 폴더 불러오기" and display["inputs"]["folder"]["name"] == "폴더"


def test_combo_choices_are_not_translated(source: dict[str, Any]) -> None:
    # a widget's chosen value is saved in the workflow: only labels and tooltips may change with the language
    cls = atelier.NODE_CLASS_MAPPINGS["AtelierLoadImageFolder"]
    choices = cls.INPUT_TYPES()["required"]["resize"][0]
    assert isinstance(choices, list) and len(choices) > 1
    assert not set(choices) & set(locales.texts(source["nodeDefs.json"]))
    assert "options" not in json.dumps(_committed("nodeDefs.json"))


def test_a_changed_english_text_is_missing_and_its_old_entry_stale(
        monkeypatch: pytest.MonkeyPatch, table: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    cls = atelier.NODE_CLASS_MAPPINGS["AtelierMixSounds"]
    old = locales.fold(cls.DESCRIPTION)
    assert old.startswith("Mix up to four sounds ")
    monkeypatch.setattr(cls, "DESCRIPTION", cls.DESCRIPTION.replace("Mix up to four", "Mix  up to\n five"))
    new = old.replace("four", "five", 1)
    source = locales.english()
    assert locales.gaps(table, source) == ([new], [old])  # re-wrapping alone would change nothing
    files = locales.expected(table, source)
    mix = json.loads(files["ko/nodeDefs.json"])["AtelierMixSounds"]
    assert "description" not in mix and mix["display_name"] == "Atelier 소리 섞기"  # the frontend shows the English
    assert locales.differences(files) == ["ko/nodeDefs.json: differs from the nodes and ko.source.json"]
    assert locales.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"  {json.dumps(new)}\n    was {json.dumps(old)}\n" in err  # the edit's old entry
    assert locales.main(["--missing"]) == 0
    assert capsys.readouterr().out == f"  {json.dumps(new)}: \"\",\n"


def test_the_table_refuses_doubles_blanks_and_unfolded_english(tmp_path: Path) -> None:
    path = tmp_path / "ko.source.json"
    path.write_text('{"Seed.": "시드.", "Seed.": "씨앗."}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"the same English twice: \['Seed.'\]"):
        locales.read_table(path)
    path.write_text('{"Seed.": " ", "Two  spaces.": "두 칸."}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['Seed.', 'Two  spaces.'\]"):
        locales.read_table(path)
    path.write_text('{"Seed.": "시드."', encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        locales.read_table(path)
