"""Every bundled workflow (``workflows/*.json``, ComfyUI UI format) is checked against node signatures.

A node type must exist: one of ours (signature from the class's INPUT_TYPES / RETURN_TYPES), a core
node recorded in ``tests/data/object_info_core.json`` (a copy of entries of the shared
``object_info_core.json``, GET /object_info of a plain ComfyUI), or a UI-only node (Note, MarkdownNote,
Reroute, PrimitiveNode). Every link must join an output to an input of the same type, every required
input that is not a widget must be connected, and every widget value must be valid for its input, in
the order the frontend stores them (required then optional inputs; a "control after generate" value
after each seed). ``check_workflow`` returns every problem found, each naming the node and the input.
Core nodes ComfyUI marks deprecated are refused.

How each workflow opens is checked too: its saved view (``extra.ds``) at a zoom where the frontend draws text,
showing its Read me note and first group past the side bar of a reference window (``view_problems``), no node
over a group's title (``title_problems``), and a picture ``<name>.jpg`` beside it for the template browser
(made by ``scripts/workflow_pictures.py``).
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import atelier

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
CORE_INFO = ROOT / "tests" / "data" / "object_info_core.json"
SHARED_CORE_INFO = ROOT.parent / "shared" / "comfyui" / "object_info_core.json"

# ComfyUI (app/custom_node_manager.py) lists <pack>/<folder>/*.json in its template browser for every one of
# these folders, but serves /api/workflow_templates/<pack>/<file> from the first of them that exists.
TEMPLATE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
NOTE_NODES = frozenset({"Note", "MarkdownNote"})
UI_ONLY_NODES = NOTE_NODES | {"Reroute", "PrimitiveNode"}
MODE_NEVER, MODE_BYPASS = 2, 4  # LiteGraph node modes: muted, bypassed
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
# The frontend gives these INT inputs a "control after generate" value even without the flag; the shared
# object_info copy has the flags stripped, so core nodes rely on this rule (ours declare the flag).
IMPLICIT_SEED_NAMES = frozenset({"seed", "noise_seed"})
# Core inputs declared with image_upload / audio_upload (stripped from the shared copy): the frontend stores
# more values right after the file name ("image" for the upload button; two nulls for the audio player and
# its upload button, as ComfyUI's own audio templates hold).
UPLOAD_WIDGETS = {("LoadImage", "image"): ("image",), ("LoadAudio", "audio"): (None, None),
                  ("LoadVideo", "file"): ("image",)}
# Core COMBOs listing files on the user's disk: any file name is fine in a shared workflow.
FILE_COMBOS = frozenset({("LoadImage", "image")})
# Core inputs of type COMFY_AUTOGROW_V3 (their template is stripped from the shared copy): the frontend saves
# them as inputs "<name>.<prefix>0", "<name>.<prefix>1", ... of the template's type, at least `min` of them
# connected. (prefix, type, min, max) from ComfyUI 0.8.0's GET /object_info.
AUTOGROW_INPUTS = {("BatchImagesNode", "images"): ("image", "IMAGE", 2, 50)}
# Core nodes that ComfyUI 0.8.0's GET /object_info marks `deprecated: true` (a flag stripped from the shared
# copy); the frontend hides them from its search. Each with its replacement where ComfyUI names one.
DEPRECATED_CORE = {
    "ImageBatch": "BatchImagesNode (also shown as Batch Images)",
    "LatentBatch": "BatchLatentsNode",
    "CheckpointLoader": "CheckpointLoaderSimple",
    "ControlNetApply": "ControlNetApplyAdvanced",
    "ControlNetApplySD3": "ControlNetApplyAdvanced",
    "PerpNeg": "PerpNegGuider",
    "wanBlockSwap": None,
    "ByteDanceImageEditNode": None,
}


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # "COMBO" for a list of choices
    required: bool
    options: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    control_after_generate: bool = False
    force_input: bool = False
    any_file: bool = False  # a COMBO of file names: any string is accepted
    upload_values: tuple[Any, ...] = ()  # extra UI values stored after this widget
    autogrow: tuple[str, int, int] | None = None  # (prefix, min, max) of an input that grows as it is linked

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.force_input


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, InputSpec]  # in the frontend's order: required, then optional
    outputs: tuple[str, ...]
    source: str  # "atelier" or "core"


def signature_from_class(cls: type) -> Signature:
    spec = cls.INPUT_TYPES()
    inputs: dict[str, InputSpec] = {}
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            kind, opts = decl[0], (decl[1] if len(decl) > 1 and isinstance(decl[1], dict) else {})
            if isinstance(kind, (list, tuple)):
                inputs[name] = InputSpec(name, "COMBO", section == "required", options=tuple(kind))
                continue
            inputs[name] = InputSpec(
                name, kind, section == "required", options=tuple(opts["options"]) if "options" in opts else None,
                min=opts.get("min"), max=opts.get("max"),
                control_after_generate=bool(opts.get("control_after_generate")),
                force_input=bool(opts.get("forceInput") or opts.get("defaultInput")))
    return Signature(inputs, tuple(cls.RETURN_TYPES), "atelier")


def signature_from_object_info(node_type: str, entry: dict[str, Any]) -> Signature:
    declared = entry["inputs"]
    order = entry.get("input_order", {})
    names = [n for section in ("required", "optional") for n in order.get(section, [])]
    names += [n for n in declared if n not in names]  # hidden inputs are never in "inputs"
    inputs: dict[str, InputSpec] = {}
    for name in names:
        decl = declared[name]
        kind = decl["type"]
        autogrow = None
        if kind == "COMFY_AUTOGROW_V3" and (node_type, name) in AUTOGROW_INPUTS:
            prefix, kind, least, most = AUTOGROW_INPUTS[(node_type, name)]
            autogrow = (prefix, least, most)
        inputs[name] = InputSpec(
            name, kind, bool(decl.get("required")),
            options=tuple(decl["options"]) if "options" in decl else None, min=decl.get("min"), max=decl.get("max"),
            control_after_generate=bool(decl.get("control_after_generate")) or (
                kind == "INT" and name in IMPLICIT_SEED_NAMES),
            force_input=bool(decl.get("forceInput")),
            # an empty list: a model folder that had no files when the copy was taken
            any_file=(node_type, name) in FILE_COMBOS or (kind == "COMBO" and not decl.get("options")),
            upload_values=UPLOAD_WIDGETS.get((node_type, name), ()), autogrow=autogrow)
    return Signature(inputs, tuple(entry["outputs"]), "core")


def input_spec(sig: Signature, name: str | None) -> InputSpec | None:
    """The input a saved input entry belongs to; "images.image3" belongs to the autogrow input "images"."""
    if name in sig.inputs:
        return sig.inputs[name]
    base, _, slot = (name or "").partition(".")
    spec = sig.inputs.get(base)
    if spec is None or spec.autogrow is None:
        return None
    prefix, _, most = spec.autogrow
    index = slot.removeprefix(prefix)
    return spec if slot.startswith(prefix) and index.isdigit() and int(index) < most else None


def load_signatures() -> dict[str, Signature]:
    core = json.loads(CORE_INFO.read_text(encoding="utf-8"))["nodes"]
    signatures = {name: signature_from_object_info(name, entry) for name, entry in core.items()}
    signatures.update({name: signature_from_class(cls) for name, cls in atelier.NODE_CLASS_MAPPINGS.items()})
    return signatures


def widget_problem(spec: InputSpec, value: Any) -> str | None:
    """Why ``value`` is not valid for the widget ``spec``, or None."""
    if spec.type == "COMBO":
        if spec.any_file:
            return None if isinstance(value, str) and value else f"{value!r} is not a file name"
        return None if value in (spec.options or ()) else f"{value!r} is not one of {list(spec.options or ())}"
    if spec.type == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if spec.type == "STRING":
        if not isinstance(value, str):
            return f"{value!r} is not a string"
        if spec.options is not None and value not in spec.options:
            return f"{value!r} is not one of {list(spec.options)}"
        return None
    if spec.type == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{value!r} is not an integer"
    elif spec.type == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{value!r} is not a finite number"
    if spec.min is not None and value < spec.min:
        return f"{value!r} is below the minimum {spec.min}"
    if spec.max is not None and value > spec.max:
        return f"{value!r} is above the maximum {spec.max}"
    return None


def expected_widgets(sig: Signature) -> Iterator[tuple[str, InputSpec | None, str | None]]:
    """(label, spec or None, (fixed UI value,) or None) for each slot of widgets_values, in order."""
    for spec in sig.inputs.values():
        if not spec.is_widget:
            continue
        yield spec.name, spec, None
        if spec.control_after_generate:
            yield f"{spec.name} (control after generate)", None, None
        for value in spec.upload_values:
            yield f"{spec.name} (upload widget)", None, (value,)


def _compatible(a: str, b: str, wildcard: bool) -> bool:
    if a == b:
        return True
    if wildcard and "*" in (a, b):
        return True
    return bool(set(a.split(",")) & set(b.split(",")) - {"*"})  # "FLOAT,INT" style unions


def check_workflow(workflow: dict[str, Any], signatures: dict[str, Signature]) -> list[str]:
    """Every problem of a UI-format workflow, as messages naming the node (id and type) and the input."""
    problems: list[str] = []
    for key in ("nodes", "links", "last_node_id", "last_link_id", "version"):
        if key not in workflow:
            problems.append(f"workflow: no {key!r} key (not the UI format the frontend saves)")
    if problems:
        return problems
    nodes: dict[int, dict[str, Any]] = {}
    for node in workflow["nodes"]:
        if node["id"] in nodes:
            problems.append(f"node {node['id']}: id used twice")
        nodes[node["id"]] = node
    if nodes and workflow["last_node_id"] < max(nodes):
        problems.append(f"workflow: last_node_id {workflow['last_node_id']} is below node id {max(nodes)}")

    def label(node: dict[str, Any]) -> str:
        return f"node {node['id']} ({node.get('type')})"

    known: dict[int, Signature] = {}
    for node in nodes.values():
        node_type = node.get("type")
        if node_type in DEPRECATED_CORE:
            instead = DEPRECATED_CORE[node_type]
            problems.append(f"{label(node)}: {node_type} is deprecated in ComfyUI (hidden from the node search); "
                            + (f"use {instead}" if instead else "remove it"))
        if node_type in signatures:
            known[node["id"]] = signatures[node_type]
        elif node_type not in UI_ONLY_NODES:
            problems.append(f"{label(node)}: unknown node type {node_type!r}: not an Atelier node, not a core node "
                            f"recorded in {CORE_INFO.relative_to(ROOT)}, not a UI-only node")

    links: dict[int, list[Any]] = {}
    for link in workflow["links"]:
        if not isinstance(link, list) or len(link) != 6:
            problems.append(f"link {link!r}: not [id, from_node, from_slot, to_node, to_slot, type]")
            continue
        if link[0] in links:
            problems.append(f"link {link[0]}: id used twice")
        links[link[0]] = link
    if links and workflow["last_link_id"] < max(links):
        problems.append(f"workflow: last_link_id {workflow['last_link_id']} is below link id {max(links)}")

    # per node: input names, required connections, widget values
    for node in nodes.values():
        sig = known.get(node["id"])
        inputs = node.get("inputs") or []
        values = node.get("widgets_values")
        if node.get("type") in NOTE_NODES:
            if not (isinstance(values, list) and len(values) == 1 and isinstance(values[0], str)):
                problems.append(f"{label(node)}: widgets_values must be one text, not {values!r}")
            continue
        if sig is None:
            continue
        for entry in inputs:
            spec = input_spec(sig, entry.get("name"))
            if spec is None:
                problems.append(f"{label(node)}: input {entry.get('name')!r} is not an input of {node['type']}")
            elif entry.get("widget") and not spec.is_widget:
                problems.append(f"{label(node)}: input {spec.name!r} ({spec.type}) is saved as a widget")
        linked = [input_spec(sig, e.get("name")) for e in inputs if e.get("link") is not None]
        muted = node.get("mode") in (MODE_NEVER, MODE_BYPASS)  # such nodes never run
        for spec in sig.inputs.values():
            if not spec.required or spec.is_widget or muted:
                continue
            if spec.autogrow is not None and linked.count(spec) < spec.autogrow[1]:
                problems.append(f"{label(node)}: required input {spec.name!r} ({spec.type}) has {linked.count(spec)} "
                                f"connections, at least {spec.autogrow[1]} are needed")
            elif spec not in linked:
                problems.append(f"{label(node)}: required input {spec.name!r} ({spec.type}) is not connected")
        slots = list(expected_widgets(sig))
        if values is None:
            values = []
        if not isinstance(values, list):
            problems.append(f"{label(node)}: widgets_values must be a list, not {type(values).__name__}")
            continue
        if len(values) != len(slots):
            problems.append(f"{label(node)}: {len(values)} widget values but {node['type']} has {len(slots)} "
                            f"widget slots: {[s[0] for s in slots]}")
            continue
        for (name, spec, fixed), value in zip(slots, values):
            if spec is not None:
                why = widget_problem(spec, value)
                if why:
                    problems.append(f"{label(node)}: input {name!r} ({spec.type}): {why}")
            elif fixed is not None:
                if value != fixed[0]:
                    problems.append(f"{label(node)}: {name}: {value!r} should be {fixed[0]!r}")
            elif value not in CONTROL_VALUES:
                problems.append(f"{label(node)}: {name}: {value!r} is not one of {list(CONTROL_VALUES)}")

    # per link: both ends exist, agree with the link, and carry the same type
    def output_type(node: dict[str, Any], slot: int) -> tuple[str | None, str | None]:
        """(declared type, saved type) of an output slot."""
        saved = (node.get("outputs") or [])[slot].get("type")
        sig = known.get(node["id"])
        if sig is None:  # Reroute / PrimitiveNode: their type is whatever they carry
            return saved, saved
        return (sig.outputs[slot] if slot < len(sig.outputs) else None), saved

    def real_source(link: list[Any], depth: int = 0) -> tuple[dict[str, Any], int] | None:
        """The node and slot a link's value comes from, through Reroutes."""
        src = nodes.get(link[1])
        if src is None or depth > len(nodes):
            return None
        if src.get("type") != "Reroute":
            return src, link[2]
        upstream = (src.get("inputs") or [{}])[0].get("link")
        return real_source(links[upstream], depth + 1) if upstream in links else None

    for link_id, (_, src_id, src_slot, dst_id, dst_slot, link_type) in links.items():
        where = f"link {link_id} ({link_type})"
        src, dst = nodes.get(src_id), nodes.get(dst_id)
        if src is None or dst is None:
            problems.append(f"{where}: joins missing node {src_id if src is None else dst_id}")
            continue
        outs, ins = src.get("outputs") or [], dst.get("inputs") or []
        if not 0 <= src_slot < len(outs) or not 0 <= dst_slot < len(ins):
            problems.append(f"{where}: from {label(src)} slot {src_slot} to {label(dst)} slot {dst_slot}: no such slot")
            continue
        dst_in = ins[dst_slot]
        where = (f"{where}: from {label(src)} output {outs[src_slot].get('name')!r} "
                 f"to {label(dst)} input {dst_in.get('name')!r}")
        if link_id not in (outs[src_slot].get("links") or []) or dst_in.get("link") != link_id:
            problems.append(f"{where}: the nodes' own link ids do not name this link")
        declared_out, saved_out = output_type(src, src_slot)
        if declared_out is None:
            problems.append(f"{where}: {src['type']} has no output slot {src_slot}")
            continue
        dst_sig = known.get(dst_id)
        dst_spec = input_spec(dst_sig, dst_in.get("name")) if dst_sig else None
        if dst_sig is not None and dst_spec is None:
            continue  # reported above as an unknown input
        declared_in = dst_spec.type if dst_spec else dst_in.get("type")
        # a Reroute carries any type; a core input declared "*" (PreviewAny) takes any type
        wildcard = "Reroute" in (src.get("type"), dst.get("type")) or declared_in == "*"
        types = [("link", link_type), ("output", declared_out), ("saved output", saved_out),
                 ("input", declared_in), ("saved input", dst_in.get("type"))]
        for (what_a, a), (what_b, b) in zip(types, types[1:]):
            if a is None or b is None or not _compatible(str(a), str(b), wildcard):
                problems.append(f"{where}: type mismatch: {what_a} type {a!r} but {what_b} type {b!r}")
                break
        if dst.get("type") != "Reroute" and src.get("type") == "Reroute":
            origin = real_source(links[link_id])
            if origin is None:
                problems.append(f"{where}: the Reroute is fed by nothing")
            elif known.get(origin[0]["id"]) is not None:
                real = output_type(*origin)[0]
                if real is None or not _compatible(real, str(declared_in), False):
                    problems.append(f"{where}: type mismatch through Reroute: {label(origin[0])} gives {real!r}, "
                                    f"input wants {declared_in!r}")
    # a PrimitiveNode's value must suit the widget it drives
    for node in nodes.values():
        if node.get("type") != "PrimitiveNode":
            continue
        values = node.get("widgets_values") or []
        for out in node.get("outputs") or []:
            for link_id in out.get("links") or []:
                link = links.get(link_id)
                target = nodes.get(link[3]) if link else None
                if target is None or target["id"] not in known or not values:
                    continue
                name = (target.get("inputs") or [])[link[4]].get("name")
                spec = input_spec(known[target["id"]], name)
                why = widget_problem(spec, values[0]) if spec and spec.is_widget else None
                if why:
                    problems.append(f"{label(node)}: value for {label(target)} input {name!r}: {why}")
    return problems


