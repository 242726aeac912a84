"""Tests of reference/thresholding.py: static clipping and Imagen's dynamic thresholding."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import thresholding
from ddspec.reference.twin import thresholding as twin
from ddspec.reference.twin import ulp_error
from tests.reference.pairs import twin_of


def test_clip_x0() -> None:
    x = np.array([-3.0, -1.0, -0.25, 0.0, 0.7, 1.0, 2.5])
    np.testing.assert_array_equal(thresholding.clip_x0(x), [-1.0, -1.0, -0.25, 0.0, 0.7, 1.0, 1.0])
    np.testing.assert_array_equal(thresholding.clip_x0(x, 0.5), [-0.5, -0.5, -0.25, 0.0, 0.5, 0.5, 0.5])


def test_dynamic_threshold_hand_built() -> None:
    """ratio 0.75 on 3 values per sample: h = (3 − 1)·0.75 = 1.5, so s = (a₁ + a₂)/2 of the sorted |x|.

    Sample 0: |x| sorted [0.5, 2, 3] → s = 2.5 → clip to ±2.5 and divide: [0.2, −1, 0.8].
    Sample 1: [0.1, 0.2, 0.3] → s = 0.25 → clamped up to 1: static clipping, values unchanged.
    Sample 2: |x| = 10 everywhere → s = 10 → clamped down to max_value 4: clip to ±4, /4 → ±1.
    Sample 3: [0.5, −1.5, 1.0] → s = 1.25 → [0.4, −1, 0.8].
    """
    x = np.array([[0.5, -3.0, 2.0], [0.1, -0.2, 0.3], [10.0, -10.0, 10.0], [0.5, -1.5, 1.0]])
    s = thresholding.dynamic_threshold_scale(x, ratio=0.75, max_value=4.0)
    np.testing.assert_array_equal(s, [2.5, 1.0, 4.0, 1.25])
    out = thresholding.dynamic_threshold(x, ratio=0.75, max_value=4.0)
    expected = np.array([[0.5 / 2.5, -1.0, 2.0 / 2.5], [0.1, -0.2, 0.3], [1.0, -1.0, 1.0], [0.4, -1.0, 0.8]])
    np.testing.assert_array_equal(out, expected)


def test_dynamic_threshold_flattens_all_non_batch_axes() -> None:
    """Per sample over all other axes (diffusers reshapes to (batch, -1)): ratio 0.5 on 4 values gives the
    midpoint of the two middle |x|, h = 1.5."""
    x = np.array([[[1.0, -4.0], [2.0, 8.0]], [[0.0, 0.5], [-0.5, 0.25]]])  # sample 0: sorted |x| [1,2,4,8]
    s = thresholding.dynamic_threshold_scale(x, ratio=0.5, max_value=100.0)
    np.testing.assert_array_equal(s, [3.0, 1.0])
    out = thresholding.dynamic_threshold(x, ratio=0.5, max_value=100.0)
    np.testing.assert_array_equal(out[0], np.array([[1.0, -3.0], [2.0, 3.0]]) / 3.0)
    np.testing.assert_array_equal(out[1], x[1])


def test_dynamic_threshold_matches_twin_default_ratio() -> None:
    """At diffusers' default ratio 0.995 the scale is within 2 ULP of the exact type-7 quantile, and the
    clip-and-divide given s is correctly rounded."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 50)) * np.array([1.0, 2.0, 3.0])[:, None, None]
    s = thresholding.dynamic_threshold_scale(x, max_value=2.5)
    out = thresholding.dynamic_threshold(x, max_value=2.5)
    for b in range(3):
        exact_s = twin_of("thresholding.dynamic_threshold_scale")(x[b].ravel(), 0.995, 2.5)
        assert ulp_error([s[b]], [exact_s])[0] <= 2.0
        exact = twin.threshold_given_scale(x[b].ravel(), float(s[b]))
        assert np.all(ulp_error(out[b].ravel(), exact) <= 0.5)
    assert s[2] == 2.5  # the largest sample is capped by max_value


def test_constrain_precedence() -> None:
    """diffusers: thresholding wins over clip_sample; neither leaves x̂₀ unchanged."""
    x = np.array([[3.0, -0.5, 0.25, 1.0]])
    np.testing.assert_array_equal(thresholding.constrain_x0(x), x)
    np.testing.assert_array_equal(thresholding.constrain_x0(x, clip_sample=True, clip_sample_range=0.5),
                                  [[0.5, -0.5, 0.25, 0.5]])
    both = thresholding.constrain_x0(x, clip_sample=True, clip_sample_range=0.5, thresholding=True,
                                     dynamic_thresholding_ratio=1.0, sample_max_value=10.0)
    np.testing.assert_array_equal(both, x / 3.0)  # s = max |x| = 3


def test_validation_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="clip_range"):
        thresholding.clip_x0(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="x0"):
        thresholding.dynamic_threshold(np.zeros(3))
    with pytest.raises(ValueError, match="x0"):
        thresholding.clip_x0(np.array([np.nan]))
    with pytest.raises(ValueError, match="ratio"):
        thresholding.dynamic_threshold(np.zeros((2, 3)), ratio=1.5)
    with pytest.raises(ValueError, match="max_value"):
        thresholding.dynamic_threshold(np.zeros((2, 3)), max_value=0.5)
    with pytest.raises(ValueError, match="dynamic_thresholding_ratio"):
        thresholding.constrain_x0(np.zeros((2, 3)), thresholding=True, dynamic_thresholding_ratio=-0.1)
    with pytest.raises(ValueError, match="sample_max_value"):
        thresholding.constrain_x0(np.zeros((2, 3)), thresholding=True, sample_max_value=0.0)
    with pytest.raises(ValueError, match="clip_sample_range"):
        thresholding.constrain_x0(np.zeros((2, 3)), clip_sample=True, clip_sample_range=-1.0)
    with pytest.raises(ValueError, match="thresholding"):
        thresholding.constrain_x0(np.zeros((2, 3)), thresholding="yes")
    with pytest.raises(ValueError, match="clip_sample"):
        thresholding.constrain_x0(np.zeros((2, 3)), clip_sample=1)


def test_twin_quantile_is_type_7() -> None:
    """Sanity of the twin itself on a case done by hand: values 0..10, r = 0.25 → h = 2.5 → 2.5."""
    assert twin.quantile_linear([float(v) for v in range(11)], 0.25) == mpmath.mpf("2.5")
