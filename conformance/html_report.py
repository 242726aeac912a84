r"""A self-contained HTML report of a conformance run (``ddspec check ... --html report.html``).

:func:`write_html` writes one file that needs no network: the CSS is inline and every plot is a PNG
embedded as a ``data:`` URI (matplotlib, Agg backend; install the ``report`` extra:
``pip install 'ddspec[report]'``). Per target it holds

* the header (target, device, dtype, profile, seed, versions) and the text report's headlines: the
  diagnosis (one per named root cause, :func:`ddspec.conformance.report.format_diagnosis`), one per
  distinct root exception (:func:`ddspec.conformance.report.format_root_errors`) and the summary line;
* the summary table of every check, failures first (then unsupported, allowed, acceptable, skipped,
  pass), with observed, tolerance and their ratio;
* plots, drawn from what the results carry:

  - **deterministic errors**: for each ``oracle`` / ``single_step`` / ``loop`` check, the observed error
    over its tolerance at each recorded place, against the step, on a log scale, with the tolerance
    line at 1. A check's ``details["per_step"]`` (a list of ``{"step", "error", "tolerance"}``) is used
    when present; otherwise its findings (the worst places, at most five);
  - **schedule tables**: the error in ULP per index when ``details["ulp_per_index"]`` is present;
    otherwise each table's worst observed error over its tolerance;
  - **timesteps**: the target's sequence against the declared rule for each step count
    (``details["expected_head"]`` and ``details["got_head"]``, or the full ``expected`` / ``got`` when
    present);
  - **output law**: each statistical test's observed deviation over the allowed one (``details["tests"]``,
    the bound at 1), and a QQ plot against the closed form when ``details["qq"]`` holds
    ``{"theoretical": [...], "empirical": [...]}``.

Every value shown is escaped; the page has no script.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from typing import Any, Iterable, Sequence

from .report import format_diagnosis, format_finding, format_root_errors, short_number, summary_line
from .results import CheckResult, Report, Verdict

__all__ = ["write_html", "render_html", "MissingExtraError", "PLOT_KINDS"]

#: The kinds of plot the report can draw (each ``<img>`` carries ``data-plot="<kind>"``).
PLOT_KINDS = ("deterministic", "schedule", "timesteps", "law")

_DETERMINISTIC_FAMILIES = ("oracle", "single_step", "loop")

_ORDER = {"fail": 0, "unsupported": 1, "allowed": 2, "acceptable": 3, "skipped": 4, "pass": 5}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-family:ui-monospace,monospace}
tr.fail td.v{background:#f8d7da;font-weight:bold}tr.unsupported td.v{background:#ffe5b4}
tr.allowed td.v{background:#e2e3f3}tr.acceptable td.v{background:#fff3cd}
tr.skipped td.v{background:#eee}tr.pass td.v{background:#d4edda}
.headline{background:#f8d7da;border-left:4px solid #c00;padding:.4em .6em;margin:.3em 0;font-family:ui-monospace,monospace;font-size:.85em}
.meta{color:#555;font-size:.9em}.note{color:#555;font-size:.85em;font-style:italic}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:.8em;color:#444;max-width:560px}
img{border:1px solid #ddd}
"""


