r"""The self-contained HTML report (issue 12, §2): :mod:`ddspec.conformance.html_report`.

A synthetic report carries every kind of plot data (a per-step error curve, a per-index ULP table,
two timestep sequences, statistical tests and a QQ pair) and a failure with a recorded root
exception. Asserted: one ``<img>`` per plot kind, each a decodable PNG embedded as a ``data:`` URI; no
network resource and no script; failures first in the table; the text report's root-error headline
(:func:`ddspec.conformance.report.format_root_errors`) on the page; every value escaped; a clear error
naming the ``report`` extra without matplotlib. The slow test renders the page in headless chromium
(``scripts/screenshot_report.py``): it writes a non-blank screenshot, logs no console error and
decodes every image; the same probe is shown to catch a broken image and an uncaught error.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from ddspec.conformance.report import format_root_errors
from ddspec.conformance.results import CheckResult, Finding, Report

html_report = pytest.importorskip(
    "ddspec.conformance.html_report", reason="needs ddspec.conformance.html_report"
)
pytest.importorskip("matplotlib", reason="needs matplotlib (the 'report' extra) to draw the plots")

_REPO = Path(__file__).resolve().parents[2]
_SCRIPT = _REPO / "scripts" / "screenshot_report.py"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report() -> Report:
    err = "IndexError: index 1 is out of bounds for axis 0 with size 1"
    return Report(
        target="planted<target>&", device="cpu", dtype="float32", profile="quick", seed=0,
        checks=(
            CheckResult(name="schedule.alphas_cumprod", family="schedule", verdict="pass",
                        observed=2e-16, tolerance=8e-16,
                        details={"ulp_per_index": [0.0, 1.0, 0.5, 2.0, 1.0]}),
            CheckResult(name="timesteps.sequence.N=3", family="timesteps", verdict="pass",
                        observed=0.0, tolerance=0.0,
                        details={"expected_head": [666, 333, 0], "got_head": [666, 333, 0]}),
            CheckResult(name="single_step.eta=0", family="single_step", verdict="pass",
                        observed=1e-7, tolerance=1e-5,
                        details={"per_step": [{"step": s, "error": 1e-7 * (s + 1), "tolerance": 1e-5}
                                              for s in range(5)]}),
            CheckResult(name="oracle.point_mass.eta=0", family="oracle", verdict="fail",
                        observed=3e-3, tolerance=1e-4,
                        findings=(Finding(step=2, timestep=600, element=(0,), expected=1.0,
                                          got=1.003, tolerance=1e-4),),
                        message="a <b>bold</b> claim",
                        details={"errors": [{"num_steps": 1, "error": err}]}),
            CheckResult(name="invariants.finite", family="invariants", verdict="fail",
                        observed=float("inf"), tolerance=None,
                        details={"errors": [{"num_steps": 1, "error": err}]}),
            CheckResult(name="distribution.run_output.eta=1", family="distribution",
                        verdict="pass", observed=0.3, tolerance=1.0,
                        details={"tests": [{"name": "distribution.run_output.eta=1/N=1/mean",
                                            "observed_over_allowed": 0.3, "detail": "z = 1.2"}],
                                 "qq": {"theoretical": [-1.0, 0.0, 1.0], "empirical": [-1.1, 0.05, 0.9]}}),
        ),
    )


@pytest.fixture(scope="module")
def page() -> str:
    return html_report.render_html(_report())


def _imgs(page: str) -> list[str]:
    return re.findall(r"<img [^>]*>", page)


def test_every_plot_kind_is_embedded_as_a_png(page: str) -> None:
    imgs = _imgs(page)
    kinds = [re.search(r'data-plot="([^"]+)"', tag).group(1) for tag in imgs]
    # one each, plus the QQ plot of the law
    assert sorted(kinds) == sorted(list(html_report.PLOT_KINDS) + ["law"])
    for tag in imgs:
        src = re.search(r'src="data:image/png;base64,([^"]+)"', tag)
        assert src is not None, tag[:120]
        assert base64.b64decode(src.group(1))[:8] == _PNG_MAGIC


def test_page_is_self_contained_and_escaped(page: str) -> None:
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "planted&lt;target&gt;&amp;" in page and "planted<target>" not in page
    assert "a &lt;b&gt;bold&lt;/b&gt; claim" in page


def test_failures_first_and_root_error_headline(page: str) -> None:
    report = _report()
    rows = re.findall(r'<tr class="(\w+)">', page)
    assert rows[:2] == ["fail", "fail"] and set(rows[2:]) == {"pass"}
    headlines = format_root_errors(report)
    assert len(headlines) == 1
    import html as _html

    assert f'<div class="headline">{_html.escape(headlines[0])}</div>' in page


def test_fallbacks_are_plotted_and_the_missing_data_is_named() -> None:
    report = Report(
        target="t", device="cpu", dtype="float32", profile="quick", seed=0,
        checks=(
            CheckResult(name="schedule.betas", family="schedule", verdict="pass", observed=0.0,
                        tolerance=3e-15, details={"worst_index": 0}),
            CheckResult(name="single_step.eta=0", family="single_step", verdict="pass",
                        observed=5e-8, tolerance=6e-6,
                        findings=(Finding(step=9, timestep=0, expected=0.5, got=0.5 + 5e-8,
                                          tolerance=6e-6),)),
        ),
    )
    page = html_report.render_html(report)
    kinds = sorted(re.findall(r'data-plot="([^"]+)"', page))
    assert kinds == ["deterministic", "schedule"]
    assert "details[&#x27;ulp_per_index&#x27;]" in page and "details[&#x27;per_step&#x27;]" in page


def test_write_html_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    html_report.write_html([_report(), _report()], out)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("<section") == 2


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^reports="):
        html_report.render_html(["not a report"])  # type: ignore[list-item]


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    with pytest.raises(html_report.MissingExtraError, match=r"ddspec\[report\]"):
        html_report.render_html(_report())


# -- headless chromium -----------------------------------------------------------------------------

def _script():
    spec = importlib.util.spec_from_file_location("screenshot_report", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


_shot = _script()
_needs_chromium = pytest.mark.skipif(
    _shot.find_browser() is None,
    reason="needs chromium (Debian: apt-get install -y chromium): no chromium, chromium-browser or "
           "google-chrome on PATH",
)


@pytest.mark.slow
@_needs_chromium
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    page = tmp_path / "report.html"
    html_report.write_html(_report(), page)
    expected_images = len(_imgs(page.read_text(encoding="utf-8")))
    result = _shot.screenshot(page, tmp_path / "shot.png", width=1280, height=2000)
    assert result["written"], result
    assert result["console_errors"] == [], result["console_errors"]
    pixels = mpimg.imread(tmp_path / "shot.png")[..., :3]
    not_white = float(np.mean(pixels.min(axis=-1) < 0.9))
    assert pixels.std() > 0.05 and not_white > 0.02, (pixels.std(), not_white)  # not a blank page
    assert _shot.count_rendered_images(page) == (expected_images, 0)


@pytest.mark.slow
@_needs_chromium
def test_the_browser_probe_catches_a_broken_image_and_an_uncaught_error(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><img src="data:image/png;base64,AAAA">'
                    '<script>throw new Error("planted")</script></body></html>', encoding="utf-8")
    result = _shot.screenshot(page, tmp_path / "bad.png", width=400, height=300)
    assert any("planted" in line for line in result["console_errors"]), result
    assert _shot.count_rendered_images(page) == (1, 1)
