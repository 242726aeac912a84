r"""The ``ddspec`` command.

``ddspec check [TARGET ...]``
    Check DDPM/DDIM samplers against the float64 reference and print a report per target. A TARGET
    is ``module:attr`` (see :mod:`ddspec.conformance.loader`). With no TARGET, checks the bundled
    torch port of the reference and, when diffusers is installed, diffusers' ``DDPMScheduler()`` and
    ``DDIMScheduler()``.

``ddspec sweep [FACTORY] --grid GRID.toml``, ``ddspec sweep-merge SHARD.json ...``
    Check every cell of a configuration grid on pytest-xdist workers, optionally one shard of it, and
    merge the shards' documents (:mod:`ddspec.conformance.sweep`, docs/sweeps.md).

``ddspec audit``
    Audit the reference itself against its mpmath twins (``ddspec.reference.audit``).

``ddspec --version``
    Print the installed version.

Exit codes of ``ddspec check`` are :meth:`ddspec.conformance.results.Report.exit_code` (the table in
``ddspec check --help``, held to it by a test; the pytest plugin fails on exactly the same results):
0 the target conforms, 1 it does not (a failure no ``--allow`` covers, an unsupported check, nothing
checked; with ``--strict`` also an acceptable variant, a skipped check or an unused ``--allow``); 2 the
run could not start (bad arguments, a malformed ``--allow``, a target that cannot be loaded, no CUDA, a
broken installation), with one line ``ddspec: error: ...`` on stderr (a traceback only with
``--traceback``); 130 interrupted. Several targets: the largest code.

Progress goes to stderr, and only when stderr is a terminal (a tqdm bar; never a ``\r`` in a file or
a CI log). ``--failures-only`` / ``-q`` prints a compact report.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import traceback
from typing import Any, Callable, NoReturn, Sequence

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAIL", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_DTYPES = ("float64", "float32", "float16", "bfloat16")
_PROFILES = ("quick", "default", "thorough")

_CHECK_EPILOG = """\
examples:
  ddspec check                                   # the reference port and diffusers' defaults
  ddspec check mypkg.sampler:make_sampler --profile quick
  ddspec check diffusers:DDIMScheduler --dtype float16 --device cuda --steps 10 50
  ddspec check ./my_sampler.py:MySampler --json report.json --junit report.xml --strict
  ddspec check mypkg:make --allow 'single_step.eta=0*::known issue #12, fixed in 2.0' -q

A TARGET is 'module:attr' (attr may be dotted; the module is imported from PYTHONPATH or the
installed packages, then the current directory, or given as a path to a .py file; the report
names the file it was loaded from). It may name a diffusers scheduler instance, an object
implementing ddspec's Sampler protocol, a whole sampling loop wrapped in
ddspec.conformance.adapters.loop.LoopSampler (docs/loops.md), or a zero-argument factory or
class returning one.

--allow NAME::REASON splits at the first '::' (check names contain '=', as in single_step.eta=0);
NAME is a check name or an fnmatch glob; REASON is required.

The profile defaults to 'default' here and in the pytest plugin (--ddspec-profile), so that both
check the same thing; pass --profile quick for a fast CI gate.

