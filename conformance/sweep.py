r"""Sweeps: the conformance checks over a configuration grid of one scheduler class, on many workers.

``ddspec sweep FACTORY --grid grid.toml`` checks every cell of a grid: every combination of the
grid's axes of configuration values (``timestep_spacing`` × ``prediction_type`` × ... × the number of
inference steps), each cell being ``FACTORY(**fixed, **axis values)`` run through the same checks as
``ddspec check``. The grid file format is documented in ``docs/sweeps.md``.

Engine
------
The sweep writes no process pool of its own: every cell is one pytest item, and the sweep runs
pytest programmatically with pytest-xdist (``pytest.main([... "-p", "xdist", "-n", K])``). A worker
runs a cell (:func:`run_cell`) and writes the cell's record, its report included, as one JSON file;
the controlling process reads the files back (:func:`run_sweep`). A cell whose worker died has no
file and is recorded as ``crashed``.

Sharding
--------
``--shard i/n`` (1-based) keeps the cells whose grid index ``k`` has ``k mod n = i - 1``: a
deterministic, balanced subset, the same on every machine. :func:`merge_sweeps` combines the shards'
JSON documents (``ddspec sweep-merge``); it refuses documents of different sweeps (their
``sweep_digest`` differs) and a cell present twice.

False-failure ledger
--------------------
A statistical check fails a correct sampler with probability at most its :math:`\alpha` (the
profile's ``false_failure_rate``; docs/statistics.md). A sweep runs the checks in every cell, so it
states one budget :math:`B` for the whole sweep (``--budget``, default
:data:`ddspec.conformance.stats.DEFAULT_BUDGET`) and books, for each of the grid's :math:`C` cells,
at most :math:`K` statistical results (``statistical_checks_per_cell``), each at

.. math::

    \alpha = \frac{B}{C\,K}, \qquad \Pr[\text{some check fails a correct sampler}]
    \le \sum_{\text{cells}} \sum_{\text{checks}} \alpha \le C K \alpha = B

(Bonferroni, i.e. Boole's inequality). :math:`C` is the whole grid's size, not the shard's, so the
merged shards keep the same budget. Each cell records what it spent (the sum of its results'
``details["false_failure_rate"]``); the sweep's ledger is the sum over its cells, so a merged ledger
is the sum of its shards' ledgers. A cell that ran more than :math:`K` statistical results has
overspent its share: the sweep says so and exits 2 (raise ``statistical_checks_per_cell``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import io
import itertools
import json
import math
import numbers
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TextIO

import pytest

__all__ = [
    "SWEEP_SCHEMA",
    "DEFAULT_CHECKS_PER_CELL",
    "RESERVED_AXES",
    "Grid",
    "Cell",
    "Shard",
    "SweepPlan",
    "parse_grid",
    "load_grid",
    "grid_cells",
    "parse_shard",
    "shard_cells",
    "alpha_per_check",
    "make_plan",
    "run_cell",
    "run_sweep",
    "merge_sweeps",
    "load_sweep",
    "write_sweep",
    "sweep_exit_code",
    "ledger_problems",
    "summary_table",
    "format_markdown",
    "replace_doc_section",
]

#: Version tag of a sweep's JSON document.
SWEEP_SCHEMA = "ddspec.sweep/1"

#: Default bound on the statistical results one cell runs (K in the module docstring). The quick
#: profile runs 4 per diffusers DDIM cell and 2 per DDPM cell (docs/grids' recorded sweeps); the bound
#: leaves room for the larger profiles and for loop targets.
DEFAULT_CHECKS_PER_CELL = 32

#: Axis names with a meaning of their own: not passed to the factory.
RESERVED_AXES = ("num_steps", "dtype")

_PLAN_NAME = "ddspec-sweep-plan.json"
_DTYPES = ("float64", "float32", "float16", "bfloat16")
_PROFILES = ("quick", "default", "thorough")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Family order of the summary table.
_FAMILY_ORDER = ("load", "schedule", "timesteps", "oracle", "single_step", "distribution", "invariants", "loop",
                 "harness")
#: The worst verdict of a family in a cell decides its mark; worst first.
_SEVERITY = ("fail", "unsupported", "allowed", "acceptable", "skipped", "pass")
_MARK = {"fail": "F", "unsupported": "U", "allowed": "x", "acceptable": "a", "skipped": "s", "pass": "."}


def _bad(name: str, value: Any, why: str) -> ValueError:
    shown = repr(value)
    if len(shown) > 100:
        shown = shown[:97] + "..."
    return ValueError(f"{name}={shown}: {why}")


# -- the grid ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    r"""A configuration grid (the parsed TOML file; format in ``docs/sweeps.md``).

    Attributes:
        axes: ``(name, values)`` pairs, in the file's order; the cells are their Cartesian product.
            ``num_steps`` and ``dtype`` are reserved (:data:`RESERVED_AXES`): the step counts a cell
            tests and the dtype it runs in; every other axis is a keyword of the factory.
        fixed: keywords passed to the factory in every cell.
        name: the grid's name (names its section in a document, see :func:`replace_doc_section`).
        factory: the ``module:attr`` the grid is written for, or None (the command line names it).
        checks_per_cell: K, the bound on the statistical results one cell runs.
        source: the file it was read from, or None.
    """

    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    fixed: tuple[tuple[str, Any], ...] = ()
    name: str = "sweep"
    factory: str | None = None
    checks_per_cell: int = DEFAULT_CHECKS_PER_CELL
    source: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The grid as JSON data (axes and fixed values as objects, in order)."""
        return {
            "name": self.name,
            "factory": self.factory,
            "statistical_checks_per_cell": self.checks_per_cell,
            "fixed": dict(self.fixed),
            "axes": {name: [_axis_json(name, v) for v in values] for name, values in self.axes},
        }

    @property
    def size(self) -> int:
        """The number of cells, C."""
        return math.prod(len(values) for _, values in self.axes)


