"""``ddspec formula "EXPR" --quantity NAME [--schedule S ...] [--eta E ...] [--json] [--no-symbolic]``.

Exit status: 0 the formula matches the reference everywhere within the stated float64 bound, 1 it
differs (the report says where, by how much, and which registered erratum it equals), 2 a bad
expression, quantity, schedule or η (the error names the argument and the value).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

from .checker import check_formula
from .quantities import DEFAULT_ETAS, DEFAULT_SCHEDULES, QUANTITIES

__all__ = ["cli_main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"ddspec: error: formula: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> _Parser:
    p = _Parser(prog="ddspec formula", description="Check a DDPM/DDIM formula against the reference.")
    p.add_argument("expr", help="the formula, in sympy syntax over the vocabulary (docs/errata.md)")
    p.add_argument("--quantity", required=True, help=f"one of: {', '.join(QUANTITIES)}")
    p.add_argument("--schedule", action="append", default=None, metavar="NAME[:T]",
                   help=f"schedule to evaluate on (repeatable; default: {' '.join(DEFAULT_SCHEDULES)})")
    p.add_argument("--eta", action="append", type=float, default=None,
                   help=f"η for DDIM quantities (repeatable; default: {' '.join(f'{e:g}' for e in DEFAULT_ETAS)})")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.add_argument("--no-symbolic", action="store_true", help="skip the sympy check")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """Run ``ddspec formula``; return the exit status (0 matches, 1 differs, 2 bad input)."""
    args = _parser().parse_args(argv)
    try:
        verdict = check_formula(
            args.expr,
            args.quantity,
            tuple(args.schedule) if args.schedule else DEFAULT_SCHEDULES,
            etas=tuple(args.eta) if args.eta else DEFAULT_ETAS,
            symbolic=not args.no_symbolic,
        )
    except ValueError as exc:
        print(f"ddspec: error: formula: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(verdict.message())
    return 0 if verdict.matches else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli_main())
