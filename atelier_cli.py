"""Run the pack's jobs headless (``python atelier_cli.py --help``), and import the pack as the package
``atelier`` from outside ComfyUI (this command line, tests, benchmarks: ``from atelier_cli import load_pack``).

The pack is a package whose folder ComfyUI imports under a name of its own (the folder is
``comfyui-atelier`` or whatever the user cloned it as), so it is not importable by name; ``load_pack``
registers it under one fixed name without touching ``sys.path``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = "atelier"
ROOT = Path(__file__).resolve().parent


def load_pack(run_init: bool = True, name: str = PACKAGE) -> ModuleType:
    """The pack as ``atelier`` (or ``name``). ``run_init=False`` registers it without running its ``__init__.py``,
    which imports every node and so torch: the command line imports only what a command needs, and ``--help`` none
    of it."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if not run_init:
        return module
    spec.loader.exec_module(module)
    for part in ("core", "nodes", "training"):
        importlib.import_module(f"{name}.{part}")
    return module


def ray_worker_setup() -> None:
    """Ray's worker_process_setup_hook (core/curator/ray_collection.py): the pack registered in each worker under
    the name the driver imported it as ($ATELIER_PACKAGE; inside ComfyUI, its folder's name), so the workers can
    unpickle the pack's classes."""
    import os

    load_pack(run_init=False, name=os.environ.get("ATELIER_PACKAGE", PACKAGE))


if __name__ == "__main__":
    load_pack(run_init=False)  # the nodes (and torch) load only when a command runs
    from atelier.cli import main

    sys.exit(main())
