"""The errata register: every wrong form is identified by name, every correct form matches, docs/errata.md is current."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddspec.audit import ERRATA, QUANTITIES, SEED_FORMULAS, check_formula, parse_formula, render_markdown
from ddspec.audit.symbolic import symbolic_verdict

DOC = Path(__file__).resolve().parents[2] / "docs" / "errata.md"

#: the mistakes issue 11 asks the register to hold (by the name given here)
REQUIRED = {
    "sigma_squared_eta_beta_tilde", "cos_instead_of_cos_squared", "next_ratio_in_cosine_clip",
    "sigma_fourth_in_lt_weight", "sign_slip_under_root", "consecutive_alpha_bar_in_strided_step",
    "beta_for_beta_tilde", "noise_stops_one_step_early", "noise_one_step_late",
}


def test_register_is_well_formed() -> None:
    assert REQUIRED <= set(ERRATA)
    seed_locations = {s.location for s in SEED_FORMULAS}
    for e in ERRATA.values():
        assert e.quantity in QUANTITIES, e.name
        assert e.wrong != e.correct
        for loc in e.found_in:
            assert loc in seed_locations, f"{e.name}: {loc} has no SEED_FORMULAS entry"


@pytest.mark.parametrize("name", sorted(ERRATA))
def test_erratum_identified(name: str) -> None:
    e = ERRATA[name]
    v = check_formula(e.wrong, e.quantity, etas=e.etas, symbolic=False)
    assert not v.matches, v.message()
    assert v.erratum == name, v.message()


@pytest.mark.parametrize("name", sorted(ERRATA))
def test_erratum_correct_form_matches(name: str) -> None:
    e = ERRATA[name]
    v = check_formula(e.correct, e.quantity, etas=e.etas, symbolic=False)
    assert v.matches, v.message()
    assert v.erratum is None


@pytest.mark.parametrize("name", sorted(ERRATA))
def test_erratum_symbolic_verdicts(name: str) -> None:
    # the symbolic check never contradicts the numerical one: a correct form is never "different", and a wrong
    # form is "identical" only for the one erratum that is a generic identity failing at t = 1 (1/0)
    e = ERRATA[name]
    q = QUANTITIES[e.quantity]
    correct, _ = symbolic_verdict(parse_formula(e.correct), q)
    wrong, note = symbolic_verdict(parse_formula(e.wrong), q)
    assert correct is not False
    if name == "reciprocal_posterior_variance_at_first_step":
        assert wrong is True
    else:
        assert wrong is not True, note


def test_docs_errata_md_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/errata.md is stale: regenerate with `python -m ddspec.audit > docs/errata.md`")
