"""The exact universal functional of one particle on a testbed grid: :class:`ExactKineticFunctional`.

For a single particle the ground state is nodeless, so the universal functional is the von
Weizsaecker kinetic energy ``F[n] = <sqrt(n)| T |sqrt(n)>`` with the testbed's finite-difference
kinetic operator ``T``.  It is a drop-in replacement for the DL functional (same call, a grid
``config``), so minimising with it must reach the exact ground state of ``H = T + V`` on that
grid: the tests of :mod:`vaedft.minimize` use it as a perfectly trained functional.

:class:`GridSpec` is the grid description it carries as ``config`` (``ndim``, ``grid_n``, ``dx``,
``boundary``), the same fields the model configs have; :mod:`vaedft.minimize` reads it from either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .grid import Grid, GridFields
from .hamiltonian import KineticOperator

__all__ = ["ExactKineticFunctional", "GridSpec"]


@dataclass(frozen=True)
class GridSpec(GridFields):
    """What the minimization engine needs to know of a model's grid (duck-types the model configs).

    A :class:`~vaedft.physics.grid.Grid` without its stencil; :class:`ExactKineticFunctional`
    carries one as its ``config``, like the DL models.
    """

    ndim: int
    grid_n: int
    dx: float
    boundary: str

    @property
    def box_length(self) -> float:
        return self.dx * (self.grid_n + 1 if self.boundary == "hard_wall" else self.grid_n)

    @classmethod
    def from_grid(cls, grid: Grid) -> GridSpec:
        return cls(ndim=grid.ndim, grid_n=grid.n, dx=grid.dx, boundary=grid.boundary)


class ExactKineticFunctional(nn.Module):
    """The exact universal functional of a single particle: the von Weizsaecker kinetic energy.

    For one particle the ground state is nodeless, ``psi = sqrt(n)``, so
    ``F[n] = <sqrt(n)| T |sqrt(n)> = dx^d sum_i psi_i (T psi)_i`` with ``T`` the testbed's
    finite-difference kinetic operator (:class:`~vaedft.physics.hamiltonian.KineticOperator`,
    applied by FFT in torch, differentiable).  Minimising ``F[n] + dx^d sum V n`` over normalised
    ``n >= 0`` gives exactly the ground state of ``H = T + V`` on that grid, so this module stands
    in for a perfectly trained DL functional: any error of a minimisation with it is the
    engine's.  Its functional derivative is ``(T psi) / psi``.

    ``psi = sqrt(max(n, floor))``: below ``floor`` the derivative is cut to zero instead of
    blowing up like ``1 / sqrt(n)`` (where the descent has clamped ``n`` to 0).

    Args:
        grid: the testbed grid (``testbed.grid``), including its stencil.
        floor: smallest density entering the square root.

    Call it like the DL functional: ``F = f(n, validate=False)``, ``n`` of shape ``(B, *grid)``,
    returns ``(B,)`` in the dtype of ``n``.
    """

    def __init__(self, grid: Grid, floor: float = 1e-30) -> None:
        super().__init__()
        if not isinstance(grid, Grid):
            raise ValueError(f"ExactKineticFunctional needs a vaedft.physics.Grid, got {type(grid).__name__}")
        self.grid = grid
        self.config = GridSpec.from_grid(grid)
        self.floor = float(floor)
        self._ops: dict[tuple, KineticOperator] = {}

    def kinetic(self, like: torch.Tensor) -> KineticOperator:
        """The kinetic operator on ``like``'s device and dtype (cached)."""
        key = (like.device, like.dtype)
        if key not in self._ops:
            self._ops[key] = KineticOperator(self.grid, like.device, like.dtype)
        return self._ops[key]

    def forward(self, n: torch.Tensor, *, validate: bool = False) -> torch.Tensor:
        shape = self.config.grid_shape
        if not isinstance(n, torch.Tensor) or n.dim() != len(shape) + 1 or tuple(n.shape[1:]) != shape:
            got = tuple(n.shape) if isinstance(n, torch.Tensor) else type(n).__name__
            raise ValueError(f"densities must have shape (B, {', '.join(map(str, shape))}), got {got}")
        return self.kinetic(n).expectation(torch.sqrt(n.clamp_min(self.floor)))

