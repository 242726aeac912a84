r"""Alias of :mod:`ddspec.audit.accuracy`, where the accuracy audit (``ddspec audit``) now lives.

The audit is tooling, not an equation, so it moved out of the reference package. This module keeps
the old import path working: importing ``ddspec.reference.audit`` gives the very module object
``ddspec.audit.accuracy`` (so attribute patches in tests reach the real module), and
``python -m ddspec.reference.audit`` runs its ``main``.
"""

from __future__ import annotations

import sys

from ddspec.audit import accuracy as _accuracy

if __name__ == "__main__":  # pragma: no cover - the command line
    raise SystemExit(_accuracy.main())

sys.modules[__name__] = _accuracy
