r"""pytest plugin: ddspec's conformance checks as pytest tests.

Installed with ddspec (entry point ``pytest11``); it does nothing unless asked.

Command line
------------
::

    pytest --ddspec-target mypkg.sampler:make_sampler
    pytest --ddspec-target diffusers:DDIMScheduler --ddspec-dtype float16 --ddspec-device cuda
    pytest --ddspec-target mypkg:make --ddspec-allow 'distribution.*::known issue #12' --ddspec-strict

Each ``--ddspec-target SPEC`` (repeatable; ``module:attr`` as for ``ddspec check``) adds one test item
per check result, named ``ddspec:<check name>[<SPEC>]`` and marked ``ddspec`` (so ``-m ddspec`` and
``-k alphas_cumprod`` select them). The checks run once per target, when the items are collected.

A result's item fails exactly when it keeps the target from conforming
(:meth:`~ddspec.conformance.results.Report.blocking_reason`, the rule behind
:meth:`~ddspec.conformance.results.Report.exit_code` and ``ddspec check``'s exit code), so that pytest
and ``ddspec check`` fail on the same results:

* ``pass`` and ``acceptable`` pass (an acceptable variant's consequence is listed in the terminal
  summary); ``skipped`` is skipped with the reason;
* ``fail`` fails with the findings (expected, got, tolerance) and a reproducer; a ``fail`` matching
  ``--ddspec-allow NAME::REASON`` (split at the first ``::``, since check names contain ``=``; NAME a
  check name or fnmatch glob; the REASON is required) is an allowed deviation (xfail) with its reason;
* ``unsupported`` fails: the harness could not verify that part of the target, and a gate must not
  read that as conformance;
* with ``--ddspec-strict``, ``acceptable`` and ``skipped`` fail too, and so does the item
  ``ddspec:allowances[<SPEC>]`` if an allowance matches no failing check ("unused allowance"; without
  strict it only warns);
* a report in which nothing was checked (every result skipped or unsupported, or none) adds one
  failing item ``ddspec:checked[<SPEC>]``.

A target that cannot be loaded gives one failing item ``ddspec:load[<SPEC>]`` with the reason. Usage
errors (a malformed ``--ddspec-allow``, a bad device) stop pytest with ``ddspec: error: ...``, as the
``ddspec`` command does. The terminal summary names the file each target was loaded from.

Other options: ``--ddspec-device`` (cpu), ``--ddspec-dtype`` (float32), ``--ddspec-profile``
(default: ``default``, the same as ``ddspec check``, so that both check the same thing; ``quick`` for
a fast gate), ``--ddspec-seed`` (0), ``--ddspec-timeout`` (30 s per call into the target),
``--ddspec-in-process`` and ``--ddspec-max-memory SIZE`` (as ``ddspec check --in-process`` /
``--max-memory``: the targets run in a supervised worker process unless ``--ddspec-in-process``;
:mod:`ddspec.conformance.sandbox`).

In your own tests
-----------------
::

    from ddspec.conformance.pytest_plugin import assert_conforms, ddspec_check

    def test_my_sampler_conforms():
        report = ddspec_check("mypkg.sampler:make_sampler", dtype="float32", profile="quick",
                              allow={"single_step.eta=0*": "known issue #12"})
        assert_conforms(report)            # AssertionError with the text report, failures first

    def test_each_target(ddspec_report):   # parametrized over --ddspec-target values
        assert_conforms(ddspec_report)

``ddspec_check`` accepts a spec string or the sampler object itself (a diffusers scheduler, a
protocol object, or a factory).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from .results import CheckResult, Report

__all__ = [
    "ddspec_check",
    "assert_conforms",
    "ddspec_report",
    "DDSpecCheckFailure",
    "DDSpecUnusedAllowanceWarning",
]

_DTYPES = ("float64", "float32", "float16", "bfloat16")
_PROFILES = ("quick", "default", "thorough")


class DDSpecCheckFailure(AssertionError):
    """A ddspec check item failed; the message is the check's text report."""


class DDSpecUnusedAllowanceWarning(UserWarning):
    """An allowed deviation matched no failing check (fixed upstream, or a typo): remove it."""


# -- the library API ----------------------------------------------------------------------------------


