"""Where the pack writes: sanitised names that stay inside the output folder, and version folders."""
from __future__ import annotations

import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]+")
_VERSION = re.compile(r"^v(\d{3,})$")


def safe_name(name: str, what: str = "name") -> str:
    """A file or folder name made of letters, digits and ``._+-``; refuses ``..`` and path separators."""
    if "/" in name or "\\" in name or ".." in name:
        raise ValueError(f"{what} {name!r} may not contain '/', '\\' or '..': give a plain name")
    cleaned = _UNSAFE.sub("_", name.strip()).strip("._")
    if not cleaned:
        raise ValueError(f"{what} {name!r} has no usable characters")
    return cleaned[:120]


def safe_subfolder(base: Path, subfolder: str) -> Path:
    """``base / subfolder`` for a relative ``a/b`` path of safe names, never outside ``base``."""
    parts = [p for p in subfolder.replace("\\", "/").split("/") if p not in ("", ".")]
    if subfolder.startswith(("/", "\\")) or any(p == ".." for p in parts):
        raise ValueError(f"output subfolder {subfolder!r} must be a relative path inside the output folder")
    target = base.joinpath(*(safe_name(p, "output subfolder part") for p in parts)).resolve()
    if not target.is_relative_to(base.resolve()):
        raise ValueError(f"output subfolder {subfolder!r} leads outside {str(base)!r}")
    return target


def new_version_folder(parent: Path) -> Path:
    """Create and return the next free ``vNNN`` folder under ``parent``; an existing one is never reused."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := _VERSION.match(p.name))]
    number = max(taken, default=0) + 1
    while True:
        candidate = parent / f"v{number:03d}"
        try:
            candidate.mkdir()  # atomic: two runs at once still get different folders
            return candidate
        except FileExistsError:
            number += 1


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file under a temporary name beside it, then rename it into place."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
