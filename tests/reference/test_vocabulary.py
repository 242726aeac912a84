"""The vocabularies are spelled once (reference/vocabulary.py) and every layer takes them from there."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from ddspec.conformance import protocol
from ddspec.conformance.protocol import Conventions
from ddspec.reference import vocabulary as V

ROOT = Path(__file__).resolve().parents[2]
_VOCABULARIES = {
    "prediction types": {m.value for m in V.PredictionType},
    "variance types": {m.value for m in V.VarianceType} | {m.value for m in V.DeclaredVarianceType},
    "timestep spacings": {m.value for m in V.TimestepSpacing},
    "beta schedules": {m.value for m in V.BetaSchedule},
}


def test_members_are_their_strings() -> None:
    assert V.PredictionType.EPSILON == "epsilon" and V.TimestepSpacing("trailing") is V.TimestepSpacing.TRAILING
    assert json.dumps([V.Family.DDIM, V.BetaSchedule.COSINE]) == '["ddim", "cosine"]'
    assert V.NAMED_SPACINGS == ("leading", "trailing", "linspace")
    assert "custom" not in V.NAMED_BETA_SCHEDULES and "custom" in V.BETA_SCHEDULES


def test_protocol_takes_its_vocabulary_from_the_reference() -> None:
    assert protocol.PREDICTION_TYPES is V.PREDICTION_TYPES
    assert protocol.DDPM_VARIANCE_TYPES is V.DECLARED_VARIANCE_TYPES
    assert protocol.TIMESTEP_SPACINGS is V.TIMESTEP_SPACINGS and protocol.BETA_SCHEDULES is V.BETA_SCHEDULES


def test_conventions_store_members_as_plain_strings() -> None:
    conv = Conventions(family=V.Family.DDPM, num_train_timesteps=10, prediction_type=V.PredictionType.V_PREDICTION,
                       variance_type=V.DeclaredVarianceType.FIXED_LARGE_LOG, timestep_spacing=V.TimestepSpacing.TRAILING)
    assert type(conv.prediction_type) is str and f"{conv.prediction_type}" == "v_prediction"
    assert f"{conv.variance_type}/{conv.timestep_spacing}" == "fixed_large_log/trailing"
    assert conv == Conventions(family="ddpm", num_train_timesteps=10, prediction_type="v_prediction",
                               variance_type="fixed_large_log", timestep_spacing="trailing")


@pytest.mark.parametrize(("declared", "reference"), [
    ("fixed_small", "fixed_small"), ("fixed_small_log", "fixed_small"), ("fixed_large", "fixed_large"),
    ("fixed_large_log", "fixed_large"), ("learned", "learned"), ("learned_range", "learned_range"),
])
def test_declared_variance_maps_to_the_reference(declared: str, reference: str) -> None:
    assert V.reference_variance_type(declared) == reference


def test_unknown_declared_variance_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"variance_type='fixed_medium'"):
        V.reference_variance_type("fixed_medium")


def test_x0_constraint_follows_the_declaration() -> None:
    base = dict(family="ddim", num_train_timesteps=10)
    assert Conventions(**base).x0_constraint is V.X0Constraint.NONE
    assert Conventions(**base, clip_sample=True).x0_constraint is V.X0Constraint.CLIP
    assert Conventions(**base, clip_sample=True, thresholding=True).x0_constraint is V.X0Constraint.THRESHOLD
def _spelled_vocabularies(path: Path) -> list[str]:
    """Tuple/list/set literals in ``path`` holding two or more names of one vocabulary."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            for label, vocab in _VOCABULARIES.items():
                if len(names & vocab) >= 2:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {label} {sorted(names & vocab)}")
    return found


def test_no_other_module_spells_a_vocabulary() -> None:
    modules = [p for d in ("reference", "conformance") for p in sorted((ROOT / d).rglob("*.py"))
               if p.name != "vocabulary.py" and "twin" not in p.parts]
    spelled = [hit for p in modules for hit in _spelled_vocabularies(p)]
    assert not spelled, "vocabulary spelled outside reference/vocabulary.py:\n" + "\n".join(spelled)