# ---- how a workflow opens in the frontend ----
# Measured in ComfyUI's frontend 1.35.9 (ComfyUI 0.8.0) in a 1280x800 window: the canvas fills the window; the
# tab bar (38 px) and below it the workflow's name and the Run toolbar (to y = 90) cover its top, the icon bar
# (59 px) its left edge. Side panels (node library, ...) are closed on a fresh start and float over the canvas.
REFERENCE_WINDOW = (1280, 800)
VISIBLE = (60, 90, 1280, 800)  # left, top, right, bottom of the uncovered canvas, in window pixels
# Below LiteGraph.Canvas.MinFontSizeForLOD (8 px) / NODE_TEXT_SIZE (14 px) = 0.57 the frontend draws nodes as
# grey boxes without text; 0.7-0.8 keeps the text readable and shows enough of the graph.
SCALE_RANGE = (0.7, 0.8)
NODE_TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its pos
NODE_BADGE_HEIGHT = 22  # and above that, 2 px up, the 20 px badges (the pack's name on each of its nodes)
GROUP_TITLE_SCALE = 1.4  # a group's title band is font_size x 1.4 tall (24 px: 33.6)
NOTE_TITLE = "Read me"
PICTURE_BYTES = (5_000, 150_000)  # a picture for the template browser: small, but a real picture


