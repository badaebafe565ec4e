"""Uniform grids and their placement conventions.

Two boundary conditions are used by the testbeds:

* ``"hard_wall"``: walls at ``x = 0`` and ``x = L``; ``n`` interior points
  ``x_i = i * L / (n + 1)``, ``i = 1..n``, so ``dx = L / (n + 1)``.  The wave function
  vanishes on the walls and the stencil reaches beyond them through odd ghost
  points, ``psi(-x) = -psi(x)`` about each wall.
* ``"periodic"``: ``x_i = i * L / n``, ``i = 0..n-1``, ``dx = L / n``.

Integrals are sums: ``int f d^dx -> dx**d * sum_i f_i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BOUNDARIES", "Grid", "GridFields"]

BOUNDARIES = ("hard_wall", "periodic")


class GridFields:
    """Derived sizes of anything that carries ``ndim``, ``grid_n`` and ``dx`` (the model configs, the
    minimizer's grid spec): one place for the shape of a field and the weight of a grid point."""

    ndim: int
    grid_n: int
    dx: float

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Shape of one field, ``(grid_n,) * ndim``."""
        return (self.grid_n,) * self.ndim

    @property
    def cell_volume(self) -> float:
        """``dx**ndim``, the weight of one grid point in an integral."""
        return self.dx**self.ndim


@dataclass(frozen=True)
class Grid:
    """A cubic grid of ``n`` points per axis in ``ndim`` dimensions.

    Attributes:
        box_length: L, the box side, in a0.
        n: points per axis.
        ndim: 1 or 3 (any positive integer works).
        boundary: ``"hard_wall"`` or ``"periodic"``.
        stencil_points: width of the central second-derivative stencil.
    """

    box_length: float
    n: int
    ndim: int
    boundary: str
    stencil_points: int

    def __post_init__(self) -> None:
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"unknown boundary {self.boundary!r}; expected one of {BOUNDARIES}")
        if not (self.box_length > 0 and np.isfinite(self.box_length)):
            raise ValueError(f"box_length must be positive and finite, got {self.box_length}")
        if self.n < 2 or self.ndim < 1:
            raise ValueError(f"need n >= 2 points and ndim >= 1, got n={self.n}, ndim={self.ndim}")
        if self.stencil_points < 3 or self.stencil_points % 2 == 0:
            raise ValueError(f"stencil_points must be odd and >= 3, got {self.stencil_points}")
        reach = (self.stencil_points - 1) // 2
        period = self.n if self.boundary == "periodic" else 2 * (self.n + 1)
        if reach >= period:
            raise ValueError(f"{self.stencil_points}-point stencil is wider than the grid (n={self.n})")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one field on this grid, ``(n,) * ndim``."""
        return (self.n,) * self.ndim

    @property
    def dx(self) -> float:
        """Grid spacing in a0."""
        if self.boundary == "hard_wall":
            return self.box_length / (self.n + 1)
        return self.box_length / self.n

    @property
    def cell_volume(self) -> float:
        """``dx**ndim``: the weight of one point in an integral."""
        return self.dx**self.ndim

    @property
    def points(self) -> np.ndarray:
        """Coordinates along one axis, shape ``(n,)``, in a0."""
        i = np.arange(self.n, dtype=np.float64)
        if self.boundary == "hard_wall":
            i = i + 1.0
        return i * self.dx

    def integrate(self, f: np.ndarray) -> np.ndarray:
        """``int f`` over the box for a batch of fields ``(B, *shape)``; returns ``(B,)``."""
        axes = tuple(range(-self.ndim, 0))
        return self.cell_volume * f.sum(axis=axes)
