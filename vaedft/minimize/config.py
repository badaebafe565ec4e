"""Settings and results of a minimization run: :class:`MinimizeConfig`, :class:`MinimizeResult`.

Also the method, start and preconditioner names (:data:`METHODS`, :data:`LATENT_METHODS`,
:data:`DENSITY_METHODS`, :data:`INITS`, :data:`PRECONDITIONERS`) and the validation of the
configuration's fields.  The methods are described in :mod:`vaedft.minimize.optimizers` and
:mod:`vaedft.minimize.problems`, starts, convergence and divergence in :mod:`vaedft.minimize.engine`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..rng import check_seed

__all__ = [
    "METHODS",
    "LATENT_METHODS",
    "DENSITY_METHODS",
    "INITS",
    "PRECONDITIONERS",
    "MinimizeConfig",
    "MinimizeResult",
]

METHODS = ("latent-gd", "latent-adam", "latent-lbfgs", "density-gd", "pca-gd")
LATENT_METHODS = METHODS[:3]
DENSITY_METHODS = METHODS[3:]
INITS = ("mean", "sample", "prior", "nearest")
PRECONDITIONERS = (None, "kinetic")


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
        init: ``"mean"``, ``"sample"``, ``"prior"`` or ``"nearest"`` (start 0; see
            :mod:`vaedft.minimize.engine`).
        starts: K >= 1 starting points per instance; the lowest final energy is kept.
        seed: seeds every random draw (with the instance index and the start).
        tol_energy: per-step ``|E_t - E_{t-1}|`` threshold (E0); 0 disables convergence.  With
            ``settle_window = w > 0`` the change over the last ``w`` steps, ``|E_t - E_{t-w}|``.
        tol_grad: gradient-norm threshold; 0 disables convergence, ``inf`` leaves the energy test alone.
        settle_window: 0 (default): the per-step test above.  ``w > 0``: a row has settled, and
            stops, when its energy moved less than ``tol_energy`` over its last ``w`` steps (and its
            gradient norm is below ``tol_grad``).  Plain GD with a small step creeps: its per-step
            change can be tiny long before the energy has settled, and a window sees that.
        history_every: subsampling of the energy history (steps).
        adam_betas: Adam's ``(beta1, beta2)``.
        adam_eps: Adam's epsilon.
        lbfgs_memory: pairs kept per row by L-BFGS.
        divergence_threshold: a row whose energy rises more than this above its starting energy
            (E0) is flagged diverged; ``inf`` keeps only the NaN/inf test.
        n_components: principal components of ``pca-gd``.
        precondition: ``None`` (eq. 10 as in the paper) or ``"kinetic"`` (density-gd only).
        precondition_shift: ``c`` in ``(T + c)^-1`` (E0), for ``precondition="kinetic"``.
        latent_box: 0 (default, the paper): z is free.  ``k > 0`` (latent methods): a trust region
            around the training data -- after every step each latent coordinate is clipped to the
            training codes' mean +- ``k`` standard deviations (encoder means of the training
            densities, so the training densities are needed).  Far outside that region the decoder
            makes densities the functional never saw, and a briefly trained functional can give them
            energies thousands of kcal/mol below the ground state.
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
    settle_window: int = 0
    latent_box: float = 0.0

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
        put("tol_grad", _number("tol_grad", self.tol_grad, allow_inf=True))
        put("settle_window", _integer("settle_window", self.settle_window, 0))
        put("latent_box", _number("latent_box", self.latent_box))
        if self.latent_box < 0:
            raise ValueError(f"latent_box must be >= 0 (0: no bound), got {self.latent_box}")
        if self.latent_box > 0 and self.method not in LATENT_METHODS:
            raise ValueError(f"latent_box bounds the latent vector; {self.method} is not a latent method")
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
        return (self.method == "pca-gd" or self.init in ("mean", "sample", "nearest")
                or (self.starts > 1 and self.init != "prior") or self.latent_box > 0)

    @property
    def history_steps(self) -> np.ndarray:
        """Step numbers of the energy-history columns, ``0, h, 2h, ... <= steps``."""
        return np.arange(0, self.steps + 1, self.history_every)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists); ``settle_window`` and ``latent_box`` only when set, so
        configs (and cached results keyed by them) from before they existed keep their identity."""
        out = dataclasses.asdict(self)
        out["adam_betas"] = list(self.adam_betas)
        for name in ("settle_window", "latent_box"):
            if out[name] == 0:
                del out[name]
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