Rect = tuple[float, float, float, float]  # left, top, right, bottom


def node_rect(node: dict[str, Any]) -> Rect:
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - NODE_TITLE_HEIGHT, x + w, y + h


def group_rect(group: dict[str, Any]) -> Rect:
    x, y, w, h = group["bounding"]
    return x, y, x + w, y + h


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def view_problems(workflow: dict[str, Any]) -> list[str]:
    """Why the saved view (extra.ds) does not open readable on the Read me note and the first group."""
    ds = (workflow.get("extra") or {}).get("ds")
    if not ds:
        return ["no saved view (extra.ds): the frontend opens it wherever the last graph was"]
    scale, (ox, oy) = ds["scale"], ds["offset"]
    problems = []
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        problems.append(f"saved zoom {scale:.0%} is outside {SCALE_RANGE[0]:.0%}-{SCALE_RANGE[1]:.0%}")
    notes = [n for n in workflow["nodes"] if n.get("type") in NOTE_NODES and n.get("title") == NOTE_TITLE]
    groups = workflow.get("groups") or []
    shown = [(f"note {NOTE_TITLE!r}", node_rect(n)) for n in notes[:1]]
    shown += [(f"first group {g.get('title')!r}", group_rect(g)) for g in groups[:1]]
    if not notes:
        problems.append(f"no note titled {NOTE_TITLE!r}")
    if not groups:
        problems.append("no group")
    for what, (left, top, right, bottom) in shown:
        on_screen = [(left + ox) * scale, (top + oy) * scale, (right + ox) * scale, (bottom + oy) * scale]
        if not (VISIBLE[0] <= on_screen[0] and VISIBLE[1] <= on_screen[1]
                and on_screen[2] <= VISIBLE[2] and on_screen[3] <= VISIBLE[3]):
            problems.append(f"{what} opens at {[round(v) for v in on_screen]} in a {REFERENCE_WINDOW[0]}x"
                            f"{REFERENCE_WINDOW[1]} window, not inside the uncovered canvas {list(VISIBLE)}")
    return problems


