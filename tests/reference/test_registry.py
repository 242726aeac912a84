"""Tests of reference/registry.py and reference/traceability.py: the registry is complete and true.

* Coverage: every public function of every equation module of ``ddspec.reference`` (introspected from
  ``__all__``) has exactly one entry, and every entry names a public function.
* Twins: every twin named exists in ``ddspec.reference.twin`` and agrees with its function at the
  registry's probe points within the stated bound (the expected values are the mpmath twins').
* Citations: every property test named exists (found by parsing tests/ with ast) and every harness
  check named is a ``ddspec check`` result name or name stem (found by parsing conformance/checks/).
* ``ddspec audit`` takes its bounds and pairings from the registry.
* docs/traceability.md is the output of the generator (not stale).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest

import ddspec.reference as reference
from ddspec.audit import accuracy as audit
from ddspec.reference import alphas, forward, registry, traceability

ROOT = Path(__file__).resolve().parents[2]
PROPERTIES = ROOT / "tests" / "properties"
CHECKS = ROOT / "conformance" / "checks"
DOC = ROOT / "docs" / "traceability.md"
FAMILIES = ("schedule", "timesteps", "oracle", "single_step", "distribution", "invariants", "loop")


def _equation_modules() -> dict[str, object]:
    out = {}
    for info in pkgutil.iter_modules(reference.__path__):
        if info.ispkg or info.name.startswith("_") or info.name in registry.TOOLING_MODULES:
            continue
        out[info.name] = importlib.import_module(f"ddspec.reference.{info.name}")
    return out


def _property_test_names() -> set[str]:
    """``file.py::test_name`` of every test function under tests/properties (parsed, not imported)."""
    names = set()
    for path in PROPERTIES.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.add(f"{path.name}::{node.name}")
    return names


def _harness_names() -> set[str]:
    """Every check-result name in conformance/checks: string constants and the literal heads of f-strings."""
    names = set()
    pattern = re.compile(rf"({'|'.join(FAMILIES)})\.\S*")
    for path in CHECKS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.fullmatch(node.value):
                names.add(node.value)
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                head = node.values[0].value
                if isinstance(head, str) and pattern.match(head):
                    names.add(head)
    return names


def _is_check(cited: str, harness: set[str]) -> bool:
    """A cited name is a check name, or the stem of parameterised ones (``single_step.eta`` for ``single_step.eta=``)."""
    return any(h == cited or h.startswith(cited + ".") or h.startswith(cited + "=") for h in harness)


# ---------------------------------------------------------------------------------------------------
# coverage
# ---------------------------------------------------------------------------------------------------


def test_registry_covers_every_public_function() -> None:
    public = {
        f"{name}.{attr}"
        for name, mod in _equation_modules().items()
        for attr in mod.__all__  # type: ignore[attr-defined]
        if inspect.isfunction(getattr(mod, attr))
    }
    listed = [x.function for x in registry.REGISTRY]
    assert len(listed) == len(set(listed)), "a function has two registry entries"
    assert not public - set(listed), f"public functions without a registry entry: {sorted(public - set(listed))}"
    assert not set(listed) - public, f"registry entries that are not public functions: {sorted(set(listed) - public)}"
    for module in registry.TOOLING_MODULES:  # the exemption names real modules
        importlib.import_module(f"ddspec.reference.{module}")


def test_every_entry_is_well_formed() -> None:
    for x in registry.REGISTRY:
        assert x.equation and x.source and x.domain, x.function
        assert (x.ulp_bound is None) == (not x.audit), f"{x.function}: an audited quantity needs a bound and vice versa"
        assert not x.probes or x.twin is not None, f"{x.function}: probes without a twin"
        for p in x.probes:
            assert p.metric in ("ulp", "norm") and p.tol > 0, (x.function, p.metric, p.tol)


# ---------------------------------------------------------------------------------------------------
# twins
# ---------------------------------------------------------------------------------------------------


def test_every_named_twin_exists() -> None:
    for x in registry.REGISTRY:
        if x.twin is None:
            continue
        module, name = x.twin.split(".")
        twin_module = importlib.import_module(f"ddspec.reference.twin.{module}")
        assert name in twin_module.__all__, f"{x.function}: twin {x.twin} is not public in ddspec.reference.twin"
        assert callable(registry.resolve(x.twin, twin=True))
        # every twin is measured somewhere: at the registry's probes, or at every timestep by the audit
        assert x.probes or x.audit, f"{x.function}: twin {x.twin} has no probe and no audit row"


@pytest.mark.parametrize("function", [x.function for x in registry.REGISTRY if x.twin is not None and x.probes])
def test_function_agrees_with_its_twin_at_the_probes(function: str) -> None:
    for k, (err, tol) in enumerate(registry.probe_errors(function)):
        probe = registry.entry(function).probes[k]
        unit = "ULP" if probe.metric == "ulp" else "u normwise"
        assert err <= tol, f"{function}, probe {k} ({sorted(probe.kwargs)}): expected <= {tol:g} {unit}, got {err:.3g}"


def test_probes_catch_a_planted_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-ULP slip in ᾱ and a 1e-12 relative slip in q_sample exceed their probe bounds."""
    true_ab = alphas.alpha_bar
    monkeypatch.setattr(alphas, "alpha_bar", lambda betas: true_ab(betas) * (1.0 + 64 * 2.0**-53))
    assert any(err > tol for err, tol in registry.probe_errors("alphas.alpha_bar"))
    true_qs = forward.q_sample
    monkeypatch.setattr(forward, "q_sample", lambda x0, t, noise, betas: true_qs(x0, t, noise, betas) * (1.0 + 1e-12))
    assert any(err > tol for err, tol in registry.probe_errors("forward.q_sample"))


