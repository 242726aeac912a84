"""``python -m ddspec.audit``: print docs/errata.md (the errata register and the audit of the source documents)."""

from __future__ import annotations

from .errata import render_markdown

print(render_markdown(), end="")