def _axis_json(name: str, value: Any) -> Any:
    """An axis value as the grid file writes it (``num_steps``: ``"profile"``, an int or a list)."""
    if name == "num_steps":
        return "profile" if value is None else (value[0] if len(value) == 1 else list(value))
    return value


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, (bool, str)) or (isinstance(value, numbers.Real) and math.isfinite(float(value))):
        return value
    raise _bad(where, value, "must be a string, a boolean or a finite number")


def _steps_value(value: Any, where: str) -> tuple[int, ...] | None:
    if value == "profile":
        return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in items):
        raise _bad(where, value, "must be an int >= 1, a non-empty list of them, or \"profile\"")
    return tuple(sorted(set(items)))


def parse_grid(data: Mapping[str, Any], source: str | None = None) -> Grid:
    r"""Validate the data of a grid file (``tomllib.load`` output) and return the :class:`Grid`.

    Raises:
        ValueError: naming the key and the bad value: an unknown top-level key, an empty axis, a
            value that is not a string, boolean or finite number, a ``num_steps`` value that is not a
            step count, a list of step counts or ``"profile"``, an unknown ``dtype``, a name that is
            both fixed and an axis, a reserved name among the fixed values.
    """
    where = source or "grid"
    known = {"name", "factory", "statistical_checks_per_cell", "fixed", "axes"}
    for key in data:
        if key not in known:
            raise _bad(f"{where}: key", key, f"unknown; a grid file has {', '.join(sorted(known))}")
    name = data.get("name", Path(source).stem if source else "sweep")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _bad(f"{where}: name", name, "must be an identifier (letters, digits, _)")
    factory = data.get("factory")
    if factory is not None and (not isinstance(factory, str) or ":" not in factory):
        raise _bad(f"{where}: factory", factory, "must be 'module:attr'")
    bound = data.get("statistical_checks_per_cell", DEFAULT_CHECKS_PER_CELL)
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
        raise _bad(f"{where}: statistical_checks_per_cell", bound, "must be an int >= 1")
    fixed_data = data.get("fixed", {})
    if not isinstance(fixed_data, Mapping):
        raise _bad(f"{where}: fixed", fixed_data, "must be a table of name = value")
    axes_data = data.get("axes")
    if not isinstance(axes_data, Mapping) or not axes_data:
        raise _bad(f"{where}: axes", axes_data, "must be a non-empty table of name = [values]")
    fixed = []
    for key, value in fixed_data.items():
        if key in RESERVED_AXES:
            raise _bad(f"{where}: fixed.{key}", value, f"{key} is an axis (write {key} = [{value!r}] under [axes])")
        if key in axes_data:
            raise _bad(f"{where}: fixed.{key}", value, "is also an axis; give it in one place")
        fixed.append((key, _scalar(value, f"{where}: fixed.{key}")))
    axes = []
    for key, values in axes_data.items():
        label = f"{where}: axes.{key}"
        if not _NAME.match(key):
            raise _bad(label, key, "an axis name must be an identifier (a keyword of the factory)")
        if not isinstance(values, list) or not values:
            raise _bad(label, values, "must be a non-empty list of values")
        if key == "num_steps":
            parsed = tuple(_steps_value(v, label) for v in values)
        elif key == "dtype":
            for v in values:
                if v not in _DTYPES:
                    raise _bad(label, v, f"must be one of {', '.join(_DTYPES)}")
            parsed = tuple(values)
        else:
            parsed = tuple(_scalar(v, label) for v in values)
        if len(set(map(repr, parsed))) != len(parsed):
            raise _bad(label, values, "lists a value twice")
        axes.append((key, parsed))
    return Grid(axes=tuple(axes), fixed=tuple(fixed), name=name, factory=factory, checks_per_cell=bound,
                source=source)


def load_grid(path: str | os.PathLike[str]) -> Grid:
    r"""Read and validate a grid file (TOML).

    Raises:
        ValueError: the file is not valid TOML, or :func:`parse_grid` refuses it (the message names
            the file).
        OSError: the file cannot be read.
    """
    import tomllib

    with open(path, "rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{os.fspath(path)}: not valid TOML: {exc}") from None
    return parse_grid(data, source=os.fspath(path))


