"""Finite-difference stencils for d2/dx2: exact coefficients, moments, convergence order, symbol.

Every expected value here comes from an independent source: the closed form of the
maximal-order central stencil, textbook tables (Fornberg 1988), the moment conditions
that define the stencil, or the convergence of the stencil on an analytic function.
"""

from __future__ import annotations

from fractions import Fraction
from math import factorial

import numpy as np
import pytest

from vaedft.physics.stencils import (
    kinetic_symbol,
    second_derivative_coefficients,
    second_derivative_weights,
)

POINTS = (3, 5, 7, 9, 11)


def closed_form_coefficients(points: int) -> list[Fraction]:
    """Maximal-order central second-derivative stencil in closed form (Fornberg):

    ``c_0 = -2 sum_{k=1}^m 1/k^2``,
    ``c_k = 2 (-1)^(k+1) (m!)^2 / (k^2 (m-k)! (m+k)!)``.
    """
    m = (points - 1) // 2
    c0 = -2 * sum(Fraction(1, k * k) for k in range(1, m + 1))
    ck = [
        Fraction(2 * (-1) ** (k + 1) * factorial(m) ** 2, k * k * factorial(m - k) * factorial(m + k))
        for k in range(1, m + 1)
    ]
    return [c0, *ck]


# Textbook tables (Fornberg 1988, Table 1), written as (c_m, ..., c_1, c_0).
TEXTBOOK = {
    3: ["1", "-2"],
    5: ["-1/12", "4/3", "-5/2"],
    7: ["1/90", "-3/20", "3/2", "-49/18"],
    9: ["-1/560", "8/315", "-1/5", "8/5", "-205/72"],
    11: ["1/3150", "-5/1008", "5/126", "-5/21", "5/3", "-5269/1800"],
}


@pytest.mark.parametrize("points", POINTS)
def test_coefficients_equal_closed_form_exactly(points):
    got = second_derivative_coefficients(points)
    assert all(isinstance(v, Fraction) for v in got)
    assert list(got) == closed_form_coefficients(points)


@pytest.mark.parametrize("points", POINTS)
def test_coefficients_equal_textbook_table(points):
    table = [Fraction(s) for s in TEXTBOOK[points]]
    got = second_derivative_coefficients(points)
    assert list(got) == table[::-1]
    # the full symmetric float weights (c_-m .. c_m)
    w = second_derivative_weights(points)
    assert w.shape == (points,)
    assert w.dtype == np.float64
    np.testing.assert_array_equal(w, np.array([float(v) for v in table + table[-2::-1]]))


def test_nine_point_stencil_literal():
    w = second_derivative_weights(9)
    expected = [-1 / 560, 8 / 315, -1 / 5, 8 / 5, -205 / 72, 8 / 5, -1 / 5, 8 / 315, -1 / 560]
    np.testing.assert_allclose(w, expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("points", POINTS)
def test_moment_conditions(points):
    """``sum_j c_j j^(2k) = 2 delta_{k1}`` for ``k = 0..m``; odd moments vanish by symmetry;
    the first non-vanishing error moment is ``sum_j c_j j^(2m+2) = 2 (-1)^(m+1) (m!)^2``
    (apply the stencil to ``x^2 prod_{j=1}^m (x^2 - j^2)``, which vanishes on every tap)."""
    m = (points - 1) // 2
    c = second_derivative_coefficients(points)
    full = {j: c[abs(j)] for j in range(-m, m + 1)}
    assert sum(full.values()) == 0  # constants have zero second derivative
    for k in range(0, m + 1):
        assert sum(cj * Fraction(j) ** (2 * k) for j, cj in full.items()) == (2 if k == 1 else 0)
    for k in range(0, m + 2):
        assert sum(cj * Fraction(j) ** (2 * k + 1) for j, cj in full.items()) == 0
    lead = sum(cj * Fraction(j) ** (2 * m + 2) for j, cj in full.items())
    assert lead == 2 * (-1) ** (m + 1) * factorial(m) ** 2
    # float weights: sum to zero to rounding
    assert abs(second_derivative_weights(points).sum()) < 1e-13


def _stencil_error(points: int, n: int) -> float:
    """Max error of the stencil applied (periodically, by np.roll) to exp(sin x) on [0, 2 pi)."""
    x = 2.0 * np.pi * np.arange(n) / n
    dx = 2.0 * np.pi / n
    f = np.exp(np.sin(x))
    exact = f * (np.cos(x) ** 2 - np.sin(x))
    w = second_derivative_weights(points)
    m = (points - 1) // 2
    approx = sum(w[j + m] * np.roll(f, -j) for j in range(-m, m + 1)) / dx**2
    return float(np.max(np.abs(approx - exact)))


# Grids in the asymptotic regime and above roundoff (the 11-point stencil reaches roundoff
# by n ~ 96, so it uses coarser grids).
CONVERGENCE_GRIDS = {3: (64, 128, 256), 5: (64, 128, 256), 7: (64, 96, 128), 9: (48, 64, 96), 11: (32, 48, 64)}


@pytest.mark.parametrize("points", POINTS)
def test_convergence_order(points):
    ns = np.array(CONVERGENCE_GRIDS[points], dtype=float)
    errs = np.array([_stencil_error(points, int(n)) for n in ns])
    assert np.all(errs > 1e-11), "errors must be above roundoff for the fit to mean anything"
    slope = np.polyfit(np.log(2 * np.pi / ns), np.log(errs), 1)[0]
    # orders of neighbouring stencils differ by 2, so +-0.4 separates them
    assert abs(slope - (points - 1)) < 0.4, (points, slope, errs)


@pytest.mark.parametrize("points", POINTS)
def test_kinetic_symbol_matches_cosine_series(points):
    c = [float(v) for v in closed_form_coefficients(points)]
    theta = np.linspace(-np.pi, np.pi, 101)
    ref = -0.5 * (c[0] + 2 * sum(c[j] * np.cos(j * theta) for j in range(1, len(c))))
    got = kinetic_symbol(theta, points)
    assert got.shape == theta.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)
    # 2-D input keeps its shape
    assert kinetic_symbol(theta.reshape(1, -1, 1), points).shape == (1, 101, 1)


