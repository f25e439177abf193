"""Feature vectors on disk, keyed by content hash and the network that computed them, in shards.

A store is one folder per cache format and network (``root/<tag>/``) holding a few safetensors shards,
each many vectors (``features [N, D]`` float32 with ``digests [N, 32]``: the SHA-256 of each content, and
the format and network in its metadata), plus ``index.json`` listing the shards with their sizes. Puts
are buffered and written as one new shard on ``flush()`` (also on ``close()``, on leaving a ``with`` block
and when the buffer passes ``buffer_bytes``); every file is written under a temporary name and renamed, so
a crash leaves the previous state. When more than ``max_small_shards`` shards are smaller than
``shard_bytes``, the smallest are merged into bigger ones.

Several processes may write into one store at once: each shard has a unique name and the shard files, not
the index, are the truth: a shard another process wrote (or merged) that the index does not list yet is
read from its own header, and a listed shard that is gone was merged away. The index is rewritten from
the files after each flush; it records each shard's size, so a cut-short or damaged shard is found when
the store opens (its header and size checked): it is deleted with a warning, and whatever it held is
recomputed from the pictures by the caller, as for any vector not in the store.

Readers read the digests of every shard once and memory-map the features (safetensors ``safe_open``
maps the file; only the rows looked up are read). The per-file cache of earlier versions
(``root/<tag>/<sha256>.safetensors``, one vector each) is read once into a shard and its files deleted.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from ..shared.output_paths import remove_stale, write_text_atomic
from ..shared.state_dicts import IncompleteFile, check_complete, write_safetensors

KIND = "atelier-feature-shard-v1"
INDEX = "index.json"
BUFFER_BYTES = 64 << 20  # pending vectors written as a shard once they pass this
SHARD_BYTES = 256 << 20  # merged shards grow to about this
MAX_SMALL_SHARDS = 16  # more shards than this under SHARD_BYTES are merged
_LEGACY = re.compile(r"^[0-9a-f]{64}\.safetensors$")  # one vector per file, as earlier versions kept them
_SHARD = "shard-*.safetensors"


def _key(digest: str) -> bytes:
    try:
        key = bytes.fromhex(digest)
    except (TypeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError(f"feature store keys are SHA-256 hex digests (64 hex digits), got {digest!r}")
    return key


class _Shard:
    """One shard file: its row of each digest, and its features mapped from disk when first read."""

    def __init__(self, path: Path, count: int, dim: int, size: int) -> None:
        self.path, self.count, self.dim, self.size = path, count, dim, size
        self._features: np.ndarray | None = None

    def features(self) -> np.ndarray:
        """``[N, D]`` float32, mapped from the file: pages are read when rows are."""
        if self._features is None:
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as f:
                self._features = f.get_tensor("features").numpy()  # a view of the mapped file
        return self._features


class FeatureCache:
    """Vectors of one cache format and one network fingerprint under ``root/<tag>/``, in shards.

    ``get(digest)`` returns the stored ``[D]`` float32 vector or None; ``put``/``put_many`` buffer new ones,
    which ``get`` sees at once and ``flush()`` writes. Keys are SHA-256 hex digests of the content. Use it as
    a context manager, or call ``close()``, so that the last puts are written.
    """

    def __init__(self, root: str | os.PathLike[str], fmt: str, fingerprint: str, *,
                 buffer_bytes: int = BUFFER_BYTES, shard_bytes: int = SHARD_BYTES,
                 max_small_shards: int = MAX_SMALL_SHARDS) -> None:
        self.fmt, self.fingerprint = fmt, fingerprint
        tag = hashlib.sha256(f"{fmt}|{fingerprint}".encode()).hexdigest()[:16]
        self.folder = Path(root).expanduser() / tag
        self.buffer_bytes, self.shard_bytes, self.max_small_shards = buffer_bytes, shard_bytes, max_small_shards
        self.notes: list[str] = []  # what opening the store found: damaged shards dropped, old files migrated
        self._shards: dict[str, _Shard] = {}
        self._where: dict[bytes, tuple[str, int]] = {}  # digest -> (shard name, row)
        self._pending: dict[bytes, torch.Tensor] = {}
        self._pending_bytes = self._pending_dim = 0
        self._open()

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._where) + sum(1 for key in self._pending if key not in self._where)

    def __contains__(self, digest: str) -> bool:
        key = _key(digest)
        return key in self._pending or key in self._where

    def get(self, digest: str) -> torch.Tensor | None:
        key = _key(digest)
        if (value := self._pending.get(key)) is not None:
            return value.clone()
        found = self._where.get(key)
        if found is None:
            return None
        name, row = found
        try:
            return torch.from_numpy(self._shards[name].features()[row].copy())  # only finite rows are written
        except Exception:  # merged away by another process since this one opened: recomputed
            return None

    # ------------------------------------------------------------------ writing

    def put(self, digest: str, value: torch.Tensor) -> None:
        self.put_many([digest], value.reshape(1, -1))

    def put_many(self, digests: list[str], values: torch.Tensor) -> None:
        """Buffer ``values [N, D]`` under ``digests``; non-finite rows are not kept (they are recomputed)."""
        if values.dim() != 2 or values.shape[0] != len(digests):
            raise ValueError(f"put_many needs values [N, D] for {len(digests)} digest(s), got {list(values.shape)}")
        if self._pending and values.shape[1] != self._pending_dim:
            raise ValueError(f"vectors of {values.shape[1]} values cannot join the {self._pending_dim}-value ones "
                             f"of feature store {str(self.folder)!r}")
        self._pending_dim = values.shape[1]
        values = values.detach().float().cpu().clone()  # rows are kept as views of this copy
        for digest, value, finite in zip(digests, values, torch.isfinite(values).all(dim=1).tolist()):
            key = _key(digest)
            if key in self._where or key in self._pending or not finite:
                continue
            self._pending[key] = value
            self._pending_bytes += value.numel() * 4
        if self._pending_bytes >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered vectors as one new shard, merge small shards when there are too many, and
        rewrite the index. A failure to write is a warning: those vectors are computed again next time."""
        self._flush()

    def _flush(self) -> bool:
        """``flush``; False when the shard could not be written."""
        if not self._pending:
            return True
        keys = list(self._pending)
        values = torch.stack([self._pending[k] for k in keys])
        self._pending.clear()
        self._pending_bytes = 0
        try:
            name = self._write_shard(keys, values)
        except OSError as exc:
            warnings.warn(f"could not write features to {str(self.folder)!r}: {exc}", stacklevel=3)
            return False
        self._where.update({key: (name, row) for row, key in enumerate(keys)})
        try:
            self._compact()
            self._write_index()
        except OSError as exc:
            warnings.warn(f"could not tidy feature store {str(self.folder)!r}: {exc}", stacklevel=3)
        return True

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()  # on an error or a cancel too: finished vectors are kept

    # ------------------------------------------------------------------ shards

    def _write_shard(self, keys: list[bytes], values: torch.Tensor) -> str:
        name = f"shard-{time.time_ns():x}-{os.getpid()}-{os.urandom(4).hex()}.safetensors"
        digests = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).reshape(len(keys), 32)
        path = self.folder / name
        write_safetensors(path, {"features": values.contiguous(), "digests": digests},
                          {"kind": KIND, "format": self.fmt, "model": self.fingerprint})
        self._shards[name] = _Shard(path, len(keys), values.shape[1], path.stat().st_size)
        return name

    def _read_shard(self, path: Path, recorded: int | None) -> tuple[_Shard, list[bytes]]:
        """A shard's digests after checking its size and header; ValueError says what is wrong with it."""
        from safetensors import safe_open

        size = path.stat().st_size
        try:
            check_complete(path, "feature shard")
        except IncompleteFile:
            raise ValueError(f"it is cut short: {size} bytes, fewer than its header says") from None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if (meta.get("kind"), meta.get("format"), meta.get("model")) != (KIND, self.fmt, self.fingerprint):
                    raise ValueError("it belongs to another format or network")
                features, digests = f.get_slice("features"), f.get_tensor("digests")
                shape = features.get_shape()
        except ValueError:
            raise
        except Exception as exc:  # safetensors' own errors: a damaged header
            raise ValueError(f"its header cannot be read ({exc})") from None
        if len(shape) != 2 or list(digests.shape) != [shape[0], 32] or digests.dtype != torch.uint8:
            raise ValueError(f"its tensors have the wrong shapes ({shape}, {list(digests.shape)})")
        if recorded is not None and size != recorded:
            raise ValueError(f"its size is {size} bytes, the index recorded {recorded}")
        raw = digests.numpy().tobytes()
        return _Shard(path, shape[0], shape[1], size), [raw[i:i + 32] for i in range(0, len(raw), 32)]

    def _open(self) -> None:
        """Read the index and every shard's digests; drop damaged shards; migrate per-file entries."""
        if not self.folder.is_dir():
            return
        remove_stale(self.folder, ".shard-*.part")
        recorded: dict[str, int] = {}
        try:
            index = json.loads((self.folder / INDEX).read_text(encoding="utf-8"))
            recorded = {s["file"]: int(s["bytes"]) for s in index.get("shards", [])}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass  # no index, or a damaged one: the shard files themselves are read
        changed = False
        for path in sorted(self.folder.glob(_SHARD)):
            try:
                shard, keys = self._read_shard(path, recorded.get(path.name))
            except FileNotFoundError:  # merged away by another process meanwhile
                changed = True
                continue
            except ValueError as exc:
                self._drop(path, str(exc))
                changed = True
                continue
            changed |= path.name not in recorded
            self._shards[path.name] = shard
            self._where.update({key: (path.name, row) for row, key in enumerate(keys)})
        changed |= bool(set(recorded) - set(self._shards))
        if self._migrate():
            return  # the flush wrote the index
        if changed:
            try:
                self._write_index()
            except OSError:
                pass  # read-only: it is rebuilt from the files next time too

    def _drop(self, path: Path, why: str) -> None:
        note = (f"feature shard {str(path)!r} is damaged ({why}): dropped; the vectors it held are rebuilt from "
                "the pictures when next needed")
        warnings.warn(note, stacklevel=3)
        self.notes.append(note)
        try:
            path.unlink()
        except OSError:
            pass

    def _migrate(self) -> bool:
        """Move the per-file entries of earlier versions into one shard and delete their files."""
        from safetensors import safe_open

        legacy = [p for p in self.folder.glob("*.safetensors") if _LEGACY.match(p.name)]
        if not legacy:
            return False
        moved = 0
        for path in legacy:
            digest = path.name[:64]
            try:
                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
                    if (meta.get("format"), meta.get("sha256"), meta.get("model")) == (self.fmt, digest,
                                                                                         self.fingerprint):
                        self.put_many([digest], f.get_tensor("features").reshape(1, -1))
                        moved += 1
            except Exception:  # damaged, foreign or of another length: not worth keeping, it is recomputed
                pass
        if not self._flush():  # the shard could not be written: keep the old files
            return False
        for path in legacy:
            path.unlink(missing_ok=True)
        self.notes.append(f"moved {moved} cached vector(s) from {len(legacy)} per-picture file(s) into a shard "
                          f"of {str(self.folder)!r}")
        return True

    def _compact(self) -> None:
        """When more than ``max_small_shards`` shards are under ``shard_bytes``, merge the smallest (about half
        of them, up to ``shard_bytes`` in all): shards grow by tiers, so each vector is rewritten a few times."""
        by_dim: dict[int, list[_Shard]] = {}
        for shard in sorted(self._shards.values(), key=lambda s: s.size):
            if shard.size < self.shard_bytes:
                by_dim.setdefault(shard.dim, []).append(shard)
        if sum(len(shards) for shards in by_dim.values()) <= self.max_small_shards:
            return
        for shards in by_dim.values():
            group: list[_Shard] = []
            for shard in shards[: len(shards) // 2 + 1]:
                if group and sum(s.size for s in group) + shard.size > self.shard_bytes:
                    break
                group.append(shard)
            if len(group) > 1:
                self._merge(group)

    def _merge(self, group: list[_Shard]) -> None:
        held: dict[str, list[tuple[bytes, int]]] = {s.path.name: [] for s in group}
        for key, (name, row) in self._where.items():
            if name in held:
                held[name].append((key, row))
        try:
            parts = [torch.from_numpy(self._shards[name].features()[[row for _, row in rows]])
                     for name, rows in held.items() if rows]
        except Exception:  # another process merged them first: they stay as they are
            return
        keys = [key for rows in held.values() for key, _ in rows]
        merged = self._write_shard(keys, torch.cat(parts))
        self._where.update({key: (merged, row) for row, key in enumerate(keys)})
        for shard in group:
            del self._shards[shard.path.name]
            try:
                shard.path.unlink(missing_ok=True)
            except OSError:  # still mapped by another process (Windows): merged again later, duplicates skipped
                pass

    def _write_index(self) -> None:
        """``index.json`` from this process's shards and any another process added meanwhile."""
        listed = {p.name for p in self.folder.glob(_SHARD)}
        entries: list[dict[str, Any]] = []
        for name in sorted(listed):
            shard = self._shards.get(name)
            if shard is None:  # another process's: its header gives the count, checked when the store opens
                try:
                    shard, _ = self._read_shard(self.folder / name, None)
                except (OSError, ValueError):
                    continue
            entries.append({"file": name, "count": shard.count, "dim": shard.dim, "bytes": shard.size})
        index = {"kind": KIND, "format": self.fmt, "model": self.fingerprint, "shards": entries}
        write_text_atomic(self.folder / INDEX, json.dumps(index, ensure_ascii=False, indent=1) + "\n")
