"""One energy-minimization engine for the DL functional (paper Sec. II B, eqs. 10-14).

:func:`minimize` takes a batch of potentials, a functional (and, for the latent methods, a VAE)
and a :class:`MinimizeConfig`, and returns a :class:`MinimizeResult` with the minimum of every
instance.  Methods (:data:`METHODS`):

* ``latent-gd`` -- plain gradient descent in the VAE's latent space, eq. (14), on the latent
  energy of eq. (12) (:func:`latent_energy`);
* ``latent-adam`` and ``latent-lbfgs`` -- Adam and L-BFGS in latent space, written per row;
* ``density-gd`` -- the density-space baseline of eq. (10), a projected gradient step
  (optionally with a kinetic preconditioner, not in the paper);
* ``pca-gd`` -- the same descent restricted to the leading principal components of the
  training densities (:func:`principal_components`).

All instances x starts are the rows of one tensor advanced together; every row converges,
diverges and freezes on its own, and its starting point depends only on ``(seed, instance,
start)``, so an instance's result does not depend on the rest of its batch.

Submodules:

* :mod:`vaedft.minimize.config` -- :class:`MinimizeConfig`, :class:`MinimizeResult` and the
  names of methods, starts and preconditioners.
* :mod:`vaedft.minimize.problems` -- what is minimised: the latent and density-space energies,
  their gradients or step directions (projection, preconditioner, PCA basis) and constraints;
  :func:`grid_spec`.
* :mod:`vaedft.minimize.optimizers` -- the step rules (GD, Adam, L-BFGS), per row.
* :mod:`vaedft.minimize.engine` -- the batched loop with its per-row convergence and divergence
  rules, starting points and randomness, the choice of the best start, the energy history, and
  :func:`minimize`.

:class:`ExactKineticFunctional` (the exact functional of one particle, a drop-in replacement for
the DL functional in tests) and :class:`GridSpec` live in :mod:`vaedft.physics.kinetic`; they are
re-exported here.
"""

from ..physics.kinetic import ExactKineticFunctional, GridSpec
from .config import (
    DENSITY_METHODS,
    INITS,
    LATENT_METHODS,
    METHODS,
    PRECONDITIONERS,
    MinimizeConfig,
    MinimizeResult,
)
from .engine import minimize
from .problems import grid_spec, latent_energy, principal_components

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
