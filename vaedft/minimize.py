"""One energy-minimization engine for the DL functional (paper Sec. II B, eqs. 10-14).

Methods (:attr:`MinimizeConfig.method`):

* ``latent-gd`` -- plain gradient descent in the VAE's latent space, exactly eq. (14),
  ``z <- z - eta dE/dz``, on the latent energy of eq. (12),
  ``E[z] = F_w[D(z)] + dx^d sum_i V_i D(z)_i`` (:func:`latent_energy`), differentiated by autograd
  with both networks in eval mode.
* ``latent-adam`` -- Adam in latent space, written out element-wise per row (moments and step
  counter per row), so a frozen row freezes its moments too and rows never interact.
* ``latent-lbfgs`` -- L-BFGS per row: batched two-loop recursion over a per-row history of
  ``lbfgs_memory`` pairs.  Quasi-Newton steps have unit length (the direction carries the scale);
  a row whose memory is empty (first step, after a reset, or while the curvature condition
  ``s.y > 0`` fails, e.g. in concave regions) takes a plain GD step of its own length ``alpha``
  (initially ``lr``; x1.25 after an accepted GD step, x0.5 after a rejected one).  Every trial
  point is evaluated once (one energy and gradient per step, as for GD); a row accepts its trial
  only if its energy did not rise (beyond a few ulps), otherwise it stays and forgets its memory.
  No line search across rows: each row decides alone.
* ``density-gd`` -- the density-space baseline of eq. (10):
  ``n <- n - eta (dF/dn + V - mu_t)`` with ``dF/dn`` the functional derivative (autograd of F
  divided by ``dx^d``) and ``mu_t`` the grid mean of ``dF/dn + V``, so the step keeps
  ``dx^d sum n`` exactly (a projected gradient); then ``n <- max(n, 0)`` and renormalisation.
  ``precondition="kinetic"`` (not in the paper, off by default) replaces the step direction by
  ``psi (T3 + c)^-1 [psi (dF/dn + V - mu)]`` with ``psi = sqrt(n)``, ``T3`` the 3-point kinetic
  operator on the models' grid (applied by FFT; any operator spectrally equivalent to ``T``
  serves), ``c = precondition_shift`` and ``mu = <psi, P psi g> / <psi, P psi>`` fixed by
  normalisation (the direction is positive semi-definite, so still a descent direction).
  Why: plain eq. (10) is hopelessly ill-conditioned on the testbed grids even for the *exact*
  functional.  Its Hessian grows like ``T_max / n_min`` (n is small near hard walls), about 1e8
  times its smallest eigenvalue on gaussian1d: measured with :class:`ExactKineticFunctional`,
  ``eta = 1e-8`` is stable but moves the energy by 2e-4 E0 in 2000 steps and ``eta = 1e-6``
  blows up.  With the kinetic preconditioner (for the exact functional this is preconditioned
  inverse iteration in ``psi``), ``eta = 1`` reaches the ground state to 1e-13 E0 in 25-50 steps
  on gaussian1d and 40-250 on speckle1d (``c`` = 0.2-1).
* ``pca-gd`` -- the same projected descent restricted to the span of the leading
  ``n_components`` principal components ``U`` of the training densities (Snyder et al. 2015
  style): ``n <- n - eta U U^T (dF/dn + V)`` (the components are orthogonal to the constant, so
  ``mu`` drops out and normalisation is kept), then positivity and renormalisation as above.
  The starting point is projected onto ``n_mean + span(U)``.

Batching: all N instances x K starts are the rows of one ``(R, P)`` tensor advanced together
(``P = l_d`` in latent space, the number of grid points in density space); no Python loop over
instances.  Row ``r = i * K + k`` is start ``k`` of instance ``i``.  Each step evaluates the
energy and gradient of the *active* rows only; rows that converge or diverge are dropped from
the active set and never change again.

Per-row rules (no row ever looks at another):

* converged: after a step, ``|E_t - E_{t-1}| < tol_energy`` and ``||grad|| < tol_grad``
  (``tol = 0`` disables convergence, so every row runs ``steps`` steps as in the paper).
  ``||grad||`` is the Euclidean norm of ``dE/dz`` in latent space and the function-space norm
  ``sqrt(dx^d sum d^2)`` of the step direction ``d`` in density space.
* diverged (GD, Adam, density methods): the new energy or gradient is NaN/inf, or the energy
  exceeds the row's starting energy by more than ``divergence_threshold`` (E0).  The row is
  frozen at its last finite state and flagged.  L-BFGS never accepts a rise, so it can only
  be flagged at its start.  A row whose *starting* energy is not finite is flagged at step 0.

Randomness: starting points are pure functions of ``(seed, instance index, start)``, drawn from
``instance_rng(seed, i).spawn(K)[k]`` (:func:`vaedft.rng.instance_rng`).  Together with per-row
convergence this makes an instance's result independent of which other instances share its
batch (up to floating-point reassociation in batched kernels, ~1e-15 in float64).

Starting points (:attr:`MinimizeConfig.init`), start 0 of each instance:

* ``mean`` -- the encoder mean ``mu`` of the average training density (paper); density methods
  start from the average training density itself.
* ``sample`` -- ``mu`` of one training density drawn per instance (paper); density methods start
  from that density.
* ``prior`` -- ``z ~ N(0, 1)`` (latent methods only).

Starts ``k >= 1`` draw a prior point when ``init == "prior"`` and a random training density
otherwise.  The result of each instance is its start of lowest final energy among the starts that
did not diverge (``best_start``); an instance is flagged diverged only if all its starts diverged.

Energy history: the energy of each row's current point at steps ``0, h, 2h, ...``
(``h = history_every``), ``T_sub = steps // h + 1`` columns.  A frozen row's point no longer
changes, so its history *holds its last value* (for a diverged row: the last finite energy);
``steps`` says when it froze.

:class:`ExactKineticFunctional` is the exact universal functional of one particle (the von
Weizsaecker kinetic energy on the testbed grid), a drop-in replacement for the DL functional in
tests: density-space descent with it must reach the exact ground state.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .physics.grid import Grid, GridFields
from .physics.hamiltonian import KineticOperator
from .rng import check_seed, instance_rng

__all__ = [
    "METHODS",
    "LATENT_METHODS",
    "DENSITY_METHODS",
    "INITS",
    "PRECONDITIONERS",
    "MinimizeConfig",
    "MinimizeResult",
    "GridSpec",
    "ExactKineticFunctional",
    "grid_spec",
    "latent_energy",
    "principal_components",
    "minimize",
]

METHODS = ("latent-gd", "latent-adam", "latent-lbfgs", "density-gd", "pca-gd")
LATENT_METHODS = METHODS[:3]
DENSITY_METHODS = METHODS[3:]
INITS = ("mean", "sample", "prior")
PRECONDITIONERS = (None, "kinetic")

_ENCODE_BATCH = 1024


# ----------------------------------------------------------------------------- configuration


def _number(name: str, value, *, positive: bool = False, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _integer(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class MinimizeConfig:
    """Settings of one minimization run (JSON round trip with :meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        method: one of :data:`METHODS`.
        steps: t_max, the step budget per row (one energy + gradient evaluation per step).
        lr: eta.  GD: the step of eq. (14) or (10).  Adam: the step size.  L-BFGS: the initial
            plain-GD step of a row (quasi-Newton steps have unit length).  Preconditioned
            density-gd: dimensionless, ~1.
        init: ``"mean"``, ``"sample"`` or ``"prior"`` (start 0; see the module docstring).
        starts: K >= 1 starting points per instance; the lowest final energy is kept.
        seed: seeds every random draw (with the instance index and the start).
        tol_energy: per-step ``|E_t - E_{t-1}|`` threshold (E0); 0 disables convergence.
        tol_grad: gradient-norm threshold; 0 disables convergence.
        history_every: subsampling of the energy history (steps).
        adam_betas: Adam's ``(beta1, beta2)``.
        adam_eps: Adam's epsilon.
        lbfgs_memory: pairs kept per row by L-BFGS.
        divergence_threshold: a row whose energy rises more than this above its starting energy
            (E0) is flagged diverged; ``inf`` keeps only the NaN/inf test.
        n_components: principal components of ``pca-gd``.
        precondition: ``None`` (eq. 10 as in the paper) or ``"kinetic"`` (density-gd only).
        precondition_shift: ``c`` in ``(T + c)^-1`` (E0), for ``precondition="kinetic"``.
    """

    method: str = "latent-gd"
    steps: int = 10_000
    lr: float = 1e-2
    init: str = "mean"
    starts: int = 1
    seed: int = 0
    tol_energy: float = 1e-9
    tol_grad: float = 1e-6
    history_every: int = 10
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    lbfgs_memory: int = 10
    divergence_threshold: float = 1.0
    n_components: int = 8
    precondition: str | None = None
    precondition_shift: float = 1.0

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.method in DENSITY_METHODS and self.init == "prior":
            raise ValueError(f"init 'prior' draws latent vectors; {self.method} needs init 'mean' or 'sample'")
        put("steps", _integer("steps", self.steps, 1))
        put("starts", _integer("starts", self.starts, 1))
        put("seed", check_seed(self.seed))
        put("history_every", _integer("history_every", self.history_every, 1))
        put("lbfgs_memory", _integer("lbfgs_memory", self.lbfgs_memory, 1))
        put("n_components", _integer("n_components", self.n_components, 1))
        put("lr", _number("lr", self.lr, positive=True))
        put("tol_energy", _number("tol_energy", self.tol_energy))
        put("tol_grad", _number("tol_grad", self.tol_grad))
        put("adam_eps", _number("adam_eps", self.adam_eps, positive=True))
        put("divergence_threshold", _number("divergence_threshold", self.divergence_threshold, positive=True,
                                            allow_inf=True))
        put("precondition_shift", _number("precondition_shift", self.precondition_shift, positive=True))
        betas = self.adam_betas
        if isinstance(betas, (str, bytes)) or not isinstance(betas, (tuple, list, np.ndarray)) or len(betas) != 2:
            raise ValueError(f"adam_betas must be a pair (beta1, beta2), got {betas!r}")
        betas = tuple(_number(f"adam_betas[{i}]", b) for i, b in enumerate(betas))
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"adam_betas must lie in [0, 1), got {betas}")
        put("adam_betas", betas)
        if self.precondition not in PRECONDITIONERS:
            raise ValueError(f"precondition must be one of {PRECONDITIONERS}, got {self.precondition!r}")
        if self.precondition is not None and self.method != "density-gd":
            raise ValueError(f"precondition={self.precondition!r} applies to density-gd only, not {self.method}")

    @property
    def is_latent(self) -> bool:
        """True for the latent-space methods (they need a VAE)."""
        return self.method in LATENT_METHODS

    @property
    def needs_training_densities(self) -> bool:
        """Whether this configuration needs the training densities (PCA basis or start points)."""
        return self.method == "pca-gd" or self.init in ("mean", "sample") or (self.starts > 1 and self.init != "prior")

    @property
    def history_steps(self) -> np.ndarray:
        """Step numbers of the energy-history columns, ``0, h, 2h, ... <= steps``."""
        return np.arange(0, self.steps + 1, self.history_every)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["adam_betas"] = list(self.adam_betas)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MinimizeConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"MinimizeConfig.from_dict needs a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown MinimizeConfig keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**dict(data))

    def replace(self, **changes) -> MinimizeConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- result


@dataclass
class MinimizeResult:
    """Per-instance results (NumPy, float64), in the order of the input potentials.

    Attributes:
        e_min: ``(N,)`` final energy E0; **NaN where diverged** (see ``e_last``).
        e_last: ``(N,)`` energy of the returned state (the last finite one for diverged rows).
        n_min: ``(N, *grid)`` density of the returned state (decoded for latent methods).
        z_min: ``(N, l_d)`` latent point of the returned state, ``None`` for density methods.
        steps: ``(N,)`` steps taken by the returned start before it froze (for a diverged row, the
            steps whose result was kept; L-BFGS counts rejected trials too).
        converged: ``(N,)`` bool, the convergence test passed.
        diverged: ``(N,)`` bool, every start diverged (NaN/inf or energy blow-up).
        grad_norm: ``(N,)`` gradient norm at the returned state.
        energy_history: ``(N, T_sub)`` energies at ``history_steps`` of the returned start; holds
            the last value after the row froze.
        history_steps: ``(T_sub,)`` step numbers of the history columns.
        best_start: ``(N,)`` index of the start that was kept.
        e_starts: ``(N, K)`` final energy of every start (NaN where that start diverged).
        indices: ``(N,)`` instance indices that seeded the random draws.
        config: the :class:`MinimizeConfig`.
        wall_time_s: seconds spent in the optimisation loop.
    """

    e_min: np.ndarray
    e_last: np.ndarray
    n_min: np.ndarray
    z_min: np.ndarray | None
    steps: np.ndarray
    converged: np.ndarray
    diverged: np.ndarray
    grad_norm: np.ndarray
    energy_history: np.ndarray
    history_steps: np.ndarray
    best_start: np.ndarray
    e_starts: np.ndarray
    indices: np.ndarray
    config: MinimizeConfig
    wall_time_s: float = 0.0

    def __len__(self) -> int:
        return int(self.e_min.shape[0])


# ----------------------------------------------------------------------------- grids and the exact functional


@dataclass(frozen=True)
class GridSpec(GridFields):
    """What the engine needs to know of a model's grid (duck-types the model configs)."""

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


def grid_spec(model: nn.Module) -> GridSpec:
    """The :class:`GridSpec` of a VAE, a Functional or an :class:`ExactKineticFunctional`."""
    cfg = getattr(model, "config", None)
    try:
        return GridSpec(ndim=int(cfg.ndim), grid_n=int(cfg.grid_n), dx=float(cfg.dx), boundary=str(cfg.boundary))
    except AttributeError:
        raise ValueError(
            f"{type(model).__name__} has no grid config (needs config.ndim, grid_n, dx, boundary)"
        ) from None


def _same_grid(a: GridSpec, b: GridSpec) -> bool:
    return (a.ndim, a.grid_n, a.boundary) == (b.ndim, b.grid_n, b.boundary) and math.isclose(a.dx, b.dx, rel_tol=1e-9)


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
        psi = torch.sqrt(n.clamp_min(self.floor))
        t_psi = self.kinetic(n).apply(psi)
        return self.config.cell_volume * (psi * t_psi).flatten(1).sum(1)


# ----------------------------------------------------------------------------- energies


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
    def __init__(self, spec, V, vae, functional) -> None:
        super().__init__(spec, V)
        self.vae, self.functional = vae, functional

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


# ----------------------------------------------------------------------------- optimizers


class _GD:
    """Eq. (14) / (10): ``x <- x - lr * d``."""

    accepts_rises = True

    def __init__(self, cfg: MinimizeConfig) -> None:
        self.lr = cfg.lr

    def init_state(self, x):
        return {}

    def propose(self, x, G, st):
        return x - self.lr * G, st


class _Adam(_GD):
    """Adam, per row: moments and step counters live in the row."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.b1, self.b2 = cfg.adam_betas
        self.eps = cfg.adam_eps

    def init_state(self, x):
        return {"m": torch.zeros_like(x), "v": torch.zeros_like(x), "t": torch.zeros(x.shape[0], dtype=x.dtype,
                                                                                      device=x.device)}

    def propose(self, x, G, st):
        t = st["t"] + 1
        m = self.b1 * st["m"] + (1 - self.b1) * G
        v = self.b2 * st["v"] + (1 - self.b2) * G * G
        m_hat = m / (1 - self.b1 ** t)[:, None]
        v_hat = v / (1 - self.b2 ** t)[:, None]
        return x - self.lr * m_hat / (torch.sqrt(v_hat) + self.eps), {"m": m, "v": v, "t": t}


class _LBFGS:
    """L-BFGS per row with per-row step acceptance (see the module docstring)."""

    accepts_rises = False

    grow, shrink = 1.25, 0.5  # a row's plain-GD step after an accepted / a rejected GD step

    def __init__(self, cfg):
        self.lr = cfg.lr
        self.mem = cfg.lbfgs_memory

    @staticmethod
    def acceptable(E_new, E_old):
        """No rise beyond rounding (a few ulps of the energy)."""
        slack = 8 * torch.finfo(E_old.dtype).eps * E_old.abs().clamp_min(1.0)
        return E_new <= E_old + slack

    def init_state(self, x):
        r, p = x.shape
        z = dict(dtype=x.dtype, device=x.device)
        return {
            "S": torch.zeros(r, self.mem, p, **z),
            "Y": torch.zeros(r, self.mem, p, **z),
            "rho": torch.zeros(r, self.mem, **z),
            "count": torch.zeros(r, dtype=torch.long, device=x.device),
            "alpha": torch.full((r,), self.lr, **z),
            "qn": torch.zeros(r, dtype=torch.bool, device=x.device),
        }

    def _direction(self, G, st):
        S, Y, rho, count = st["S"], st["Y"], st["rho"], st["count"]
        m = self.mem
        q = G.clone()
        alphas = []
        for j in reversed(range(m)):  # newest (m - 1) to oldest
            valid = count > (m - 1 - j)
            a = torch.where(valid, rho[:, j] * (S[:, j] * q).sum(1), 0.0)
            q = q - a[:, None] * Y[:, j]
            alphas.append(a)
        alphas.reverse()
        sy = (S[:, -1] * Y[:, -1]).sum(1)
        yy = (Y[:, -1] * Y[:, -1]).sum(1)
        gamma = torch.where(count > 0, sy / torch.where(yy > 0, yy, 1.0), 1.0)
        r = gamma[:, None] * q
        for j in range(m):  # oldest to newest
            valid = count > (m - 1 - j)
            b = rho[:, j] * (Y[:, j] * r).sum(1)
            r = r + torch.where(valid, alphas[j] - b, 0.0)[:, None] * S[:, j]
        return -r

    def propose(self, x, G, st):
        d = self._direction(G, st)
        qn = (st["count"] > 0) & ((d * G).sum(1) < 0) & torch.isfinite(d).all(1)
        x_new = torch.where(qn[:, None], x + d, x - st["alpha"][:, None] * G)
        return x_new, {**st, "qn": qn}

    def after(self, x, G, x_new, G_new, accepted, st):
        """Memory update for accepted rows; reset and step halving for rejected ones."""
        s, y = x_new - x, G_new - G
        sy = (s * y).sum(1)
        good = accepted & torch.isfinite(sy) & (sy > 1e-12 * torch.linalg.vector_norm(s, dim=1)
                                                * torch.linalg.vector_norm(y, dim=1))
        push = good[:, None, None]
        S = torch.where(push, torch.cat([st["S"][:, 1:], s[:, None]], 1), st["S"])
        Y = torch.where(push, torch.cat([st["Y"][:, 1:], y[:, None]], 1), st["Y"])
        rho = torch.where(good[:, None], torch.cat([st["rho"][:, 1:], (1.0 / torch.where(good, sy, 1.0))[:, None]], 1),
                          st["rho"])
        count = torch.where(good, (st["count"] + 1).clamp_max(self.mem), st["count"])
        count = torch.where(accepted, count, torch.zeros_like(count))  # a rejected row forgets its memory
        gd = ~st["qn"]
        alpha = torch.where(gd & accepted, self.grow * st["alpha"], st["alpha"])
        alpha = torch.where(gd & ~accepted, self.shrink * alpha, alpha)
        return {"S": S, "Y": Y, "rho": rho, "count": count, "alpha": alpha, "qn": st["qn"]}


_OPTIMIZERS = {"latent-gd": _GD, "latent-adam": _Adam, "latent-lbfgs": _LBFGS, "density-gd": _GD, "pca-gd": _GD}


# ----------------------------------------------------------------------------- the loop


def _where_rows(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


def _descend(problem: _Problem, x0: torch.Tensor, cfg: MinimizeConfig, progress: bool) -> dict:
    """Advance all rows of ``x0`` ``(R, P)`` together; returns per-row tensors.

    The working set holds the active rows only (compact tensors); a row that converges or
    diverges is written back to the full result tensors and dropped from it.
    """
    opt = _OPTIMIZERS[cfg.method](cfg)
    dev = x0.device
    n_rows = x0.shape[0]
    x = problem.constrain(x0.clone())
    E, G, gnorm = problem.evaluate(x, problem.V)
    finite = torch.isfinite(E) & torch.isfinite(G).all(1)
    diverged = ~finite
    converged = torch.zeros(n_rows, dtype=torch.bool, device=dev)
    steps = torch.zeros(n_rows, dtype=torch.long, device=dev)
    history = torch.empty(n_rows, len(cfg.history_steps), dtype=E.dtype, device=dev)
    history[:, 0] = E
    col = 1
    thr = cfg.divergence_threshold

    # the working set: active rows only
    active = torch.nonzero(finite).squeeze(1)
    xa, Ea, Ga, gna, Va = x[active], E[active], G[active], gnorm[active], problem.V[active]
    E_start = Ea.clone()
    st = opt.init_state(xa)
    steps_a = torch.zeros_like(active)

    def write_back(sel: torch.Tensor, div: torch.Tensor, conv: torch.Tensor) -> None:
        rows = active[sel]
        x[rows], E[rows], G[rows], gnorm[rows], steps[rows] = xa[sel], Ea[sel], Ga[sel], gna[sel], steps_a[sel]
        diverged[rows], converged[rows] = div[sel], conv[sel]

    bar = tqdm(total=cfg.steps, desc=cfg.method, unit="step", disable=not progress)
    try:
        for t in range(1, cfg.steps + 1):
            if active.numel() == 0:
                break
            x_new, st_new = opt.propose(xa, Ga, st)
            x_new = problem.constrain(x_new)
            E_new, G_new, gn_new = problem.evaluate(x_new, Va)
            ok = torch.isfinite(E_new) & torch.isfinite(G_new).all(1)
            if opt.accepts_rises:  # GD, Adam, density methods
                div = ~ok | (E_new > E_start + thr)
                move = ~div
                # a row's optimizer state advances only with the row
                st = {k: _where_rows(move, v, st[k]) for k, v in st_new.items()}
            else:  # L-BFGS: per-row acceptance, never a rise
                div = torch.zeros_like(ok)
                move = ok & opt.acceptable(E_new, Ea)
                st = opt.after(xa, Ga, x_new, G_new, move, st_new)
            conv = move & ((E_new - Ea).abs() < cfg.tol_energy) & (gn_new < cfg.tol_grad)
            xa = _where_rows(move, x_new, xa)
            Ea = torch.where(move, E_new, Ea)
            Ga = _where_rows(move, G_new, Ga)
            gna = torch.where(move, gn_new, gna)
            steps_a = steps_a + (~div).long()
            frozen = div | conv
            if bool(frozen.any()):
                write_back(frozen, div, conv)
                keep = ~frozen
                active, xa, Ea, Ga, gna, Va, E_start, steps_a = (
                    t_[keep] for t_ in (active, xa, Ea, Ga, gna, Va, E_start, steps_a)
                )
                st = {k: v[keep] for k, v in st.items()}
            if t % cfg.history_every == 0:
                E[active] = Ea
                history[:, col] = E
                col += 1
            bar.update(1)
    finally:
        bar.close()
    if active.numel():
        none = torch.zeros_like(active, dtype=torch.bool)
        write_back(~none, none, none)
    if col < history.shape[1]:
        history[:, col:] = E[:, None]
    return {"x": x, "E": E, "gnorm": gnorm, "steps": steps, "converged": converged, "diverged": diverged,
            "history": history}


# ----------------------------------------------------------------------------- inputs


def _model_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.float64, torch.device("cpu")


def _has_tensors(module: nn.Module) -> bool:
    """True if ``module`` has floating-point parameters or buffers (its dtype/device are then fixed)."""
    return any(t.is_floating_point() for t in (*module.parameters(), *module.buffers()))


def _as_tensor(name: str, a, spec: GridSpec, dtype, device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        arr = np.asarray(a)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    want = spec.grid_shape
    if t.dim() != len(want) + 1 or tuple(t.shape[1:]) != want or t.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (B, {', '.join(map(str, want))}) with B >= 1 for the models' "
            f"{spec.boundary} grid (grid_n={spec.grid_n}, dx={spec.dx:.6g}), got {tuple(t.shape)}"
        )
    t = t.to(device=device, dtype=dtype)
    bad = ~torch.isfinite(t).flatten(1).all(1)
    if bool(bad.any()):
        raise ValueError(f"{name} contain NaN or inf in instance(s) {torch.nonzero(bad).flatten()[:10].tolist()}")
    return t


def _check_indices(indices, n: int) -> np.ndarray:
    if indices is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu" or idx.shape != (n,):
        raise ValueError(f"indices must be {n} non-negative integers (one per potential), got {indices!r}")
    if (idx < 0).any():
        raise ValueError("indices must be non-negative")
    return idx.astype(np.int64)


def _draws(cfg: MinimizeConfig, indices: np.ndarray, n_train: int, latent_dim: int, given_first: bool = False):
    """Per (instance, start): a training index (-1 = the mean density) or a prior vector.

    ``given_first``: start 0 is given by the caller (``z0``); it is marked a prior point and left at 0
    here.  The other starts draw from their own streams, so they do not change.
    """
    k_starts = cfg.starts
    which = np.full((len(indices), k_starts), -1, dtype=np.int64)
    prior = np.zeros((len(indices), k_starts, latent_dim))
    is_prior = np.zeros((len(indices), k_starts), dtype=bool)
    for row, i in enumerate(indices):
        rngs = instance_rng(cfg.seed, int(i)).spawn(k_starts)
        for k, rng in enumerate(rngs):
            if k == 0 and given_first:
                is_prior[row, k] = True
                continue
            kind = cfg.init if k == 0 else ("prior" if cfg.init == "prior" else "sample")
            if kind == "prior":
                prior[row, k] = rng.standard_normal(latent_dim)
                is_prior[row, k] = True
            elif kind == "sample":
                which[row, k] = rng.integers(n_train)
    return which, prior, is_prior


def _start_densities(train: torch.Tensor, which: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique starting densities and, per (instance, start), the row of each in that set."""
    mean = train.mean(0, keepdim=True)
    uniq, inverse = np.unique(which.ravel(), return_inverse=True)
    rows = [mean[0] if u < 0 else train[int(u)] for u in uniq]
    return torch.stack(rows), torch.as_tensor(inverse.reshape(which.shape), device=train.device)


# ----------------------------------------------------------------------------- public entry point


def minimize(
    potentials,
    functional: nn.Module,
    vae: nn.Module | None = None,
    *,
    config: MinimizeConfig = MinimizeConfig(),
    train_densities=None,
    indices: Sequence[int] | np.ndarray | None = None,
    progress: bool = False,
    z0=None,
) -> MinimizeResult:
    """Minimise the energy of every potential of a batch with one method (see the module docstring).

    Args:
        potentials: ``(N, *grid)`` array or tensor, in E0, on the models' grid.
        functional: the DL functional (or :class:`ExactKineticFunctional`); used in eval mode.
        vae: the VAE (latent methods only; must be on the functional's grid, device and dtype).
        config: a :class:`MinimizeConfig`.
        train_densities: ``(N_train, *grid)`` training densities: needed for ``init`` ``"mean"``
            and ``"sample"`` (and every extra start unless ``init == "prior"``) and for ``pca-gd``.
            With ``init="mean"``, ``starts=1`` the mean density alone (a batch of one) suffices.
        indices: ``(N,)`` instance indices that seed the per-instance draws (default
            ``0..N-1``).  Pass the global indices when minimising a subset, so that the subset's
            results equal the corresponding rows of the full run.
        progress: show a progress bar over the steps.
        z0: ``(N, l_d)`` explicit starting latents (latent methods only), e.g. the encoder means of
            known densities: start 0 of instance ``i`` is ``z0[i]`` instead of the ``config.init``
            point (further starts are drawn as usual), so ``train_densities`` are then needed only
            for extra starts that are not prior draws.

    Computation happens on the models' device and in their dtype (use float64 models for
    tight checks).  Both modules are put in eval mode and restored afterwards.

    Returns:
        :class:`MinimizeResult`.

    Raises:
        ValueError: unknown method, missing or mismatched models (different grids or testbeds,
            dtypes, devices), potentials or training densities of the wrong shape.
    """
    if not isinstance(config, MinimizeConfig):
        raise ValueError(f"config must be a MinimizeConfig, got {type(config).__name__}")
    cfg = config
    if not isinstance(functional, nn.Module):
        raise ValueError(f"functional must be a torch module, got {type(functional).__name__}")
    spec = grid_spec(functional)
    dtype, device = _model_dtype_device(functional)
    if cfg.is_latent:
        if vae is None:
            raise ValueError(f"{cfg.method} needs a VAE (vae=...)")
        vspec = grid_spec(vae)
        if not _same_grid(vspec, spec):
            raise ValueError(
                f"the VAE and the functional were built for different grids/testbeds: VAE {vspec}, functional {spec}"
            )
        vdtype, vdevice = _model_dtype_device(vae)
        if _has_tensors(functional) and (vdtype, vdevice) != (dtype, device):
            raise ValueError(f"the VAE ({vdtype}, {vdevice}) and the functional ({dtype}, {device}) differ in "
                             "dtype or device; move one with .to(...)")
        dtype, device = vdtype, vdevice
    V = _as_tensor("potentials", potentials, spec, dtype, device)
    n_inst = V.shape[0]
    idx = _check_indices(indices, n_inst)
    latent_dim = int(vae.config.latent_dim) if cfg.is_latent else 0
    if z0 is not None:
        if not cfg.is_latent:
            raise ValueError(f"z0 gives starting latents; {cfg.method} is not a latent method")
        z0 = torch.as_tensor(z0).detach()
        if tuple(z0.shape) != (n_inst, latent_dim) or not bool(torch.isfinite(z0).all()):
            raise ValueError(f"z0 must be finite with shape ({n_inst}, {latent_dim}), got {tuple(z0.shape)}")
    needs_train = cfg.needs_training_densities if z0 is None else (cfg.starts > 1 and cfg.init != "prior")
    train = None
    if needs_train:
        if train_densities is None:
            raise ValueError(f"method {cfg.method} with init {cfg.init!r} needs train_densities")
        train = _as_tensor("train_densities", train_densities, spec, dtype, device)
        if bool((train < 0).any()):
            raise ValueError("train_densities must be non-negative")
    k_starts = cfg.starts
    which, prior, is_prior = _draws(cfg, idx, 0 if train is None else train.shape[0], latent_dim,
                                    given_first=z0 is not None)
    if z0 is not None:
        prior[:, 0] = z0.to(torch.float64).cpu().numpy()
    V_rows = V.repeat_interleave(k_starts, dim=0)

    modes = [(m, m.training) for m in (functional, vae) if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        with torch.no_grad():
            if cfg.is_latent:
                z0 = torch.as_tensor(prior.reshape(-1, latent_dim), dtype=dtype, device=device)
                if train is not None and not is_prior.all():
                    dens, inv = _start_densities(train, np.where(is_prior, 0, which))
                    mus = torch.cat([vae.encode(dens[lo : lo + _ENCODE_BATCH])[0]
                                     for lo in range(0, dens.shape[0], _ENCODE_BATCH)])
                    z_enc = mus[inv.reshape(-1)]
                    z0 = torch.where(torch.as_tensor(is_prior.reshape(-1, 1), device=device), z0, z_enc)
                problem: _Problem = _LatentProblem(spec, V_rows, vae, functional)
            else:
                dens, inv = _start_densities(train, which)
                x0 = dens.flatten(1)[inv.reshape(-1)]
                basis = None
                if cfg.method == "pca-gd":
                    mean, basis = principal_components(train.flatten(1), cfg.n_components)
                    x0 = mean + ((x0 - mean) @ basis) @ basis.T
                problem = _DensityProblem(spec, V_rows, functional, pca_basis=basis, precondition=cfg.precondition,
                                          shift=cfg.precondition_shift)
            t0 = time.perf_counter()
            out = _descend(problem, z0 if cfg.is_latent else x0, cfg, progress)
            wall = time.perf_counter() - t0
            n_rows_final = problem.densities(out["x"])
    finally:
        for m, was_training in modes:
            m.train(was_training)

    # keep, per instance, the start of lowest final energy among those that did not diverge
    E = out["E"].view(n_inst, k_starts)
    div = out["diverged"].view(n_inst, k_starts)
    e_starts = torch.where(div, torch.nan, E)
    rank = torch.where(div | ~torch.isfinite(E), torch.inf, E)
    best = torch.argmin(rank, dim=1)
    all_div = div.all(1)
    # an instance whose starts all diverged: report the lowest finite last state (still flagged)
    fallback = torch.argmin(torch.where(torch.isfinite(E), E, torch.inf), dim=1)
    best = torch.where(all_div, fallback, best)
    rows = torch.arange(n_inst, device=device) * k_starts + best

    def pick(t):
        return t[rows].detach().cpu().numpy()

    e_last = pick(out["E"]).astype(np.float64)
    diverged = pick(out["diverged"]).astype(bool)
    e_min = np.where(diverged, np.nan, e_last)
    return MinimizeResult(
        e_min=e_min,
        e_last=e_last,
        n_min=pick(n_rows_final).astype(np.float64),
        z_min=pick(out["x"]).astype(np.float64) if cfg.is_latent else None,
        steps=pick(out["steps"]).astype(np.int64),
        converged=pick(out["converged"]).astype(bool),
        diverged=diverged,
        grad_norm=pick(out["gnorm"]).astype(np.float64),
        energy_history=pick(out["history"]).astype(np.float64),
        history_steps=cfg.history_steps,
        best_start=best.cpu().numpy().astype(np.int64),
        e_starts=e_starts.cpu().numpy().astype(np.float64),
        indices=idx,
        config=cfg,
        wall_time_s=wall,
    )