def ddspec_check(
    target: Any,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    profile: str = "default",
    seed: int = 0,
    timeout_s: float = 30.0,
    steps: Sequence[int] | None = None,
    allow: Mapping[str, str] | None = None,
    checks: Sequence[Callable[..., list[CheckResult]]] | None = None,
    progress: bool = False,
    isolate: bool = False,
    max_memory: int | str | None = None,
) -> Report:
    r"""Run ddspec's checks against ``target`` and return the :class:`~ddspec.conformance.results.Report`.

    Args:
        target: a ``module:attr`` spec, or the sampler itself (anything
            :func:`ddspec.conformance.adapters.adapt` accepts).
        device, dtype, profile, seed, timeout_s, steps, progress: as for ``ddspec check`` (see
            :class:`~ddspec.conformance.context.CheckContext`).
        allow: known deviations ``{check name or glob: reason}``, recorded in the report (a failing
            check they match no longer fails it; see :mod:`ddspec.conformance.results`).
        checks: the check functions (default: every installed check).
        isolate: run the target in a supervised worker process (:mod:`ddspec.conformance.sandbox`),
            as ``ddspec check`` and the plugin's items do; default False here (in this process).
        max_memory: with ``isolate``, how far the worker's memory may grow (bytes, or ``"512M"``).

    Raises:
        ddspec.conformance.loader.TargetLoadError: the target cannot be loaded or adapted.
        ValueError: a bad device, dtype, profile, seed, timeout or allowance.
    """
    from .loader import load

    if isinstance(target, str):
        loaded = load(target)
        return _check_loaded(loaded.sampler, loaded.label, device=device, dtype=dtype, profile=profile,
                             seed=seed, timeout_s=timeout_s, steps=steps, allow=allow, checks=checks,
                             progress=progress, isolate=isolate, max_memory=max_memory, spec=loaded.label)
    from .loader import adapt_object

    label_of_type = type(target).__name__
    sampler = adapt_object(target, label_of_type)
    name = getattr(sampler, "name", None)
    label = name if isinstance(name, str) and name else type(sampler).__name__
    return _check_loaded(sampler, label, device=device, dtype=dtype, profile=profile, seed=seed,
                         timeout_s=timeout_s, steps=steps, allow=allow, checks=checks, progress=progress,
                         isolate=isolate, max_memory=max_memory)


def _check_loaded(
    sampler: Any,
    label: str,
    *,
    device: str,
    dtype: str,
    profile: str,
    seed: int,
    timeout_s: float,
    steps: Sequence[int] | None,
    allow: Mapping[str, str] | None,
    checks: Sequence[Callable[..., list[CheckResult]]] | None,
    progress: bool,
    isolate: bool = False,
    max_memory: int | str | None = None,
    spec: str | None = None,
) -> Report:
    """:func:`ddspec_check` on an adapted sampler (in a worker process with ``isolate``)."""
    from .context import CheckContext
    from .results import validate_allowances
    from .runner import installed_checks, run_checks
    from .sandbox import WorkerSampler
    from .sandbox import isolate as isolated

    allowances = validate_allowances(allow)
    if isolate:
        sampler = isolated(sampler, device=device, timeout_s=timeout_s, max_memory=max_memory, spec=spec)
    elif max_memory is not None:
        raise ValueError(f"max_memory={max_memory!r}: limits the worker process; needs isolate=True")
    try:
        context = CheckContext(
            sampler=sampler,
            device=device,
            dtype=dtype,
            profile=profile,
            seed=seed,
            timeout_s=timeout_s,
            progress=progress,
            steps=None if steps is None else tuple(steps),
        )
        check_list = installed_checks() if checks is None else list(checks)
        return run_checks(sampler, context, check_list, target=label).with_allowances(allowances)
    finally:
        if isinstance(sampler, WorkerSampler):
            sampler.close()


def assert_conforms(
    report: Report, allow: Mapping[str, str] | None = None, *, strict: bool = False
) -> Report:
    r"""Raise :class:`AssertionError` with the text report (failures first) unless ``report`` conforms.

    "Conforms" is :meth:`Report.exit_code` ``== 0`` after adding the allowances ``allow``
    (``{check name or glob: reason}``) to the report's own. Returns the report with the allowances.
    """
    from .report import format_text
    from .results import Report

    if not isinstance(report, Report):
        raise ValueError(f"report={report!r}: must be a ddspec Report (from ddspec_check)")
    report = report.with_allowances(allow)
    if report.exit_code(strict) != 0:
        raise AssertionError(
            f"{report.target} does not conform to the ddspec reference"
            f"{' (strict)' if strict else ''}:\n" + format_text(report, show_tracebacks=True)
        )
    return report


# -- options and configuration ------------------------------------------------------------------------

