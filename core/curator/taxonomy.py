"""Taxonomy files for zero-shot labelling: groups of labels with prompts, names, synonyms and a hierarchy.

A taxonomy is YAML or JSON (the schema is ``taxonomies/schema.json``; ``taxonomies/README.md`` explains
it with an example). Every error names the file and the line, so a user can fix a hand-written file:

    name: spaces
    templates: {en: ["a photo of {}.", "an artwork hanging in {}."], ko: ["{}의 사진.", "{}에 걸린 작품."]}
    groups:
      space:
        mode: exclusive            # exactly one label wins; "multi": every label over the threshold
        labels:
          home: {display: {en: home, ko: 집}, prompts: {en: [a home], ko: [집, 가정집]}}
          bedroom: {parent: home, synonyms: [sleeping room]}

Prompts, synonyms and templates are English when written as a text or a list, or per language as a
mapping of language codes to lists. A label without prompts in a language has its display name in that
language as its prompt there; without either, it has no texts in that language. Which languages a label
bank uses is the text tower's choice (``Taxonomy.prompt_languages`` and ``zero_shot.build_label_bank``).

Synonyms fold into their label: their texts join its prompt ensemble, and a synonym is accepted
wherever a label is named (a parent, a filter). A label whose id another label of its group lists
as a synonym is folded into that label, prompts and all.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).resolve().parents[2] / "taxonomies"
MODES = ("exclusive", "multi")
SCORES = ("softmax", "cosine")
DEFAULT_TEMPLATES = ("a photo of {}.", "an image of {}.", "a picture of {}.")
# per language, for groups whose file gives none in that language; Korean ones take any noun phrase without a
# particle that changes with the last syllable (의 and a following noun read well after every word)
DEFAULT_LANGUAGE_TEMPLATES = {"en": DEFAULT_TEMPLATES, "ko": ("{}의 사진.", "{}의 이미지.", "{}의 그림.")}
LANGUAGE_NAMES = {"en": "English", "ko": "Korean"}
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")  # en, ko, pt-BR, zh-Hant
_TOP_KEYS = {"name", "description", "templates", "groups", "languages"}
_GROUP_KEYS = {"display", "mode", "score", "threshold", "top_k", "templates", "labels", "description"}
_LABEL_KEYS = {"display", "prompts", "synonyms", "parent", "threshold"}
MAX_DEPTH = 64  # nesting levels a file may have; a taxonomy needs about 6
MAX_VALUES = 1_000_000  # values a file may expand to through its aliases; 10,000 labels written out are ~150,000


class TaxonomyError(ValueError):
    """A taxonomy that does not parse or does not make sense; the message gives the file and line."""


@dataclass
class Label:
    id: str
    group: str
    display: dict[str, str]
    prompt_sets: dict[str, list[str]]  # language -> prompts: as written, else the display name there; "en" always
    synonym_sets: dict[str, list[str]]  # language -> synonyms
    parent: str | None = None
    threshold: float | None = None
    children: list[str] = field(default_factory=list)
    line: int = 0

    @property
    def prompts(self) -> list[str]:
        """The English prompts (the English display name, else the id, when none are written)."""
        return self.prompt_sets["en"]

    @property
    def synonyms(self) -> list[str]:
        """Every synonym, English first: each names the label wherever a label is named."""
        return _unique([s for language in _english_first(self.synonym_sets) for s in self.synonym_sets[language]])

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the label has texts in (prompts, a display name or synonyms), English first."""
        return _english_first({**self.prompt_sets, **self.synonym_sets})

    def name(self, language: str = "en") -> str:
        """The display name in ``language``, else English, else the id with spaces."""
        return self.display.get(language) or self.display.get("en") or self.id.replace("_", " ")

    def texts(self, templates: list[str], language: str = "en") -> list[str]:
        """Every text of the prompt ensemble in ``language``: each of its prompts and synonyms there put into
        each template (of that language); empty when the label has no texts in it."""
        phrases = _unique(self.prompt_sets.get(language, []) + self.synonym_sets.get(language, []))
        return [t.replace("{}", p) for p in phrases for t in templates]