def title_problems(workflow: dict[str, Any]) -> list[str]:
    """Nodes (their badges included) drawn over a group's title band."""
    problems = []
    for group in workflow.get("groups") or []:
        left, top, right, _ = group_rect(group)
        band = (left, top, right, top + group.get("font_size", 24) * GROUP_TITLE_SCALE)
        for node in workflow["nodes"]:
            x0, y0, x1, y1 = node_rect(node)
            if _overlap((x0, y0 - NODE_BADGE_HEIGHT, x1, y1), band):
                problems.append(f"node {node['id']} ({node.get('type')}) covers the title of group "
                                f"{group.get('title')!r}")
    return problems


@pytest.fixture(scope="module")
def signatures() -> dict[str, Signature]:
    return load_signatures()


def test_there_are_workflows() -> None:
    assert WORKFLOWS, f"no workflows in {WORKFLOW_DIR}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_is_valid(path: Path, signatures: dict[str, Signature]) -> None:
    workflow = json.loads(path.read_text(encoding="utf-8"))
    problems = check_workflow(workflow, signatures)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_has_an_explaining_note(path: Path) -> None:
    workflow = json.loads(path.read_text(encoding="utf-8"))
    assert any(n.get("type") in NOTE_NODES for n in workflow["nodes"]), f"{path.name} has no Note or MarkdownNote"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_opens_readable_on_its_note_and_first_group(path: Path) -> None:
    problems = view_problems(json.loads(path.read_text(encoding="utf-8")))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_no_node_covers_a_group_title(path: Path) -> None:
    problems = title_problems(json.loads(path.read_text(encoding="utf-8")))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_has_a_picture_for_the_template_browser(path: Path) -> None:
    # the frontend asks /api/workflow_templates/<pack>/<name>.jpg, served from the workflow's own folder
    picture = path.with_suffix(".jpg")
    assert picture.is_file(), (f"no {picture.name} beside {path.name}: the template browser shows a placeholder; "
                               f"make it with scripts/workflow_pictures.py")
    data = picture.read_bytes()
    assert PICTURE_BYTES[0] <= len(data) <= PICTURE_BYTES[1], f"{picture.name} is {len(data)} bytes"
    with Image.open(picture) as image:
        assert image.format == "JPEG" and min(image.size) >= 200, (picture.name, image.format, image.size)
        image.load()