_ALLOW_KEY = pytest.StashKey[dict]()
_CACHE_KEY = pytest.StashKey[dict]()
_ORIGIN_KEY = pytest.StashKey[dict]()


def _usage_error(message: str) -> pytest.UsageError:
    """A usage error with the prefix every ddspec face uses: ``ddspec: error: ...``."""
    return pytest.UsageError(f"ddspec: error: {' '.join(message.split())}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ddspec", "ddspec conformance checks (ddspec.conformance.pytest_plugin)")
    group.addoption(
        "--ddspec-target",
        action="append",
        default=[],
        metavar="SPEC",
        help="check this sampler (module:attr) against the ddspec reference; one test per check; "
        "repeatable",
    )
    group.addoption("--ddspec-device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    group.addoption(
        "--ddspec-dtype", default="float32", choices=_DTYPES, help="dtype the target runs in (default: float32)"
    )
    group.addoption(
        "--ddspec-profile",
        default="default",
        choices=_PROFILES,
        help="how thorough the run is (default: default, the same as 'ddspec check --profile'; "
        "quick for a fast gate)",
    )
    group.addoption("--ddspec-seed", type=int, default=0, help="base seed (default: 0)")
    group.addoption(
        "--ddspec-timeout", type=float, default=30.0, help="seconds per call into the target (default: 30)"
    )
    group.addoption(
        "--ddspec-allow",
        action="append",
        default=[],
        metavar="NAME::REASON",
        help="a known deviation: a failing check matching NAME (a check name or fnmatch glob; names "
        "contain '=', hence '::') is an allowed deviation (xfail), not a failure; REASON is "
        "required; repeatable",
    )
    group.addoption(
        "--ddspec-in-process",
        action="store_true",
        help="run the targets in this process (for pdb) instead of a supervised worker process, as "
        "'ddspec check --in-process'",
    )
    group.addoption(
        "--ddspec-max-memory",
        default=None,
        metavar="SIZE",
        help="limit how far the worker's memory may grow (e.g. 512M, 2G), as 'ddspec check --max-memory'",
    )
    group.addoption(
        "--ddspec-baseline",
        default=None,
        metavar="PATH",
        help="compare each target's report with a saved baseline (ddspec check --save-baseline): one more "
        "item per target, ddspec:baseline[SPEC], fails when an error grew more than --ddspec-max-growth "
        "times or a verdict got worse, as 'ddspec check --baseline'",
    )
    group.addoption(
        "--ddspec-max-growth",
        type=float,
        default=10.0,
        metavar="F",
        help="the error growth --ddspec-baseline tolerates (default 10)",
    )
    group.addoption(
        "--ddspec-strict",
        action="store_true",
        help="acceptable variants, skipped checks and unused allowances fail too (unsupported "
        "checks always fail), as with 'ddspec check --strict'",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ddspec: a ddspec conformance check (added by --ddspec-target)")
    from .results import parse_allowance

    allow: dict[str, str] = {}
    for text in config.getoption("ddspec_allow") or []:
        try:
            name, reason = parse_allowance(text, option="--ddspec-allow")
        except ValueError as exc:
            raise _usage_error(str(exc)) from None
        allow[name] = reason
    config.stash[_ALLOW_KEY] = allow
    config.stash[_CACHE_KEY] = {}
    config.stash[_ORIGIN_KEY] = {}
    if config.getoption("ddspec_target"):
        from .context import parse_device

        try:
            parse_device(config.getoption("ddspec_device"))
        except ValueError as exc:
            raise _usage_error(f"--ddspec-device={config.getoption('ddspec_device')}: {exc}") from None
        timeout = config.getoption("ddspec_timeout")
        if not (timeout > 0 and timeout != float("inf")):
            raise _usage_error(f"--ddspec-timeout={timeout}: must be a finite number of seconds > 0")
        max_memory = config.getoption("ddspec_max_memory")
        if max_memory is not None:
            if config.getoption("ddspec_in_process"):
                raise _usage_error("--ddspec-max-memory limits the worker process; it cannot be combined with "
                                   "--ddspec-in-process")
            from .sandbox import parse_memory

            try:
                parse_memory(max_memory, option="--ddspec-max-memory")
            except ValueError as exc:
                raise _usage_error(str(exc)) from None
        if config.getoption("ddspec_seed") < 0:
            raise _usage_error(f"--ddspec-seed={config.getoption('ddspec_seed')}: must be >= 0")


def _run(config: pytest.Config, spec: str) -> Report | str:
    """The report for ``spec`` under the command-line settings (run once), or a load error."""
    from .loader import TargetLoadError, load

    cache = config.stash[_CACHE_KEY]
    if spec not in cache:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"ddspec: checking {spec} ...")
        try:
            loaded = load(spec)
            config.stash[_ORIGIN_KEY][spec] = (loaded.origin, loaded.warnings)
            if reporter is not None:
                for note in loaded.warnings:
                    reporter.write_line(f"ddspec: warning: {note}")
            cache[spec] = _check_loaded(
                loaded.sampler,
                loaded.label,
                device=config.getoption("ddspec_device"),
                dtype=config.getoption("ddspec_dtype"),
                profile=config.getoption("ddspec_profile"),
                seed=config.getoption("ddspec_seed"),
                timeout_s=config.getoption("ddspec_timeout"),
                steps=None,
                allow=config.stash[_ALLOW_KEY],
                checks=None,
                progress=False,
                isolate=not config.getoption("ddspec_in_process"),
                max_memory=config.getoption("ddspec_max_memory"),
                spec=loaded.label,
            )
        except TargetLoadError as exc:
            cache[spec] = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported as a failing item, not a crash
            cache[spec] = f"checking {spec!r} raised {type(exc).__name__}: {exc}"
    return cache[spec]


