"""``ddspec derive [NAME ...] [--list] [--verbose]``: check the derivations, ✓ or ✗ for each step.

Exit status: 0 iff every step of every selected derivation checks, 1 if a step fails, 2 for an
unknown name (or bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import sympy as sp

from .core import Derivation, DerivationResult, check
from .registry import DERIVATIONS, get

__all__ = ["cli_main", "format_result"]


def _text(d: Derivation, expr: sp.Expr) -> str:
    shown, names = d.for_display(expr, latex=False)
    return sp.sstr(shown.xreplace({s: sp.Symbol(n) for s, n in names.items()}))


def format_result(result: DerivationResult, verbose: bool = False) -> str:
    """The lines ``ddspec derive`` prints for one derivation."""
    d = result.derivation
    lines = [
        f"{'✓' if result.ok else '✗'} {d.name}: {d.title}",
        f"    source: {d.source}",
        f"    assumptions: {', '.join(d.assumptions_text())}",
    ]
    for r in result.steps:
        lines.append(f"  {r.mark()} {r.index}. {r.step.description} ({r.method})")
        if verbose:
            rel = "≃" if r.step.up_to_constant_in else "="
            lines.append(f"        {_text(d, r.step.before)}")
            lines.append(f"      {rel} {_text(d, r.step.after)}")
            lines.append(f"        because: {r.step.justification}")
        if verbose or not r.ok or r.numeric:
            lines.append(f"        {r.detail}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ddspec derive",
        description="Check the DDPM/DDIM derivations step by step (sympy, with an mpmath fallback).",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="derivations to check (default: all)")
    p.add_argument("--list", action="store_true", help="list the derivations and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="print every step's equation and rule")
    p.add_argument("--write-docs", metavar="DIR", help="write the generated Markdown into DIR and exit")
    return p


def cli_main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``ddspec derive`` with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.write_docs:
        from .render import write_docs

        for path in write_docs(args.write_docs):
            print(f"wrote {path}", file=out)
        return 0
    try:
        selected = [get(n) for n in args.names] if args.names else list(DERIVATIONS)
    except KeyError as exc:
        print(f"ddspec: error: derive: {exc.args[0]}", file=err)
        return 2
    if args.list:
        for d in selected:
            print(f"{d.name:28s} {d.title}  [{d.source}]", file=out)
        return 0
    n_steps = n_bad = n_numeric = 0
    for d in selected:
        result = check(d)
        print(format_result(result, args.verbose), file=out, flush=True)
        n_steps += len(result.steps)
        n_bad += sum(not r.ok for r in result.steps)
        n_numeric += sum(r.ok and r.numeric for r in result.steps)
    verdict = "all ✓" if n_bad == 0 else f"{n_bad} ✗"
    print(
        f"{len(selected)} derivations, {n_steps} steps: {verdict} "
        f"({n_numeric} checked numerically where sympy could not decide)",
        file=out,
    )
    return 0 if n_bad == 0 else 1