def test_view_checks_report_a_workflow_opening_under_the_sidebar() -> None:
    wf = _augment_workflow()
    assert view_problems(wf) == [] and title_problems(wf) == []
    wf["extra"]["ds"] = {"scale": 0.45, "offset": [300, 120]}  # as it was: text not drawn, note under the icon bar
    _node(wf, "AtelierLoadImageFolder")["pos"][1] = wf["groups"][0]["bounding"][1] + 10
    text = "\n".join(view_problems(wf) + title_problems(wf))
    assert "saved zoom 45% is outside 70%-80%" in text
    assert "note 'Read me' opens at [" in text and "not inside the uncovered canvas [60, 90, 1280, 800]" in text
    assert "AtelierLoadImageFolder) covers the title of group '1 - Load and preprocess'" in text


def test_template_browser_serves_the_workflow_folder() -> None:
    present = [f for f in TEMPLATE_FOLDERS if (ROOT / f).is_dir()]
    assert present[:1] == [WORKFLOW_DIR.name], (
        f"ComfyUI serves workflow templates from {present[0]}/, the first of {TEMPLATE_FOLDERS} in the pack, so "
        f"{WORKFLOW_DIR.name}/*.json are listed in the template browser but fail to load (HTTP 404); rename "
        f"{present[0]}/ to a name not in that list")