# ---------------------------------------------------------------------------------------------------
# citations
# ---------------------------------------------------------------------------------------------------


def test_every_cited_property_test_exists() -> None:
    known = _property_test_names()
    missing = sorted({(x.function, p) for x in registry.REGISTRY for p in x.properties if p not in known})
    assert not missing, f"registry cites property tests that do not exist: {missing}"


def test_every_cited_harness_check_exists() -> None:
    harness = _harness_names()
    # the parser finds the names: constants, f-string heads, and a family's declared RESULT_NAMES templates
    assert "schedule.betas" in harness and any(h.startswith("single_step.eta=") for h in harness)
    missing = sorted({(x.function, c) for x in registry.REGISTRY for c in x.checks if not _is_check(c, harness)})
    assert not missing, f"registry cites harness checks that do not exist: {missing}"
    assert not _is_check("single_step.etta", harness) and not _is_check("loop.output", harness)


# ---------------------------------------------------------------------------------------------------
# the audit and the generated table
# ---------------------------------------------------------------------------------------------------


def test_audit_bounds_and_pairings_come_from_the_registry() -> None:
    quantities = {q for x in registry.REGISTRY for q in x.audit}
    assert set(audit.BOUNDS) == quantities
    for q in quantities:
        bounds = {x.ulp_bound for x in registry.REGISTRY if q in x.audit}
        assert bounds == {audit.BOUNDS[q]}, f"{q}: registry entries disagree on the bound: {bounds}"
        assert registry.audit_entry(q).twin is not None
    for schedule, T in audit.STANDARD_CASES:  # every audited schedule's β twin is found through the registry
        assert len(audit._twin_betas(schedule, 3, 30)) == 3, schedule


def test_entry_resolve_and_audit_entry_reject_bad_names() -> None:
    with pytest.raises(ValueError, match="function="):
        registry.entry("alphas.nope")
    with pytest.raises(ValueError, match="name="):
        registry.resolve("alphas.nope")
    with pytest.raises(ValueError, match="name="):
        registry.resolve("alphas")
    with pytest.raises(ValueError, match="quantity="):
        registry.audit_entry("alpha_barr")
    with pytest.raises(ValueError, match="function="):
        registry.probe_errors("likelihood.l_simple")  # no twin
    with pytest.raises(ValueError, match="entries="):
        traceability.render("alphas")


def test_traceability_doc_is_not_stale() -> None:
    expected = traceability.render()
    assert DOC.exists(), "docs/traceability.md is missing: python -m ddspec.reference.traceability > docs/traceability.md"
    assert DOC.read_text() == expected, (
        "docs/traceability.md is stale: regenerate it with python -m ddspec.reference.traceability > docs/traceability.md"
    )


def test_traceability_has_one_row_per_entry_and_lists_the_gaps() -> None:
    text = traceability.render()
    for x in registry.REGISTRY:
        rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")]
        mine = [cells for cells in rows if len(cells) == 7 and cells[2] == f"`{x.function}`"]
        assert len(mine) == 1, (x.function, mine)
        assert mine[0][3] == ("— (gap)" if x.twin is None else f"`{x.twin}`"), mine[0]
    gaps = text.split("## Gaps", 1)[1]
    no_twin = gaps.split("### No property test", 1)[0]
    for x in registry.REGISTRY:
        assert (f"`{x.function}`" in no_twin) == (x.twin is None), x.function


def test_traceability_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert traceability.main([]) == 0
    assert capsys.readouterr().out == traceability.render()
    assert traceability.main(["--bogus"]) == 2
    assert "usage" in capsys.readouterr().err
