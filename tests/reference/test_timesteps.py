"""Tests for ddspec.reference.timesteps: subsequence rules, timestep pairs, respaced betas.

Every expected subsequence below is derived by hand from the rule's closed form (the derivation is
in the comment next to it), or from an independent integer formula; ties are resolved half-to-even
as numpy's and Python's ``round`` do. Respaced β′ are checked against the mpmath twin and against
closed forms of a constant schedule.
"""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest

from ddspec.reference import alphas, timesteps as ts
from tests.reference.pairs import twin_of

LINEAR_1000 = np.linspace(1e-4, 0.02, 1000)  # diffusers / DDIM / DDPM "linear" at T = 1000


def as_list(a: np.ndarray) -> list[int]:
    assert a.dtype == np.int64 and a.ndim == 1
    return [int(v) for v in a]


# --------------------------------------------------------------------------------------------------
# small cases, every rule (T = 10, N = 3)
# --------------------------------------------------------------------------------------------------


def test_t10_n3_every_rule() -> None:
    # leading: T//N = 3 -> 0, 3, 6 reversed
    assert as_list(ts.leading_timesteps(10, 3)) == [6, 3, 0]
    assert as_list(ts.leading_timesteps(10, 3, steps_offset=1)) == [7, 4, 1]
    assert as_list(ts.leading_timesteps(10, 3, steps_offset=3)) == [9, 6, 3]  # 6 + 3 = 9 = T - 1
    # trailing: round(10, 20/3, 10/3) - 1 = (10, 7, 3) - 1
    assert as_list(ts.trailing_timesteps(10, 3)) == [9, 6, 2]
    # linspace: k * 9/2 = 0, 4.5, 9; 4.5 ties to the even 4
    assert as_list(ts.linspace_timesteps(10, 3)) == [9, 4, 0]
    # uniform: range(0, 10, 3) = 0, 3, 6, 9 is 4 steps, not 3
    assert as_list(ts.uniform_timesteps(10, 3, strict=False)) == [9, 6, 3, 0]
    # quadratic: floor(4*10*i^2 / (5*2^2)) = 2 i^2 = 0, 2, 8
    assert as_list(ts.quadratic_timesteps(10, 3)) == [8, 2, 0]
    # improved-diffusion: one section of 10, round(k * 9/2) -> 0, 4 (tie to even), 9
    assert as_list(ts.section_timesteps(10, "3")) == [9, 4, 0]
    # three sections of sizes 4, 3, 3 starting at 0, 4, 7; one step each -> the starts
    assert as_list(ts.section_timesteps(10, [1, 1, 1])) == [7, 4, 0]
    # ddim3: ceil(10/i) = 3 first at i = 4 -> 0, 4, 8
    assert as_list(ts.section_timesteps(10, "ddim3")) == [8, 4, 0]


def test_uniform_t10_n3_strict_raises() -> None:
    with pytest.raises(ValueError, match="num_inference_steps=3.*4 steps"):
        ts.uniform_timesteps(10, 3)


# --------------------------------------------------------------------------------------------------
# T = 1000
# --------------------------------------------------------------------------------------------------


def test_leading_t1000_n50_offset1() -> None:
    # Stable Diffusion: T//N = 20, 20 k + 1 for k = 49, ..., 0
    got = as_list(ts.leading_timesteps(1000, 50, steps_offset=1))
    assert got == [20 * k + 1 for k in range(49, -1, -1)]
    assert got[0] == 981 and got[1] == 961 and got[-1] == 1


def test_trailing_t1000_n50() -> None:
    # T/N = 20 exactly: round(1000 - 20 k) - 1 = 999 - 20 k
    got = as_list(ts.trailing_timesteps(1000, 50))
    assert got == [999 - 20 * k for k in range(50)]
    assert got[0] == 999 and got[1] == 979 and got[-1] == 19