def test_core_copy_matches_the_shared_signatures() -> None:
    if not SHARED_CORE_INFO.exists():
        pytest.skip(f"{SHARED_CORE_INFO} is not here")
    shared = json.loads(SHARED_CORE_INFO.read_text(encoding="utf-8"))
    ours = json.loads(CORE_INFO.read_text(encoding="utf-8"))
    assert "_about" in ours
    for name, entry in ours["nodes"].items():
        assert entry == shared["nodes"].get(name), f"{name} differs from {SHARED_CORE_INFO}"


# ---- the checker itself must catch broken workflows ----

def _augment_workflow() -> dict[str, Any]:
    return json.loads((WORKFLOW_DIR / "augment_dataset.json").read_text(encoding="utf-8"))


def _node(workflow: dict[str, Any], node_type: str) -> dict[str, Any]:
    return next(n for n in workflow["nodes"] if n["type"] == node_type)


def _widget_index(node_type: str, name: str) -> int:
    sig = signature_from_class(atelier.NODE_CLASS_MAPPINGS[node_type])
    return [s[0] for s in expected_widgets(sig)].index(name)


def _wrong_link_type(wf: dict[str, Any]) -> None:
    # the recipe output wired into Augment Images' IMAGE input instead of its recipe input
    link = next(li for li in wf["links"] if li[5] == "ATELIER_AUGMENT" and _by_id(wf, li[3])["type"]
                == "AtelierAugmentImages")
    aug = _by_id(wf, link[3])
    old = aug["inputs"][link[4]]
    image_slot = next(i for i, e in enumerate(aug["inputs"]) if e["name"] == "images")
    image_link = aug["inputs"][image_slot]["link"]
    wf["links"] = [li for li in wf["links"] if li[0] != image_link]
    for n in wf["nodes"]:
        for out in n.get("outputs") or []:
            out["links"] = [x for x in out.get("links") or [] if x != image_link]
    aug["inputs"][image_slot]["link"] = link[0]
    old["link"] = None
    link[4] = image_slot


def _by_id(wf: dict[str, Any], node_id: int) -> dict[str, Any]:
    return next(n for n in wf["nodes"] if n["id"] == node_id)


def _bad_combo(wf: dict[str, Any]) -> None:
    _node(wf, "AtelierLoadImageFolder")["widgets_values"][_widget_index("AtelierLoadImageFolder", "resize")] = "huge"


def _unknown_type(wf: dict[str, Any]) -> None:
    _node(wf, "AtelierAugmentRecipe")["type"] = "AtelierNoSuchNode"


