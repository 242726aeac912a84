r"""Diagnosis: name the root cause of a failing run by fitting known bug patterns to what the target did.

:mod:`~ddspec.conformance.diagnosis.patterns` is the catalogue (each entry a documented perturbation of
the reference step, with its source and the checks it explains); :mod:`~ddspec.conformance.diagnosis.fit`
drives the failing target once more, scores every pattern against the reference on the same evidence,
fits continuous parameters, and reports a pattern only when it explains the evidence within the error
model and clearly beats the reference. ``python -m ddspec.conformance.diagnosis --table`` prints the
confusion table of docs/diagnosis.md.
"""

from __future__ import annotations

from .fit import diagnose, diagnose_evidence, collect_evidence, score_patterns
from .patterns import CATALOGUE, Knobs, Pattern, pattern_named, perturbed_step

__all__ = [
    "CATALOGUE",
    "Knobs",
    "Pattern",
    "pattern_named",
    "perturbed_step",
    "diagnose",
    "diagnose_evidence",
    "collect_evidence",
    "score_patterns",
]