@dataclass(frozen=True)
class Cell:
    r"""One point of the grid.

    Attributes:
        index: the 0-based position in the grid's order (the Cartesian product in the file's axis
            order, the last axis fastest).
        config: the factory's keywords (fixed values, then this cell's axis values).
        axis_values: this cell's value on every axis, in axis order (``num_steps`` and ``dtype``
            included).
        num_steps: the step counts the cell tests, or None (the profile's).
        dtype: the dtype the cell runs in.
    """

    index: int
    config: tuple[tuple[str, Any], ...]
    axis_values: tuple[tuple[str, Any], ...]
    num_steps: tuple[int, ...] | None
    dtype: str

    @property
    def label(self) -> str:
        """``timestep_spacing=trailing, N=1+10``: the cell's axis values (the fixed ones left out)."""
        parts = []
        for key, value in self.axis_values:
            if key == "num_steps":
                parts.append("N=" + ("profile" if value is None else "+".join(map(str, value))))
            elif key == "dtype":
                parts.append(str(value))
            else:
                parts.append(f"{key}={_show(value)}")
        return ", ".join(parts)


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def grid_cells(grid: Grid, dtype: str = "float32") -> tuple[Cell, ...]:
    r"""Every cell of ``grid``, in grid order; ``dtype`` is used where the grid has no ``dtype`` axis."""
    names = [name for name, _ in grid.axes]
    cells = []
    for index, combo in enumerate(itertools.product(*(values for _, values in grid.axes))):
        values = dict(zip(names, combo))
        config = tuple(grid.fixed) + tuple((k, v) for k, v in values.items() if k not in RESERVED_AXES)
        cells.append(Cell(
            index=index,
            config=config,
            axis_values=tuple(values.items()),
            num_steps=values.get("num_steps"),
            dtype=values.get("dtype", dtype),
        ))
    return tuple(cells)


@dataclass(frozen=True)
class Shard:
    r"""Shard ``i`` of ``n`` (1-based): the cells with ``index % n == i - 1``."""

    i: int = 1
    n: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise _bad("shard", f"{self.i}/{self.n}", "n must be an int >= 1")
        if isinstance(self.i, bool) or not isinstance(self.i, int) or not 1 <= self.i <= self.n:
            raise _bad("shard", f"{self.i}/{self.n}", f"i must be in 1..{self.n}")

    def __str__(self) -> str:
        return f"{self.i}/{self.n}"

    def holds(self, index: int) -> bool:
        """Whether the cell at grid position ``index`` is in this shard."""
        return index % self.n == self.i - 1


