"""Central finite-difference stencils for the second derivative.

The coefficients are derived exactly, in rational arithmetic, from the moment
conditions of a symmetric stencil; nothing is typed in.  A stencil of
``points = 2m + 1`` taps is exact for polynomials of degree ``2m + 1`` and has a
truncation error of order ``dx**(2m)``.

Conventions: ``coefficients[j]`` multiplies ``f(x + j*dx)`` for ``j = 0..m``
(the stencil is symmetric, ``c[-j] == c[j]``); the derivative is
``f''(x) ~ sum_j c_j f(x + j dx) / dx**2``.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numpy as np

__all__ = [
    "second_derivative_coefficients",
    "second_derivative_weights",
    "kinetic_symbol",
]


def _validate_points(points: int) -> int:
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)):
        raise ValueError(f"stencil points must be an odd integer >= 3, got {points!r}")
    points = int(points)
    if points < 3 or points % 2 == 0:
        raise ValueError(f"stencil points must be an odd integer >= 3, got {points}")
    return points


@cache
def second_derivative_coefficients(points: int) -> tuple[Fraction, ...]:
    """Exact coefficients ``(c_0, c_1, ..., c_m)`` of the central second derivative.

    Args:
        points: stencil width ``2m + 1`` (odd, >= 3).

    Returns:
        Tuple of ``m + 1`` :class:`fractions.Fraction`: ``c_0`` for the centre and
        ``c_j`` for the symmetric pair at ``+-j``.

    The symmetric stencil is fixed by the even-moment conditions
    ``sum_{j=-m}^{m} c_j j**(2k) = 2 * delta_{k,1}`` for ``k = 0..m`` (odd moments
    vanish by symmetry), solved here by Gaussian elimination over the rationals.
    """
    m = (_validate_points(points) - 1) // 2
    # Unknowns: c_0, c_1..c_m.  Row k: c_0*[k==0] + sum_j 2 c_j j^(2k) = 2 [k==1].
    rows = []
    for k in range(m + 1):
        row = [Fraction(1 if k == 0 else 0)]
        row += [Fraction(2 * j ** (2 * k)) for j in range(1, m + 1)]
        row.append(Fraction(2 if k == 1 else 0))
        rows.append(row)
    n = m + 1
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        piv = rows[col][col]
        rows[col] = [v / piv for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                f = rows[r][col]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[col], strict=True)]
    return tuple(rows[i][n] for i in range(n))


def second_derivative_weights(points: int) -> np.ndarray:
    """Full symmetric stencil ``(c_-m, ..., c_0, ..., c_m)`` as float64, shape ``(points,)``."""
    c = [float(v) for v in second_derivative_coefficients(points)]
    return np.array(c[:0:-1] + c, dtype=np.float64)


def kinetic_symbol(k_dx: np.ndarray, points: int) -> np.ndarray:
    """Eigenvalue of ``T = -1/2 d2/dx2`` (times ``dx**2``) on the plane wave ``exp(i k x)``.

    Args:
        k_dx: wavenumber times grid spacing, any shape (radians per grid step).
        points: stencil width.

    Returns:
        ``-(1/2) * (c_0 + 2 sum_j c_j cos(j k dx))``, same shape as ``k_dx``; divide
        by ``dx**2`` to get energies in E0.  It is >= 0 and tends to ``(k dx)**2 / 2``
        for small ``k dx``.
    """
    c = second_derivative_coefficients(points)
    k_dx = np.asarray(k_dx, dtype=np.float64)
    s = np.full_like(k_dx, float(c[0]))
    for j in range(1, len(c)):
        s = s + 2.0 * float(c[j]) * np.cos(j * k_dx)
    return -0.5 * s