def test_linspace_t1000_n50() -> None:
    # 999 k / 49 is never a tie (49 is odd), so round = floor(x + 1/2) = (2*999k + 49) // 98
    got = as_list(ts.linspace_timesteps(1000, 50))
    assert got == [(2 * 999 * k + 49) // 98 for k in range(49, -1, -1)]
    assert got[0] == 999 and got[-1] == 0


def test_t1000_n7() -> None:
    # leading: T//N = 142
    assert as_list(ts.leading_timesteps(1000, 7)) == [852, 710, 568, 426, 284, 142, 0]
    # trailing: 1000 (7-k)/7 = 1000, 857.14, 714.29, 571.43, 428.57, 285.71, 142.86 -> round - 1
    assert as_list(ts.trailing_timesteps(1000, 7)) == [999, 856, 713, 570, 428, 285, 142]
    # linspace: k * 999/6 = 166.5 k: ties at odd k go to the even neighbour
    # 0, 166.5->166, 333, 499.5->500, 666, 832.5->832, 999
    assert as_list(ts.linspace_timesteps(1000, 7)) == [999, 832, 666, 500, 333, 166, 0]
    assert as_list(ts.section_timesteps(1000, [7])) == [999, 832, 666, 500, 333, 166, 0]
    # quadratic: floor(200 i^2 / 9) = 0, 22.2, 88.9, 200, 355.6, 555.6, 800
    assert as_list(ts.quadratic_timesteps(1000, 7)) == [800, 555, 355, 200, 88, 22, 0]
    # uniform: stride 142, range(0, 1000, 142) = 0..994, 8 steps
    with pytest.raises(ValueError, match="num_inference_steps"):
        ts.uniform_timesteps(1000, 7)
    assert as_list(ts.uniform_timesteps(1000, 7, strict=False)) == [142 * k for k in range(7, -1, -1)]
    # ddim7: ceil(1000/i) = 7 first at i = 143 (1000/143 = 6.99)
    assert as_list(ts.section_timesteps(1000, "ddim7")) == [143 * k for k in range(6, -1, -1)]


def test_t1000_n3() -> None:
    assert as_list(ts.leading_timesteps(1000, 3)) == [666, 333, 0]
    # 1000, 666.67, 333.33 -> 1000, 667, 333, minus 1
    assert as_list(ts.trailing_timesteps(1000, 3)) == [999, 666, 332]
    # 0, 499.5 -> 500 (499 is odd), 999
    assert as_list(ts.linspace_timesteps(1000, 3)) == [999, 500, 0]
    # floor(4000 i^2 / 20) = 200 i^2
    assert as_list(ts.quadratic_timesteps(1000, 3)) == [800, 200, 0]
    # the brief's example: stride 333 gives 0, 333, 666, 999
    assert as_list(ts.uniform_timesteps(1000, 3, strict=False)) == [999, 666, 333, 0]
    with pytest.raises(ValueError, match="num_inference_steps=3"):
        ts.uniform_timesteps(1000, 3)


def test_t1000_n999() -> None:
    # trailing: j = 999 - k, 1000 j / 999 = j + j/999 rounds to j (j <= 499) or j + 1 (j >= 500);
    # minus 1: 999..500 then 498..0 (index 499 is skipped)
    skip_499 = list(range(999, 499, -1)) + list(range(498, -1, -1))
    assert as_list(ts.trailing_timesteps(1000, 999)) == skip_499
    # linspace: k + k/998; k = 499 is the tie 499.5 -> 500; again 499 is skipped
    assert as_list(ts.linspace_timesteps(1000, 999)) == skip_499
    assert as_list(ts.section_timesteps(1000, "999")) == skip_499
    # leading: stride 1 -> 998..0, offset 1 -> 999..1, offset 2 overflows
    assert as_list(ts.leading_timesteps(1000, 999)) == list(range(998, -1, -1))
    assert as_list(ts.leading_timesteps(1000, 999, 1)) == list(range(999, 0, -1))
    with pytest.raises(ValueError, match="steps_offset=2"):
        ts.leading_timesteps(1000, 999, 2)
    # uniform: stride 1 gives all 1000
    with pytest.raises(ValueError, match="num_inference_steps=999"):
        ts.uniform_timesteps(1000, 999)
    assert as_list(ts.uniform_timesteps(1000, 999, strict=False)) == list(range(999, -1, -1))
    # quadratic: c = 800/998^2 < 1 -> repeats
    with pytest.raises(ValueError, match="num_inference_steps=999.*repeats"):
        ts.quadratic_timesteps(1000, 999)
    # ddim999: ceil(1000/1) = 1000, ceil(1000/2) = 500: no stride gives 999
    with pytest.raises(ValueError, match="section_counts"):
        ts.section_timesteps(1000, "ddim999")


def test_n1_every_rule() -> None:
    assert as_list(ts.leading_timesteps(1000, 1)) == [0]
    assert as_list(ts.leading_timesteps(1000, 1, steps_offset=999)) == [999]
    with pytest.raises(ValueError, match="steps_offset=1000"):
        ts.leading_timesteps(1000, 1, steps_offset=1000)
    assert as_list(ts.trailing_timesteps(1000, 1)) == [999]  # round(1000) - 1
    assert as_list(ts.linspace_timesteps(1000, 1)) == [0]  # linspace(0, 999, 1) = [0]
    assert as_list(ts.uniform_timesteps(1000, 1)) == [0]  # range(0, 1000, 1000)
    assert as_list(ts.quadratic_timesteps(1000, 1)) == [0]
    assert as_list(ts.section_timesteps(1000, "1")) == [0]
    with pytest.raises(ValueError, match="section_counts='ddim1'"):
        ts.section_timesteps(1000, "ddim1")  # stride T is not tried upstream
    for name in ts.SPACINGS:
        assert as_list(ts.get_timesteps(name, 1, 1)) == [0]


def test_n2_every_rule() -> None:
    assert as_list(ts.leading_timesteps(1000, 2)) == [500, 0]
    assert as_list(ts.trailing_timesteps(1000, 2)) == [999, 499]  # round(1000, 500) - 1
    assert as_list(ts.linspace_timesteps(1000, 2)) == [999, 0]
    assert as_list(ts.uniform_timesteps(1000, 2)) == [500, 0]
    assert as_list(ts.quadratic_timesteps(1000, 2)) == [800, 0]  # floor(4000/5)
    assert as_list(ts.section_timesteps(1000, "2")) == [999, 0]
    assert as_list(ts.section_timesteps(1000, "ddim2")) == [500, 0]  # ceil(1000/500) = 2


def test_n_equals_t() -> None:
    everything = list(range(999, -1, -1))
    for name in ("leading", "trailing", "linspace", "uniform"):
        assert as_list(ts.get_timesteps(name, 1000, 1000)) == everything
    assert as_list(ts.section_timesteps(1000, "1000")) == everything
    assert as_list(ts.section_timesteps(1000, "ddim1000")) == everything
    with pytest.raises(ValueError, match="steps_offset=1"):
        ts.leading_timesteps(1000, 1000, 1)  # 999 + 1 = T
    with pytest.raises(ValueError, match="num_inference_steps=1000"):
        ts.quadratic_timesteps(1000, 1000)


# --------------------------------------------------------------------------------------------------
# ties, both directions
# --------------------------------------------------------------------------------------------------


def test_round_half_even_ties() -> None:
    # linspace T=6, N=5: k*5/4 = 0, 1.25, 2.5, 3.75, 5 -> 0, 1, 2, 4, 5
    assert as_list(ts.linspace_timesteps(6, 5)) == [5, 4, 2, 1, 0]
    # linspace T=8, N=5: k*7/4 = 0, 1.75, 3.5, 5.25, 7 -> 0, 2, 4, 5, 7
    assert as_list(ts.linspace_timesteps(8, 5)) == [7, 5, 4, 2, 0]
    # trailing T=10, N=4: 10, 7.5, 5, 2.5 -> 10, 8, 5, 2, minus 1
    assert as_list(ts.trailing_timesteps(10, 4)) == [9, 7, 4, 1]
    # trailing T=6, N=4: 6, 4.5, 3, 1.5 -> 6, 4, 3, 2, minus 1
    assert as_list(ts.trailing_timesteps(6, 4)) == [5, 3, 2, 1]


# --------------------------------------------------------------------------------------------------
# properties over every N at T = 1000
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["leading", "trailing", "linspace"])
def test_diffusers_rules_give_n_distinct_steps(name: str) -> None:
    for n in range(1, 1001):
        got = ts.get_timesteps(name, 1000, n)
        assert got.size == n
        ts.check_subsequence(got, 1000)
        if name == "trailing":
            assert got[0] == 999
        if name == "linspace" and n >= 2:
            assert got[0] == 999 and got[-1] == 0
        if name == "leading":
            assert got[-1] == 0 and got[0] == (1000 // n) * (n - 1)


def test_uniform_strict_iff_n_divides_t() -> None:
    # c = T//N has c N <= T, so ceil(T/c) = N iff c N = T iff N divides T; otherwise more than N
    for n in range(1, 1001):
        c = 1000 // n
        count = -(-1000 // c)  # ceil(T / c) multiples of c below T
        if 1000 % n == 0:
            got = ts.uniform_timesteps(1000, n)
            assert as_list(got) == [c * k for k in range(n - 1, -1, -1)]
        else:
            with pytest.raises(ValueError, match="num_inference_steps"):
                ts.uniform_timesteps(1000, n)
            assert ts.uniform_timesteps(1000, n, strict=False).size == count > n


def test_quadratic_repeats_iff_c_below_one() -> None:
    # c = 4T / (5 (N-1)^2); steps c(2i+1) >= 1 for all i iff c >= 1, else floor(c*0) = floor(c*1) = 0.
    # At T = 1000: c < 1 iff 5 (N-1)^2 > 4000 iff N >= 30.
    for n in range(2, 60):
        if n >= 30:
            with pytest.raises(ValueError, match="num_inference_steps"):
                ts.quadratic_timesteps(1000, n)
            raw = ts.quadratic_timesteps(1000, n, strict=False)
            assert raw.size == n and raw[-1] == raw[-2] == 0
            with pytest.raises(ValueError, match="timesteps=.*repeats"):
                ts.check_subsequence(raw, 1000)
        else:
            got = ts.quadratic_timesteps(1000, n)
            ts.check_subsequence(got, 1000)
            assert got[0] == 800  # floor(0.8 T) at i = N - 1


def test_quadratic_small_t_repeats() -> None:
    # T = 10, N = 4: floor(40 i^2 / 45) = 0, 0, 3, 8
    with pytest.raises(ValueError, match="num_inference_steps=4"):
        ts.quadratic_timesteps(10, 4)
    assert as_list(ts.quadratic_timesteps(10, 4, strict=False)) == [8, 3, 0, 0]


# --------------------------------------------------------------------------------------------------
# improved-diffusion sections
# --------------------------------------------------------------------------------------------------


def test_sections_uneven_and_zero_counts() -> None:
    # T = 10, [2, 3]: sections [0..4], [5..9]; k*4/1 -> 0, 4; 5 + k*4/2 -> 5, 7, 9
    assert as_list(ts.section_timesteps(10, [2, 3])) == [9, 7, 5, 4, 0]
    assert as_list(ts.section_timesteps(10, "2, 3")) == [9, 7, 5, 4, 0]
    # a count of 0 skips its section: [5, 0] -> 0..4
    assert as_list(ts.section_timesteps(10, [5, 0])) == [4, 3, 2, 1, 0]
    # more sections than steps: T = 3, four sections of sizes 1, 1, 1, 0
    assert as_list(ts.section_timesteps(3, [1, 1, 1, 0])) == [2, 1, 0]
    # T = 1000 in sections of 334, 333, 333: "10,15,20"
    got = as_list(ts.section_timesteps(1000, "10,15,20"))
    s0 = [round(Fraction(333 * k, 9)) for k in range(10)]
    s1 = [334 + round(Fraction(332 * k, 14)) for k in range(15)]
    s2 = [667 + round(Fraction(332 * k, 19)) for k in range(20)]
    assert got == sorted(s0 + s1 + s2, reverse=True)
    assert len(got) == 45


def test_section_count_exceeds_size() -> None:
    with pytest.raises(ValueError, match="section_counts.*section 1 has 3"):
        ts.section_timesteps(10, [4, 4, 4])  # sizes 4, 3, 3
    with pytest.raises(ValueError, match="section_counts"):
        ts.section_timesteps(10, "11")
    with pytest.raises(ValueError, match="section_counts"):
        ts.section_timesteps(3, [0, 0, 0, 1])  # the last section is empty


def test_ddim_impossible() -> None:
    # T = 10: ceil(10/i) for i = 1..9 is 10, 5, 4, 3, 2, 2, 2, 2, 2: 6 is not reachable
    with pytest.raises(ValueError, match="section_counts='ddim6'.*exactly 6"):
        ts.section_timesteps(10, "ddim6")
    assert as_list(ts.section_timesteps(10, "ddim5")) == [8, 6, 4, 2, 0]
    assert as_list(ts.section_timesteps(10, "ddim2")) == [5, 0]  # first stride with 2 is 5


@pytest.mark.parametrize(
    "bad", ["", "ddim", "ddimx", "ddim0", "ddim-3", "a,b", "3,,4", "-1", [], [0, 0], [1.5], [True], 7, None]
)
def test_section_counts_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="section_counts"):
        ts.section_timesteps(10, bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# pairs and validation of subsequences
# --------------------------------------------------------------------------------------------------


def test_timestep_pairs() -> None:
    assert ts.timestep_pairs([9, 4, 0]) == [(9, 4), (4, 0), (0, -1)]
    assert ts.timestep_pairs(np.array([981, 961]), 1000) == [(981, 961), (961, -1)]
    assert ts.timestep_pairs([5]) == [(5, -1)]
    pairs = ts.timestep_pairs(ts.trailing_timesteps(1000, 50))
    assert all(type(a) is int and type(b) is int for a, b in pairs)
    assert pairs[0] == (999, 979) and pairs[-1] == (19, -1)
    with pytest.raises(ValueError, match="timesteps"):
        ts.timestep_pairs([0, 4, 9])
    with pytest.raises(ValueError, match="timesteps"):
        ts.timestep_pairs([9, 4, -1])
    with pytest.raises(ValueError, match="timesteps"):
        ts.timestep_pairs([1000, 4], 1000)
    with pytest.raises(ValueError, match="timesteps"):
        ts.timestep_pairs([])


def test_check_subsequence() -> None:
    assert as_list(ts.check_subsequence([9, 4, 0], 10)) == [9, 4, 0]
    assert as_list(ts.check_subsequence(np.array([9.0, 4.0]), 10)) == [9, 4]
    with pytest.raises(ValueError, match="timesteps=.*repeats timestep 4"):
        ts.check_subsequence([9, 4, 4, 0], 10)
    with pytest.raises(ValueError, match="timesteps=.*strictly decreasing"):
        ts.check_subsequence([0, 4, 9], 10)
    with pytest.raises(ValueError, match="timesteps=.*out of range"):
        ts.check_subsequence([10, 4], 10)
    with pytest.raises(ValueError, match="timesteps=.*out of range"):
        ts.check_subsequence([4, -1], 10)
    with pytest.raises(ValueError, match="timesteps=.*1-D"):
        ts.check_subsequence([[4, 3]], 10)
    with pytest.raises(ValueError, match="timesteps=.*empty"):
        ts.check_subsequence([], 10)
    with pytest.raises(ValueError, match="timesteps=.*integer"):
        ts.check_subsequence([4.5, 3], 10)
    with pytest.raises(ValueError, match="tau="):
        ts.check_subsequence([3, 4], 10, name="tau")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        ts.check_subsequence([3], 0)


# --------------------------------------------------------------------------------------------------
# by name, and argument validation
# --------------------------------------------------------------------------------------------------


def test_spacings_and_get_timesteps() -> None:
    assert set(ts.SPACINGS) == {"leading", "trailing", "linspace", "uniform", "quadratic"}
    for name, rule in ts.SPACINGS.items():
        assert as_list(ts.get_timesteps(name, 1000, 50 if name != "quadratic" else 20)) == as_list(
            rule(1000, 50 if name != "quadratic" else 20)
        )
    assert as_list(ts.get_timesteps("leading", 1000, 50, steps_offset=1))[0] == 981
    with pytest.raises(ValueError, match="spacing='karras'"):
        ts.get_timesteps("karras", 1000, 50)
    with pytest.raises(ValueError, match="spacing"):
        ts.get_timesteps(None, 1000, 50)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps_offset=1.*leading"):
        ts.get_timesteps("trailing", 1000, 50, steps_offset=1)
    with pytest.raises(TypeError):
        ts.SPACINGS["karras"] = ts.leading_timesteps  # type: ignore[index]


@pytest.mark.parametrize("name", ["leading", "trailing", "linspace", "uniform", "quadratic"])
def test_size_validation(name: str) -> None:
    rule = ts.SPACINGS[name]
    with pytest.raises(ValueError, match="num_train_timesteps=0"):
        rule(0, 1)
    with pytest.raises(ValueError, match="num_train_timesteps=1000.0"):
        rule(1000.0, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_inference_steps=0"):
        rule(1000, 0)
    with pytest.raises(ValueError, match="num_inference_steps=1001"):
        rule(1000, 1001)
    with pytest.raises(ValueError, match="num_inference_steps=True"):
        rule(1000, True)  # type: ignore[arg-type]


def test_other_argument_validation() -> None:
    with pytest.raises(ValueError, match="steps_offset=-1"):
        ts.leading_timesteps(1000, 50, -1)
    with pytest.raises(ValueError, match="strict=1"):
        ts.uniform_timesteps(1000, 50, strict=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strict='no'"):
        ts.quadratic_timesteps(1000, 5, strict="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_train_timesteps=0"):
        ts.section_timesteps(0, "1")


# --------------------------------------------------------------------------------------------------
# respaced betas
# --------------------------------------------------------------------------------------------------


def ulp_distance(a: np.ndarray, exact: list[mpmath.mpf]) -> np.ndarray:
    e = np.array([float(x) for x in exact])  # mpf -> float rounds to nearest
    return np.abs(a - e) / np.spacing(e)


def test_respaced_full_sequence_is_betas() -> None:
    # beta'_i = 1 - abar_i / abar_{i-1} = beta_i exactly; the reference rounds once, so <= 1 ULP
    got = ts.respaced_betas(LINEAR_1000, np.arange(1000)[::-1])
    assert np.max(np.abs(got - LINEAR_1000) / np.spacing(LINEAR_1000)) <= 1.0


@pytest.mark.parametrize("n", [10, 50, 999])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_respaced_vs_twin(n: int, spacing: str) -> None:
    tau = ts.get_timesteps(spacing, 1000, n)
    got = ts.respaced_betas(LINEAR_1000, tau)
    exact = twin_of("timesteps.respaced_betas")(LINEAR_1000, tau)
    assert got.shape == (n,)
    # the reference's double-double quotient is ~2^-100 accurate and rounded once: <= 1 ULP
    assert np.max(ulp_distance(got, exact)) <= 1.0


def test_respaced_order_and_sorting() -> None:
    tau = ts.trailing_timesteps(1000, 10)
    a = ts.respaced_betas(LINEAR_1000, tau)
    b = ts.respaced_betas(LINEAR_1000, tau[::-1])
    c = ts.respaced_betas(LINEAR_1000, list({int(t) for t in tau}))  # a set, as improved-diffusion
    assert np.array_equal(a, b) and np.array_equal(a, c)
    # ascending: result[0] belongs to the smallest index (99), and is 1 - abar[99]
    assert a[0] == alphas.one_minus_alpha_bar(LINEAR_1000)[99]


def test_respaced_constant_schedule_closed_form() -> None:
    # beta = 2^-7 (exact): abar at index t is (127/128)^(t+1), so beta'_i = 1 - (127/128)^(tau_i - tau_{i-1})
    betas = np.full(1000, 2.0**-7)
    tau = ts.linspace_timesteps(1000, 7)[::-1]  # 0, 166, 333, 500, 666, 832, 999
    got = ts.respaced_betas(betas, tau)
    gaps = np.diff(np.concatenate([[-1], tau]))
    exact = [float(1 - Fraction(127, 128) ** int(d)) for d in gaps]  # float(Fraction) rounds once
    assert np.max(np.abs(got - exact) / np.spacing(exact)) <= 1.0
    assert got[0] == 2.0**-7  # tau_0 = 0: beta'_0 = beta_0


def test_respaced_product_is_alpha_bar_at_last() -> None:
    # prod (1 - beta'_i) telescopes to abar_{tau_max}. With beta' rounded (|delta_i| <= ulp(beta'_i),
    # checked above), the product of the float beta' has relative error <= sum ulp(beta'_i)/(1 - beta'_i).
    cases = [
        (np.full(1000, 2.0**-7), lambda t: mpmath.mpf(127) ** (t + 1) / mpmath.mpf(128) ** (t + 1)),
        (LINEAR_1000, None),
    ]
    for betas, closed in cases:
        for n in (10, 50, 999):
            tau = ts.leading_timesteps(1000, n, steps_offset=1)
            got = ts.respaced_betas(betas, tau)
            last = int(tau.max())
            with mpmath.workdps(50):
                if closed is None:
                    target = mpmath.mpf(1)
                    for beta in betas[: last + 1]:
                        target *= 1 - mpmath.mpf(float(beta))
                else:
                    target = closed(last)
                product = mpmath.mpf(1)
                for beta in got:
                    product *= 1 - mpmath.mpf(float(beta))
                rel = float(abs(product / target - 1))
            bound = float(np.sum(np.spacing(got) / (1.0 - got))) * 1.01
            assert rel <= bound, (n, rel, bound)


def test_respaced_last_beta_one() -> None:
    # a zero-terminal-SNR-like schedule: the last beta is 1, so abar[T-1] = 0 and beta' there is 1
    betas = np.concatenate([np.linspace(1e-4, 0.02, 9), [1.0]])
    got = ts.respaced_betas(betas, [9, 4, 0])
    assert got[-1] == 1.0
    assert got[0] == betas[0]


def test_respaced_validation() -> None:
    with pytest.raises(ValueError, match="timesteps=.*distinct.*repeats"):
        ts.respaced_betas(LINEAR_1000, [10, 5, 5])
    with pytest.raises(ValueError, match="timesteps=.*out of range"):
        ts.respaced_betas(LINEAR_1000, [1000, 5])
    with pytest.raises(ValueError, match="timesteps=.*out of range"):
        ts.respaced_betas(LINEAR_1000, [5, -1])
    with pytest.raises(ValueError, match="timesteps=.*empty"):
        ts.respaced_betas(LINEAR_1000, [])
    with pytest.raises(ValueError, match="timesteps=.*1-D"):
        ts.respaced_betas(LINEAR_1000, [[5, 1]])
    with pytest.raises(ValueError, match="timesteps=.*integer"):
        ts.respaced_betas(LINEAR_1000, [5.5])
    with pytest.raises(ValueError, match="betas"):
        ts.respaced_betas([0.1, 1.5], [1, 0])
    with pytest.raises(ValueError, match="timesteps"):
        twin_of("timesteps.respaced_betas")(LINEAR_1000, [3, 3])


def test_ddim_n_matches_the_literal_stride_search_and_is_fast_for_huge_T() -> None:
    """"ddimN" is improved-diffusion's search: the first stride i = 1, 2, … with len(range(0, T, i)) == N.

    Checked against that literal search for every T < 120 and N <= T + 1; and for T = 10**12 the answer
    comes without an O(T) loop.
    """

    def literal(T: int, N: int) -> list[int] | None:
        for i in range(1, T):
            if len(range(0, T, i)) == N:
                return sorted(range(0, T, i), reverse=True)
        return None

    for T in range(1, 120):
        for N in range(1, T + 2):
            expected = literal(T, N)
            try:
                got: list[int] | None = [int(v) for v in ts.section_timesteps(T, f"ddim{N}")]
            except ValueError:
                got = None
            assert got == expected, (T, N)
    big = ts.section_timesteps(10**12, "ddim4")
    assert big.tolist() == [750_000_000_000, 500_000_000_000, 250_000_000_000, 0]