def parse_shard(text: str) -> Shard:
    r"""``"2/4"`` -> ``Shard(2, 4)``.

    Raises:
        ValueError: ``"--shard=<text>: ..."`` for anything but ``i/n`` with ``1 <= i <= n``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text) if isinstance(text, str) else None
    if match is None:
        raise _bad("--shard", text, "expected i/n, e.g. 2/4 (the 2nd of 4 shards)")
    i, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= i <= n:
        raise _bad("--shard", text, "expected i/n with 1 <= i <= n")
    return Shard(i, n)


def shard_cells(cells: Sequence[Cell], shard: Shard) -> tuple[Cell, ...]:
    """The cells of ``cells`` that belong to ``shard``, in grid order."""
    return tuple(c for c in cells if shard.holds(c.index))


def alpha_per_check(budget: float, n_cells: int, checks_per_cell: int) -> float:
    r"""The false-failure rate of one statistical result: :math:`\alpha = B / (C K)` (module docstring).

    Raises:
        ValueError: ``budget`` not in (0, 1), or a count below 1.
    """
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not 0.0 < float(budget) < 1.0:
        raise _bad("budget", budget, "must be a probability in (0, 1)")
    for name, value in (("n_cells", n_cells), ("checks_per_cell", checks_per_cell)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _bad(name, value, "must be an int >= 1")
    return float(budget) / (n_cells * checks_per_cell)


# -- the plan a worker receives ---------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPlan:
    r"""Everything a worker needs to run its cells (written as JSON next to the cells' reports).

    Attributes:
        factory: ``module:attr`` of the scheduler class or the callable taking the config keywords.
        grid: the :class:`Grid`.
        profile, seed, timeout_s: as for ``ddspec check``.
        dtype: the dtype of cells when the grid has no ``dtype`` axis.
        budget: B, the whole sweep's false-failure budget.
        shard: the shard this run covers.
        in_process: run the target in the worker itself instead of a supervised child process.
        allow: known deviations ``(name pattern, reason)``, applied in every cell as ``ddspec check
            --allow`` does (:meth:`~ddspec.conformance.results.Report.with_allowances`).
        out_dir: where the cells' JSON files go.
        cwd: the directory the factory is loaded relative to.
    """

    factory: str
    grid: Grid
    profile: str = "quick"
    seed: int = 0
    timeout_s: float = 30.0
    dtype: str = "float32"
    budget: float = 1e-6
    shard: Shard = field(default_factory=Shard)
    in_process: bool = False
    allow: tuple[tuple[str, str], ...] = ()
    out_dir: str = ""
    cwd: str = ""

    @property
    def cells(self) -> tuple[Cell, ...]:
        """The cells of this shard."""
        return shard_cells(grid_cells(self.grid, self.dtype), self.shard)

    @property
    def alpha(self) -> float:
        """The false-failure rate of each statistical result in every cell."""
        return alpha_per_check(self.budget, self.grid.size, self.grid.checks_per_cell)

    @property
    def digest(self) -> str:
        """A hash of what makes two shards parts of one sweep (factory, grid, profile, seed, dtype, timeout,
        budget, allowances)."""
        key = {"factory": self.factory, "grid": self.grid.to_json_dict(), "profile": self.profile,
               "seed": self.seed, "dtype": self.dtype, "budget": self.budget, "timeout_s": self.timeout_s,
               "allow": [list(a) for a in self.allow]}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def to_json_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "grid": self.grid.to_json_dict(), "grid_source": self.grid.source,
                "profile": self.profile, "seed": self.seed, "timeout_s": self.timeout_s, "dtype": self.dtype,
                "budget": self.budget, "shard": str(self.shard), "in_process": self.in_process,
                "allow": [list(a) for a in self.allow],
                "out_dir": self.out_dir, "cwd": self.cwd}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> SweepPlan:
        grid = parse_grid(data["grid"], source=data.get("grid_source"))
        return cls(factory=data["factory"], grid=grid, profile=data["profile"], seed=data["seed"],
                   timeout_s=data["timeout_s"], dtype=data["dtype"], budget=data["budget"],
                   shard=parse_shard(data["shard"]), in_process=data["in_process"],
                   allow=tuple((p, r) for p, r in data.get("allow", ())), out_dir=data["out_dir"],
                   cwd=data["cwd"])


def make_plan(factory: str, grid: Grid, *, profile: str = "quick", seed: int = 0, timeout_s: float = 30.0,
              dtype: str = "float32", budget: float | None = None, shard: Shard | None = None,
              in_process: bool = False, allow: Mapping[str, str] | None = None) -> SweepPlan:
    r"""A validated :class:`SweepPlan` (``out_dir`` is set by :func:`run_sweep`).

    Raises:
        ValueError: naming the bad argument (profile, dtype, seed, timeout_s, budget, factory).
    """
    from .results import validate_allowances
    from .stats import DEFAULT_BUDGET

    if not isinstance(factory, str) or ":" not in factory:
        raise _bad("factory", factory, "must be 'module:attr' (a scheduler class or a callable taking config keywords)")
    if profile not in _PROFILES:
        raise _bad("profile", profile, f"must be one of {', '.join(_PROFILES)}")
    if dtype not in _DTYPES:
        raise _bad("dtype", dtype, f"must be one of {', '.join(_DTYPES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _bad("seed", seed, "must be an int >= 0")
    if not (isinstance(timeout_s, numbers.Real) and 0 < float(timeout_s) < math.inf):
        raise _bad("timeout_s", timeout_s, "must be a finite number of seconds > 0")
    budget = DEFAULT_BUDGET if budget is None else budget
    alpha_per_check(budget, grid.size, grid.checks_per_cell)  # validates the budget
    return SweepPlan(factory=factory.strip(), grid=grid, profile=profile, seed=seed, timeout_s=float(timeout_s),
                     dtype=dtype, budget=float(budget), shard=shard or Shard(), in_process=in_process,
                     allow=tuple(validate_allowances(allow).items()),
                     cwd=os.getcwd())


# -- running one cell (in a worker) -----------------------------------------------------------------


def _load_factory(spec: str) -> tuple[Callable[..., Any], str | None]:
    """The callable ``spec`` names and the file it came from (the loader's import rules)."""
    from . import loader

    module_name, attr = loader._split_spec(spec)
    label = spec.strip()
    module = loader._import_file(module_name, label) if module_name.endswith(".py") else \
        loader._import_module(module_name, label)
    obj = loader._resolve(module, attr, module_name, label)
    if not callable(obj):
        raise loader.TargetLoadError(f"cannot load factory {label!r}: {attr!r} ({type(obj).__name__}) is not callable")
    return obj, loader._module_origin(module)


@contextlib.contextmanager
def _profile_alpha(profile: str, alpha: float) -> Iterator[None]:
    """The profile ``profile`` with ``false_failure_rate = alpha`` while the block runs."""
    from . import context

    saved = context.PROFILES[profile]
    context.PROFILES[profile] = dataclasses.replace(saved, false_failure_rate=alpha)
    try:
        yield
    finally:
        context.PROFILES[profile] = saved


def _load_failure(plan: SweepPlan, cell: Cell, message: str) -> dict[str, Any]:
    """The report of a cell whose target could not be made: one failing ``load`` result."""
    from .results import CheckResult, Report, Verdict

    result = CheckResult(name="load.factory", family="load", verdict=Verdict.FAIL, message=message,
                         details={"config": dict(cell.config)})
    report = Report(target=_target_label(plan, cell), device="cpu", dtype=cell.dtype, profile=plan.profile,
                    seed=plan.seed, checks=(result,), allowances=dict(plan.allow))
    return report.to_json_dict()


def _target_label(plan: SweepPlan, cell: Cell) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in cell.config)
    return f"{plan.factory}({args})"


def _cell_report(plan: SweepPlan, cell: Cell) -> dict[str, Any]:
    """Run the installed checks on one cell; the report as JSON data (never raises for the target)."""
    from .context import CheckContext
    from .loader import TargetLoadError, adapt_object
    from .runner import _describe_exception, installed_checks, run_checks
    from .sandbox import WorkerSampler, isolate

    label = _target_label(plan, cell)
    try:
        factory, origin = _load_factory(plan.factory)
    except TargetLoadError as exc:
        return _load_failure(plan, cell, str(exc))
    try:
        made = factory(**dict(cell.config))
    except Exception as exc:  # noqa: BLE001 - the factory refusing a configuration is this cell's result
        return _load_failure(plan, cell, f"{plan.factory}(**config) raised {_describe_exception(exc)}")
    try:
        sampler = adapt_object(made, label)
    except TargetLoadError as exc:
        return _load_failure(plan, cell, str(exc))
    if not plan.in_process:
        sampler = isolate(sampler, device="cpu", timeout_s=plan.timeout_s, spec=label)
    try:
        with _profile_alpha(plan.profile, plan.alpha):
            try:
                ctx = CheckContext(sampler=sampler, device="cpu", dtype=cell.dtype, profile=plan.profile,
                                   seed=plan.seed, timeout_s=plan.timeout_s, steps=cell.num_steps)
            except ValueError as exc:
                return _load_failure(plan, cell, f"cannot check this cell: {exc}")
            T = ctx.num_train_timesteps
            if cell.num_steps and T is not None and max(cell.num_steps) > T:
                return _load_failure(plan, cell, f"num_steps={max(cell.num_steps)}: more inference steps than "
                                                 f"num_train_timesteps={T}")
            report = run_checks(sampler, ctx, installed_checks(), target=label).with_allowances(dict(plan.allow))
            report = dataclasses.replace(report, origin=origin)
    finally:
        if isinstance(sampler, WorkerSampler):
            sampler.close()
    return report.to_json_dict()


def _family_marks(report: Mapping[str, Any]) -> dict[str, str]:
    """``{family: worst outcome}`` of a report's checks (a failure an allowance covers is "allowed")."""
    marks: dict[str, str] = {}
    for check in report.get("checks", ()):
        outcome = "allowed" if check["verdict"] == "fail" and check.get("allowed") else check["verdict"]
        family = check["family"]
        if family not in marks or _SEVERITY.index(outcome) < _SEVERITY.index(marks[family]):
            marks[family] = outcome
    return marks


def _checks_per_family(report: Mapping[str, Any]) -> dict[str, int]:
    """``{family: number of results}`` of a report."""
    out: dict[str, int] = {}
    for check in report.get("checks", ()):
        out[check["family"]] = out.get(check["family"], 0) + 1
    return out


def _failing_text(cell: Mapping[str, Any]) -> str:
    """The failing checks of a cell by family; ``family.*`` where every result of the family fails."""
    if cell["status"] != "done":
        return "crashed"
    by_family: dict[str, list[str]] = {}
    for name in cell["failing"]:
        family, _, rest = name.partition(".")
        by_family.setdefault(family, []).append(rest or family)
    totals = cell.get("checks_per_family", {})
    parts = []
    for family, names in by_family.items():
        if len(names) > 1 and len(names) == totals.get(family):
            parts.append(f"{family}.*")
        else:
            parts.append(f"{family}: {', '.join(names)}")
    return "; ".join(parts) or "none"


def _cell_ledger(report: Mapping[str, Any]) -> dict[str, Any]:
    """The statistical results of one report and the false-failure rate they spent."""
    rates = [float(c["details"]["false_failure_rate"]) for c in report.get("checks", ())
             if isinstance(c.get("details"), Mapping) and "false_failure_rate" in c["details"]]
    return {"statistical_checks": len(rates), "spent": math.fsum(rates)}


def _record(plan: SweepPlan, cell: Cell, report: Mapping[str, Any] | None, *, status: str, duration_s: float,
            error: str | None = None) -> dict[str, Any]:
    """A cell's record in the sweep's JSON document."""
    report = report or {}
    summary = report.get("summary", {})
    return {
        "index": cell.index,
        "label": cell.label,
        "axes": {k: _axis_json(k, v) if k == "num_steps" else v for k, v in cell.axis_values},
        "config": dict(cell.config),
        "num_steps": None if cell.num_steps is None else list(cell.num_steps),
        "dtype": cell.dtype,
        "status": status,
        "error": error,
        "exit_code": summary.get("exit_code", 1) if status == "done" else 1,
        "counts": summary.get("counts", {}),
        "families": _family_marks(report),
        "checks_per_family": _checks_per_family(report),
        "failing": [c["name"] for c in report.get("checks", ()) if c["verdict"] == "fail" and not c.get("allowed")],
        "ledger": dict(_cell_ledger(report), alpha_per_check=plan.alpha),
        "duration_s": duration_s,
        "worker": os.environ.get("PYTEST_XDIST_WORKER"),
        "report": report or None,
    }


def run_cell(plan: SweepPlan, cell: Cell) -> dict[str, Any]:
    r"""Run the checks on one cell (in this process) and return its record (JSON data).

    The factory is called as ``factory(**cell.config)``; a factory that raises, or returns something
    ddspec cannot adapt, gives a report with one failing ``load.factory`` result. The statistical
    checks run at :attr:`SweepPlan.alpha`.
    """
    start = time.perf_counter()
    report = _cell_report(plan, cell)
    return _record(plan, cell, report, status="done", duration_s=time.perf_counter() - start)


def _cell_path(out_dir: str, index: int) -> Path:
    return Path(out_dir) / f"cell-{index:06d}.json"


# -- the pytest side: one item per cell -------------------------------------------------------------


class SweepPlanFile(pytest.File):
    """The plan file: collects one :class:`SweepCellItem` per cell of its shard."""

    def collect(self) -> Iterable[pytest.Item]:
        plan = SweepPlan.from_json_dict(json.loads(self.path.read_text()))
        for cell in plan.cells:
            yield SweepCellItem.from_parent(self, name=f"cell{cell.index}", plan=plan, cell=cell)


class SweepCellItem(pytest.Item):
    """One grid cell: runs :func:`run_cell` and writes the record to the plan's ``out_dir``."""

    def __init__(self, *, plan: SweepPlan, cell: Cell, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.cell = cell

    def runtest(self) -> None:
        if self.plan.cwd and os.getcwd() != self.plan.cwd:
            os.chdir(self.plan.cwd)
        record = run_cell(self.plan, self.cell)
        path = _cell_path(self.plan.out_dir, self.cell.index)
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(record, allow_nan=False))
        partial.replace(path)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"cell {self.cell.index}: {self.cell.label}"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect the sweep's plan file (only when this module is a plugin: ``-p ddspec.conformance.sweep``)."""
    if file_path.name == _PLAN_NAME:
        return SweepPlanFile.from_parent(parent, path=file_path)
    return None


class _Progress:
    """Controller-side plugin: counts finished cells, prints progress, keeps the errors of failed items."""

    def __init__(self, plan: SweepPlan, total: int, stream: TextIO | None, bar: Any) -> None:
        self.plan = plan
        self.total = total
        self.stream = stream
        self.bar = bar
        self.done: set[str] = set()
        self.errors: dict[int, str] = {}

    @staticmethod
    def _index(nodeid: str) -> int | None:
        match = re.search(r"::cell(\d+)$", nodeid)
        return int(match.group(1)) if match else None

    def pytest_runtest_logreport(self, report: Any) -> None:
        index = self._index(report.nodeid)
        if index is None:
            return
        if report.failed:
            self.errors[index] = str(report.longreprtext or report.longrepr)[-2000:]
        if report.nodeid in self.done or not (report.when == "call" or report.failed):
            return
        self.done.add(report.nodeid)
        line = self._line(index, report)
        if self.bar is not None:
            self.bar.set_postfix_str(line.split("]", 1)[-1].strip()[:60], refresh=False)
            self.bar.update(1)
        elif self.stream is not None:
            print(line, file=self.stream, flush=True)

    def _line(self, index: int, report: Any) -> str:
        head = f"[{len(self.done)}/{self.total}] cell {index}"
        path = _cell_path(self.plan.out_dir, index)
        if report.failed or not path.exists():
            return f"{head}  crashed"
        record = json.loads(path.read_text())
        families = [f for f in _FAMILY_ORDER if record["families"].get(f) == "fail"]
        verdict = "fail: " + " ".join(families) if families else ("ok" if record["exit_code"] == 0 else "not ok")
        return f"{head} ({record['label']})  {verdict}"


def run_sweep(plan: SweepPlan, *, workers: int | str = "auto", stream: TextIO | None = None,
              progress_bar: bool = False) -> dict[str, Any]:
    r"""Run the plan's cells with pytest-xdist on ``workers`` processes; return the sweep's JSON document.

    ``workers`` is ``"auto"`` (one per CPU) or an int >= 1. Progress goes to ``stream`` (one line per
    finished cell) or a tqdm bar on stderr (``progress_bar``). pytest's own output is kept and
    attached to the error when pytest could not run the items.

    Raises:
        ValueError: a bad ``workers``.
        RuntimeError: pytest-xdist is not installed, or pytest stopped before running the cells
            (the message holds pytest's output).
    """
    import importlib.util

    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise _bad("-n", workers, "must be 'auto' or an int >= 1")
    if importlib.util.find_spec("xdist") is None:
        raise RuntimeError("ddspec sweep runs its cells with pytest-xdist, which is not installed: "
                           "pip install 'ddspec[sweep]'")
    cells = plan.cells
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ddspec-sweep-") as tmp:
        plan = dataclasses.replace(plan, out_dir=os.path.join(tmp, "cells"))
        os.makedirs(plan.out_dir)
        plan_path = Path(tmp) / _PLAN_NAME
        plan_path.write_text(json.dumps(plan.to_json_dict()))
        (Path(tmp) / "pytest.ini").write_text("[pytest]\n")
        bar = None
        if progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=len(cells), desc=f"ddspec sweep {plan.grid.name}", unit="cell", file=sys.stderr,
                       leave=False, dynamic_ncols=True)
        progress = _Progress(plan, len(cells), stream, bar)
        args = [str(plan_path), "-p", "ddspec.conformance.sweep", "-p", "xdist", "-n", str(workers),
                "-c", str(Path(tmp) / "pytest.ini"), "--rootdir", tmp, "-p", "no:cacheprovider", "-q",
                "-o", "addopts=", "--no-header"]
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                code = pytest.main(args, plugins=[progress]) if cells else pytest.ExitCode.OK
        finally:
            if bar is not None:
                bar.close()
        if int(code) == int(pytest.ExitCode.INTERRUPTED) and "KeyboardInterrupt" in output.getvalue():
            raise KeyboardInterrupt  # the user's Ctrl-C: 'ddspec sweep' exits 130
        if int(code) not in (int(pytest.ExitCode.OK), int(pytest.ExitCode.TESTS_FAILED)) or (
                cells and not progress.done):
            raise RuntimeError(f"pytest could not run the sweep's cells (exit code {int(code)}):\n"
                               f"{output.getvalue()[-4000:]}")
        records = []
        for cell in cells:
            path = _cell_path(plan.out_dir, cell.index)
            if path.exists():
                records.append(json.loads(path.read_text()))
            else:
                error = progress.errors.get(cell.index, "the worker produced no record")
                records.append(_record(plan, cell, None, status="crashed", duration_s=0.0, error=error))
    return _document(plan, records, shards=[str(plan.shard)], started_at=started,
                     wall_s=time.perf_counter() - start, workers=workers)