def _out_of_range(wf: dict[str, Any]) -> None:
    _node(wf, "AtelierMultiplyDataset")["widgets_values"][
        _widget_index("AtelierMultiplyDataset", "random_variants")] = 1000


def _float_as_string(wf: dict[str, Any]) -> None:
    _node(wf, "AtelierAugmentRecipe")["widgets_values"][_widget_index("AtelierAugmentRecipe", "hflip_p")] = "0.5"


def _missing_control_value(wf: dict[str, Any]) -> None:
    node = _node(wf, "AtelierAugmentImages")
    del node["widgets_values"][_widget_index("AtelierAugmentImages", "seed (control after generate)")]


def _bad_control_value(wf: dict[str, Any]) -> None:
    node = _node(wf, "AtelierAugmentImages")
    node["widgets_values"][_widget_index("AtelierAugmentImages", "seed (control after generate)")] = "sometimes"


def _unconnected_required(wf: dict[str, Any]) -> None:
    node = _node(wf, "AtelierMultiplyDataset")
    entry = next(e for e in node["inputs"] if e["name"] == "images")
    wf["links"] = [li for li in wf["links"] if li[0] != entry["link"]]
    for n in wf["nodes"]:
        for out in n.get("outputs") or []:
            out["links"] = [x for x in out.get("links") or [] if x != entry["link"]]
    entry["link"] = None


def _dangling_link(wf: dict[str, Any]) -> None:
    wf["links"].append([99, 1, 0, 42, 0, "IMAGE"])
    wf["last_link_id"] = 99