@dataclass
class Group:
    name: str
    mode: str
    score: str
    threshold: float
    top_k: int
    template_sets: dict[str, list[str]]  # language -> templates, the group's own or the file's; "en" always
    labels: dict[str, Label]
    display: dict[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def templates(self) -> list[str]:
        """The English templates."""
        return self.template_sets["en"]

    def templates_in(self, language: str) -> list[str]:
        """The templates of ``language``: the file's, else Atelier's defaults for it, else the bare prompt."""
        return self.template_sets.get(language) or list(DEFAULT_LANGUAGE_TEMPLATES.get(language, ("{}",)))

    def ensemble(self, label_id: str, languages: tuple[str, ...]) -> dict[str, list[str]]:
        """A label's texts per language, for a text tower that reads ``languages``: every one of them the label
        has texts in; English alone when it has none of them (its English texts are always there)."""
        label = self.labels[label_id]
        used = [language for language in languages if language in label.languages] or ["en"]
        return {language: label.texts(self.templates_in(language), language) for language in used}

    def roots(self) -> list[Label]:
        return [label for label in self.labels.values() if label.parent is None]

    def ancestors(self, label_id: str) -> list[str]:
        """The parents of a label, nearest last: ``['home']`` for ``bedroom``."""
        chain = []
        parent = self.labels[label_id].parent
        while parent is not None:
            chain.append(parent)
            parent = self.labels[parent].parent
        return chain[::-1]


@dataclass
class Taxonomy:
    name: str
    groups: dict[str, Group]
    source: str = ""
    description: str = ""

    def labels(self) -> list[Label]:
        return [label for group in self.groups.values() for label in group.labels.values()]

    def prompt_languages(self) -> tuple[str, ...]:
        """Every language some label has texts in, English first."""
        return _english_first(dict.fromkeys(language for label in self.labels() for language in label.languages))

    def missing(self, language: str) -> list[str]:
        """``group:label`` of the labels without texts (prompts, a display name or synonyms) in ``language``."""
        return [f"{label.group}:{label.id}" for label in self.labels() if language not in label.languages]

    def resolve(self, ref: str) -> list[tuple[str, str]]:
        """``(group, label)`` pairs a reference names: ``label``, ``group:label``, or a synonym of either."""
        group_name, _, wanted = ref.strip().rpartition(":")
        group_name, wanted = group_name.strip(), wanted.strip()
        wanted_key = _fold(wanted)
        found = []
        for group in self.groups.values():
            if group_name and group.name != group_name:
                continue
            for label in group.labels.values():
                names = [label.id, *label.synonyms, *label.display.values()]
                if wanted_key in {_fold(n) for n in names}:
                    found.append((group.name, label.id))
        if not found:
            where = f"group {group_name!r}" if group_name else "any group"
            if group_name and group_name not in self.groups:
                where = f"group {group_name!r}, which the taxonomy does not have (groups: {', '.join(self.groups)})"
            raise TaxonomyError(f"taxonomy {self.name!r} has no label {wanted!r} in {where}")
        return found


def _english_first(by_language: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(by_language, key=lambda language: language != "en"))


def _fold(text: str) -> str:
    return " ".join(text.replace("_", " ").split()).casefold()


def _unique(names: list[str]) -> list[str]:
    """The names in order, without repeats that differ only in case, spaces or underscores."""
    kept: dict[str, str] = {}
    for name in names:
        kept.setdefault(_fold(name), name)
    return list(kept.values())


# --------------------------------------------------------------------------------------------
# Reading with line numbers
# --------------------------------------------------------------------------------------------


class _Map(dict):
    def __init__(self) -> None:
        super().__init__()
        self.line = 0
        self.key_lines: dict[str, int] = {}


class _Seq(list):
    line = 0
    item_lines: list[int]


def _located(node: Any, loader: Any, where: str, is_json: bool = False) -> Any:
    """A composed YAML node as plain values, mappings and lists remembering their lines (and each item's).

    JSON files are read through the same composer for the lines, but their bare scalars are JSON's own
    (YAML 1.1 would take ``1e-05`` for text)."""
    import yaml

    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = _Map()
        out.line = line
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float)):
                raise TaxonomyError(f"{where}, line {key_line}: a key must be a plain name, got {key!r}")
            key = str(key)
            if key in out:
                raise TaxonomyError(f"{where}, line {key_line}: {key!r} is given twice (first on line "
                                    f"{out.key_lines[key]})")
            out[key] = _located(value_node, loader, where, is_json)
            out.key_lines[key] = key_line
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = _Seq(_located(item, loader, where, is_json) for item in node.value)
        seq.line, seq.item_lines = line, [item.start_mark.line + 1 for item in node.value]
        return seq
    if is_json and node.style is None:  # a bare JSON scalar: number, true, false or null
        return json.loads(node.value)
    return loader.construct_object(node, deep=True)


