r"""Timestep subsequences for strided sampling, and the respaced schedule they induce.

A sampler that runs fewer steps than the model was trained with visits a subsequence
:math:`\tau = (\tau_1 < \dots < \tau_S)` of the T training timesteps (Song et al. 2021, DDIM, §4.2
and §D.2; Nichol & Dhariwal 2021, §4). This module states the rules that the public
implementations use to pick τ, and the β′ of the respaced schedule.

Index convention (``docs/conventions.md``): every timestep here is the 0-based index ``t`` in
``[0, T-1]`` (the papers' t + 1), and ``-1`` is the clean data x₀ with ᾱ = 1.

Order. Unless a docstring says otherwise, a subsequence is returned as a 1-D ``int64`` array in
**sampling order**: strictly decreasing, the first element the noisiest timestep. The sampler steps
from each element to the next one, and from the last element to the data (index ``-1``): see
:func:`timestep_pairs`.

Exactness. Every rule is evaluated in exact integer (rational) arithmetic, including its rounding
(numpy's and Python's ``round``, which send ties to the even neighbour, and ``int``/floor). The
upstream code evaluates the same formulas in float64, where a value that is exactly a tie
(``k + 1/2``) or, for a floor, exactly an integer, can come out one ULP to either side and round
the other way. Measured against the upstream float evaluation, the two agree everywhere except at
such exact ties/integers, where they differ by one index (the counts are in each docstring); and
diffusers' ``trailing`` sometimes returns one element too many. A conformance check that compares
a target's subsequence with these functions should therefore allow ±1 at exactly those positions.

Rules and their sources (conventions read from the upstream sources; no code is copied):

* ``uniform`` and ``quadratic``: the DDIM paper's "linear" and "quadratic" selections (§D.2) as the
  authors' code implements them (skip types ``uniform`` and ``quad``).
* :func:`section_timesteps`: improved-diffusion's ``space_timesteps`` (Nichol & Dhariwal 2021, §4).
* ``leading``, ``trailing``, ``linspace``: diffusers' ``timestep_spacing`` (Lin et al. 2023,
  "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2, names them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import as_betas, as_int, as_timesteps, fail
from .alphas import one_minus_alpha_bar_ratio

__all__ = [
    "uniform_timesteps",
    "quadratic_timesteps",
    "section_timesteps",
    "leading_timesteps",
    "trailing_timesteps",
    "linspace_timesteps",
    "timestep_pairs",
    "respaced_betas",
    "check_subsequence",
    "SPACINGS",
    "get_timesteps",
]

Timesteps = NDArray[np.int64]

_NO_UPPER_BOUND = 2**62  # a T larger than any index, for timestep_pairs without num_train_timesteps


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _round_half_even(num: int, den: int) -> int:
    """Round the non-negative rational ``num / den`` to the nearest integer, ties to even (exact)."""
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q % 2 == 1):
        q += 1
    return q


def _sampling_order(values: Sequence[int]) -> Timesteps:
    """The given timesteps as an int64 array in sampling order (descending); repeats are kept."""
    return np.array(sorted(values, reverse=True), dtype=np.int64)


def _check_sizes(num_train_timesteps: Any, num_inference_steps: Any) -> tuple[int, int]:
    T = as_int(num_train_timesteps, "num_train_timesteps", low=1)
    N = as_int(num_inference_steps, "num_inference_steps", low=1, high=T)
    return T, N


def _check_strict(strict: Any) -> bool:
    if not isinstance(strict, (bool, np.bool_)):
        fail("strict", strict, "expected a bool")
    return bool(strict)


# --------------------------------------------------------------------------------------------------
# the DDIM authors' rules
# --------------------------------------------------------------------------------------------------


def uniform_timesteps(num_train_timesteps: int, num_inference_steps: int, *, strict: bool = True) -> Timesteps:
    r"""The DDIM "linear" (code: ``uniform``) subsequence :math:`\tau_i = c\,i` with the integer stride c = ⌊T/N⌋.

    .. math::

        c = \lfloor T / N \rfloor, \qquad
        \tau = \{0, c, 2c, \dots\} \cap [0, T-1]
        \quad (\text{indices } i c \text{ for } 0 \le i < \lceil T / c \rceil)

    Source: Song et al. 2021 (DDIM), §D.2 ("linear: τ_i = ⌊c i⌋"), as the authors' code evaluates
    it (skip type ``uniform``: ``range(0, T, T // N)``). The sequence starts at index 0 (the papers'
    t = 1), not at T − 1: with N = 1 the only step is index 0.

    Step count. The rule yields :math:`\lceil T/c \rceil` steps. Since :math:`cN \le T`, that is
    exactly N when N divides T and **more than N** otherwise: T = 1000, N = 3 gives c = 333 and
    0, 333, 666, 999 (4 steps); N = 7 gives c = 142 and 8 steps; N = 999 gives all 1000. With
    ``strict=True`` (the default) that raises a ``ValueError`` naming ``num_inference_steps``; with
    ``strict=False`` the rule's sequence is returned as the authors' code runs it (its length then
    differs from N).

    Returns the indices in sampling order (descending).
    """
    T, N = _check_sizes(num_train_timesteps, num_inference_steps)
    strict = _check_strict(strict)
    c = T // N
    steps = list(range(0, T, c))
    if strict and len(steps) != N:
        fail(
            "num_inference_steps",
            num_inference_steps,
            f"the uniform rule range(0, {T}, {T}//{N}={c}) gives {len(steps)} steps, not {N} "
            "(pass strict=False to accept the rule's sequence)",
        )
    return _sampling_order(steps)


def quadratic_timesteps(num_train_timesteps: int, num_inference_steps: int, *, strict: bool = True) -> Timesteps:
    r"""The DDIM "quadratic" (code: ``quad``) subsequence :math:`\tau_i = \lfloor c\,i^2 \rfloor`, topping out at 0.8 T.

    .. math::

        \tau_i = \left\lfloor \Bigl(\tfrac{i}{N-1}\sqrt{0.8\,T}\Bigr)^2 \right\rfloor
               = \left\lfloor \frac{4 T i^2}{5 (N-1)^2} \right\rfloor,
        \qquad i = 0, \dots, N-1

    (N = 1 gives the single index 0). Source: Song et al. 2021 (DDIM), §D.2 ("quadratic: τ_i = ⌊c i²⌋",
    used for CIFAR10); the constant c = 0.8 T / (N − 1)² is the authors' code: ``int(x)`` for x in
    ``linspace(0, sqrt(0.8 T), N) ** 2``. The paper says c is chosen so that the last τ is "close to
    T"; the code stops at ⌊0.8 T⌋, and this function follows the code.

    Exactness. The floor is taken of the exact rational 4 T i² / (5 (N − 1)²). The authors' code
    takes ``int`` of a float64 square, which lands one below where the exact value is an integer and
    the float rounds under it (0.8 is not a binary fraction either). Measured at T = 1000 over
    N = 2, …, 1000: 95 values of N (the first 16, 26, 31, 51, 61) differ, in 374 elements, each one
    below an exact integer; no other difference.

    Repeats. Where c < 1 (N − 1 > √(0.8 T), e.g. N ≥ 30 at T = 1000) the first indices repeat
    (⌊c·0⌋ = ⌊c·1⌋ = 0): the authors' code then runs a no-op step from t to t. With ``strict=True``
    (the default) a repeat raises a ``ValueError`` naming ``num_inference_steps``; with
    ``strict=False`` the rule's sequence is returned with its repeats (non-increasing, length N;
    :func:`check_subsequence` rejects it).

    Returns the indices in sampling order (descending).
    """
    T, N = _check_sizes(num_train_timesteps, num_inference_steps)
    strict = _check_strict(strict)
    if N == 1:
        steps = [0]
    else:
        den = 5 * (N - 1) ** 2
        steps = [(4 * T * i * i) // den for i in range(N)]
    if strict:
        # the rule is non-decreasing in i, so a repeat is an equal neighbour
        repeated = sorted({a for a, b in zip(steps, steps[1:]) if a == b})
        if repeated:
            fail(
                "num_inference_steps",
                num_inference_steps,
                f"the quadratic rule at T={T} repeats timestep(s) {repeated[:6]} "
                f"({N - len(set(steps))} repeats; pass strict=False to accept them)",
            )
    return _sampling_order(steps)


# --------------------------------------------------------------------------------------------------
# improved-diffusion
# --------------------------------------------------------------------------------------------------


def _parse_section_counts(section_counts: Any) -> tuple[list[int] | None, int | None]:
    """(counts, None) for a list or "a,b,c"; (None, N) for "ddimN"."""
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if text.startswith("ddim"):
            digits = text[len("ddim"):]
            if not digits.isdigit():
                fail("section_counts", section_counts, "expected 'ddimN' with N a positive integer")
            n = int(digits)
            if n < 1:
                fail("section_counts", section_counts, "the 'ddimN' step count must be >= 1")
            return None, n
        parts = text.split(",")
        counts: list[int] = []
        for p in parts:
            p = p.strip()
            if not p.isdigit():
                fail("section_counts", section_counts, f"expected comma-separated non-negative integers; bad item {p!r}")
            counts.append(int(p))
        return counts, None
    if (
        isinstance(section_counts, (bytes, Mapping))
        or not isinstance(section_counts, (Sequence, np.ndarray))
        or np.ndim(section_counts) != 1
    ):
        fail("section_counts", section_counts, "expected a sequence of integers or a string 'a,b,c' / 'ddimN'")
    counts = [as_int(c, "section_counts", low=0) for c in section_counts]
    return counts, None


def section_timesteps(num_train_timesteps: int, section_counts: str | Sequence[int]) -> Timesteps:
    r"""improved-diffusion's ``space_timesteps``: evenly spaced steps within each of K equal sections.

    Source: Nichol & Dhariwal 2021, §4 ("evenly spaced real numbers between 1 and T, rounded to the
    nearest integer"), generalised per section by improved-diffusion's ``respace.space_timesteps``.

    ``section_counts`` is a sequence of K non-negative ints ``[n_1, …, n_K]``, or the same as a string
    ``"n_1,n_2,…"``, or the string ``"ddimN"``.

    Sections. The T indices are cut into K consecutive sections; the first T mod K sections have
    ⌊T/K⌋ + 1 indices, the rest ⌊T/K⌋. From section j (start :math:`a_j`, size :math:`m_j`) take

    .. math::

        a_j + \operatorname{round}\!\Bigl(\frac{k\,(m_j - 1)}{n_j - 1}\Bigr), \quad k = 0, \dots, n_j - 1

    (for :math:`n_j = 1` just :math:`a_j`; :math:`n_j = 0` takes nothing), with round-half-to-even
    (Python's ``round``) applied to the exact rational. improved-diffusion accumulates the stride in a
    float (``cur_idx += frac_stride``), so at an exact tie its float may sit off the tie and round
    the other way: measured for a single section at T = 1000, 283 of the counts 1, …, 1000 (the
    first 21, 23, 27, 35) differ, in 687 elements, all at exact ties; the common counts 10, 25, 50,
    100, 250, 500, 1000 agree. A count larger than its section size raises ``ValueError`` naming
    ``section_counts``.

    ``"ddimN"``: ``range(0, T, i)`` for the smallest stride i in 1, …, T − 1 with exactly N elements
    (:math:`\lceil T/i \rceil = N`); if there is none, ``ValueError`` naming ``section_counts``.
    Note that i = T is not tried, so ``"ddim1"`` raises for every T (as upstream).

    improved-diffusion returns a ``set`` (its ``use_timesteps``); here the indices are returned as
    a 1-D int64 array in sampling order (descending, no repeats: sections do not overlap).
    """
    T = as_int(num_train_timesteps, "num_train_timesteps", low=1)
    counts, ddim_n = _parse_section_counts(section_counts)
    if ddim_n is not None:
        # len(range(0, T, i)) = ceil(T/i) does not increase with i, so the first stride with exactly
        # N elements, if any, is the smallest i with ceil(T/i) <= N, i.e. i = ceil(T/N) (same answer
        # as trying 1, 2, … in turn, without a loop that is O(T)).
        stride = max(-(-T // ddim_n), 1)
        if stride <= T - 1 and -(-T // stride) == ddim_n:
            return _sampling_order(range(0, T, stride))
        fail("section_counts", section_counts, f"no integer stride in 1..{T - 1} gives exactly {ddim_n} steps from T={T}")
    assert counts is not None
    if len(counts) == 0:
        fail("section_counts", section_counts, "must not be empty")
    if sum(counts) < 1:
        fail("section_counts", section_counts, "must ask for at least one step")
    K = len(counts)
    size_per, extra = divmod(T, K)
    steps: list[int] = []
    start = 0
    for j, n in enumerate(counts):
        size = size_per + (1 if j < extra else 0)
        if n > size:
            fail("section_counts", section_counts, f"section {j} has {size} timesteps, cannot take {n}")
        if n == 1:
            steps.append(start)
        elif n > 1:
            steps.extend(start + _round_half_even(k * (size - 1), n - 1) for k in range(n))
        start += size
    return _sampling_order(steps)


# --------------------------------------------------------------------------------------------------
# diffusers' timestep_spacing
# --------------------------------------------------------------------------------------------------


def leading_timesteps(num_train_timesteps: int, num_inference_steps: int, steps_offset: int = 0) -> Timesteps:
    r"""diffusers' ``timestep_spacing="leading"``: multiples of ⌊T/N⌋ from 0, reversed, plus ``steps_offset``.

    .. math::

        \tau_k = k \lfloor T/N \rfloor + \text{offset}, \qquad k = N-1, \dots, 0

    Source: diffusers ``DDIMScheduler.set_timesteps`` / ``DDPMScheduler.set_timesteps`` (the rule of
    the DDIM authors' ``uniform`` truncated to exactly N steps); Lin et al. 2023, Table 2. Stable
    Diffusion's configs use ``steps_offset=1``: T = 1000, N = 50 gives 981, 961, …, 1.

    The largest index is :math:`\lfloor T/N \rfloor (N - 1) + \text{offset}`, which exceeds T − 1
    when the offset is positive and that sum reaches T (e.g. N = T with offset 1, where diffusers
    would then index ᾱ out of range). That raises ``ValueError`` naming ``steps_offset``. With
    offset 0 the largest index is at most T − ⌊T/N⌋, so for N < T the rule never starts at the
    noisiest index T − 1 (the flaw Lin et al. 2023, §3.3, point out).

    Returns the indices in sampling order (descending).
    """
    T, N = _check_sizes(num_train_timesteps, num_inference_steps)
    offset = as_int(steps_offset, "steps_offset", low=0)
    stride = T // N
    top = stride * (N - 1) + offset
    if top > T - 1:
        fail(
            "steps_offset",
            steps_offset,
            f"the leading rule's largest timestep {stride}*{N - 1}+{offset}={top} exceeds T-1={T - 1}",
        )
    return np.array([k * stride + offset for k in range(N - 1, -1, -1)], dtype=np.int64)


def trailing_timesteps(num_train_timesteps: int, num_inference_steps: int) -> Timesteps:
    r"""diffusers' ``timestep_spacing="trailing"``: count down from T by T/N, round, subtract 1.

    .. math::

        \tau_k = \operatorname{round}\!\Bigl(T - k\,\frac{T}{N}\Bigr) - 1
               = \operatorname{round}\!\Bigl(\frac{T (N-k)}{N}\Bigr) - 1, \qquad k = 0, \dots, N-1

    with numpy's round-half-to-even, applied to the exact rational. Source: diffusers
    ``set_timesteps`` (``round(arange(T, 0, -T/N)) - 1``); Lin et al. 2023, §3.3 and Table 2. The
    first index is always T − 1 and the last is round(T/N) − 1 ≥ 0; consecutive indices differ by
    at least 1 because T/N ≥ 1, so the sequence is strictly decreasing with exactly N elements.

    Float evaluation upstream (diffusers 0.42, measured over N = 1, …, T): ``arange`` with the float
    step −fl(T/N) returns **N + 1** elements for some N, the extra one rounding to 0 and becoming
    index −1 (T = 1000: 62 values of N, the first 61, 103, 121, 122, 201; T = 100: N = 29, 31, 58,
    62, 97); diffusers then uses −1 as a timestep. Elsewhere the float values differ from the exact
    ones only at exact ties (T = 1000: 296 elements over 111 values of N, e.g. N = 48). This
    function returns the N elements of the rule.

    Returns the indices in sampling order (descending).
    """
    T, N = _check_sizes(num_train_timesteps, num_inference_steps)
    return np.array([_round_half_even(T * (N - k), N) - 1 for k in range(N)], dtype=np.int64)


def linspace_timesteps(num_train_timesteps: int, num_inference_steps: int) -> Timesteps:
    r"""diffusers' ``timestep_spacing="linspace"``: N evenly spaced reals from 0 to T − 1, rounded, reversed.

    .. math::

        \tau_k = \operatorname{round}\!\Bigl(\frac{k\,(T-1)}{N-1}\Bigr), \qquad k = N-1, \dots, 0

    (N = 1 gives the single index 0, as ``linspace(0, T-1, 1) == [0]``), with round-half-to-even
    applied to the exact rational. Source: diffusers ``set_timesteps``
    (``round(linspace(0, T-1, N))[::-1]``); Lin et al. 2023, Table 2. The first index is T − 1
    (for N ≥ 2), the last 0; the stride (T − 1)/(N − 1) ≥ 1 makes the indices distinct.
    diffusers' float values differ from the exact ones only at exact ties (measured, T = 1000:
    146 elements over 92 values of N, the first 27, 31, 47).

    Returns the indices in sampling order (descending).
    """
    T, N = _check_sizes(num_train_timesteps, num_inference_steps)
    if N == 1:
        return np.zeros(1, dtype=np.int64)
    return np.array([_round_half_even(k * (T - 1), N - 1) for k in range(N - 1, -1, -1)], dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# using a subsequence
# --------------------------------------------------------------------------------------------------


def check_subsequence(timesteps: ArrayLike, num_train_timesteps: int, name: str = "timesteps") -> Timesteps:
    r"""Validate a sampling-order subsequence: 1-D, non-empty, integer indices in [0, T − 1], strictly decreasing.

    .. math::

        T - 1 \ge \tau_S > \tau_{S-1} > \dots > \tau_1 \ge 0

    (given in the order ``[τ_S, …, τ_1]``). A repeated index and an ascending pair are reported
    separately; every error is a ``ValueError`` naming ``name`` (default ``timesteps``).
    Returns the indices as an int64 array.
    """
    T = as_int(num_train_timesteps, "num_train_timesteps", low=1)
    if np.ndim(timesteps) != 1:
        fail(name, timesteps, f"must be 1-D, got shape {np.shape(timesteps)}")
    if np.size(timesteps) == 0:
        fail(name, timesteps, "must not be empty")
    ts = as_timesteps(timesteps, T, name)
    diff = np.diff(ts)
    if np.any(diff == 0):
        i = int(np.argmax(diff == 0))
        fail(name, timesteps, f"repeats timestep {int(ts[i])} (positions {i} and {i + 1})")
    if np.any(diff > 0):
        i = int(np.argmax(diff > 0))
        fail(
            name,
            timesteps,
            f"must be strictly decreasing (sampling order); {int(ts[i])} at position {i} "
            f"is followed by {int(ts[i + 1])}",
        )
    return ts


def timestep_pairs(timesteps: ArrayLike, num_train_timesteps: int | None = None) -> list[tuple[int, int]]:
    r"""The (t, t_prev) pairs a strided sampler steps through: each index and the next one, then the data.

    .. math::

        (\tau_S, \tau_{S-1}),\ (\tau_{S-1}, \tau_{S-2}),\ \dots,\ (\tau_1, -1)

    for ``timesteps = [τ_S, …, τ_1]`` in sampling order. ``-1`` is the clean data x₀ with ᾱ = 1
    (``docs/conventions.md``). This is the DDIM convention of the authors' code
    (``seq_next = [-1] + seq[:-1]``; Song et al. 2021, eq. 12 with :math:`\bar\alpha_{\tau_0} = 1`),
    of improved-diffusion's respaced sampler, and of diffusers' ``DDPMScheduler.previous_timestep``
    with ``num_inference_steps``. diffusers' ``DDIMScheduler.step`` instead takes
    ``t_prev = t - T // N``: that is the next element for ``leading`` spacing but not in general
    (with ``trailing`` it can skip or overlap indices), and with ``set_alpha_to_one=False`` its final
    step goes to ᾱ at index 0, not to the data.

    The sequence must be strictly decreasing and non-negative; if ``num_train_timesteps`` is given,
    also at most T − 1 (see :func:`check_subsequence`). Returns Python ints.
    """
    # Without T only the lower end of the range can be checked: use an upper bound no index reaches.
    T = _NO_UPPER_BOUND if num_train_timesteps is None else num_train_timesteps
    ts = check_subsequence(timesteps, T)
    values = [int(v) for v in ts]
    return list(zip(values, values[1:] + [-1]))


def respaced_betas(betas: ArrayLike, timesteps: ArrayLike) -> NDArray[np.float64]:
    r"""The β′ of the schedule respaced to a subsequence τ (in ascending order):

    .. math::

        \beta'_i = 1 - \frac{\bar\alpha_{\tau_i}}{\bar\alpha_{\tau_{i-1}}}, \qquad
        i = 1, \dots, S, \quad \bar\alpha_{\tau_0} = 1

    so that :math:`\prod_{j \le i} (1 - \beta'_j) = \bar\alpha_{\tau_i}`: the respaced chain has
    exactly the marginals :math:`q(x_{\tau_i} \mid x_0)` of the original one.

    Source: Nichol & Dhariwal 2021, §4 ("Improving Sampling Speed"); improved-diffusion's
    ``SpacedDiffusion`` (respace.py); diffusers' ``DDPMScheduler.step`` with ``num_inference_steps``
    uses the same β′ (``1 - alpha_prod_t / alpha_prod_t_prev``).

    ``timesteps`` are 0-based indices in [0, T − 1], in any order (improved-diffusion passes a set,
    a sampler a descending array); they are sorted ascending here and must be distinct. Index
    convention of the result: **ascending**, ``result[i]`` belongs to the i-th smallest index, so
    ``result[0] = 1 - ᾱ[τ_min]``; ``result[::-1]`` lines up with a sampling-order ``timesteps``.

    Accuracy: each β′ is :func:`~ddspec.reference.alphas.one_minus_alpha_bar_ratio`, the
    double-double ratio subtracted from 1 without cancellation and rounded once; with the full
    sequence 0, …, T − 1 it reproduces ``betas``.
    """
    b = as_betas(betas)
    T = b.size
    if np.ndim(timesteps) != 1:
        fail("timesteps", timesteps, f"must be 1-D, got shape {np.shape(timesteps)}")
    if np.size(timesteps) == 0:
        fail("timesteps", timesteps, "must not be empty")
    ts = as_timesteps(timesteps, T, "timesteps")
    tau = np.sort(ts)
    dup = np.diff(tau) == 0
    if np.any(dup):
        fail("timesteps", timesteps, f"must be distinct; timestep {int(tau[int(np.argmax(dup))])} repeats")
    tau_prev = np.concatenate([[-1], tau[:-1]]).astype(np.int64)
    return one_minus_alpha_bar_ratio(b, tau, tau_prev)


# --------------------------------------------------------------------------------------------------
# by name
# --------------------------------------------------------------------------------------------------

SPACINGS: Mapping[str, Callable[[int, int], Timesteps]] = MappingProxyType(
    {
        "leading": leading_timesteps,
        "trailing": trailing_timesteps,
        "linspace": linspace_timesteps,
        "uniform": uniform_timesteps,
        "quadratic": quadratic_timesteps,
    }
)
"""Name → rule ``f(num_train_timesteps, num_inference_steps)`` (defaults: ``steps_offset=0``, ``strict=True``)."""


def get_timesteps(
    spacing: str, num_train_timesteps: int, num_inference_steps: int, steps_offset: int = 0
) -> Timesteps:
    r"""The subsequence of the rule named ``spacing`` (a key of :data:`SPACINGS`), in sampling order.

    ``"leading"``, ``"trailing"``, ``"linspace"`` are diffusers' ``timestep_spacing`` values;
    ``"uniform"`` and ``"quadratic"`` the DDIM authors' skip types (strict: they raise where the rule
    cannot give N distinct steps). ``steps_offset`` applies to ``"leading"`` only, as in diffusers;
    diffusers silently ignores it for the other spacings, here a non-zero offset with another
    spacing raises ``ValueError`` naming ``steps_offset``. An unknown name raises ``ValueError``
    naming ``spacing``.
    """
    if not isinstance(spacing, str) or spacing not in SPACINGS:
        fail("spacing", spacing, f"unknown timestep spacing; expected one of {sorted(SPACINGS)}")
    offset = as_int(steps_offset, "steps_offset", low=0)
    if spacing == "leading":
        return leading_timesteps(num_train_timesteps, num_inference_steps, offset)
    if offset != 0:
        fail("steps_offset", steps_offset, f"applies only to spacing 'leading', not {spacing!r}")
    return SPACINGS[spacing](num_train_timesteps, num_inference_steps)