# -- test items ---------------------------------------------------------------------------------------


class DDSpecItem(pytest.Item):
    """One ddspec check result of one target, as a pytest test."""

    def __init__(
        self,
        *,
        spec: str,
        report: Report | None,
        result: CheckResult | None = None,
        load_error: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.report = report
        self.result = result
        self.load_error = load_error
        self.add_marker("ddspec")
        if result is not None:
            self.user_properties.append(("ddspec_verdict", result.verdict.value))

    def _strict(self) -> bool:
        return bool(self.config.getoption("ddspec_strict"))

    def runtest(self) -> None:
        from .report import format_check
        from .results import Verdict

        if self.load_error is not None:
            raise DDSpecCheckFailure(f"ddspec: error: cannot check {self.spec!r}: {self.load_error}")
        report = self.report
        assert report is not None
        strict = self._strict()
        if self.result is None and self.name.startswith("ddspec:baseline["):
            from . import baseline as baseline_mod

            path = self.config.getoption("ddspec_baseline")
            growth = float(self.config.getoption("ddspec_max_growth"))
            try:
                comparison = baseline_mod.compare(report, path, growth)
            except (ValueError, OSError) as exc:
                raise DDSpecCheckFailure(f"ddspec: error: --ddspec-baseline={path!r}: {exc}") from None
            if comparison.exit_code:
                raise DDSpecCheckFailure(comparison.format_text())
            return
        if self.result is None and self.name.startswith("ddspec:checked["):
            raise DDSpecCheckFailure(
                f"ddspec: nothing was checked on {self.spec}: every result is skipped or unsupported, "
                "or there is none; that is never read as conformance"
            )
        if self.result is None:  # the allowances item
            unused = report.unused_allowances()
            if unused:
                listed = "; ".join(f"{p} ({report.allowances[p]})" for p in unused)
                message = f"unused allowance(s) for {self.spec}: {listed}: no failing check matches"
                if strict:
                    raise DDSpecCheckFailure(message + " (fails under --ddspec-strict)")
                warnings.warn(DDSpecUnusedAllowanceWarning(message), stacklevel=1)
            return
        result = self.result
        header = f"ddspec check {result.name} on {self.spec} ({report.device}, {report.dtype}):\n"
        if result.verdict is Verdict.FAIL:
            reason = report.allowed_reason(result)
            if reason is None:
                from .report import diagnosis_of

                headline = diagnosis_of(report, result)
                cause = f"diagnosis: {headline}\n" if headline else ""
                raise DDSpecCheckFailure(header + cause + format_check(result, show_traceback=True))
            pytest.xfail(f"allowed deviation: {reason}")
        blocking = report.blocking_reason(result, strict)
        if blocking is not None:
            raise DDSpecCheckFailure(
                header + blocking.replace("under strict", "under --ddspec-strict") + ":\n" + format_check(result)
            )
        if result.verdict is Verdict.SKIPPED:
            _skip(result.message or "not applicable")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, DDSpecCheckFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        # A pseudo-location, so that the progress line reads "ddspec[SPEC] ..F.s".
        return f"ddspec[{self.spec}]", 0, self.name


def _skip(reason: str) -> None:
    """``pytest.skip`` reported at the item (not at this file's line) in ``-rs`` summaries."""
    try:
        exc = pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # pragma: no cover - a pytest without the private keyword
        exc = pytest.skip.Exception(reason)
    raise exc


def _items_for(session: pytest.Session, spec: str) -> list[DDSpecItem]:
    outcome = _run(session.config, spec)
    if isinstance(outcome, str):
        return [DDSpecItem.from_parent(session, name=f"ddspec:load[{spec}]", nodeid=f"ddspec[{spec}]::load",
                                       spec=spec, report=None, load_error=outcome)]
    items = []
    seen: dict[str, int] = {}
    for result in outcome.checks:
        seen[result.name] = seen.get(result.name, 0) + 1
        suffix = "" if seen[result.name] == 1 else f"#{seen[result.name]}"
        items.append(
            DDSpecItem.from_parent(
                session, name=f"ddspec:{result.name}{suffix}[{spec}]",
                nodeid=f"ddspec[{spec}]::{result.name}{suffix}", spec=spec, report=outcome, result=result,
            )
        )
    if outcome.nothing_checked():
        items.append(
            DDSpecItem.from_parent(session, name=f"ddspec:checked[{spec}]",
                                   nodeid=f"ddspec[{spec}]::checked", spec=spec, report=outcome)
        )
    if session.config.getoption("ddspec_baseline"):
        items.append(
            DDSpecItem.from_parent(session, name=f"ddspec:baseline[{spec}]",
                                   nodeid=f"ddspec[{spec}]::baseline", spec=spec, report=outcome)
        )
    if outcome.allowances:
        items.append(
            DDSpecItem.from_parent(session, name=f"ddspec:allowances[{spec}]",
                                   nodeid=f"ddspec[{spec}]::allowances", spec=spec, report=outcome)
        )
    return items


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    # tryfirst: our items are added before -k / -m deselect, so both apply to them.
    for spec in dict.fromkeys(config.getoption("ddspec_target") or []):
        items.extend(_items_for(session, spec))


# -- fixture ------------------------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ddspec_report" not in metafunc.fixturenames:
        return
    targets = list(dict.fromkeys(metafunc.config.getoption("ddspec_target") or []))
    if targets:
        metafunc.parametrize("ddspec_report", targets, indirect=True, ids=targets)
    else:
        metafunc.parametrize(
            "ddspec_report",
            [pytest.param(None, marks=pytest.mark.skip(reason="no --ddspec-target given"))],
            indirect=True,
            ids=["no-ddspec-target"],
        )


@pytest.fixture
def ddspec_report(request: pytest.FixtureRequest) -> Report:
    """The :class:`~ddspec.conformance.results.Report` of one ``--ddspec-target`` (parametrized)."""
    spec = getattr(request, "param", None)
    if spec is None:
        pytest.skip("no --ddspec-target given")
    outcome = _run(request.config, spec)
    if isinstance(outcome, str):
        pytest.fail(f"ddspec: cannot check {spec!r}: {outcome}", pytrace=False)
    return outcome


# -- summary ------------------------------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    cache = config.stash.get(_CACHE_KEY, None)
    if not cache:
        return
    from .report import summary_line
    from .results import Verdict

    terminalreporter.section("ddspec")
    for spec, outcome in cache.items():
        if isinstance(outcome, str):
            terminalreporter.write_line(f"{spec}: cannot be checked: ddspec: error: {outcome}")
            continue
        origin, _notes = config.stash.get(_ORIGIN_KEY, {}).get(spec, (None, ()))
        verdict = "conforms" if outcome.exit_code(bool(config.getoption("ddspec_strict"))) == 0 else (
            "does not conform")
        terminalreporter.write_line(
            f"{spec} ({outcome.device}, {outcome.dtype}, profile {outcome.profile}): {verdict}; "
            f"{summary_line(outcome)}"
        )
        if origin:
            terminalreporter.write_line(f"  loaded from {origin}")
        for result in outcome.by_verdict(Verdict.ACCEPTABLE):
            terminalreporter.write_line(
                f"  acceptable {result.name}: {result.consequence or result.message}"
            )
        for result, reason in outcome.allowed_deviations():
            terminalreporter.write_line(f"  allowed deviation {result.name}: {reason}")
        for pattern in outcome.unused_allowances():
            terminalreporter.write_line(
                f"  unused allowance {pattern} ({outcome.allowances[pattern]}): no failing check matches"
            )