exit codes (the pytest plugin fails on exactly the same results):
  the results include ...                        default  --strict
  a failure that no --allow covers               1        1
  an unsupported check (could not be verified)   1        1
  nothing checked (only skipped or unsupported)  1        1
  an acceptable convention variant               0        1
  a skipped check (not applicable)               0        1
  an --allow that matches no failing check       0        1
  only passes and allowed failures               0        0
  2: bad arguments (a malformed --allow, --steps above T, ...) or a target that cannot be loaded;
  130: interrupted (the partial report of the checks that finished is written). Several targets:
  the largest code. With --baseline, a check whose error grew more than --max-growth times or
  whose verdict got worse also gives 1 (added or removed checks are reported, not failed).
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"ddspec: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    r"""The argument parser of the ``ddspec`` command (subcommands ``check`` and ``audit``)."""
    parser = _Parser(
        prog="ddspec",
        description="Reference specification and verification suite for DDPM/DDIM samplers.",
        epilog="examples:\n  ddspec check diffusers:DDIMScheduler --profile quick\n"
        "  ddspec check --help\n  ddspec audit --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ddspec {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="check samplers against the float64 reference",
        description="Check DDPM/DDIM samplers against the float64 reference and print a "
        "report per target (failures first).",
        epilog=_CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="module:attr of a sampler, or a factory returning one (default: the reference port, "
        "and diffusers' DDPMScheduler and DDIMScheduler when diffusers is installed)",
    )
    check.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    check.add_argument(
        "--dtype", default="float32", choices=_DTYPES, help="dtype the target runs in (default: float32)"
    )
    check.add_argument(
        "--steps",
        nargs="+",
        type=_positive_int,
        metavar="N",
        help="numbers of inference steps to test (default: the profile's); put TARGETs before it",
    )
    check.add_argument(
        "--profile",
        default="default",
        choices=_PROFILES,
        help="how thorough the run is (default: default, as the pytest plugin's --ddspec-profile; "
        "quick for a fast CI gate)",
    )
    check.add_argument("--seed", type=_seed, default=0, help="base seed of every random input (default: 0)")
    check.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="limit for one call into the target; a call past it fails the check (default: 30)",
    )
    check.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NAME::REASON",
        help="a known deviation: a failing check matching NAME (a check name or fnmatch glob; "
        "names contain '=', hence '::') is reported as allowed, not failed; REASON is required; "
        "repeatable",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail also on acceptable variants, skipped checks and unused allowances",
    )
    check.add_argument("--json", metavar="PATH", help="write the report as JSON (schema ddspec.report/2)")
    check.add_argument("--junit", metavar="PATH", help="write the report as JUnit XML")
    check.add_argument("--html", metavar="PATH",
                       help="write a self-contained HTML report with plots (needs the 'report' extra: matplotlib)")
    check.add_argument("--save-baseline", metavar="PATH",
                       help="save this run's observed errors and verdicts as a baseline (schema ddspec.baseline/1)")
    check.add_argument("--baseline", metavar="PATH",
                       help="compare with a saved baseline: exit 1 when a check's error grew more than "
                            "--max-growth times (even within its tolerance) or its verdict got worse")
    check.add_argument("--max-growth", metavar="F", type=float, default=10.0,
                       help="the error growth --baseline tolerates (default 10)")
    check.add_argument(
        "--traceback", action="store_true", help="show tracebacks (load errors, crashed checks)"
    )
    check.add_argument(
        "--failures-only",
        "-q",
        action="store_true",
        help="compact report: the root errors, each failing check with its worst finding, the summary",
    )
    check.add_argument(
        "--in-process",
        action="store_true",
        help="run the target in this process (for pdb) instead of a supervised worker process; a "
        "target that ends the process, hangs or segfaults then takes the run with it",
    )
    check.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="limit how far the worker's memory may grow (e.g. 512M, 2G; RLIMIT_AS); an allocation "
        "past it fails the check; not with --in-process",
    )
    check.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is drawn on stderr only when stderr is a terminal)",
    )

    sub.add_parser(
        "audit",
        help="audit the float64 reference against its mpmath twins",
        description="Audit the float64 reference against its mpmath twins. Options (see "
        "'ddspec audit --help'): --dps N (mpmath precision), --quick, --no-progress.",
        add_help=False,
    )
    sub.add_parser(
        "formula",
        help="check a formula against the reference quantity it claims to be (errata register)",
        description="Compare a formula in sympy syntax with a reference quantity at every t of the standard "
        "schedules, symbolically where sympy can decide, and name the known erratum it matches "
        "(docs/errata.md). See 'ddspec formula --help'.",
        add_help=False,
    )
    sub.add_parser(
        "derive",
        help="check the symbolic derivations step by step (sympy, mpmath where sympy cannot decide)",
        description="Print each derivation with a check mark per step. See 'ddspec derive --help'.",
        add_help=False,
    )
    _add_sweep_parsers(sub)
    return parser


def _add_sweep_parsers(sub: Any) -> None:
    r"""The ``sweep`` and ``sweep-merge`` subcommands (:mod:`ddspec.conformance.sweep`, docs/sweeps.md)."""
    sweep = sub.add_parser(
        "sweep",
        help="check every cell of a configuration grid of a scheduler class, on many workers (pytest-xdist)",
        description="Check every cell of a configuration grid (a TOML file, docs/sweeps.md): FACTORY(**config) "
        "for every combination of the grid's axes, each through the checks of 'ddspec check'. The cells run as "
        "pytest items on pytest-xdist workers. Ends with a table of which cells fail which family.",
        epilog="examples:\n"
        "  ddspec sweep diffusers:DDIMScheduler --grid docs/grids/diffusers_ddim.toml -n auto\n"
        "  ddspec sweep diffusers:DDIMScheduler --grid g.toml --shard 2/4 --json shard2.json\n"
        "  ddspec sweep-merge shard*.json -o merged.json --markdown table.md\n\n"
        "exit codes: 0 every cell conforms; 1 a cell does not conform (or its worker crashed); 2 bad arguments, "
        "a bad grid file, or a sweep whose cells ran more statistical checks than its false-failure budget "
        "booked; 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("factory", nargs="?", metavar="FACTORY",
                       help="module:attr of a scheduler class or a callable taking the config keywords "
                            "(default: the grid file's 'factory')")
    sweep.add_argument("--grid", required=True, metavar="GRID.toml", help="the configuration grid (docs/sweeps.md)")
    sweep.add_argument("--shard", metavar="i/n", help="run only shard i of n (cells whose index mod n is i-1)")
    sweep.add_argument("-n", "--workers", default="auto", metavar="auto|K",
                       help="pytest-xdist worker processes (default: auto, one per CPU)")
    sweep.add_argument("--profile", default="quick", choices=_PROFILES,
                       help="how thorough each cell is (default: quick)")
    sweep.add_argument("--dtype", choices=_DTYPES,
                       help="dtype of every cell (default: float32; not with a 'dtype' axis in the grid)")
    sweep.add_argument("--seed", type=_seed, default=0, help="base seed of every random input (default: 0)")
    sweep.add_argument("--timeout", type=_positive_seconds, default=30.0, metavar="SECONDS",
                       help="limit for one call into the target (default: 30)")
    sweep.add_argument("--budget", type=float, default=None, metavar="P",
                       help="false-failure budget of the whole sweep, spread over every statistical check of "
                            "every cell of the grid (default: 1e-6)")
    sweep.add_argument("--allow", action="append", default=[], metavar="NAME::REASON",
                       help="a known deviation, allowed in every cell as in 'ddspec check --allow'; repeatable")
    sweep.add_argument("--in-process", action="store_true",
                       help="run each target inside its xdist worker instead of a supervised child process")
    sweep.add_argument("--json", metavar="PATH", help="write the sweep document (schema ddspec.sweep/1)")
    sweep.add_argument("--no-reports", action="store_true",
                       help="leave the cells' full reports out of --json (keep counts, failing checks, ledger)")
    sweep.add_argument("--markdown", metavar="PATH", help="write the grid's results as a Markdown table")
    sweep.add_argument("--no-progress", action="store_true",
                       help="no progress (a bar on a terminal, else a line per cell on stderr)")

    merge = sub.add_parser(
        "sweep-merge",
        help="merge the JSON documents of a sweep's shards into one",
        description="Merge the shards of one sweep ('ddspec sweep --shard i/n --json ...'): the union of their "
        "cells and one false-failure ledger, the sum of theirs. Prints the grid's summary table.",
    )
    merge.add_argument("inputs", nargs="+", metavar="SHARD.json")
    merge.add_argument("-o", "--output", metavar="PATH", help="write the merged document here")
    merge.add_argument("--markdown", metavar="PATH", help="write the grid's results as a Markdown table")
    merge.add_argument("--update-doc", metavar="DOC.md",
                       help="replace the generated table of this grid in DOC.md (between its marker comments)")


def _version() -> str:
    from .results import _ddspec_version

    return _ddspec_version()


def _error(message: str) -> int:
    print(f"ddspec: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


def _warn(message: str) -> None:
    print(f"ddspec: warning: {' '.join(message.split())}", file=sys.stderr)


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # a closed or minimal stream
        return False


def _progress_bar(total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr (the caller has checked that stderr is a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


class _CheckProgress:
    """A text stream for the runner's progress lines (``[i/n] name  verdict``) that moves a tqdm bar."""

    _LINE = re.compile(r"^\[(\d+)/(\d+)\]\s+(\S+)")

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            match = self._LINE.match(line)
            if match:
                done = int(match.group(1))
                self.bar.set_postfix_str(match.group(3), refresh=False)
                if done > self.bar.n:
                    self.bar.update(done - self.bar.n)
        return len(text)

    def flush(self) -> None:
        pass


