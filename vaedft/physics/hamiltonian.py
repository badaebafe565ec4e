"""The discretised single-particle Hamiltonian ``H = -1/2 Laplacian + V`` (units hbar = m = a0 = 1).

Two independent representations are provided:

* :class:`KineticOperator` applies ``T`` (and ``(T + s)^-1``) to a batch of fields by
  FFT, using the finite-difference symbol of the stencil.  This is exact for the
  periodic grids.  For hard walls, the odd ghost-point rule ``psi(-x) = -psi(x)``
  about each wall is the same as extending the field oddly to a periodic box of
  ``2 (n + 1)`` points, so the same FFT code serves every boundary and backend.
* :func:`sparse_hamiltonian` builds the matrix directly from the stencil and the
  ghost-point index rules, without any FFT.  It is the reference the tests and the
  ``eigsh`` baseline use.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .backend import resolve_device
from .grid import Grid
from .stencils import kinetic_symbol, second_derivative_weights

__all__ = ["KineticOperator", "kinetic_matrix_1d", "sparse_hamiltonian"]


class KineticOperator:
    """Batched kinetic energy ``T = -1/2 Laplacian`` on a :class:`Grid`, applied by FFT in torch.

    Args:
        grid: the grid (any boundary, any ``ndim``).
        device: torch device (or backend name, see :func:`resolve_device`).
        dtype: real dtype of the fields (float64 by default).
    """

    def __init__(self, grid: Grid, device: torch.device | str = "cpu", dtype=torch.float64) -> None:
        self.grid = grid
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = dtype
        self.hard_wall = grid.boundary == "hard_wall"
        period = 2 * (grid.n + 1) if self.hard_wall else grid.n
        self.ext_shape = (period,) * grid.ndim
        self.dims = tuple(range(-grid.ndim, 0))
        symbol = np.zeros((), dtype=np.float64)
        for a in range(grid.ndim):
            if a == grid.ndim - 1:  # rfft layout on the last axis
                q = np.arange(period // 2 + 1, dtype=np.float64)
            else:
                q = np.fft.fftfreq(period, d=1.0 / period)
            t = kinetic_symbol(2.0 * np.pi * q / period, grid.stencil_points) / grid.dx**2
            shape = [1] * grid.ndim
            shape[a] = q.size
            symbol = symbol + t.reshape(shape)
        #: Eigenvalues of T on the (extended) periodic grid, rfft layout, in E0.
        self.symbol = torch.as_tensor(symbol, dtype=dtype, device=self.device)
        #: Largest eigenvalue of T: an upper bound on its spectrum.
        self.max_eigenvalue = float(symbol.max())

    def _extend(self, psi: torch.Tensor) -> torch.Tensor:
        """Odd extension about both walls on every axis: ``(B, n, ..)`` -> ``(B, 2(n+1), ..)``."""
        for dim in self.dims:
            zero = torch.zeros_like(psi.narrow(dim, 0, 1))
            psi = torch.cat([zero, psi, zero, -psi.flip(dim)], dim=dim)
        return psi

    def _filter(self, psi: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
        ext = self._extend(psi) if self.hard_wall else psi
        spec = torch.fft.rfftn(ext, dim=self.dims)
        out = torch.fft.irfftn(spec * multiplier, s=self.ext_shape, dim=self.dims)
        if self.hard_wall:
            for dim in self.dims:
                out = out.narrow(dim, 1, self.grid.n)
        return out

    def apply(self, psi: torch.Tensor) -> torch.Tensor:
        """``T psi`` for a batch ``psi`` of shape ``(B, *grid.shape)``; returns the same shape."""
        return self._filter(psi, self.symbol)

    def expectation(self, psi: torch.Tensor) -> torch.Tensor:
        """``<psi| T |psi> = dx^d sum_x psi (T psi)`` per instance: ``(B, *grid)`` -> ``(B,)``, in E0."""
        return self.grid.cell_volume * (psi * self.apply(psi)).flatten(1).sum(1)

    def solve_shifted(self, rhs: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``(T + shift)^-1 rhs``; ``shift`` has shape ``(B,)`` and must be > 0."""
        shift = shift.reshape((-1,) + (1,) * self.grid.ndim)
        return self._filter(rhs, 1.0 / (self.symbol + shift))


def kinetic_matrix_1d(n: int, dx: float, boundary: str, stencil_points: int) -> sp.csr_matrix:
    """``-1/2 d2/dx2`` as a sparse ``(n, n)`` matrix, built from the stencil's taps.

    Periodic grids wrap indices modulo ``n``.  Hard walls use odd ghost points: the
    value at a mirror image across a wall is minus the value at the interior point,
    and the wall points themselves carry zero.
    """
    w = second_derivative_weights(stencil_points) * (-0.5 / dx**2)
    m = (stencil_points - 1) // 2
    mat = sp.lil_matrix((n, n), dtype=np.float64)
    for i in range(n):
        for off in range(-m, m + 1):
            t = i + off
            if boundary == "periodic":
                mat[i, t % n] += w[off + m]
                continue
            r = (t + 1) % (2 * (n + 1))  # physical position index, walls at 0 and n + 1
            if r in (0, n + 1):
                continue
            if r <= n:
                mat[i, r - 1] += w[off + m]
            else:
                mat[i, 2 * (n + 1) - r - 1] -= w[off + m]
    return mat.tocsr()


def sparse_hamiltonian(grid: Grid, potential: np.ndarray) -> sp.csr_matrix:
    """``H = T + diag(V)`` for one potential of shape ``grid.shape``, as a sparse matrix.

    The index order is C order of ``grid.shape`` (so ``psi.ravel()`` is the vector).
    """
    potential = np.asarray(potential, dtype=np.float64)
    if potential.shape != grid.shape:
        raise ValueError(f"potential has shape {potential.shape}, expected {grid.shape}")
    k1 = kinetic_matrix_1d(grid.n, grid.dx, grid.boundary, grid.stencil_points)
    t = k1
    for _ in range(grid.ndim - 1):
        t = sp.kronsum(k1, t, format="csr")  # kronsum(A, B) = kron(I, A) + kron(B, I)
    return (t + sp.diags(potential.ravel())).tocsr()