def _environment() -> dict[str, Any]:
    from .results import _ddspec_version, _diffusers_version, _torch_version

    return {"ddspec": _ddspec_version(), "torch": _torch_version(), "diffusers": _diffusers_version(),
            "python": sys.version.split()[0]}


def _ledger(budget: float, n_cells: int, checks_per_cell: int, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    alpha = alpha_per_check(budget, n_cells, checks_per_cell)
    return {
        "budget": budget,
        "n_cells": n_cells,
        "statistical_checks_per_cell": checks_per_cell,
        "alpha_per_check": alpha,
        "booked": alpha * checks_per_cell * n_cells,
        "cells_run": len(records),
        "statistical_checks": sum(int(r["ledger"]["statistical_checks"]) for r in records),
        "spent": math.fsum(float(r["ledger"]["spent"]) for r in records),
    }


def _document(plan: SweepPlan, records: Sequence[Mapping[str, Any]], *, shards: Sequence[str], started_at: str,
              wall_s: float, workers: int | str) -> dict[str, Any]:
    records = sorted(records, key=lambda r: r["index"])
    return {
        "schema_version": SWEEP_SCHEMA,
        "sweep_digest": plan.digest,
        "name": plan.grid.name,
        "factory": plan.factory,
        "grid": plan.grid.to_json_dict(),
        "grid_source": plan.grid.source,
        "profile": plan.profile,
        "seed": plan.seed,
        "dtype": plan.dtype,
        "timeout_s": plan.timeout_s,
        "shards": list(shards),
        "environment": _environment(),
        "started_at": started_at,
        "runs": [{"shards": list(shards), "workers": str(workers), "wall_s": wall_s, "cells": len(records)}],
        "ledger": _ledger(plan.budget, plan.grid.size, plan.grid.checks_per_cell, records),
        "cells": list(records),
    }


# -- documents: merge, load, write, judge ------------------------------------------------------------


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    r"""Read a sweep document.

    Raises:
        ValueError: not JSON, or not a ``ddspec.sweep/1`` document (the message names the file).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{os.fspath(path)}: not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != SWEEP_SCHEMA:
        got = data.get("schema_version") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{os.fspath(path)}: schema_version={got!r}: expected {SWEEP_SCHEMA!r}")
    return data


def write_sweep(doc: Mapping[str, Any], path: str | os.PathLike[str], *, reports: bool = True) -> None:
    """Write a sweep document as strict JSON; ``reports=False`` leaves out the cells' full reports."""
    if not reports:
        doc = dict(doc, cells=[dict(c, report=None) for c in doc["cells"]])
    Path(path).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def merge_sweeps(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    r"""Combine shard documents of one sweep into one document.

    The cells are the union (in grid order); the ledger is recomputed over them, so it is the sum of
    the shards' ledgers; ``shards`` and ``runs`` are concatenated.

    Raises:
        ValueError: no documents, documents of different sweeps (``sweep_digest`` differs: another
            factory, grid, profile, seed, dtype, timeout, budget or allowances), or a cell present in two
            documents.
    """
    if not docs:
        raise _bad("docs", docs, "nothing to merge")
    first = docs[0]
    seen: dict[int, int] = {}
    cells = []
    for k, doc in enumerate(docs):
        if doc.get("schema_version") != SWEEP_SCHEMA:
            raise _bad(f"docs[{k}].schema_version", doc.get("schema_version"), f"expected {SWEEP_SCHEMA!r}")
        if doc.get("sweep_digest") != first.get("sweep_digest"):
            raise _bad(f"docs[{k}].sweep_digest", doc.get("sweep_digest"),
                       f"differs from docs[0]'s {first.get('sweep_digest')!r}: not a shard of the same sweep "
                       "(factory, grid, profile, seed, dtype, timeout, budget and allowances must match)")
        for cell in doc["cells"]:
            if cell["index"] in seen:
                raise _bad(f"docs[{k}]: cell", cell["index"],
                           f"is also in docs[{seen[cell['index']]}]; each cell may come from one shard only")
            seen[cell["index"]] = k
            cells.append(cell)
    grid = first["grid"]
    merged = {key: first[key] for key in first if key not in ("cells", "ledger", "shards", "runs")}
    merged["shards"] = [s for doc in docs for s in doc.get("shards", [])]
    merged["runs"] = [r for doc in docs for r in doc.get("runs", [])]
    merged["cells"] = sorted(cells, key=lambda c: c["index"])
    ledger = first["ledger"]
    merged["ledger"] = _ledger(ledger["budget"], ledger["n_cells"], grid["statistical_checks_per_cell"],
                               merged["cells"])
    return merged


def ledger_problems(doc: Mapping[str, Any]) -> list[str]:
    r"""Why the document's ledger does not keep its stated budget (empty: it does).

    A cell that ran more statistical results than the booked ``statistical_checks_per_cell``, or whose
    spending exceeds its share :math:`K\alpha`; a total above the budget.
    """
    ledger = doc["ledger"]
    bound = ledger["statistical_checks_per_cell"]
    share = ledger["alpha_per_check"] * bound
    problems = []
    for cell in doc["cells"]:
        used = cell["ledger"]
        if used["statistical_checks"] > bound or used["spent"] > share * (1 + 1e-9):
            problems.append(f"cell {cell['index']} ({cell['label']}) ran {used['statistical_checks']} statistical "
                            f"checks (spent {used['spent']:.3g}), more than the {bound} booked per cell "
                            f"(share {share:.3g}): raise statistical_checks_per_cell in the grid file")
    if ledger["spent"] > ledger["budget"] * (1 + 1e-9):
        problems.append(f"the sweep spent {ledger['spent']:.4g}, more than its budget {ledger['budget']:.4g}")
    return problems


def missing_cells(doc: Mapping[str, Any]) -> list[int]:
    """The grid positions no shard of ``doc`` ran."""
    present = {c["index"] for c in doc["cells"]}
    return [i for i in range(doc["ledger"]["n_cells"]) if i not in present]


def sweep_exit_code(doc: Mapping[str, Any]) -> int:
    r"""0 every cell ran and conforms; 1 a cell does not conform or crashed; 2 the ledger overspent."""
    if ledger_problems(doc):
        return 2
    return 1 if any(c["exit_code"] != 0 or c["status"] != "done" for c in doc["cells"]) else 0


# -- tables ------------------------------------------------------------------------------------------


def _families(doc: Mapping[str, Any]) -> list[str]:
    present = {f for c in doc["cells"] for f in c["families"]}
    return [f for f in _FAMILY_ORDER if f in present]


def _axes(doc: Mapping[str, Any]) -> list[str]:
    return list(doc["grid"]["axes"])


def _axis_text(name: str, value: Any) -> str:
    if name == "num_steps" and value != "profile":
        return "+".join(map(str, value if isinstance(value, list) else [value]))
    return _show(value)


def _counts_text(counts: Mapping[str, int]) -> str:
    keys = ("pass", "fail", "acceptable", "unsupported", "skipped")
    return "/".join(str(counts.get(k, 0) + (counts.get("allowed", 0) if k == "fail" else 0)) for k in keys)


def summary_table(doc: Mapping[str, Any]) -> str:
    r"""The grid as text: one row per cell, one column per family (``.`` pass, ``F`` fail, ``U``
    unsupported, ``a`` acceptable, ``s`` skipped, ``x`` allowed failure, ``!`` crashed), then one line
    per family naming the cells where it fails, then the ledger."""
    families = _families(doc)
    axes = _axes(doc)
    header = ["cell"] + axes + [f[:6] for f in families] + ["exit"]
    rows = []
    for cell in doc["cells"]:
        marks = ["!" if cell["status"] != "done" else _MARK.get(cell["families"].get(f, ""), "-") for f in families]
        rows.append([str(cell["index"])] + [_axis_text(a, cell["axes"].get(a)) for a in axes] + marks
                    + [str(cell["exit_code"])])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(row, widths)).rstrip() for row in [header] + rows]
    lines.append("")
    for family in families:
        failing = [c["index"] for c in doc["cells"] if c["families"].get(family) == "fail"]
        if failing:
            lines.append(f"{family} fails in {len(failing)} of {len(doc['cells'])} cells: "
                         + ", ".join(map(str, failing)))
    crashed = [c["index"] for c in doc["cells"] if c["status"] != "done"]
    if crashed:
        lines.append(f"crashed (no record): {', '.join(map(str, crashed))}")
    missing = missing_cells(doc)
    if missing:
        lines.append(f"not run here (other shards): {len(missing)} of {doc['ledger']['n_cells']} cells")
    ok = sum(1 for c in doc["cells"] if c["exit_code"] == 0 and c["status"] == "done")
    lines.append(f"{ok} of {len(doc['cells'])} cells conform")
    led = doc["ledger"]
    lines.append(f"false-failure ledger: {led['statistical_checks']} statistical checks at alpha "
                 f"{led['alpha_per_check']:.3g} each, spent {led['spent']:.3g} of the sweep's budget "
                 f"{led['budget']:.3g} (booked {led['statistical_checks_per_cell']} per cell x "
                 f"{led['n_cells']} cells)")
    return "\n".join(lines) + "\n"


