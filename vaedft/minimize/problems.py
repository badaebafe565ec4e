"""What is minimised: the energies, their gradients or step directions, and the constraints.

A *problem* gives, for a subset of rows ``x`` ``(A, P)`` with their potentials, the energy
``(A,)``, the direction ``G`` the optimizer steps along ``(A, P)`` and its norm, plus the
constraint applied after every step (:meth:`_Problem.constrain`); the optimizers
(:mod:`vaedft.minimize.optimizers`) and the loop (:mod:`vaedft.minimize.engine`) know nothing
else of it.

* Latent methods (:class:`_LatentProblem`; rows are latent points ``z``, ``P = l_d``): the latent
  energy of eq. (12), ``E[z] = F_w[D(z)] + dx^d sum_i V_i D(z)_i`` (:func:`latent_energy`),
  differentiated by autograd with both networks in eval mode.  ``G = dE/dz``; its norm is the
  Euclidean one.  No constraint.
* ``density-gd`` (:class:`_DensityProblem`; rows are flattened densities, ``P`` = grid points),
  the density-space baseline of eq. (10): ``n <- n - eta (dF/dn + V - mu_t)`` with ``dF/dn`` the
  functional derivative (autograd of F divided by ``dx^d``) and ``mu_t`` the grid mean of
  ``dF/dn + V``, so the step keeps ``dx^d sum n`` exactly (a projected gradient); then
  ``n <- max(n, 0)`` and renormalisation (the constraint).
  ``precondition="kinetic"`` (not in the paper, off by default) replaces the step direction by
  ``psi (T3 + c)^-1 [psi (dF/dn + V - mu)]`` with ``psi = sqrt(n)``, ``T3`` the 3-point kinetic
  operator on the models' grid (applied by FFT; any operator spectrally equivalent to ``T``
  serves), ``c = precondition_shift`` and ``mu = <psi, P psi g> / <psi, P psi>`` fixed by
  normalisation (the direction is positive semi-definite, so still a descent direction).
  Why: plain eq. (10) is hopelessly ill-conditioned on the testbed grids even for the *exact*
  functional.  Its Hessian grows like ``T_max / n_min`` (n is small near hard walls), about 1e8
  times its smallest eigenvalue on gaussian1d: measured with
  :class:`~vaedft.physics.kinetic.ExactKineticFunctional`, ``eta = 1e-8`` is stable but moves the
  energy by 2e-4 E0 in 2000 steps and ``eta = 1e-6`` blows up.  With the kinetic preconditioner
  (for the exact functional this is preconditioned inverse iteration in ``psi``), ``eta = 1``
  reaches the ground state to 1e-13 E0 in 25-50 steps on gaussian1d and 40-250 on speckle1d
  (``c`` = 0.2-1).
* ``pca-gd`` (:class:`_DensityProblem` with a basis) -- the same projected descent restricted to
  the span of the leading ``n_components`` principal components ``U`` of the training densities
  (:func:`principal_components`; Snyder et al. 2015 style): ``n <- n - eta U U^T (dF/dn + V)``
  (the components are orthogonal to the constant, so ``mu`` drops out and normalisation is
  kept), then positivity and renormalisation as above.  The engine projects the starting point
  onto ``n_mean + span(U)``.

In density space the norm of ``G`` is the function-space norm ``sqrt(dx^d sum d^2)`` of the step
direction ``d``.

Also the models' grid as the engine sees it: :func:`grid_spec` reads a :class:`GridSpec` off a
VAE, a Functional or an exact functional (:class:`GridSpec` itself lives in
:mod:`vaedft.physics.kinetic`, beside the exact functional that carries one).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..physics.grid import Grid
from ..physics.hamiltonian import KineticOperator
from ..physics.kinetic import GridSpec

__all__ = ["GridSpec", "grid_spec", "latent_energy", "principal_components"]


def grid_spec(model: nn.Module) -> GridSpec:
    """The :class:`GridSpec` of a VAE, a Functional or an
    :class:`~vaedft.physics.kinetic.ExactKineticFunctional`."""
    cfg = getattr(model, "config", None)
    try:
        return GridSpec(ndim=int(cfg.ndim), grid_n=int(cfg.grid_n), dx=float(cfg.dx), boundary=str(cfg.boundary))
    except AttributeError:
        raise ValueError(
            f"{type(model).__name__} has no grid config (needs config.ndim, grid_n, dx, boundary)"
        ) from None


def _same_grid(a: GridSpec, b: GridSpec) -> bool:
    return (a.ndim, a.grid_n, a.boundary) == (b.ndim, b.grid_n, b.boundary) and math.isclose(a.dx, b.dx, rel_tol=1e-9)



def latent_energy(vae: nn.Module, functional: nn.Module, z: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Eq. (12): ``E[z] = F[D(z)] + dx^d sum V D(z)``, shape ``(R,)``.

    Args:
        vae: the VAE (its decoder is used; put it in eval mode first).
        functional: the DL functional (called with ``validate=False``), eval mode.
        z: ``(R, l_d)`` latent points.
        V: ``(R, *grid)`` potentials, same dtype and device.

    Differentiable in ``z``; wrap in ``torch.no_grad()`` for values only.
    """
    n = vae.decode(z)
    if V.shape != n.shape:
        raise ValueError(f"potentials of shape {tuple(V.shape)} do not match the decoded densities {tuple(n.shape)}")
    cell = vae.config.dx**vae.config.ndim
    return functional(n, validate=False) + cell * (V * n).flatten(1).sum(1)


