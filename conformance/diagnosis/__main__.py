r"""``python -m ddspec.conformance.diagnosis --table [--write PATH]``: the confusion table of docs/diagnosis.md.

Runs the harness (quick profile, with the diagnosis) on every planted bug of
:mod:`ddspec.conformance.diagnosis.selftest` in float32 and float64 and prints the Markdown table of
planted bug against top diagnosis; ``--write`` replaces the table between the markers
``<!-- confusion-table -->`` and ``<!-- /confusion-table -->`` of a file. Run it from the repository
root (the planted bugs live in ``tests/quality``).
"""

from __future__ import annotations

import argparse
import os
import sys

from .selftest import EXPECTED, Row, cases, render_table, run_case, top_diagnosis

START, END = "<!-- confusion-table -->", "<!-- /confusion-table -->"
DTYPES = ("float32", "float64")


def confusion_rows(dtypes: tuple[str, ...] = DTYPES) -> list[Row]:
    """Every planted bug run in every dtype, with its top diagnosis."""
    rows = []
    for case in cases():
        got, failed = {}, {}
        for dtype in dtypes:
            if dtype not in case.dtypes:
                continue
            report = run_case(case, dtype)
            got[dtype] = top_diagnosis(report)
            failed[dtype] = bool(report.failures())
        rows.append(Row(case.name, EXPECTED[case.name], got, failed))
    return rows


def replace_table(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    if START not in text or END not in text:
        raise ValueError(f"file: has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddspec.conformance.diagnosis")
    parser.add_argument("--table", action="store_true", help="print the confusion table (planted bug x diagnosis)")
    parser.add_argument("--write", metavar="PATH", help="write the table into PATH between its markers")
    args = parser.parse_args(argv)
    if not args.table:
        parser.print_help()
        return 2
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    table = render_table(confusion_rows(), DTYPES)
    if args.write:
        with open(args.write, encoding="utf-8") as fh:
            text = fh.read()
        with open(args.write, "w", encoding="utf-8") as fh:
            fh.write(replace_table(text, table))
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
