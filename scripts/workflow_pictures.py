"""Pictures of the bundled workflows for ComfyUI's template browser: workflows/<name>.jpg beside <name>.json.

ComfyUI serves a custom node pack's workflows/ folder at /api/workflow_templates/<pack>/ (app/custom_node_manager.py)
and its template browser shows /api/workflow_templates/<pack>/<name>.jpg as the picture of <name>.json. This
script opens each workflow in the real frontend in a headless Chromium, as the template browser opens it, fits the
whole graph into the view and saves what the frontend draws (UI chrome hidden) as a small JPEG. Rerun it whenever
a workflow changes.

Run it with a Python that has Playwright (``pip install playwright``, then ``playwright install chromium``, or
give an installed Chromium with ``--chromium`` or ``$CHROMIUM``), in either of two ways:

- ``--comfyui DIR`` (or ``$COMFYUI_DIR``): the script starts that ComfyUI on a free local port, on the CPU, with a
  throwaway ``--base-directory`` whose only custom node pack is this checkout, so your models, inputs, outputs and
  settings are not touched, and stops it afterwards. ComfyUI runs with its own Python: ``--comfyui-python`` (or
  ``$COMFYUI_PYTHON``), by default ``DIR/venv/bin/python`` or ``DIR/.venv/bin/python``.
- ``--url URL`` (or ``$COMFYUI_URL``): a running ComfyUI that loads this checkout (checked: it must serve these very
  workflow files).

On the team machine, from the repository root::

    CHROMIUM=/usr/bin/chromium COMFYUI_DIR=/work/comfy /work/pw-venv/bin/python scripts/workflow_pictures.py

Workflow names (file stems) pick some workflows; by default all of workflows/*.json.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "workflows"
PACK_NAME = "comfyui-atelier"  # the pack's folder name in the throwaway ComfyUI's custom_nodes
# The page is drawn at VIEWPORT css pixels and shot at PIXEL_RATIO: a 600x600 picture of a 1200x1200 view, square
# like the template browser's cards (it letterboxes other shapes).
VIEWPORT = {"width": 1200, "height": 1200}
PIXEL_RATIO = 0.5
JPEG_QUALITY = 80
START_TIMEOUT_S = 300

# In the page: open a workflow as the template browser does (its JSON from the template route, then
# loadGraphData), fit the whole graph into the view and report what the frontend made of it.
OPEN_WORKFLOW = """async ([pack, name]) => {
  const MARGIN = 40;
  const response = await fetch(`/api/workflow_templates/${pack}/${name}.json`, {cache: 'no-store'});
  const workflow = await response.json();
  await window.app.loadGraphData(workflow, true, true, name, {openSource: 'template'});
  const canvas = window.app.canvas, graph = window.app.graph;
  // fit every node (its title bar above pos included) and group into the view, in css pixels
  const title = window.LiteGraph.NODE_TITLE_HEIGHT;
  const rects = [...graph._nodes.map(n => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]),
                 ...graph.groups.map(g => g._bounding)];
  const left = Math.min(...rects.map(r => r[0])) - MARGIN, top = Math.min(...rects.map(r => r[1])) - MARGIN;
  const width = Math.max(...rects.map(r => r[0] + r[2])) + MARGIN - left;
  const height = Math.max(...rects.map(r => r[1] + r[3])) + MARGIN - top;
  const view = canvas.canvas.getBoundingClientRect();
  const scale = Math.min(view.width / width, view.height / height);
  canvas.ds.scale = scale;
  canvas.ds.offset = [(view.width / scale - width) / 2 - left, (view.height / scale - height) / 2 - top];
  canvas.min_font_size_for_lod = 0;  // draw titles and widgets at any zoom (this page only, not a setting)
  canvas.show_info = false;
  canvas.setDirty(true, true);
  const saved = new Map(workflow.nodes.map(n => [n.id, n.size]));
  return {
    missing: window.app.graph._nodes.filter(n => !(n.type in window.LiteGraph.registered_node_types))
      .map(n => n.type),
    grown: window.app.graph._nodes.filter(n => {
      const size = saved.get(n.id);
      return size && (n.size[0] > size[0] + 0.5 || n.size[1] > size[1] + 0.5);
    }).map(n => `node ${n.id} (${n.type}) is drawn ${n.size.map(Math.ceil).join('x')}, `
                + `saved ${saved.get(n.id).join('x')}`),
  };
}"""
# Everything over the canvas but the nodes' own widgets: tabs, side bar, the workflow's name and Run toolbar (in
# the canvas panel), minimap, zoom buttons, toasts and dialogs.
HIDE_CHROME = """
.workflow-tabs-container, .side-toolbar-container, .p-splitterpanel > *:not(.graph-canvas-container),
.minimap-main-container, .p-buttongroup, .p-toast, .p-dialog-mask { display: none !important; }
"""


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_comfyui(comfy_dir: Path, python: Path, base: Path) -> tuple[subprocess.Popen[bytes], str]:
    """ComfyUI on a free port, with ``base`` as its base directory holding only this checkout as a pack."""
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(ROOT, target_is_directory=True)
    port = free_port()
    log = open(base / "comfyui.log", "wb")  # noqa: SIM115 - open while ComfyUI runs
    process = subprocess.Popen(
        [str(python), str(comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--base-directory", str(base)], cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"ComfyUI stopped while starting (exit {process.returncode}); its log: {base}/comfyui.log")
        try:
            fetch_json(f"{url}/api/workflow_templates")
            return process, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    process.terminate()
    raise SystemExit(f"ComfyUI did not answer at {url} within {START_TIMEOUT_S} s; its log: {base}/comfyui.log")


def served_pack(url: str, names: list[str]) -> str:
    """The pack name under which the server at ``url`` serves this checkout's workflows, unchanged."""
    listed = fetch_json(f"{url}/api/workflow_templates")
    for pack, templates in listed.items():
        if set(names) <= set(templates) and all(
                fetch_json(f"{url}/api/workflow_templates/{pack}/{name}.json")
                == json.loads((WORKFLOW_DIR / f"{name}.json").read_text(encoding="utf-8")) for name in names):
            return pack
    raise SystemExit(f"the ComfyUI at {url} does not serve this checkout's workflows {names} (its template packs: "
                     f"{sorted(listed)}); put this checkout in its custom_nodes and restart it, or use --comfyui")


