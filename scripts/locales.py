"""Write the Korean interface of the ComfyUI frontend: ``locales/ko/nodeDefs.json`` and ``locales/ko/main.json``.

ComfyUI's server (``app/custom_node_manager.py``, route ``/i18n``) reads ``locales/<lang>/main.json`` of every
custom node folder and puts ``nodeDefs.json``, ``commands.json`` and ``settings.json`` beside it under the keys
``nodeDefs``, ``commands`` and ``settings``; the frontend merges that into its own messages for the language.
It looks up ``nodeDefs.<node id>.display_name`` and ``.description``, ``inputs.<input name>.name`` (the label
of a socket or widget) and ``.tooltip``, ``outputs.<index>.name`` and ``.tooltip``, and each segment of a
category under ``nodeCategories`` in main.json. A key it does not find shows the node's own English, so no
``locales/en`` is needed.

The English comes from the node classes themselves (the same texts as the tooltips and web/docs); the Korean
lives in one hand-written table, ``locales/ko.source.json``, keyed by the English text with its whitespace
folded. A changed English string therefore has no entry and is listed as missing, and the entry of the old text
as stale. Widget choices are not translated: their values are saved in workflows. Run from the repository root:

    .venv/bin/python scripts/locales.py            # rewrite locales/ko; lists missing and stale entries
    .venv/bin/python scripts/locales.py --missing  # the missing entries as JSON lines to paste into the table
    .venv/bin/python scripts/locales.py --check    # exit 1 when an entry is missing or stale or locales/ko differs
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from difflib import get_close_matches
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "locales"
LANG = "ko"
# a file, not a folder: the server takes every folder of locales/ for a language
TABLE = LOCALES / f"{LANG}.source.json"
sys.path.insert(0, str(ROOT))
from atelier_cli import load_pack  # noqa: E402

BRAND = "Atelier"  # the first segment of every category and the start of every display name stays as it is
# vue-i18n compiles each message: these characters are its syntax and must be written as literal interpolations
SPECIAL = re.compile(r"[{}@$|]")

Tree = dict[str, Any]


def fold(text: object) -> str:
    """The table's key for an English text: whitespace folded, so re-wrapping a docstring changes nothing."""
    return " ".join(str(text).split())


def escape(text: str) -> str:
    """Korean text as a vue-i18n message that shows exactly that text (``MRR@K`` -> ``MRR{'@'}K``)."""
    return SPECIAL.sub(lambda m: "{'" + m.group() + "'}", text)


def _node_english(cls: type, display_name: str) -> Tree:
    """One node's English in the shape of nodeDefs.json."""
    inputs = cls.INPUT_TYPES()
    entry: Tree = {"display_name": fold(display_name), "description": fold(cls.DESCRIPTION),
                   "inputs": {}, "outputs": {}}
    for group in ("required", "optional"):
        for name, spec in inputs.get(group, {}).items():
            # the frontend replaces dots in a key's parts with underscores (normalizeI18nKey)
            entry["inputs"][name.replace(".", "_")] = {"name": name, "tooltip": fold(spec[1]["tooltip"])}
    for index, (kind, name, tip) in enumerate(zip(cls.RETURN_TYPES, cls.RETURN_NAMES, cls.OUTPUT_TOOLTIPS)):
        # an output named as its type is labelled from the frontend's own dataTypes.<TYPE>, never from here
        entry["outputs"][str(index)] = ({} if name == kind else {"name": name}) | {"tooltip": fold(tip)}
    return entry


def english() -> dict[str, Tree]:
    """The English of every file, by file name under locales/<lang>/: nodeDefs.json and main.json."""
    pack = load_pack()
    from atelier.nodes import bridge

    with ExitStack() as stack:
        # dropdowns of model files list what is on this disk: the texts must not depend on that
        for lister in ("model_files", "model_dirs"):
            stack.enter_context(mock.patch.object(bridge, lister, lambda key: []))
        node_defs = {node_id: _node_english(cls, pack.NODE_DISPLAY_NAME_MAPPINGS[node_id])
                     for node_id, cls in pack.NODE_CLASS_MAPPINGS.items()}
        segments = {part for cls in pack.NODE_CLASS_MAPPINGS.values() for part in cls.CATEGORY.split("/")}
    return {"nodeDefs.json": node_defs, "main.json": {"nodeCategories": {s: s for s in sorted(segments - {BRAND})}}}


def texts(tree: Tree) -> Iterator[str]:
    """Every English text of a tree, in order."""
    for value in tree.values():
        yield from texts(value) if isinstance(value, dict) else (value,)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    doubled = sorted({k for k in keys if keys.count(k) > 1})
    if doubled:
        raise ValueError(f"{TABLE.name} has the same English twice: {doubled}")
    return dict(pairs)


