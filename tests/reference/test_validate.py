"""Tests of ddspec.reference.validation: every bad input gives ``ValueError("<name>=<value>: <why>")``."""

from __future__ import annotations

import numpy as np
import pytest

from ddspec.reference import SingularError
from ddspec.reference import validation as V


def test_fail_message_and_classes():
    with pytest.raises(ValueError, match=r"^eta=-1\.0: must be >= 0$"):
        V.fail("eta", -1.0, "must be >= 0")
    with pytest.raises(SingularError, match=r"^t=3: singular$") as info:
        V.fail("t", 3, "singular", singular=True)
    assert isinstance(info.value, ValueError)
    assert issubclass(SingularError, ValueError)


def test_fail_shows_long_arrays_briefly():
    with pytest.raises(ValueError) as info:
        V.fail("x", np.arange(100.0), "bad")
    msg = str(info.value)
    assert msg.startswith("x=array(shape=(100,), dtype=float64, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, ...]): bad")


def test_as_array_accepts_and_converts():
    out = V.as_array([1, 2, 3], "x")
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0, 3.0]
    assert V.as_array(np.float32(0.5), "x").dtype == np.float64
    assert V.as_array(np.array([True, False]), "x").tolist() == [1.0, 0.0]
    assert V.as_array([], "x", allow_empty=True).size == 0


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("abc", "expected a real"),
        (None, "expected a real"),
        ([[1.0, 2.0], [3.0]], "cannot be converted"),
        ([1 + 2j], "expected real numbers"),
        (np.array(["a"]), "expected real numbers"),
        ([], "must not be empty"),
        ([1.0, np.nan], "non-finite at index 1"),
        ([[0.0, 1.0], [np.inf, 2.0]], r"non-finite at index \(1, 0\)"),
    ],
)
def test_as_array_rejects(bad, why):
    with pytest.raises(ValueError, match=f"^noise=.*{why}"):
        V.as_array(bad, "noise")


def test_as_scalar():
    assert V.as_scalar(np.float32(0.25), "eta") == 0.25
    assert V.as_scalar(np.array(2.0), "eta") == 2.0
    assert V.as_scalar(3, "eta") == 3.0
    assert V.as_scalar(0.0, "eta", low=0.0) == 0.0
    for bad, kw in [
        (True, {}),
        ("1", {}),
        ([1.0], {}),
        (np.array([1.0]), {}),
        (np.array("a"), {}),  # 0-d arrays of non-real dtype are not scalars either
        (np.array(1 + 2j), {}),
        (np.array(True), {}),
        (np.array(None), {}),
        (np.complex128(1.0), {}),
        (np.True_, {}),
        (float("nan"), {}),
        (float("inf"), {}),
        (-0.1, {"low": 0.0}),
        (0.0, {"low": 0.0, "low_open": True}),
        (1.5, {"high": 1.0}),
        (1.0, {"high": 1.0, "high_open": True}),
    ]:
        with pytest.raises(ValueError, match="^eta="):
            V.as_scalar(bad, "eta", **kw)


def test_as_int():
    assert V.as_int(np.int64(5), "t") == 5
    assert V.as_int(-1, "t", low=-1) == -1
    for bad, kw in [(2.0, {}), (True, {}), ("3", {}), (None, {}), (-2, {"low": -1}), (10, {"high": 9})]:
        with pytest.raises(ValueError, match="^t="):
            V.as_int(bad, "t", **kw)


def test_as_betas():
    b = V.as_betas([0.1, 0.5, 1.0])  # the last β may be exactly 1
    assert b.dtype == np.float64 and b.tolist() == [0.1, 0.5, 1.0]
    for bad, why in [
        ([0.1, 0.0], "index 1"),
        ([-0.1, 0.2], "index 0"),
        ([0.1, 1.0000001], "index 1"),
        ([0.1, 1.0, 0.2], "index 1"),  # a 1 that is not the last
        ([1.0, 1.0], "index 0"),
        ([0.1, np.nan], "finite"),
        ([[0.1, 0.2]], "1-D"),
        ([], "empty"),
    ]:
        with pytest.raises(ValueError, match=f"^betas=.*{why}"):
            V.as_betas(bad)
    with pytest.raises(ValueError, match="^schedule="):
        V.as_betas([2.0], name="schedule")


def test_as_timestep_and_timesteps():
    assert V.as_timestep(9, 10) == 9
    assert V.as_timestep(-1, 10, allow_data=True) == -1
    for bad, kw in [(10, {}), (-1, {}), (-2, {"allow_data": True}), (1.0, {})]:
        with pytest.raises(ValueError, match="^t="):
            V.as_timestep(bad, 10, **kw)
    with pytest.raises(ValueError, match="^t_prev="):
        V.as_timestep(11, 10, "t_prev")
    arr = V.as_timesteps(np.array([[0, 9], [3, 4]]), 10)
    assert arr.dtype == np.int64 and arr.shape == (2, 2)
    assert V.as_timesteps(np.array([2.0, 3.0]), 10).tolist() == [2, 3]  # integral floats are accepted
    assert V.as_timesteps([-1, 0], 10, allow_data=True).tolist() == [-1, 0]
    for bad in ([2.5], [np.nan], [True], ["1"], [0, 10], [-1]):
        with pytest.raises(ValueError, match="^t="):
            V.as_timesteps(bad, 10)


def test_check_same_shape():
    V.check_same_shape(a=np.zeros(3), b=np.ones(3), c=[1, 2, 3])
    with pytest.raises(ValueError, match=r"^noise=.*shape \(1, 3\) does not match x0's shape \(3,\)"):
        V.check_same_shape(x0=np.zeros(3), noise=np.zeros((1, 3)))


def test_check_finite_result():
    x = np.array([1.0, 2.0])
    assert V.check_finite_result(x, "x0_hat", "why") is x
    with pytest.raises(SingularError, match="x0_hat is not finite at index 1.*because"):
        V.check_finite_result(np.array([1.0, np.inf]), "x0_hat", "because")
    with pytest.raises(SingularError, match="x0_hat is not finite"):
        V.check_finite_result(np.float64(np.nan), "x0_hat", "because")