class MissingExtraError(ImportError):
    """matplotlib is not installed (the ``report`` extra)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "write_html needs matplotlib, which is not installed: install the 'report' extra, "
            "pip install 'ddspec[report]' (or pip install matplotlib)"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _ratio(result: CheckResult) -> float | None:
    o, t = result.observed, result.tolerance
    if o is None or t is None or t == 0.0 or math.isnan(o) or math.isnan(t):
        return None
    return o / t


def _outcome(report: Report, result: CheckResult) -> str:
    if result.verdict is Verdict.FAIL and report.allowed_reason(result) is not None:
        return "allowed"
    return result.verdict.value


def _finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            out.append(float(v))
    return out


def _png(fig: Any, plt: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(kind: str, title: str, caption: str, png: str) -> str:
    return (f'<figure><img data-plot="{_e(kind)}" alt="{_e(title)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


# -- plot data --------------------------------------------------------------------------------------

def _step_points(result: CheckResult) -> tuple[list[tuple[float, float]], str]:
    """``[(step, error/tolerance), ...]`` and where they came from."""
    per_step = result.details.get("per_step")
    points: list[tuple[float, float]] = []
    if isinstance(per_step, list):
        for item in per_step:
            if not isinstance(item, dict):
                continue
            s, err, tol = item.get("step"), item.get("error"), item.get("tolerance")
            if _finite([s, err, tol]) == [s, err, tol] and tol:
                points.append((float(s), float(err) / float(tol)))
        if points:
            return points, "details.per_step"
    for f in result.findings:
        err = f.error
        if f.step is None or err is None or not f.tolerance or not math.isfinite(err):
            continue
        points.append((float(f.step), err / f.tolerance))
    return points, "findings (the worst places only)"


def _plot_deterministic(report: Report, plt: Any) -> tuple[list[str], list[str]]:
    figs: list[str] = []
    notes: list[str] = []
    series = []
    for r in report.checks:
        if r.family not in _DETERMINISTIC_FAMILIES:
            continue
        points, source = _step_points(r)
        if points:
            series.append((r, points, source))
    if not series:
        return figs, notes
    fig, ax = plt.subplots(figsize=(7, 4))
    floor = 1e-6
    for r, points, _ in series:
        xs = [p[0] for p in points]
        ys = [max(p[1], floor) for p in points]
        ax.plot(xs, ys, marker="o", linestyle="none" if len(points) < 2 else "-", label=r.name)
    ax.axhline(1.0, color="red", linestyle="--", label="tolerance")
    ax.set_yscale("log")
    ax.set_xlabel("step (0 = first step taken)")
    ax.set_ylabel("|got - expected| / tolerance")
    ax.set_title(f"{report.target}: deterministic error over tolerance")
    ax.legend(fontsize=7, loc="best")
    sources = sorted({s for _, _, s in series})
    caption = (f"Observed error over the tolerance per step, log scale; the red line is the tolerance. "
               f"Source: {', '.join(sources)}; values below {floor:g} are drawn at {floor:g}.")
    figs.append(_figure("deterministic", "deterministic error per step", caption, _png(fig, plt)))
    if any(s != "details.per_step" for _, _, s in series):
        notes.append("per-step errors: the checks keep only their worst findings; a full curve needs "
                     "details['per_step'] = [{'step', 'error', 'tolerance'}, ...]")
    return figs, notes


def _plot_schedule(report: Report, plt: Any) -> tuple[list[str], list[str]]:
    figs: list[str] = []
    notes: list[str] = []
    checks = [r for r in report.checks if r.family == "schedule"]
    if not checks:
        return figs, notes
    with_ulp = [r for r in checks if isinstance(r.details.get("ulp_per_index"), list)]
    if with_ulp:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in with_ulp:
            ys = [float(v) if isinstance(v, (int, float)) else math.nan for v in r.details["ulp_per_index"]]
            ax.plot(range(len(ys)), ys, label=r.name, linewidth=0.8)
        ax.set_xlabel("index")
        ax.set_ylabel("error (ULP)")
        ax.set_title(f"{report.target}: schedule tables, ULP per index")
        ax.legend(fontsize=7)
        figs.append(_figure("schedule", "schedule ULP per index", "Error of each table entry in ULP.",
                            _png(fig, plt)))
        return figs, notes
    names = [r.name for r in checks]
    ratios = [_ratio(r) for r in checks]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(checks)))
    floor = 1e-6
    ax.barh(names, [max(x, floor) if x is not None and math.isfinite(x) else floor for x in ratios],
            color="#4a7ab0")
    ax.axvline(1.0, color="red", linestyle="--", label="tolerance")
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, max(10.0, *[x for x in ratios if x is not None and math.isfinite(x)]))
    ax.set_xlabel("worst observed / tolerance")
    ax.set_title(f"{report.target}: schedule tables")
    ax.legend(fontsize=7)
    caption = (f"Each table's worst observed error over its tolerance (log; {floor:g} stands for 0); "
               "the red line is the tolerance.")
    figs.append(_figure("schedule", "schedule tables", caption, _png(fig, plt)))
    notes.append("schedule ULP per index: the schedule checks record only the worst index; a per-index "
                 "plot needs details['ulp_per_index'] = [ulp, ...]")
    return figs, notes


def _seq(details: dict[str, Any], full: str, head: str) -> list[float]:
    values = details.get(full)
    if not isinstance(values, list):
        values = details.get(head)
    return _finite(values) if isinstance(values, list) else []


def _plot_timesteps(report: Report, plt: Any) -> tuple[list[str], list[str]]:
    figs: list[str] = []
    notes: list[str] = []
    checks = [r for r in report.checks if r.name.startswith("timesteps.")]
    series = [(r, _seq(r.details, "expected", "expected_head"), _seq(r.details, "got", "got_head"))
              for r in checks]
    series = [s for s in series if s[1] or s[2]]
    if not series:
        return figs, notes
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, (r, expected, got) in enumerate(series):
        color = f"C{index % 10}"
        label = r.name.split(".", 1)[-1]
        ax.plot(range(len(expected)), expected, color=color, linestyle="-", alpha=0.6,
                label=f"{label} rule")
        ax.plot(range(len(got)), got, color=color, marker="x", linestyle="none", label=f"{label} target")
    ax.set_xlabel("position in the sampling sequence")
    ax.set_ylabel("timestep t (0-based)")
    ax.set_title(f"{report.target}: timesteps vs the declared rule")
    ax.legend(fontsize=6, ncol=2)
    truncated = any("expected" not in r.details and "expected_head" in r.details for r, _, _ in series)
    caption = "Lines: the declared rule; crosses: the target's sequence."
    if truncated:
        caption += " Only the head of each sequence is recorded (details['expected_head'])."
        notes.append("timesteps: only the first entries are recorded; the whole sequence needs "
                     "details['expected'] and details['got']")
    figs.append(_figure("timesteps", "timestep sequences", caption, _png(fig, plt)))
    return figs, notes


def _plot_law(report: Report, plt: Any) -> tuple[list[str], list[str]]:
    figs: list[str] = []
    notes: list[str] = []
    rows: list[tuple[str, float]] = []
    qq = []
    for r in report.checks:
        tests = r.details.get("tests")
        if isinstance(tests, list):
            for t in tests:
                if isinstance(t, dict):
                    v = t.get("observed_over_allowed")
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        rows.append((str(t.get("name", r.name)), float(v)))
        q = r.details.get("qq")
        if isinstance(q, dict) and isinstance(q.get("theoretical"), list) and isinstance(q.get("empirical"), list):
            qq.append((r.name, _finite(q["theoretical"]), _finite(q["empirical"])))
    if rows:
        rows = rows[:40]
        fig, ax = plt.subplots(figsize=(7, 0.8 + 0.22 * len(rows)))
        labels = [n if len(n) <= 70 else "..." + n[-67:] for n, _ in rows]
        values = [v if math.isfinite(v) else 0.0 for _, v in rows]
        colors = ["#c33" if v > 1.0 else "#4a7ab0" for v in values]
        ax.barh(range(len(rows)), values, color=colors)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=6)
        ax.invert_yaxis()
        ax.axvline(1.0, color="red", linestyle="--", label="allowed")
        ax.set_xlabel("observed deviation / allowed deviation")
        ax.set_title(f"{report.target}: statistical tests of the output law")
        ax.legend(fontsize=7)
        caption = ("Each statistical test's observed deviation from the closed-form law over the allowed "
                   "deviation (its critical value widened by the rounding allowance); > 1 fails.")
        figs.append(_figure("law", "output law tests", caption, _png(fig, plt)))
    for name, theo, emp in qq:
        n = min(len(theo), len(emp))
        if n == 0:
            continue
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(theo[:n], emp[:n], marker=".", linestyle="none")
        lo, hi = min(theo[:n] + emp[:n]), max(theo[:n] + emp[:n])
        ax.plot([lo, hi], [lo, hi], color="red", linestyle="--")
        ax.set_xlabel("closed-form quantile")
        ax.set_ylabel("empirical quantile")
        ax.set_title(name, fontsize=8)
        figs.append(_figure("law", f"QQ {name}", "QQ plot against the closed-form law.", _png(fig, plt)))
    if rows and not qq:
        notes.append("output law histogram/QQ: the distribution checks record test statistics, not the "
                     "samples; a QQ plot needs details['qq'] = {'theoretical': [...], 'empirical': [...]}")
    return figs, notes


# -- page -------------------------------------------------------------------------------------------

def _table(report: Report) -> str:
    rows = sorted(report.checks, key=lambda r: _ORDER.get(_outcome(report, r), 9))
    out = ['<table class="summary"><thead><tr><th>verdict</th><th>check</th><th>observed</th>'
           "<th>tolerance</th><th>observed / tolerance</th><th>message</th></tr></thead><tbody>"]
    for r in rows:
        outcome = _outcome(report, r)
        message = r.message
        reason = report.allowed_reason(r)
        if reason:
            message = f"allowed: {reason}. {message}"
        if r.findings and outcome == "fail":
            message += " — worst: " + format_finding(r.findings[0])
        out.append(
            f'<tr class="{_e(outcome)}"><td class="v">{_e(outcome)}</td><td>{_e(r.name)}</td>'
            f'<td class="num">{_e(short_number(r.observed))}</td><td class="num">{_e(short_number(r.tolerance))}</td>'
            f'<td class="num">{_e(short_number(_ratio(r)))}</td><td>{_e(message)}</td></tr>'
        )
    out.append("</tbody></table>")
    return "".join(out)


def _section(report: Report, index: int, plt: Any) -> str:
    versions = (f"ddspec {report.ddspec_version}, torch {report.torch_version or 'absent'}, "
                f"diffusers {report.diffusers_version or 'absent'}")
    parts = [f'<section id="target-{index}"><h2>{_e(report.target)}</h2>',
             f'<p class="meta">device {_e(report.device)}, dtype {_e(report.dtype)}, profile '
             f'{_e(report.profile)}, seed {_e(report.seed)}; {_e(versions)}; started {_e(report.started_at)}'
             + (f"; loaded from {_e(report.origin)}" if report.origin else "") + "</p>"]
    for note in report.target_notes:
        parts.append(f'<p class="note">note: {_e(note)}</p>')
    for line in format_diagnosis(report):
        parts.append(f'<div class="headline diagnosis">diagnosis: {_e(line)}</div>')
    for line in format_root_errors(report):
        parts.append(f'<div class="headline">{_e(line)}</div>')
    code = report.exit_code()
    parts.append(f"<p><strong>{_e(summary_line(report))}</strong> — exit code {code} "
                 f"({'conforms' if code == 0 else 'does not conform'})</p>")
    parts.append(_table(report))
    figs: list[str] = []
    notes: list[str] = []
    for plot in (_plot_deterministic, _plot_schedule, _plot_timesteps, _plot_law):
        f, n = plot(report, plt)
        figs += f
        notes += n
    parts.append("<h3>Plots</h3>")
    parts.append("".join(figs) if figs else '<p class="note">nothing to plot</p>')
    if notes:
        parts.append('<ul class="note">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</section>")
    return "".join(parts)


def _as_reports(reports: Report | Sequence[Report]) -> list[Report]:
    items = [reports] if isinstance(reports, Report) else list(reports)
    for item in items:
        if not isinstance(item, Report):
            raise ValueError(f"reports={item!r:.80}: every entry must be a Report")
    return items


def render_html(reports: Report | Sequence[Report]) -> str:
    """The HTML page (a str) for one report or several.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'ddspec[report]'``).
        ValueError: an entry that is not a :class:`Report`.
    """
    items = _as_reports(reports)
    plt = _pyplot()
    overall = max((r.exit_code() for r in items), default=1)
    body = "".join(_section(r, i, plt) for i, r in enumerate(items))
    title = "ddspec conformance report"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class=\"meta\">{len(items)} target{'s' if len(items) != 1 else ''}; "
        f"overall exit code {overall}</p>{body}</body></html>\n"
    )


def write_html(reports: Report | Sequence[Report], path: str | os.PathLike[str]) -> None:
    """Write :func:`render_html` of ``reports`` to ``path`` (UTF-8).

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'ddspec[report]'``).
        OSError: the file cannot be written.
    """
    text = render_html(reports)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