def take_pictures(url: str, pack: str, names: list[str], chromium: str | None) -> list[str]:
    """Saves workflows/<name>.jpg for each name; returns warnings about the layout the frontend drew."""
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        raise SystemExit("this script needs Playwright in the Python that runs it: pip install playwright, then "
                         "playwright install chromium (or give an installed Chromium with --chromium)") from None

    warnings: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=PIXEL_RATIO)
        page.goto(url, wait_until="networkidle")
        page.wait_for_function("window.app && window.app.graph && window.app.extensionManager", timeout=120_000)
        page.keyboard.press("Escape")  # a fresh frontend opens its own template browser
        page.add_style_tag(content=HIDE_CHROME)
        for name in names:
            report = page.evaluate(OPEN_WORKFLOW, [pack, name])
            if report["missing"]:
                raise SystemExit(f"{name}: the frontend does not know the node types {report['missing']}: did the "
                                 f"pack fail to load in ComfyUI?")
            warnings += [f"{name}: {line}" for line in report["grown"]]
            page.wait_for_timeout(1500)  # DOM widgets (notes, text boxes) follow the canvas a frame later
            target = WORKFLOW_DIR / f"{name}.jpg"
            page.screenshot(path=str(target), type="jpeg", quality=JPEG_QUALITY)
            print(f"{target.relative_to(ROOT)}: {target.stat().st_size // 1024} KB")
        browser.close()
    return warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="workflow stems (default: all of workflows/*.json)")
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_DIR"),
                        help="a ComfyUI folder to start (default $COMFYUI_DIR)")
    parser.add_argument("--comfyui-python", type=Path, default=os.environ.get("COMFYUI_PYTHON"),
                        help="the Python ComfyUI runs with (default $COMFYUI_PYTHON, else its venv)")
    parser.add_argument("--url", default=os.environ.get("COMFYUI_URL"),
                        help="a running ComfyUI that loads this checkout (default $COMFYUI_URL)")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM"),
                        help="a Chromium executable (default $CHROMIUM, else Playwright's own)")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem for p in WORKFLOW_DIR.glob("*.json"))
    unknown = [n for n in names if not (WORKFLOW_DIR / f"{n}.json").is_file()]
    if unknown:
        parser.error(f"no workflows/{unknown[0]}.json")
    if bool(args.url) == bool(args.comfyui):
        parser.error("give one of --comfyui DIR ($COMFYUI_DIR) or --url URL ($COMFYUI_URL)")
    if args.url:
        url = args.url.rstrip("/")
        try:
            pack = served_pack(url, names)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise SystemExit(f"no ComfyUI answers at {url} ({error}); start it, or use --comfyui") from None
        warnings = take_pictures(url, pack, names, args.chromium)
    else:
        comfy_dir = args.comfyui.resolve()
        python = args.comfyui_python or next(
            (p for p in (comfy_dir / "venv/bin/python", comfy_dir / ".venv/bin/python") if p.exists()), None)
        if not (comfy_dir / "main.py").is_file():
            parser.error(f"{comfy_dir} is not a ComfyUI folder (no main.py)")
        if python is None:
            parser.error(f"{comfy_dir} has no venv/bin/python or .venv/bin/python: give ComfyUI's Python with "
                         f"--comfyui-python")
        with tempfile.TemporaryDirectory(prefix="atelier-pictures-") as base:
            process, url = start_comfyui(comfy_dir, Path(python), Path(base))
            try:
                warnings = take_pictures(url, served_pack(url, names), names, args.chromium)
            finally:
                process.terminate()
                process.wait(timeout=60)
    for line in warnings:
        print(f"warning: {line} (save the workflow at the drawn size)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
