"""assay's version, and the versions a report records (the lowest layer: anything may import it)."""

from __future__ import annotations

import platform
import sys

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """Versions recorded in a report's ``accounting["versions"]``: python, assay, torch, numpy, platform."""
    out = {"python": platform.python_version(), "assay": __version__}
    for name in ("torch", "numpy"):
        mod = sys.modules.get(name)
        if mod is None:
            try:
                mod = __import__(name)
            except ImportError:  # pragma: no cover - both are hard dependencies
                mod = None
        out[name] = getattr(mod, "__version__", "not installed")
    out["platform"] = platform.platform(terse=True)
    return out
