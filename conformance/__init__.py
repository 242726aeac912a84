"""ddspec.conformance: checks any torch DDPM/DDIM sampler against ddspec.reference."""

from __future__ import annotations

import importlib.metadata as _metadata

try:
    __version__: str = _metadata.version("ddspec")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
    __version__ = "unknown"