def test_three_point_symbol_is_one_minus_cos():
    theta = np.linspace(0, np.pi, 33)
    np.testing.assert_allclose(kinetic_symbol(theta, 3), 1.0 - np.cos(theta), rtol=0, atol=1e-15)


@pytest.mark.parametrize("points", POINTS)
def test_kinetic_symbol_small_k_limit(points):
    """``S(t) = t^2/2 - (m!)^2 t^(2m+2) / (2m+2)! + O(t^(2m+4))`` (from the moment identity)."""
    m = (points - 1) // 2
    tiny = np.array([1e-4, 1e-3, 3e-3])
    s = kinetic_symbol(tiny, points)
    np.testing.assert_allclose(s, tiny**2 / 2, rtol=1e-5)
    # leading correction: coefficient (m!)^2/(2m+2)!, checked where it dominates roundoff
    theta = {1: 0.05, 2: 0.1, 3: 0.1, 4: 0.2, 5: 0.2}[m]
    s = float(kinetic_symbol(np.array(theta), points))
    coef = (theta**2 / 2 - s) / theta ** (2 * m + 2)
    assert coef == pytest.approx(factorial(m) ** 2 / factorial(2 * m + 2), rel=0.03)


@pytest.mark.parametrize("points", POINTS)
def test_kinetic_symbol_nonnegative_and_even(points):
    theta = np.linspace(0.0, np.pi, 2001)
    s = kinetic_symbol(theta, points)
    assert s[0] == pytest.approx(0.0, abs=1e-14)
    assert np.all(s[1:] > 0)
    # even and 2 pi periodic
    np.testing.assert_allclose(kinetic_symbol(-theta, points), s, atol=1e-13)
    np.testing.assert_allclose(kinetic_symbol(theta + 2 * np.pi, points), s, atol=1e-12)
    # higher order tracks t^2/2 further: at t = pi/4 the error shrinks with the width
    if points > 3:
        t = np.pi / 4
        err_lo = abs(kinetic_symbol(np.array(t), points - 2) - t * t / 2)
        err_hi = abs(kinetic_symbol(np.array(t), points) - t * t / 2)
        assert err_hi < err_lo


@pytest.mark.parametrize("bad", [1, 2, 4, 10, 0, -3, 3.0, 5.5, "5", None, True])
def test_bad_points_raise(bad):
    with pytest.raises(ValueError, match="odd integer"):
        second_derivative_coefficients(bad)
    with pytest.raises(ValueError, match="odd integer"):
        second_derivative_weights(bad)
    with pytest.raises(ValueError, match="odd integer"):
        kinetic_symbol(np.array([0.1]), bad)


def test_numpy_integer_points_accepted():
    assert second_derivative_coefficients(np.int64(7)) == second_derivative_coefficients(7)
