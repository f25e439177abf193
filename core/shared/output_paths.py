"""Where the pack writes: sanitised names that stay inside the output folder, version folders, and temporary
files that respect the umask, never look like results and are cleaned up after a killed run."""
from __future__ import annotations

import os
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

_VERSION = re.compile(r"^v(\d{3,})$")
_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}(\.part)?$")  # what ``temp_path`` makes
_KEEP = "._+-"  # besides Unicode letters, marks and digits
# names Windows refuses whatever their extension (``con.png`` included)
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
MAX_NAME_BYTES = 120  # UTF-8 bytes of a cleaned name: room for suffixes such as "__saturation_down_2.png"
STALE_AFTER_S = 24 * 3600  # a temporary file of a process this machine cannot check is stale after a day


def clean_name(name: str) -> str:
    """``name`` NFC-normalised with Unicode letters, digits and ``._+-`` kept and every other run of characters
    (separators, control characters, spaces, ``:*?"<>|``...) made ``_``; ``..`` becomes ``_``, leading and
    trailing dots and underscores go, a Windows device name (``CON``, ``LPT1``...) gets a trailing ``_``, and the
    result is cut to ``MAX_NAME_BYTES``. ``''`` when nothing usable is left."""
    kept = "".join(ch if ch in _KEEP or unicodedata.category(ch)[0] in "LMN" else "\0"
                   for ch in unicodedata.normalize("NFC", name.strip()))
    cleaned = re.sub(r"\.{2,}", "_", re.sub("\0+", "_", kept)).strip("._")
    cleaned = cleaned.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip("._")
    device = cleaned.split(".")[0]
    return f"{device}_{cleaned[len(device):]}" if device.lower() in _RESERVED else cleaned


def safe_name(name: str, what: str = "name", fallback: str = "unnamed") -> str:
    """A name the user typed (a model, a sub-folder) as a safe file or folder name (see ``clean_name``): a path
    separator or ``..`` is refused, and a name with nothing usable left (only symbols) becomes ``fallback``."""
    if "/" in name or "\\" in name or ".." in name:
        raise ValueError(f"{what} {name!r} may not contain '/', '\\' or '..': give a plain name")
    return clean_name(name) or fallback


def unique_stems(stems: Sequence[str], suffixes: Iterable[str] = ("",), fallback: str = "image") -> list[str]:
    """Safe, distinct file stems for per-picture outputs, the one helper every writer uses: ``a.jpg`` and
    ``a.tif`` become ``a`` and ``a_2``; a stem with nothing usable (``..png``, ``★.png``) becomes
    ``image_0003`` (its position). Every ``stem + suffix`` of one picture is checked against every name
    already given out, ignoring case (as Windows and macOS do), so ``a`` with variant ``__gray_scale`` never
    meets a picture called ``a__gray_scale``."""
    suffixes = list(suffixes) or [""]
    width = max(4, len(str(len(stems))))
    taken: set[str] = set()
    out = []
    for i, stem in enumerate(stems):
        base = clean_name(stem) or f"{fallback}_{i + 1:0{width}d}"
        candidate, number = base, 1
        while any((candidate + s).casefold() in taken for s in suffixes):
            number += 1
            candidate = f"{base}_{number}"
        taken.update((candidate + s).casefold() for s in suffixes)
        out.append(candidate)
    return out


def refuse_stem_clashes(files: Sequence[Path], suffix: str, what: str) -> None:
    """For writers of a ``<stem><suffix>`` file beside each picture, which cannot rename it (readers look for
    exactly that name): refuse, before any work, pictures that would share one (``a.jpg`` and ``a.tif`` both
    own ``a.txt``; case is ignored, as Windows and macOS do), naming them and what to rename."""
    groups: dict[str, list[Path]] = {}
    for file in files:
        groups.setdefault(str(file.with_suffix(suffix)).casefold(), []).append(file)
    clashes = [members for members in groups.values() if len(members) > 1]
    if clashes:
        shown = "; ".join(" and ".join(p.name for p in group) + f" in {str(group[0].parent)!r} would share "
                          f"{group[0].with_suffix(suffix).name}" for group in clashes[:5])
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        example = clashes[0][1]
        raise ValueError(f"{what}: {shown}{more}. Each picture needs a name of its own: rename all but one of each "
                         f"(such as {example.name} to {example.stem}_2{example.suffix}) and run again")


def safe_subfolder(base: Path, subfolder: str) -> Path:
    """``base / subfolder`` for a relative ``a/b`` path of safe names, never outside ``base``."""
    parts = [p for p in subfolder.replace("\\", "/").split("/") if p not in ("", ".")]
    if subfolder.startswith(("/", "\\")) or any(p == ".." for p in parts):
        raise ValueError(f"output subfolder {subfolder!r} must be a relative path inside the output folder")
    target = base.joinpath(*(safe_name(p, "output subfolder part", "folder") for p in parts)).resolve()
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


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system says it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def as_umask_allows(path: Path) -> None:
    """Give a file made 0600 (by ``tempfile`` or safetensors) or a folder made 0700 (``tempfile.mkdtemp``) the
    mode an ordinary ``open`` or ``mkdir`` would have given it, so a ComfyUI or file server running as another
    user can read what the pack writes."""
    full = 0o777 if path.is_dir() else 0o666
    os.chmod(path, full & ~current_umask())


def temp_path(folder: Path, name: str, suffix: str = ".part") -> Path:
    """A fresh hidden temporary name in ``folder`` for ``name`` (not created): ``.<name>.<pid>.<random><suffix>``,
    so a later run can tell the leftovers of a killed process from the work of a live one."""
    return folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (POSIX only: on Windows the only way to ask would end it)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale(folder: Path, pattern: str) -> None:
    """Delete the leftovers of killed runs in ``folder``: entries matching ``pattern`` (a glob of hidden
    temporary names, ``.<name>.<pid>.<random><suffix>``) whose process is gone; where that cannot be asked
    (Windows, names of older versions), those untouched for a day."""
    import shutil

    if not folder.is_dir():
        return
    now = time.time()
    for path in folder.glob(pattern):
        match = _TEMP.match(path.name)
        if match is not None and os.name == "posix":
            stale = not _alive(int(match["pid"]))  # a live run's work stays however long it takes
        else:  # an older version's name, or no way to ask about the process: by age
            try:
                stale = now - path.lstat().st_mtime > STALE_AFTER_S
            except OSError:
                continue
        if not stale:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary)`` a file under a hidden temporary name beside ``path`` (a writer that goes by the name's
    suffix must be told the format), then rename it into place; on any failure the temporary file is removed."""
    tmp = temp_path(path.parent, path.name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file under a hidden temporary name beside it, then rename it into place."""

    def write(tmp: Path) -> None:
        with open(tmp, "x", encoding="utf-8") as handle:  # an ordinary open: the umask decides the mode
            handle.write(text)

    write_atomic(path, write)