def _audit_progress() -> tuple[Callable[[int, int, str], None], Callable[[], None]]:
    """``(progress, close)`` for ``ddspec.reference.audit.main``: a tqdm bar over the cases."""
    state: dict[str, Any] = {}

    def progress(done: int, total: int, what: str) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = _progress_bar(total, "ddspec audit", "case")
        bar.set_postfix_str(what, refresh=False)
        if done > bar.n:
            bar.update(done - bar.n)

    def close() -> None:
        if state.get("bar") is not None:
            state["bar"].close()

    return progress, close


def _run_audit(argv: list[str]) -> int:
    try:
        import ddspec.reference.audit as audit
    except ModuleNotFoundError as exc:
        if exc.name in ("ddspec.reference.audit", "ddspec.reference", "ddspec"):
            return _error("'ddspec audit' is not available in this installation")
        raise
    progress, close = _audit_progress() if _stderr_is_terminal() else (None, lambda: None)
    try:
        code = audit.main(argv, progress=progress) if progress is not None else audit.main(argv)
    except SystemExit as exc:  # the audit's own argparse: --help (0) or a usage error (2)
        code = exc.code if isinstance(exc.code, int) or exc.code is None else EXIT_USAGE
    finally:
        close()
    return EXIT_OK if code is None else int(code)