def _density_energy_grad(functional, n: torch.Tensor, V: torch.Tensor, cell: float):
    """``E = F[n] + dx^d sum V n`` ``(A,)`` and the functional derivative ``dF/dn + V`` ``(A, *grid)``."""
    with torch.enable_grad():
        x = n.detach().requires_grad_(True)
        F = functional(x, validate=False)
        (dF,) = torch.autograd.grad(F.sum(), x)
    E = F.detach() + cell * (V * n).flatten(1).sum(1)
    return E, dF / cell + V


def principal_components(densities: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(P,)`` and the ``k`` leading principal directions ``U`` ``(P, k)`` (orthonormal columns).

    ``densities`` is ``(N, P)`` (flattened); computed in float64 from the smaller of the Gram and
    covariance matrices.
    """
    x = densities.to(torch.float64)
    mean = x.mean(0)
    xc = x - mean
    rank_bound = min(xc.shape[0] - 1, xc.shape[1])
    if k > rank_bound:
        raise ValueError(
            f"n_components = {k} exceeds the rank bound min(N - 1, P) = {rank_bound} of {xc.shape[0]} centred "
            "training densities"
        )
    if xc.shape[0] >= xc.shape[1]:
        w, v = torch.linalg.eigh(xc.T @ xc)
        u = v[:, torch.argsort(w, descending=True)[:k]]
    else:
        _, _, vh = torch.linalg.svd(xc, full_matrices=False)
        u = vh[:k].T
    return mean.to(densities.dtype), u.to(densities.dtype).contiguous()


class _Problem:
    """Energy, gradient and constraint of one family of methods, for a subset of rows."""

    def __init__(self, spec: GridSpec, V: torch.Tensor) -> None:
        self.spec = spec
        self.cell = spec.cell_volume
        self.V = V  # (R, *grid)

    def constrain(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def evaluate(self, x: torch.Tensor, V: torch.Tensor):
        """``(E (A,), G (A, P), ||G|| (A,))`` at the rows ``x`` ``(A, P)`` with their potentials ``V``."""
        raise NotImplementedError


class _LatentProblem(_Problem):
    """Latent methods; ``bounds = (lo, hi)`` ``(l_d,)`` each clips every coordinate after a step."""

    def __init__(self, spec, V, vae, functional, bounds=None) -> None:
        super().__init__(spec, V)
        self.vae, self.functional = vae, functional
        self.bounds = bounds

    def constrain(self, z):
        return z if self.bounds is None else torch.clamp(z, *self.bounds)

    def evaluate(self, z, V):
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            E = latent_energy(self.vae, self.functional, zz, V)
            (g,) = torch.autograd.grad(E.sum(), zz)
        return E.detach(), g, torch.linalg.vector_norm(g, dim=1)

    def densities(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)


class _DensityProblem(_Problem):
    """``density-gd`` (optionally preconditioned) and ``pca-gd``; rows are flattened densities."""

    def __init__(self, spec, V, functional, *, pca_basis=None, precondition=None, shift=1.0) -> None:
        super().__init__(spec, V)
        self.functional = functional
        self.U = pca_basis  # (P, k) or None
        self.kin = None
        if precondition == "kinetic":
            grid = Grid(spec.box_length, spec.grid_n, spec.ndim, spec.boundary, stencil_points=3)
            self.kin = KineticOperator(grid, V.device, V.dtype)
        self.shift = float(shift)

    def constrain(self, x):
        x = x.clamp_min(0.0)
        return x / (self.cell * x.sum(1, keepdim=True))

    def _precondition(self, r: torch.Tensor) -> torch.Tensor:
        shift = torch.full((r.shape[0],), self.shift, dtype=r.dtype, device=r.device)
        return self.kin.solve_shifted(r.view(-1, *self.spec.grid_shape), shift).reshape(r.shape[0], -1)

    def evaluate(self, x, V):
        n = x.view(-1, *self.spec.grid_shape)
        E, g = _density_energy_grad(self.functional, n, V, self.cell)
        g = g.reshape(x.shape[0], -1)
        if self.U is not None:
            d = (g @ self.U) @ self.U.T
        elif self.kin is not None:
            psi = torch.sqrt(x.clamp_min(0.0))
            p_g, p_psi = self._precondition(psi * g), self._precondition(psi)
            mu = (psi * p_g).sum(1, keepdim=True) / (psi * p_psi).sum(1, keepdim=True)
            d = psi * (p_g - mu * p_psi)
        else:
            d = g - g.mean(1, keepdim=True)
        return E, d, torch.sqrt(self.cell * (d * d).sum(1))

    def densities(self, x):
        return x.view(-1, *self.spec.grid_shape)

