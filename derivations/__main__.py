"""``python -m ddspec.derivations`` is ``ddspec derive``."""

from __future__ import annotations

import sys

from .cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