def _run_check(args: argparse.Namespace) -> int:
    from .context import CheckContext, parse_device, parse_dtype
    from . import loader
    from .report import format_text, write_json, write_junit
    from .runner import InterruptedRun, installed_checks, run_checks

    def fail_setup(message: str) -> int:
        if args.traceback:
            traceback.print_exc()
        return _error(message)

    try:
        device = parse_device(args.device)
    except ValueError as exc:
        message = str(exc)
        if "CUDA is not available" in message:
            return _error(f"--device {args.device}: CUDA is not available")
        return _error(f"--device {args.device}: {message.split(': ', 1)[-1]}")
    dtype = parse_dtype(args.dtype)

    from .results import parse_allowance

    try:
        allow = dict(parse_allowance(text, option="--allow") for text in args.allow)
    except ValueError as exc:
        return _error(str(exc))

    from .sandbox import WorkerSampler, isolate, parse_memory

    max_memory = None
    if args.max_memory is not None:
        if args.in_process:
            return _error("--max-memory limits the worker process; it cannot be combined with --in-process")
        try:
            max_memory = parse_memory(args.max_memory, option="--max-memory")
        except ValueError as exc:
            return _error(str(exc))
    if args.in_process:
        _warn("--in-process: the targets run in this process; one that exits, crashes or hangs takes the run "
              "with it (invariants.no_global_state_change's details say how each target ran)")

    baseline_obj = None
    if args.baseline is not None:
        from . import baseline as baseline_mod

        try:
            baseline_obj = baseline_mod.load_baseline(args.baseline)
        except (ValueError, OSError) as exc:
            return _error(f"--baseline {args.baseline}: {exc}")
    if not args.max_growth > 1.0:
        return _error(f"--max-growth {args.max_growth}: must be > 1 (the factor an error may grow by)")
    if args.html:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            return _error(f"--html {args.html}: the HTML report needs matplotlib: pip install 'ddspec[report]'")
    for opt, path in (("--json", args.json), ("--junit", args.junit), ("--html", args.html),
                      ("--save-baseline", args.save_baseline)):
        if path:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
                return _error(f"{opt} {path}: cannot write the report there (no such writable directory: {parent})")

    try:
        specs = args.targets or loader.default_target_specs()
        targets = [loader.load(spec) for spec in specs]
    except loader.TargetLoadError as exc:
        return fail_setup(str(exc))
    except Exception as exc:  # noqa: BLE001 - a broken target or install must not dump a traceback
        return fail_setup(f"loading the targets raised {type(exc).__name__}: {exc}")

    try:
        checks = installed_checks()
    except Exception as exc:  # noqa: BLE001
        return fail_setup(f"cannot import the checks: {type(exc).__name__}: {exc}")
    if not checks:
        print("ddspec: warning: no checks are installed; nothing is checked", file=sys.stderr)

    show_progress = not args.no_progress and _stderr_is_terminal()
    reports = []
    for loaded in targets:
        label, sampler = loaded.label, loaded.sampler
        if not args.in_process:
            sampler = isolate(sampler, device=device, timeout_s=args.timeout, max_memory=max_memory, spec=label)
        for note in loaded.warnings:
            _warn(note)
        try:
            context = CheckContext(
                sampler=sampler,
                device=device,
                dtype=dtype,
                profile=args.profile,
                seed=args.seed,
                timeout_s=args.timeout,
                progress=show_progress,
                steps=tuple(args.steps) if args.steps else None,
            )
        except ValueError as exc:
            return fail_setup(str(exc))
        T = context.num_train_timesteps
        if args.steps and T is not None and any(n > T for n in args.steps):
            too_many = sorted(n for n in args.steps if n > T)
            return _error(f"--steps {' '.join(map(str, too_many))}: more inference steps than the target's "
                          f"num_train_timesteps={T} ({label})")
        bar = _progress_bar(len(checks), label, "check") if show_progress else None
        try:
            stream = _CheckProgress(bar) if bar is not None else None
            report = run_checks(sampler, context, checks, target=label, stream=stream).with_allowances(allow)
            report = dataclasses.replace(report, origin=loaded.origin)
        except InterruptedRun as stop:
            # the user's Ctrl-C: write what finished (text and files), then exit 130
            partial = dataclasses.replace(stop.report.with_allowances(allow), origin=loaded.origin)
            reports.append(partial)
            sys.stdout.write(format_text(partial, show_tracebacks=args.traceback,
                                         failures_only=args.failures_only, origin=loaded.origin))
            sys.stdout.write("\n")
            _write_reports(args, reports)
            print(f"ddspec: interrupted during {label}: the partial report covers the {len(partial.checks)} "
                  "check(s) that finished", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            if bar is not None:
                bar.close()
            if isinstance(sampler, WorkerSampler):
                sampler.close()
        reports.append(report)
        sys.stdout.write(format_text(report, show_tracebacks=args.traceback,
                                     failures_only=args.failures_only, origin=loaded.origin))
        sys.stdout.write("\n")
        sys.stdout.flush()

    written = _write_reports(args, reports)
    if written is not None:
        return written

    codes = [r.exit_code(args.strict) for r in reports]
    if len(reports) > 1:
        bad = [r.target for r, c in zip(reports, codes) if c]
        verdict = "all conform" if not bad else f"{len(bad)} do not conform: {', '.join(bad)}"
        print(f"ddspec: {len(reports)} targets checked; {verdict}", file=sys.stderr)
    gate = EXIT_OK
    if baseline_obj is not None or args.save_baseline:
        from . import baseline as baseline_mod

        try:
            gate = baseline_mod.run_gate(reports, save=args.save_baseline, baseline=baseline_obj,
                                         max_growth=args.max_growth)
        except (ValueError, OSError) as exc:
            return _error(f"baseline: {exc}")
    return max(max(codes, default=EXIT_OK), gate)


def _write_reports(args: argparse.Namespace, reports: list) -> int | None:
    """Write the --json, --junit and --html files of ``reports``; an exit code when one cannot be written."""
    from .report import write_json, write_junit

    try:
        if args.json:
            write_json(reports, args.json)
        if args.junit:
            write_junit(reports, args.junit)
        if args.html:
            from .html_report import write_html

            write_html(reports, args.html)
    except OSError as exc:
        return _error(f"cannot write the report: {exc.strerror or exc}: {exc.filename or ''}")
    return None


def _sweep_outputs(doc: dict, markdown: str | None, update_doc: str | None = None) -> int | None:
    """Print the sweep's summary table and write its Markdown; an exit code when that fails."""
    from . import sweep as sweep_mod

    sys.stdout.write(sweep_mod.summary_table(doc))
    sys.stdout.flush()
    try:
        if markdown:
            with open(markdown, "w", encoding="utf-8") as handle:
                handle.write(sweep_mod.format_markdown(doc))
        if update_doc:
            with open(update_doc, encoding="utf-8") as handle:
                text = handle.read()
            text = sweep_mod.replace_doc_section(text, doc["name"], sweep_mod.format_markdown(doc))
            with open(update_doc, "w", encoding="utf-8") as handle:
                handle.write(text)
    except OSError as exc:
        return _error(f"cannot write the table: {exc.strerror or exc}: {exc.filename or ''}")
    except ValueError as exc:
        return _error(f"--update-doc {update_doc}: {exc}")
    for problem in sweep_mod.ledger_problems(doc):
        print(f"ddspec: error: {problem}", file=sys.stderr)
    return None


def _run_sweep(args: argparse.Namespace) -> int:
    try:
        from . import sweep as sweep_mod
    except ImportError as exc:
        return _error(f"'ddspec sweep' needs pytest and pytest-xdist ({exc}): pip install 'ddspec[sweep]'")
    try:
        grid = sweep_mod.load_grid(args.grid)
    except OSError as exc:
        return _error(f"--grid {args.grid}: cannot read it: {exc.strerror or exc}")
    except ValueError as exc:
        return _error(f"--grid {args.grid}: {exc}")
    factory = args.factory or grid.factory
    if factory is None:
        return _error(f"FACTORY: none given, and the grid file {args.grid} names no 'factory'")
    if args.dtype is not None and any(name == "dtype" for name, _ in grid.axes):
        return _error(f"--dtype {args.dtype}: the grid {args.grid} has a 'dtype' axis; give the dtypes in one place")
    workers: int | str = args.workers
    if workers != "auto":
        try:
            workers = _positive_int(workers)
        except argparse.ArgumentTypeError as exc:
            return _error(f"-n {args.workers}: {exc}; expected 'auto' or a number of workers >= 1")
    for opt, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
                return _error(f"{opt} {path}: cannot write there (no such writable directory: {parent})")
    from .results import parse_allowance

    try:
        allow = dict(parse_allowance(text, option="--allow") for text in args.allow)
    except ValueError as exc:
        return _error(str(exc))
    try:
        shard = sweep_mod.parse_shard(args.shard) if args.shard is not None else None
        plan = sweep_mod.make_plan(factory, grid, profile=args.profile, seed=args.seed, timeout_s=args.timeout,
                                   dtype=args.dtype or "float32", budget=args.budget, shard=shard,
                                   in_process=args.in_process, allow=allow)
    except ValueError as exc:  # names the argument: "budget=2.0: ...", "factory='x': ...", "--shard='3/2': ..."
        message = str(exc)
        if message.startswith("factory="):
            return _error(f"FACTORY {message.removeprefix('factory=')}")
        return _error(message if message.startswith("--") else f"--{message}")
    show = not args.no_progress
    bar = show and _stderr_is_terminal()
    try:
        doc = sweep_mod.run_sweep(plan, workers=workers, stream=sys.stderr if show and not bar else None,
                                  progress_bar=bar)
    except RuntimeError as exc:  # no pytest-xdist, or pytest could not run the items (its output follows)
        first, _, rest = str(exc).partition("\n")
        code = _error(first)
        if rest:
            print(rest, file=sys.stderr)
        return code
    if args.json:
        try:
            sweep_mod.write_sweep(doc, args.json, reports=not args.no_reports)
        except OSError as exc:
            return _error(f"--json {args.json}: {exc.strerror or exc}")
    failed = _sweep_outputs(doc, args.markdown)
    return failed if failed is not None else sweep_mod.sweep_exit_code(doc)


def _run_sweep_merge(args: argparse.Namespace) -> int:
    from . import sweep as sweep_mod

    docs = []
    for path in args.inputs:
        try:
            docs.append(sweep_mod.load_sweep(path))
        except OSError as exc:
            return _error(f"{path}: cannot read it: {exc.strerror or exc}")
        except ValueError as exc:
            return _error(str(exc))
    try:
        merged = sweep_mod.merge_sweeps(docs)
    except ValueError as exc:
        return _error(f"sweep-merge {' '.join(args.inputs)}: {exc}")
    if args.output:
        try:
            sweep_mod.write_sweep(merged, args.output)
        except OSError as exc:
            return _error(f"-o {args.output}: {exc.strerror or exc}")
    failed = _sweep_outputs(merged, args.markdown, args.update_doc)
    return failed if failed is not None else sweep_mod.sweep_exit_code(merged)


def main(argv: Sequence[str] | None = None) -> int:
    r"""Run the ``ddspec`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] == "audit":
            return _run_audit(args_list[1:])
        if args_list and args_list[0] == "formula":
            from ddspec.audit import cli_main as formula_main  # sympy is imported only for this command

            return formula_main(args_list[1:])
        if args_list and args_list[0] == "derive":
            try:
                from ddspec.derivations import cli_main as derive_main
            except ImportError as exc:  # pragma: no cover - an installation without the derivations
                return _error(f"derive: the derivations are not installed ({exc})")
            return derive_main(args_list[1:])
        parser = build_parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
            return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if args.command == "check":
            return _run_check(args)
        if args.command == "sweep":
            return _run_sweep(args)
        if args.command == "sweep-merge":
            return _run_sweep_merge(args)
        return _error(f"unknown command {args.command!r}")  # pragma: no cover - argparse refuses it
    except KeyboardInterrupt:
        print("ddspec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