def format_markdown(doc: Mapping[str, Any]) -> str:
    r"""The grid as a Markdown table (the generated tables of docs/diffusers.md).

    One row per cell: its axis values, the counts pass/fail/acceptable/unsupported/skipped (allowed
    failures count as fail), the exit code of the cell, and the failing checks by family.
    """
    axes = _axes(doc)
    fixed = doc["grid"]["fixed"]
    env = doc.get("environment", {})
    lines = [
        f"`{doc['factory']}`"
        + (" with " + ", ".join(f"`{k}={_show(v)}`" for k, v in fixed.items()) if fixed else "")
        + f"; profile {doc['profile']}, dtype {doc['dtype']}, seed {doc['seed']}; "
        f"diffusers {env.get('diffusers')}, torch {env.get('torch')}. "
        f"Counts are pass/fail/acceptable/unsupported/skipped.",
        "",
        "| " + " | ".join(["cell"] + [a if a != "num_steps" else "N" for a in axes]
                         + ["counts", "exit", "failing checks"]) + " |",
        "|" + "---|" * (len(axes) + 4),
    ]
    for cell in doc["cells"]:
        failing = _failing_text(cell)
        lines.append("| " + " | ".join([str(cell["index"])] + [_axis_text(a, cell["axes"].get(a)) for a in axes]
                                       + [_counts_text(cell["counts"]), str(cell["exit_code"]), failing]) + " |")
    return "\n".join(lines) + "\n"


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- ddspec sweep {name}: generated by 'ddspec sweep', do not edit -->",
            f"<!-- end ddspec sweep {name} -->")


def replace_doc_section(text: str, name: str, table: str) -> str:
    r"""``text`` with the generated section ``name`` (between its two marker comments) set to ``table``
    (framed by a line break after the first marker and a blank line before the second).

    Raises:
        ValueError: the markers of ``name`` are missing or out of order.
    """
    begin, end = _markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise _bad("section", name, f"the document has no '{begin}' ... '{end}' block to regenerate")
    return text[: start + len(begin)] + "\n" + table + "\n" + text[stop:]


def doc_section(text: str, name: str) -> str:
    """The text between the markers of section ``name`` (what :func:`replace_doc_section` wrote)."""
    begin, end = _markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise _bad("section", name, f"the document has no '{begin}' ... '{end}' block")
    section = text[start + len(begin): stop]
    return section[1:-1] if section.startswith("\n") and section.endswith("\n\n") else section
