"""Reading image folders robustly and writing PNGs without leaving half-written files.

Everything a folder can hold is read into RGB float ``[H, W, 3]``: png, jpg, webp, bmp, gif and
tif/tiff, 8- and 16-bit, greyscale, palette, CMYK and alpha (composited on a chosen colour);
the first page of a multi-page file; EXIF orientation applied. Files that cannot be read are
skipped with a reason, never silently.
"""
from __future__ import annotations

import io
import math
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..shared.colors import RGB

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_EXTENSION = ".txt"
DEFAULT_MAX_MEGAPIXELS = 100.0


class ImageFolderError(ValueError):
    """A folder or file that cannot be used, with a message that says what to do."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class LoadedImage:
    path: Path
    image: torch.Tensor  # [H, W, 3] float32 0..1
    caption: str | None

    @property
    def stem(self) -> str:
        return self.path.stem


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` in natural order (``2.png`` before ``10.png``); errors if there is none."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise ImageFolderError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise ImageFolderError(f"{str(root)!r} is a file, not a folder of images")
    pattern = root.rglob("*") if recursive else root.iterdir()
    files = sorted((p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)
    if not files:
        raise ImageFolderError(
            f"image folder {str(root)!r} holds no image ({', '.join(IMAGE_EXTENSIONS)})"
            + ("" if recursive else "; turn on 'recursive' to look in sub-folders")
        )
    return files


def folder_fingerprint(files: list[Path]) -> str:
    """A digest of the pictures and their caption sidecars (paths, sizes, modification times): it changes
    when any of them is added, removed or rewritten."""
    import hashlib

    stamp = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files]
    for p in files:
        sidecar = p.with_suffix(".txt")
        if sidecar.exists():
            stamp.append((str(sidecar), sidecar.stat().st_mtime_ns, sidecar.stat().st_size))
    return hashlib.sha256(repr(stamp).encode()).hexdigest()


def read_caption(image_path: Path) -> str | None:
    """The ``<stem>.txt`` sidecar beside an image, stripped; ``None`` if there is none."""
    sidecar = image_path.with_suffix(CAPTION_EXTENSION)
    if not sidecar.is_file():
        return None
    try:
        return sidecar.read_text(encoding="utf-8").strip()
    except (UnicodeDecodeError, OSError) as exc:
        raise ImageFolderError(f"caption {str(sidecar)!r} is not readable UTF-8 text: {exc}") from exc


def _language_code(text: str) -> bool:
    return len(text) == 2 and text.isascii() and text.isalpha()


def read_captions(image_path: Path) -> list[tuple[str, str]]:
    """Every caption of a picture as ``(caption, language)``: each non-empty line of ``<stem>.txt`` (language
    ``""``, unknown), then of each ``<stem>.<xx>.txt`` (``xx`` a two-letter language code such as ``en`` or
    ``ko``), in name order. ``read_caption`` keeps reading the whole ``<stem>.txt`` as one caption."""
    sidecars = [(image_path.with_suffix(CAPTION_EXTENSION), "")]
    sidecars += sorted((path, path.suffixes[-2][1:].lower()) for path in image_path.parent.glob(
        f"{glob_escape(image_path.stem)}.??{CAPTION_EXTENSION}") if _language_code(path.suffixes[-2][1:]))
    captions = []
    for sidecar, language in sidecars:
        if not sidecar.is_file():
            continue
        try:
            text = sidecar.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            raise ImageFolderError(f"caption {str(sidecar)!r} is not readable UTF-8 text: {exc}") from exc
        captions += [(line.strip(), language) for line in text.splitlines() if line.strip()]
    return captions


def _to_rgb_array(img: Image.Image, background: RGB) -> np.ndarray:
    """Any Pillow mode to float32 RGB 0..1, compositing alpha on ``background``."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greys: scale by the full 16-bit range (Pillow's own convert("RGB") would clip at 255)
        grey = np.asarray(img, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1)
    if mode == "F":
        grey = np.asarray(img, dtype=np.float32)
        top = float(grey.max()) if grey.size else 1.0
        grey = grey / (top if top > 1.0 else 1.0)
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:4]
        return rgba[..., :3] * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


