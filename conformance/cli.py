r"""The ``ddspec`` command.

``ddspec check [TARGET ...]``
    Check DDPM/DDIM samplers against the float64 reference and print a report per target. A TARGET
    is ``module:attr`` (see :mod:`ddspec.conformance.loader`). With no TARGET, checks the bundled
    torch port of the reference and, when diffusers is installed, diffusers' ``DDPMScheduler()`` and
    ``DDIMScheduler()``.

``ddspec audit``
    Audit the reference itself against its mpmath twins (``ddspec.reference.audit``).

Exit codes of ``ddspec check``: 0 every check passed, was acceptable, unsupported or skipped (with
``--strict``: only passed or skipped); 1 some check failed; 2 the run could not start (bad
arguments, a target that cannot be loaded, no CUDA, a broken installation), with a one-line reason on
stderr (a traceback only with ``--traceback``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import NoReturn, Sequence

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
  ddspec check mypkg:make --allow 'distribution.*=known issue #12, fixed in 2.0'

A TARGET is 'module:attr' (attr may be dotted; the module is imported from the current
directory or PYTHONPATH, or given as a path to a .py file). It may name a diffusers scheduler
instance, an object implementing ddspec's Sampler protocol, or a zero-argument factory or
class returning one.

exit codes: 0 conforms (pass/acceptable/unsupported/skipped; with --strict only pass/skipped),
1 a check failed, 2 bad arguments or a target that cannot be loaded.
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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


def _allowance(text: str) -> tuple[str, str]:
    from .results import parse_allowance

    try:
        return parse_allowance(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    r"""The argument parser of the ``ddspec`` command (subcommands ``check`` and ``audit``)."""
    parser = _Parser(
        prog="ddspec",
        description="Reference specification and verification suite for DDPM/DDIM samplers.",
        epilog="examples:\n  ddspec check diffusers:DDIMScheduler --profile quick\n"
        "  ddspec check --help\n  ddspec audit --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        help="how thorough the run is (default: default; quick for CI)",
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
        type=_allowance,
        default=[],
        metavar="NAME=REASON",
        help="a known deviation: a failing check matching NAME (a name or glob) is reported as "
        "allowed, not failed; REASON is required; repeatable",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail also on acceptable variants, unsupported features and unused allowances",
    )
    check.add_argument("--json", metavar="PATH", help="write the report as JSON (schema ddspec.report/1)")
    check.add_argument("--junit", metavar="PATH", help="write the report as JUnit XML")
    check.add_argument(
        "--traceback", action="store_true", help="show tracebacks (load errors, crashed checks)"
    )
    check.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")

    sub.add_parser(
        "audit",
        help="audit the float64 reference against its mpmath twins",
        description="Audit the float64 reference against its mpmath twins. Options (see "
        "'ddspec audit --help'): --dps N (mpmath precision), --quick.",
        add_help=False,
    )
    return parser


def _error(message: str) -> int:
    print(f"ddspec: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


def _run_audit(argv: list[str]) -> int:
    try:
        import ddspec.reference.audit as audit
    except ModuleNotFoundError as exc:
        if exc.name in ("ddspec.reference.audit", "ddspec.reference", "ddspec"):
            return _error("'ddspec audit' is not available in this installation")
        raise
    try:
        code = audit.main(argv)
    except SystemExit as exc:  # the audit's own argparse: --help (0) or a usage error (2)
        code = exc.code if isinstance(exc.code, int) or exc.code is None else EXIT_USAGE
    return EXIT_OK if code is None else int(code)


def _run_check(args: argparse.Namespace) -> int:
    from .context import CheckContext, parse_device, parse_dtype
    from .loader import TargetLoadError, default_targets, load_target
    from .report import format_text, write_json, write_junit
    from .runner import installed_checks, run_checks

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

    for opt, path in (("--json", args.json), ("--junit", args.junit)):
        if path:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
                return _error(f"{opt} {path}: cannot write the report there (no such writable directory: {parent})")

    try:
        if args.targets:
            targets = [tuple(reversed(load_target(spec))) for spec in args.targets]
        else:
            targets = default_targets()
    except TargetLoadError as exc:
        return fail_setup(str(exc))
    except Exception as exc:  # noqa: BLE001 - a broken target or install must not dump a traceback
        return fail_setup(f"loading the targets raised {type(exc).__name__}: {exc}")

    try:
        checks = installed_checks()
    except Exception as exc:  # noqa: BLE001
        return fail_setup(f"cannot import the checks: {type(exc).__name__}: {exc}")
    if not checks:
        print("ddspec: warning: no checks are installed; nothing is checked", file=sys.stderr)

    allow = dict(args.allow)
    reports = []
    for label, sampler in targets:
        try:
            context = CheckContext(
                sampler=sampler,
                device=device,
                dtype=dtype,
                profile=args.profile,
                seed=args.seed,
                timeout_s=args.timeout,
                progress=not args.no_progress,
                steps=tuple(args.steps) if args.steps else None,
            )
        except ValueError as exc:
            return fail_setup(str(exc))
        T = context.num_train_timesteps
        if args.steps and T is not None and any(n > T for n in args.steps):
            too_many = sorted(n for n in args.steps if n > T)
            return _error(f"--steps {' '.join(map(str, too_many))}: more inference steps than the target's "
                          f"num_train_timesteps={T} ({label})")
        if context.progress:
            print(f"ddspec: checking {label} ({len(checks)} check functions)", file=sys.stderr)
        report = run_checks(sampler, context, checks, target=label).with_allowances(allow)
        reports.append(report)
        sys.stdout.write(format_text(report, show_tracebacks=args.traceback))
        sys.stdout.write("\n")
        sys.stdout.flush()

    try:
        if args.json:
            write_json(reports, args.json)
        if args.junit:
            write_junit(reports, args.junit)
    except OSError as exc:
        return _error(f"cannot write the report: {exc.strerror or exc}: {exc.filename or ''}")

    codes = [r.exit_code(args.strict) for r in reports]
    if len(reports) > 1:
        bad = [r.target for r, c in zip(reports, codes) if c]
        verdict = "all conform" if not bad else f"{len(bad)} do not conform: {', '.join(bad)}"
        print(f"ddspec: {len(reports)} targets checked; {verdict}", file=sys.stderr)
    return max(codes, default=EXIT_OK)


def main(argv: Sequence[str] | None = None) -> int:
    r"""Run the ``ddspec`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] == "audit":
            return _run_audit(args_list[1:])
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
        return _error(f"unknown command {args.command!r}")  # pragma: no cover - argparse refuses it
    except KeyboardInterrupt:
        print("ddspec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
