"""bitsandbytes is optional: what needs it says so, naming the package, before any long work starts."""
from __future__ import annotations

from types import ModuleType


def require_bitsandbytes(purpose: str) -> ModuleType:
    try:
        import bitsandbytes
    except ImportError as exc:
        raise RuntimeError(f"{purpose} needs bitsandbytes: pip install bitsandbytes (with a CUDA GPU)") from exc
    return bitsandbytes