def _loader(text: str, where: str) -> Any:
    """PyYAML's SafeLoader refusing nesting deeper than MAX_DEPTH as it composes (its composer recurses, so
    50,000 nested brackets would end in a RecursionError), with the line where the limit is crossed."""
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    line = self.peek_event().start_mark.line + 1
                    raise TaxonomyError(f"{where}, line {line}: nested more than {MAX_DEPTH} levels deep; a "
                                        "taxonomy needs about 6 (groups, a group, labels, a label, display, a name)")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return Loader(text)


def _check_expansion(root: Any) -> None:
    """Refuse a document whose aliases (``*name``) would expand it past MAX_VALUES values, or that refers
    to itself, before anything is expanded: the composed graph shares each anchored node, so its
    expanded size is counted once per node (linear), not built. A 500-byte "billion laughs" expands to
    10^9 values; every alias use of a real taxonomy stays far below the limit."""
    import yaml

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise TaxonomyError(f"line {node.start_mark.line + 1}: an alias refers to a value that holds it, so "
                                "it never ends; repeat the text instead of the alias")
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        open_nodes.discard(key)
        if total > MAX_VALUES:  # the first (innermost) value past the limit names the line to fix
            raise TaxonomyError(f"line {node.start_mark.line + 1}: the aliases (*name) here expand to more than "
                                f"{MAX_VALUES:,} values (a \"billion laughs\" file?); write the values out or use "
                                "fewer aliases")
        sizes[key] = total
        return total

    size(root)