def read_table(path: Path = TABLE) -> dict[str, str]:
    """The hand-written table, English to Korean. Raises ValueError naming what is wrong with it."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}; fix it by hand") from exc
    bad = [k for k, v in table.items() if not isinstance(v, str) or not v.strip() or k != fold(k)]
    if bad:
        raise ValueError(f"{path}: each entry must be the English with its whitespace folded, mapped to a "
                         f"non-empty Korean text; these are not: {bad}")
    return table


def translate(tree: Tree, table: dict[str, str]) -> Tree:
    """The tree with each English text replaced by its Korean; texts without an entry left out (English shows)."""
    out: Tree = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            inner = translate(value, table)
            if inner:
                out[key] = inner
        elif value in table:
            out[key] = escape(table[value])
    return out


def gaps(table: dict[str, str], source: dict[str, Tree]) -> tuple[list[str], list[str]]:
    """English texts with no Korean entry (in node order), and entries no node uses any more."""
    used = list(dict.fromkeys(t for tree in source.values() for t in texts(tree)))
    return [t for t in used if t not in table], [t for t in table if t not in set(used)]


def render(tree: Tree) -> str:
    return json.dumps(tree, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def expected(table: dict[str, str], source: dict[str, Tree]) -> dict[str, str]:
    """File path under locales/ to its text."""
    return {f"{LANG}/{name}": render(translate(tree, table)) for name, tree in source.items()}


def differences(files: dict[str, str], folder: Path = LOCALES) -> list[str]:
    """Generated files missing, stale or different under ``folder``."""
    lang = folder / LANG
    found = {f"{LANG}/{p.name}" for p in lang.glob("*.json")} if lang.is_dir() else set()
    out = [f"{name}: not written" for name in sorted(files.keys() - found)]
    out += [f"{name}: not written by this script" for name in sorted(found - files.keys())]
    out += [f"{name}: differs from the nodes and {TABLE.name}" for name in sorted(files.keys() & found)
            if (folder / name).read_text(encoding="utf-8") != files[name]]
    return out


def write(files: dict[str, str], folder: Path = LOCALES) -> None:
    (folder / LANG).mkdir(parents=True, exist_ok=True)
    for stale in (folder / LANG).glob("*.json"):
        if f"{LANG}/{stale.name}" not in files:
            stale.unlink()
    for name, text in files.items():
        with open(folder / name, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)


def report(missing: list[str], stale: list[str]) -> str:
    """What the table lacks and holds too much, and what to do about it."""
    lines = []
    if missing:
        lines.append(f"{len(missing)} English texts have no Korean in {TABLE.relative_to(ROOT)} (the frontend shows "
                     "them in English); add an entry for each (scripts/locales.py --missing prints them):")
        for text in missing:
            lines.append(f"  {json.dumps(text, ensure_ascii=False)}")
            # an edited text: its old entry is stale, and its Korean the place to start from
            for old in get_close_matches(text, stale, n=1, cutoff=0.6):
                lines.append(f"    was {json.dumps(old, ensure_ascii=False)}")
    if stale:
        lines.append(f"{len(stale)} entries of {TABLE.relative_to(ROOT)} are no node's English any more "
                     "(a changed or removed text); delete them, or move their Korean to the new English:")
        lines += [f"  {json.dumps(t, ensure_ascii=False)}" for t in stale]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true",
                        help="only compare; exit 1 when an entry is missing or stale or locales/ko is out of date")
    action.add_argument("--missing", action="store_true",
                        help="print the missing entries as JSON lines to paste into the table, then fill them")
    args = parser.parse_args(argv)
    try:
        table = read_table()
    except (OSError, ValueError) as exc:
        print(f"locales: {exc}", file=sys.stderr)
        return 1
    source = english()
    missing, stale = gaps(table, source)
    if args.missing:
        for t in missing:
            print(f"  {json.dumps(t, ensure_ascii=False)}: \"\",")
        return 0
    files = expected(table, source)
    problems = differences(files) if args.check else []
    if args.check:
        for line in problems:
            print(f"locales/{line}", file=sys.stderr)
    else:
        write(files)
        print(f"wrote {', '.join(sorted(files))} under {LOCALES}")
    if missing or stale:
        print(report(missing, stale), file=sys.stderr)
    if problems:
        print("run: python scripts/locales.py", file=sys.stderr)
    return 1 if missing or stale or problems else 0


if __name__ == "__main__":
    sys.exit(main())
