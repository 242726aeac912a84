"""The audit of the five source documents: each extracted formula, with its location, gets the expected verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddspec.audit import ERRATA, SEED_FORMULAS, check_formula
from ddspec.audit.errata import SEED_DOCUMENTS

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEED_FORMULAS, ids=[f"{s.location}-{s.quantity}-{i}" for i, s in enumerate(SEED_FORMULAS)])
def test_seed_formula_verdict(seed) -> None:  # type: ignore[no-untyped-def]
    v = check_formula(seed.expr, seed.quantity, etas=seed.etas, symbolic=False)
    if seed.expect is None:
        assert v.matches, v.message()
    else:
        assert seed.expect in ERRATA
        assert not v.matches and v.erratum == seed.expect, v.message()


@pytest.mark.seeds
def test_seed_locations_exist() -> None:
    """Every location cited in the errata register points at a non-empty line of its seed document.
    The documents live beside the checkout (``../shared/seeds``), not in it: where they are absent
    the test is deselected by tests/conftest.py, like the opt-in slow tests."""
    files = {k: SEEDS / v.split(" ")[0] for k, v in SEED_DOCUMENTS.items()}
    for s in SEED_FORMULAS:
        doc, _, lines = s.location.partition(":")
        text = files[doc].read_text(encoding="utf-8").splitlines()
        for line in lines.split(","):
            assert 1 <= int(line) <= len(text) and text[int(line) - 1].strip(), s.location


def test_seed_003_ddim_timesteps_are_leading_spacing() -> None:
    # 003:45 states t = 980, 960, …, 20, 0 for 50 DDIM steps of T = 1000: leading spacing, step T/n = 20
    from ddspec.reference.timesteps import leading_timesteps

    assert [int(t) for t in leading_timesteps(1000, 50)] == list(range(980, -1, -20))