def _read_document(text: str, where: str, is_json: bool) -> Any:
    import yaml

    if is_json:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaxonomyError(f"{where}, line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}") from None
        except RecursionError:
            pass  # nested too deep for json: the loader below says where
    loader = _loader(text, where)
    try:
        node = loader.get_single_node()
        if node is None:
            raise TaxonomyError(f"{where}: the file is empty; a taxonomy needs 'groups'")
        try:
            _check_expansion(node)
        except TaxonomyError as exc:
            raise TaxonomyError(f"{where}, {exc}") from None
        return _located(node, loader, where, is_json)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TaxonomyError(f"{where}{line}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{where}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _line(container: Any, key: str | None = None) -> int:
    if key is not None and isinstance(container, _Map):
        return container.key_lines.get(key, container.line)
    return getattr(container, "line", 0)


# --------------------------------------------------------------------------------------------
# Building and checking
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, line: int, message: str) -> TaxonomyError:
        return TaxonomyError(f"{self.where}, line {line}: {message}" if line else f"{self.where}: {message}")

    def mapping(self, value: Any, what: str, line: int, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return _Map()
        if not isinstance(value, dict):
            raise self.fail(_line(value) or line, f"{what} must be a mapping of keys to values, got {value!r}")
        for key in value:
            if key not in allowed:
                raise self.fail(_line(value, key), f"{what} has an unknown key {key!r} (allowed: "
                                f"{', '.join(sorted(allowed))})")
        return value

    def texts(self, value: Any, what: str, line: int) -> list[str]:
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(t, str) and t.strip() for t in items):
            raise self.fail(_line(value) or line, f"{what} must be a text or a list of non-empty texts")
        return [t.strip() for t in items]

    def display(self, value: Any, line: int, fallback: str) -> dict[str, str]:
        if value is None:
            return {"en": fallback}
        if isinstance(value, str):
            return {"en": value.strip()}
        if isinstance(value, dict) and all(isinstance(v, str) and v.strip() for v in value.values()):
            return {str(k): v.strip() for k, v in value.items()}
        raise self.fail(_line(value) or line, "display must be a name or a mapping of language codes to names, "
                        "like {en: bedroom, ko: 침실}")

    def number(self, value: Any, what: str, line: int, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise self.fail(line, f"{what} must be a number from {lo:g} to {hi:g}, got {value!r}")
        return float(value)

    def by_language(self, value: Any, what: str, line: int) -> dict[str, Any]:
        """``{language: value}`` of a per-language mapping (``{en: [...], ko: [...]}``); anything else is
        English. Each language's value keeps its own line."""
        if not isinstance(value, dict):
            return {} if value is None else {"en": value}
        if not value:
            raise self.fail(_line(value) or line, f"{what} is an empty mapping; give language codes with their "
                            "texts, like {en: [...], ko: [...]}, or leave it out")
        for code in value:
            if not _LANGUAGE_CODE.fullmatch(code):
                raise self.fail(_line(value, code), f"{what}: {code!r} is not a language code; write a text, a list "
                                "of texts, or a mapping of codes such as en or ko to texts ({en: [...], ko: [...]})")
        return value

    def text_sets(self, value: Any, what: str, line: int) -> dict[str, list[str]]:
        """Texts per language (English for a text or a list); languages given no texts are left out."""
        sets = {}
        for code, texts in self.by_language(value, what, line).items():
            named, where = (f"{what} in {code!r}", _line(value, code)) if isinstance(value, dict) else (what, line)
            if found := self.texts(texts, named, where):
                sets[code] = found
        return sets

    def templates(self, value: Any, line: int, inherited: dict[str, list[str]]) -> dict[str, list[str]]:
        """Templates per language: the ones given here, the inherited ones for the languages not given."""
        out = dict(inherited)
        for code, texts in self.by_language(value, "templates", line).items():
            where = _line(value, code) if isinstance(value, dict) else line
            found = self.texts(texts, "templates", where)
            if not found:
                raise self.fail(where, f"templates{'' if code == 'en' else f' in {code!r}'} is empty; leave it out "
                                "to use the defaults")
            for template in found:
                if template.count("{}") != 1:
                    raise self.fail(_line(texts) or where, f"template {template!r} must hold '{{}}' exactly once, "
                                    "where the label's text goes")
            out[code] = found
        return out

    def label(self, group: str, label_id: str, spec: Any, line: int) -> Label:
        spec = self.mapping(spec, f"label {label_id!r}", line, _LABEL_KEYS)
        display = self.display(spec.get("display"), _line(spec, "display"), label_id.replace("_", " "))
        written = self.text_sets(spec.get("prompts"), f"prompts of {label_id!r}", _line(spec, "prompts"))
        # a language without prompts has the display name there; English always has one (else the id)
        prompts = {code: written.get(code) or [name] for code, name in
                   {"en": label_id.replace("_", " "), **display, **dict.fromkeys(written, "")}.items()}
        synonyms = self.text_sets(spec.get("synonyms"), f"synonyms of {label_id!r}", _line(spec, "synonyms"))
        parent = spec.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise self.fail(_line(spec, "parent"), f"parent of {label_id!r} must be a label name, got {parent!r}")
        threshold = spec.get("threshold")
        if threshold is not None:
            threshold = self.number(threshold, f"threshold of {label_id!r}", _line(spec, "threshold"), 0.0, 1.0)
        return Label(label_id, group, display, prompts, synonyms, parent, threshold, line=line)

    def labels(self, group: str, value: Any, line: int) -> dict[str, Label]:
        if isinstance(value, list):  # shorthand: a list of names, or of one-key mappings
            entries: list[tuple[str, Any, int]] = []
            for item, item_line in zip(value, value.item_lines):
                if isinstance(item, str):
                    entries.append((item, None, item_line))
                elif isinstance(item, dict) and len(item) == 1:
                    (key, spec), = item.items()
                    entries.append((key, spec, _line(item, key)))
                else:
                    raise self.fail(item_line, f"labels of group {group!r}: each item must be a "
                                    f"label name or 'name: {{...}}', got {item!r}")
        elif isinstance(value, dict):
            entries = [(key, spec, _line(value, key)) for key, spec in value.items()]
        elif value is None:
            entries = []
        else:
            raise self.fail(_line(value) or line, f"labels of group {group!r} must be a mapping or a list")
        if not entries:
            raise self.fail(line, f"group {group!r} has an empty label list; give it at least one label")
        out: dict[str, Label] = {}
        for key, spec, key_line in entries:
            if not str(key).strip():
                raise self.fail(key_line, f"group {group!r} has a label with an empty name")
            if key in out:
                raise self.fail(key_line, f"label {key!r} is given twice in group {group!r}")
            out[key] = self.label(group, key, spec, key_line)
        return out


def _fold_synonyms(group: Group, builder: _Builder) -> None:
    """A label named as another label's synonym becomes part of that label.

    Linear in the number of labels and synonyms: the labels are indexed by folded id once (the last of
    ids that fold alike wins, as a dict built in order would), and a folded label's children are
    re-parented once at the end through the chain of renames."""
    by_id: dict[str, list[str]] = {}
    for label_id in group.labels:
        by_id.setdefault(_fold(label_id), []).append(label_id)
    renamed: dict[str, str] = {}

    def final(label_id: str | None) -> str | None:
        while label_id in renamed:
            label_id = renamed[label_id]
        return label_id

    for label in list(group.labels.values()):
        if label.id not in group.labels:
            continue  # already folded into an earlier label
        for synonym in label.synonyms:
            ids = by_id.get(_fold(synonym))
            other = group.labels[ids[-1]] if ids else None
            if other is None or other is label:
                continue
            other.parent = final(other.parent)
            if other.parent not in (None, final(label.parent)):
                raise builder.fail(other.line, f"label {other.id!r} is a synonym of {label.id!r} but has a "
                                   "different parent; a synonym shares its label's place in the hierarchy")
            for code, prompts in other.prompt_sets.items():
                label.prompt_sets[code] = list(dict.fromkeys(label.prompt_sets.get(code, []) + prompts))
            other.synonym_sets.setdefault("en", []).append(other.id.replace("_", " "))
            for code, text in other.display.items():
                if code not in label.display:
                    label.display[code] = text
                elif _fold(text) != _fold(label.display[code]):
                    other.synonym_sets.setdefault(code, []).append(text)  # the folded label's own name still resolves
            for code, synonyms in other.synonym_sets.items():
                label.synonym_sets[code] = [s for s in _unique(label.synonym_sets.get(code, []) + synonyms)
                                            if _fold(s) != _fold(label.id)]
            label.parent = final(label.parent) or other.parent
            label.threshold = other.threshold if label.threshold is None else label.threshold
            del group.labels[other.id]
            ids.remove(other.id)
            renamed[other.id] = label.id
    if renamed:
        for child in group.labels.values():
            child.parent = final(child.parent)


def _link_hierarchy(group: Group, builder: _Builder) -> None:
    by_name = {}
    for label in group.labels.values():
        for name in (label.id, *label.synonyms):
            by_name.setdefault(_fold(name), label.id)
    for label in group.labels.values():
        if label.parent is None:
            continue
        parent = by_name.get(_fold(label.parent))
        if parent is None:
            raise builder.fail(label.line, f"label {label.id!r} has parent {label.parent!r}, which is not a label "
                               f"of group {group.name!r}; a parent must be in the same group")
        label.parent = parent
    checked: set[str] = set()  # labels whose chain up to a root is known to hold no cycle
    for label in group.labels.values():
        chain: dict[str, int] = {}  # this walk's labels, in order: each label is walked once in all
        current: str | None = label.id
        while current is not None and current not in checked:
            if current in chain:
                loop = " -> ".join([*list(chain)[chain[current]:], current])
                raise builder.fail(label.line, f"the hierarchy of group {group.name!r} has a cycle: {loop}")
            chain[current] = len(chain)
            current = group.labels[current].parent
        checked.update(chain)
    for label in group.labels.values():
        if label.parent is not None:
            group.labels[label.parent].children.append(label.id)


def _check_exclusive_overlap(groups: dict[str, Group], builder: _Builder) -> None:
    owner: dict[str, Group] = {}
    for group in groups.values():
        if group.mode != "exclusive":
            continue
        for label in group.labels.values():
            key = _fold(label.id)
            first = owner.get(key)
            if first is not None:
                other = first.labels[next(i for i in first.labels if _fold(i) == key)]
                raise builder.fail(label.line, f"label {label.id!r} is in two exclusive groups, {first.name!r} "
                                   f"(line {other.line}) and {group.name!r}: each group picks exactly one label, so "
                                   "a label may belong to only one of them; rename one or make a group 'multi'")
            owner[key] = group


def parse_taxonomy(text: str, source: str = "<taxonomy>", is_json: bool | None = None) -> Taxonomy:
    """Parse and check a taxonomy; raises TaxonomyError naming ``source`` and the line of any problem."""
    is_json = source.lower().endswith(".json") if is_json is None else is_json
    builder = _Builder(source)
    doc = builder.mapping(_read_document(text, source, is_json), "the taxonomy", 1, _TOP_KEYS)
    if "groups" not in doc:
        raise builder.fail(_line(doc), "the taxonomy has no 'groups'")
    raw_groups = doc["groups"]
    if not isinstance(raw_groups, dict) or not raw_groups:
        raise builder.fail(_line(doc, "groups"), "'groups' must be a mapping of group names to groups, and not empty")
    templates = builder.templates(doc.get("templates"), _line(doc, "templates"), {"en": list(DEFAULT_TEMPLATES)})
    groups: dict[str, Group] = {}
    for name, spec in raw_groups.items():
        line = _line(raw_groups, name)
        spec = builder.mapping(spec, f"group {name!r}", line, _GROUP_KEYS)
        mode = spec.get("mode", "exclusive")
        if mode not in MODES:
            raise builder.fail(_line(spec, "mode"), f"group {name!r}: mode must be one of {', '.join(MODES)}, "
                               f"got {mode!r}")
        score = spec.get("score", "softmax")
        if score not in SCORES:
            raise builder.fail(_line(spec, "score"), f"group {name!r}: score must be one of {', '.join(SCORES)}, "
                               f"got {score!r}")
        threshold = builder.number(spec.get("threshold", 0.0), f"threshold of group {name!r}",
                                   _line(spec, "threshold"), 0.0, 1.0)
        top_k = spec.get("top_k", 0)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise builder.fail(_line(spec, "top_k"), f"group {name!r}: top_k must be a whole number >= 0 "
                               f"(0: no limit), got {top_k!r}")
        group = Group(name, mode, score, threshold, top_k,
                      builder.templates(spec.get("templates"), _line(spec, "templates"), templates),
                      builder.labels(name, spec.get("labels"), line),
                      builder.display(spec.get("display"), _line(spec, "display"), name.replace("_", " ")), line)
        _fold_synonyms(group, builder)
        _link_hierarchy(group, builder)
        groups[name] = group
    _check_exclusive_overlap(groups, builder)
    name = doc.get("name") or Path(source).stem
    return Taxonomy(str(name), groups, source, str(doc.get("description") or ""))


def shipped_taxonomies() -> list[str]:
    """Names of the taxonomies that come with the pack (``artworks``, ``scenes``, ``spaces``)."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def load_taxonomy(name_or_path: str | os.PathLike[str]) -> Taxonomy:
    """A shipped taxonomy by name, or a YAML/JSON file."""
    text = str(name_or_path).strip()
    shipped = SHIPPED / f"{text}.yaml"
    path = shipped if text in shipped_taxonomies() else Path(text).expanduser()
    if not path.is_file():
        raise TaxonomyError(f"taxonomy {text!r} is neither a shipped one ({', '.join(shipped_taxonomies())}) nor a "
                            "YAML/JSON file")
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaxonomyError(f"cannot read taxonomy {str(path)!r}: {exc}") from exc
    return parse_taxonomy(content, str(path))
