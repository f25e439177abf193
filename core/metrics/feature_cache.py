"""Per-file feature vectors on disk, keyed by the file's content and the network that computed them.

One small safetensors file per distinct picture content, in a sub-folder per network (and cache
format), so a renamed or copied picture costs nothing and a changed one is recomputed. A damaged or
foreign cache file is ignored and rewritten, never trusted.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from ..shared.state_dicts import write_safetensors


class FeatureCache:
    """Vectors under ``root/<tag>/<sha256>.safetensors`` for one cache format and one network fingerprint."""

    def __init__(self, root: str | os.PathLike[str], fmt: str, fingerprint: str) -> None:
        self.fmt, self.fingerprint = fmt, fingerprint
        tag = hashlib.sha256(f"{fmt}|{fingerprint}".encode()).hexdigest()[:16]
        self.folder = Path(root).expanduser() / tag

    def _path(self, digest: str) -> Path:
        return self.folder / f"{digest}.safetensors"

    def get(self, digest: str) -> torch.Tensor | None:
        from safetensors import safe_open

        path = self._path(digest)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if (meta.get("format"), meta.get("sha256"), meta.get("model")) != (self.fmt, digest, self.fingerprint):
                    return None
                value = f.get_tensor("features")
        except Exception:  # a damaged or foreign file is recomputed
            return None
        if value.dim() != 1 or not torch.isfinite(value).all():
            return None
        return value.float()

    def put(self, digest: str, value: torch.Tensor) -> None:
        try:
            write_safetensors(self._path(digest), {"features": value.detach().float().cpu().contiguous()},
                              {"format": self.fmt, "sha256": digest, "model": self.fingerprint})
        except OSError as exc:
            warnings.warn(f"could not cache features in {str(self.folder)!r}: {exc}", stacklevel=2)

    def put_many(self, digests: list[str], values: torch.Tensor) -> None:
        """Rows ``values[i]`` under ``digests[i]``."""
        for digest, value in zip(digests, values):
            self.put(digest, value)

    def flush(self) -> None:
        """Every ``put`` is already on disk."""

    def close(self) -> None:
        """Nothing is held open."""

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