BREAKAGES = {
    "wrong link type": (_wrong_link_type, ["input 'images'", "type mismatch", "ATELIER_AUGMENT", "IMAGE"]),
    "bad combo value": (_bad_combo, ["AtelierLoadImageFolder", "input 'resize'", "'huge' is not one of"]),
    "unknown node type": (_unknown_type, ["unknown node type 'AtelierNoSuchNode'"]),
    "INT out of range": (_out_of_range, ["input 'random_variants'", "above the maximum 64"]),
    "FLOAT given as text": (_float_as_string, ["input 'hflip_p'", "not a finite number"]),
    "missing control value": (_missing_control_value, ["AtelierAugmentImages", "widget values but"]),
    "bad control value": (_bad_control_value, ["seed (control after generate)", "'sometimes'"]),
    "required input unconnected": (_unconnected_required, ["AtelierMultiplyDataset", "required input 'images'",
                                                           "not connected"]),
    "link to a missing node": (_dangling_link, ["link 99", "missing node 42"]),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_checker_reports_a_broken_workflow(breakage: str, signatures: dict[str, Signature]) -> None:
    wf = _augment_workflow()
    assert check_workflow(wf, signatures) == []
    break_it, expected = BREAKAGES[breakage]
    broken = copy.deepcopy(wf)
    break_it(broken)
    problems = check_workflow(broken, signatures)
    assert any(all(part in p for part in expected) for p in problems), (
        f"{breakage}: expected a problem with {expected}, got {problems}")


def test_checker_reports_every_breakage_at_once(signatures: dict[str, Signature]) -> None:
    wf = _augment_workflow()
    for name in ("wrong link type", "bad combo value", "unknown node type"):
        BREAKAGES[name][0](wf)
    text = "\n".join(check_workflow(wf, signatures))
    assert "type mismatch" in text and "'huge' is not one of" in text and "AtelierNoSuchNode" in text


def _core_workflow() -> dict[str, Any]:
    """A text-to-image graph saved as the frontend saves it (values from ComfyUI's default template)."""
    def node(id_: int, type_: str, inputs: list[Any], outputs: list[Any], values: list[Any]) -> dict[str, Any]:
        return {"id": id_, "type": type_, "pos": [0, 0], "size": [300, 100], "flags": {}, "order": id_, "mode": 0,
                "inputs": [{"name": n, "type": t, "link": li} for n, t, li in inputs],
                "outputs": [{"name": n, "type": t, "links": li, "slot_index": i} for i, (n, t, li) in
                            enumerate(outputs)],
                "properties": {"Node name for S&R": type_}, "widgets_values": values}
    nodes = [
        node(4, "CheckpointLoaderSimple", [], [("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [3, 5]), ("VAE", "VAE", [8])],
             ["v1-5-pruned-emaonly-fp16.safetensors"]),
        node(3, "KSampler", [("model", "MODEL", 1), ("positive", "CONDITIONING", 4),
                             ("negative", "CONDITIONING", 6), ("latent_image", "LATENT", 2)],
             [("LATENT", "LATENT", [7])], [685468484323813, "randomize", 20, 8, "euler", "normal", 1]),
        node(8, "VAEDecode", [("samples", "LATENT", 7), ("vae", "VAE", 8)], [("IMAGE", "IMAGE", [10])], []),
        node(10, "Reroute", [("", "*", 10)], [("", "IMAGE", [9])], []),
        node(9, "SaveImage", [("images", "IMAGE", 9)], [], ["ComfyUI"]),
        node(7, "CLIPTextEncode", [("clip", "CLIP", 5)], [("CONDITIONING", "CONDITIONING", [6])], ["text, watermark"]),
        node(6, "CLIPTextEncode", [("clip", "CLIP", 3)], [("CONDITIONING", "CONDITIONING", [4])], ["a glass bottle"]),
        node(5, "EmptyLatentImage", [], [("LATENT", "LATENT", [2])], [512, 512, 1]),
        node(11, "LoadImage", [], [("IMAGE", "IMAGE", []), ("MASK", "MASK", [])], ["my_photo.png", "image"]),
    ]
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"],
             [4, 6, 0, 3, 1, "CONDITIONING"], [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"],
             [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"], [10, 8, 0, 10, 0, "IMAGE"], [9, 10, 0, 9, 0, "IMAGE"]]
    return {"last_node_id": 11, "last_link_id": 10, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4}


def test_checker_accepts_core_nodes_as_the_frontend_saves_them(signatures: dict[str, Signature]) -> None:
    assert check_workflow(_core_workflow(), signatures) == []


def test_checker_follows_reroutes(signatures: dict[str, Signature]) -> None:
    wf = _core_workflow()
    # the Reroute now carries the MASK of LoadImage into SaveImage's IMAGE input
    wf["links"] = [li for li in wf["links"] if li[0] != 10] + [[11, 11, 1, 10, 0, "MASK"]]
    _by_id(wf, 8)["outputs"][0]["links"] = []
    _by_id(wf, 11)["outputs"][1]["links"] = [11]
    _by_id(wf, 10)["inputs"][0]["link"] = 11
    wf["last_link_id"] = 11
    problems = check_workflow(wf, signatures)
    assert any("through Reroute" in p and "'MASK'" in p for p in problems), problems


def test_checker_validates_core_widgets(signatures: dict[str, Signature]) -> None:
    wf = _core_workflow()
    _by_id(wf, 3)["widgets_values"][4] = "no_such_sampler"
    _by_id(wf, 5)["widgets_values"][0] = 8  # EmptyLatentImage width, min 16
    del _by_id(wf, 11)["widgets_values"][1]  # LoadImage without its upload value
    text = "\n".join(check_workflow(wf, signatures))
    assert "node 3 (KSampler): input 'sampler_name'" in text
    assert "node 5 (EmptyLatentImage): input 'width' (INT): 8 is below the minimum 16" in text
    assert "node 11 (LoadImage): 1 widget values but LoadImage has 2" in text


def _style_workflow() -> dict[str, Any]:
    return json.loads((WORKFLOW_DIR / "style_transfer.json").read_text(encoding="utf-8"))


def test_checker_refuses_deprecated_core_nodes(signatures: dict[str, Signature]) -> None:
    wf = _style_workflow()
    batch = _node(wf, "BatchImagesNode")
    # the style pictures batched as before ComfyUI deprecated Batch Images (ImageBatch, inputs image1 and image2)
    batch["type"] = "ImageBatch"
    for entry, name in zip(batch["inputs"], ("image1", "image2")):
        entry["name"] = name
    batch["inputs"] = batch["inputs"][:2]
    text = "\n".join(check_workflow(wf, signatures))
    assert f"node {batch['id']} (ImageBatch): ImageBatch is deprecated" in text and "use BatchImagesNode" in text


def test_checker_knows_growing_inputs(signatures: dict[str, Signature]) -> None:
    wf = _style_workflow()
    assert check_workflow(wf, signatures) == []
    batch = _node(wf, "BatchImagesNode")
    second = batch["inputs"][1]
    wf["links"] = [li for li in wf["links"] if li[0] != second["link"]]
    for n in wf["nodes"]:
        for out in n.get("outputs") or []:
            out["links"] = [x for x in out.get("links") or [] if x != second["link"]]
    second["link"] = None
    batch["inputs"].append({"name": "images.picture3", "type": "IMAGE", "link": None})
    text = "\n".join(check_workflow(wf, signatures))
    assert (f"node {batch['id']} (BatchImagesNode): required input 'images' (IMAGE) has 1 connections, "
            "at least 2 are needed") in text
    assert "input 'images.picture3' is not an input of BatchImagesNode" in text