_pillow_lock = threading.Lock()
_pillow_needs: list[int] = []  # the pixel limits of our reads in flight that Pillow's own limit would refuse
_pillow_saved: list[int | None] = []  # Pillow's limit before the first of them


@contextmanager
def _pillow_allows(max_megapixels: float) -> Iterator[None]:
    """Let ``max_megapixels`` be the limit that applies while this read runs.

    Pillow refuses (DecompressionBombError) anything over twice ``Image.MAX_IMAGE_PIXELS`` (about 179 MP)
    when it opens, crops or prepares a TIFF, before our own check can run. That limit is a module global
    of Pillow's, so it is raised only when a caller's limit is above it, only while such reads are in
    flight (under a lock, counted, so concurrent reads keep it raised), and put back after the last. A
    user who has set Pillow's limit to None keeps it."""
    need = math.ceil(max_megapixels * 1e6)
    with _pillow_lock:
        base = _pillow_saved[0] if _pillow_needs else Image.MAX_IMAGE_PIXELS
        raise_it = base is not None and need > 2 * base
        if raise_it:
            if not _pillow_needs:
                _pillow_saved[:] = [base]
            _pillow_needs.append(need)
            Image.MAX_IMAGE_PIXELS = max(_pillow_needs)
    try:
        yield
    finally:
        if raise_it:
            with _pillow_lock:
                _pillow_needs.remove(need)
                Image.MAX_IMAGE_PIXELS = max(_pillow_needs) if _pillow_needs else _pillow_saved.pop()


def _too_large(size: str, max_megapixels: float) -> ImageFolderError:
    return ImageFolderError(f"{size} is over the {max_megapixels:g} megapixel limit (possible decompression bomb); "
                            "raise 'max_megapixels' if the file is genuine")


def open_image(path: Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> Image.Image:
    """Open and check an image without decoding its pixels; raises ImageFolderError with the reason.
    ``max_megapixels`` is the limit, above or below Pillow's own."""
    if path.stat().st_size == 0:
        raise ImageFolderError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings(), _pillow_allows(max_megapixels):
            # our own max_megapixels check below is the one that counts
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:  # only above twice our limit: Pillow's was raised to it
        raise _too_large(str(exc).split(" exceeds")[0], max_megapixels) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's UnidentifiedImageError is an OSError
        raise ImageFolderError(f"not a readable image: {exc}") from exc
    width, height = img.size
    if width * height > max_megapixels * 1e6:
        img.close()
        raise _too_large(f"{width}x{height}", max_megapixels)
    return img


def image_size(path: Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, read from the header only."""
    with open_image(path, max_megapixels) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def load_image(path: Path, background: RGB = (1.0, 1.0, 1.0),
               max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, min_side: int = 0) -> torch.Tensor:
    """Decode one file to ``[H, W, 3]`` float32; raises ImageFolderError with the reason it cannot.

    ``min_side`` > 0 lets a JPEG decode at a reduced scale (1/2, 1/4, 1/8) whose shorter side is still at
    least that long: many times faster for a model that resizes to 224 pixels anyway.
    """
    with _pillow_allows(max_megapixels), open_image(path, max_megapixels) as img:
        try:
            if min_side > 0 and img.format == "JPEG":
                scale = min_side / min(img.size)
                if scale < 1:
                    img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            img.seek(0)  # multi-page files: the first page
            img.load()
            upright = ImageOps.exif_transpose(img)
            array = _to_rgb_array(upright, background)
        except Image.DecompressionBombError as exc:  # a frame or tile larger than the picture's header said
            raise _too_large(str(exc).split(" exceeds")[0], max_megapixels) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageFolderError(f"cannot decode ({exc}); the file may be truncated or damaged") from exc
    return torch.from_numpy(np.ascontiguousarray(array))


def check_writable(folder: Path) -> None:
    """Fail before any work if ``folder`` cannot be created or written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".atelier-write-test-"):
            pass
    except OSError as exc:
        raise ImageFolderError(f"output folder {str(folder)!r} is not writable: {exc}") from exc


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes at compression level 4: most of the size saving at a fraction of level 9's time."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()
