"""The minimization engine (:mod:`vaedft.minimize`) and its metrics (:mod:`vaedft.metrics`).

Three kinds of checks:

* on a tiny trained pair (a VAE and a functional trained a few epochs on 300 gaussian1d
  instances, evaluated in float64): the step rules are eqs. (14) and (10) exactly, the energy
  falls, densities stay normalised and positive, rows are independent of their batch, seeds
  reproduce, divergence and convergence are handled per row;
* with the exact functional of one particle (:class:`ExactKineticFunctional`, no training):
  density-space descent reaches the exact ground states of :func:`vaedft.physics.ground_state`,
  which proves the engine and the metrics right on their own;
* the metrics on hand-made arrays, and refusals of bad inputs.

Everything runs on the CPU with one torch thread (see ``tests/test_train.py`` for why).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from vaedft.data.generate import generate_dataset
from vaedft.data.store import read_arrays
from vaedft.metrics import CHEMICAL_ACCURACY, KCAL_PER_MOL, density_errors, energy_errors
from vaedft.minimize import (
    METHODS,
    ExactKineticFunctional,
    MinimizeConfig,
    MinimizeResult,
    latent_energy,
    minimize,
    principal_components,
)
from vaedft.minimize.engine import _descend
from vaedft.minimize.problems import _Problem
from vaedft.models import VAE, Functional, functional_preset, vae_preset
from vaedft.physics import get_testbed, ground_state
from vaedft.physics.testbeds import Gaussian1D
from vaedft.train import TrainConfig, load_run, train

N_TEST = 10
LATENT = ("latent-gd", "latent-adam", "latent-lbfgs")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("minimize_data")
    g1 = get_testbed("gaussian1d")
    train_path = generate_dataset(g1, root / "train.h5", n=300, seed=1, progress=False)
    test_path = generate_dataset(g1, root / "test.h5", n=N_TEST, seed=2, progress=False)
    return {"train_path": train_path, "train": read_arrays(train_path), "test": read_arrays(test_path)}


@pytest.fixture(scope="module")
def pair(data, tmp_path_factory):
    """A VAE (l_d = 4) and a functional trained a few epochs, loaded in float64."""
    root = tmp_path_factory.mktemp("minimize_runs")
    train("vae", data["train_path"], root / "vae", latent_dim=4, device="cpu", progress=False,
          config=TrainConfig(epochs=15, lr=1e-3, batch_size=50, seed=0))
    train("functional", data["train_path"], root / "functional", device="cpu", progress=False,
          config=TrainConfig(epochs=20, lr=3e-4, batch_size=25, seed=0))
    vae, _ = load_run(root / "vae", dtype="float64")
    functional, _ = load_run(root / "functional", dtype="float64")
    return vae, functional


def run(pair, data, *, potentials=None, functional=None, indices=None, **kwargs) -> MinimizeResult:
    """Minimise the test potentials (or ``potentials``) with the trained pair; kwargs go to the config."""
    vae, trained = pair
    cfg = MinimizeConfig(**{"steps": 40, "lr": 1e-2, "tol_energy": 0.0, "history_every": 1, **kwargs})
    V = data["test"]["potential"] if potentials is None else potentials
    return minimize(V, functional or trained, vae, config=cfg, train_densities=data["train"]["density"],
                    indices=indices)


def assert_rows_close(a: MinimizeResult, b: MinimizeResult, rows, atol=1e-10, state_atol=None) -> None:
    """Rows ``rows`` of ``a`` equal all rows of ``b`` (energies to ``atol``, states to ``state_atol``)."""
    for name in ("e_min", "n_min", "z_min", "energy_history", "e_starts"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None
            continue
        loose = name in ("n_min", "z_min", "energy_history") and state_atol is not None
        # loose states: L-BFGS may carry a row far out along a flat latent direction (|z| ~ 1e3), where
        # the rounding it amplifies is relative: allow 1e-8 of the value on top of the absolute tolerance.
        # The energies along the way follow the states (first order in their difference); the final
        # energies of rows still moving after 30 steps follow them too, at 1e-11 relative on this
        # CPU: the final energies get 1e-10 relative on top of the tight absolute tolerance.
        rtol = (1e-8 if loose else 1e-10) if state_atol is not None else 0
        np.testing.assert_allclose(x[rows], y, rtol=rtol, atol=state_atol if loose else atol, err_msg=name)
    for name in ("steps", "converged", "diverged", "best_start"):
        np.testing.assert_array_equal(getattr(a, name)[rows], getattr(b, name), err_msg=name)


def normalised_positive(n, cell_volume, tol=1e-12) -> None:
    n = np.asarray(n)
    assert np.isfinite(n).all() and (n >= 0).all()
    np.testing.assert_allclose(cell_volume * n.reshape(n.shape[0], -1).sum(1), 1.0, rtol=0, atol=tol)


# ----------------------------------------------------------------------------- configuration


def test_config_round_trip_and_refusals():
    cfg = MinimizeConfig(method="latent-adam", steps=7, lr=0.5, init="prior", starts=3, seed=4, adam_betas=[0.8, 0.9])
    assert cfg.adam_betas == (0.8, 0.9)
    assert MinimizeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown MinimizeConfig keys"):
        MinimizeConfig.from_dict({**cfg.to_dict(), "eta": 1.0})
    bad = [
        {"method": "newton"}, {"init": "zeros"}, {"steps": 0}, {"steps": 2.5}, {"lr": 0.0}, {"lr": -1.0},
        {"lr": math.nan}, {"starts": 0}, {"seed": -1}, {"tol_energy": -1.0}, {"tol_grad": -1.0},
        {"history_every": 0}, {"adam_betas": (1.0, 0.9)}, {"adam_betas": (0.9,)}, {"lbfgs_memory": 0},
        {"divergence_threshold": 0.0}, {"n_components": 0}, {"method": "density-gd", "init": "prior"},
        {"precondition": "jacobi"}, {"precondition": "kinetic"},  # latent-gd cannot be preconditioned
        {"method": "density-gd", "precondition": "kinetic", "precondition_shift": 0.0},
    ]
    for changes in bad:
        with pytest.raises(ValueError):
            MinimizeConfig(**changes)
    assert MinimizeConfig(divergence_threshold=math.inf).divergence_threshold == math.inf
    np.testing.assert_array_equal(MinimizeConfig(steps=25, history_every=10).history_steps, [0, 10, 20])


# ----------------------------------------------------------------------------- latent space, trained pair


def test_latent_energy_is_eq_12(pair, data):
    vae, functional = pair
    z = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    V = torch.as_tensor(data["test"]["potential"][:5])
    with torch.no_grad():
        n = vae.decode(z)
        want = functional(n, validate=False) + vae.config.dx * (V * n).sum(1)
        got = latent_energy(vae, functional, z, V)
    assert got.shape == (5,)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_latent_gd_step_is_eq_14(pair, data):
    vae, functional = pair
    V = torch.as_tensor(data["test"]["potential"])
    mean = torch.as_tensor(data["train"]["density"]).mean(0, keepdim=True)
    with torch.no_grad():
        z0 = vae.encode(mean)[0].expand(N_TEST, -1).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(latent_energy(vae, functional, z0, V).sum(), z0)
    res = run(pair, data, steps=1, lr=0.05)
    np.testing.assert_allclose(res.z_min, (z0 - 0.05 * grad).detach().numpy(), rtol=0, atol=1e-13)
    with torch.no_grad():
        np.testing.assert_allclose(res.energy_history[:, 0], latent_energy(vae, functional, z0, V).numpy(), atol=1e-12)
    assert not vae.training and not functional.training  # load_run gave eval mode; minimize restores it


def test_latent_gd_lowers_energy_monotonically_and_stays_normalised(pair, data):
    vae, _ = pair
    res = run(pair, data, steps=60, lr=1e-2)
    h = res.energy_history
    assert h.shape == (N_TEST, 61) and np.isfinite(h).all()
    assert (np.diff(h, axis=1) <= 1e-12).all()
    assert (h[:, -1] < h[:, 0] - 1e-4).all()
    np.testing.assert_array_equal(res.steps, 60)
    assert not res.converged.any() and not res.diverged.any()
    np.testing.assert_array_equal(res.e_min, res.e_last)
    normalised_positive(res.n_min, vae.config.cell_volume)
    # GD is deterministic: a shorter budget is a prefix of the path, so the decoded densities at
    # intermediate steps are checked the same way
    for steps in (1, 25):
        short = run(pair, data, steps=steps, lr=1e-2)
        np.testing.assert_allclose(short.energy_history, h[:, : steps + 1], rtol=0, atol=1e-12)
        normalised_positive(short.n_min, vae.config.cell_volume)
        with torch.no_grad():
            decoded = vae.decode(torch.as_tensor(short.z_min)).numpy()
        np.testing.assert_allclose(decoded, short.n_min, rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", LATENT)
def test_batched_equals_one_at_a_time(pair, data, method):
    kwargs = {"method": method, "steps": 30, "init": "sample", "starts": 2, "seed": 11, "tol_energy": 1e-7,
              "tol_grad": 1e3}
    full = run(pair, data, **kwargs)
    V = data["test"]["potential"]
    # Batched kernels round differently for other batch sizes (~1e-16).  L-BFGS amplifies that
    # along the flat directions of the latent space, where its inverse-Hessian estimate is large:
    # the states of a row then agree to ~1e-9 (relative), and so do the energies along the way, while the
    # final energies still agree to ~1e-14.
    state_atol = 1e-6 if method == "latent-lbfgs" else None
    for rows in ([3, 7], [7]):
        alone = run(pair, data, potentials=V[rows], indices=rows, **kwargs)
        assert_rows_close(full, alone, rows, state_atol=state_atol)
    assert np.isfinite(full.e_min).all()


def test_reproducible_with_a_seed_and_seeds_matter(pair, data):
    kwargs = {"method": "latent-gd", "steps": 10, "init": "prior", "starts": 3}
    a, b = run(pair, data, seed=5, **kwargs), run(pair, data, seed=5, **kwargs)
    for name in ("e_min", "n_min", "z_min", "energy_history", "e_starts", "best_start", "steps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    c = run(pair, data, seed=6, **kwargs)
    assert not np.allclose(a.energy_history[:, 0], c.energy_history[:, 0])
    assert not np.allclose(a.z_min, c.z_min)
    # the kept start is the one of lowest final energy
    np.testing.assert_array_equal(a.best_start, np.nanargmin(a.e_starts, axis=1))
    np.testing.assert_allclose(a.e_min, np.nanmin(a.e_starts, axis=1), rtol=0, atol=0)
    # start 0 of 'prior' does not depend on how many starts there are
    one = run(pair, data, seed=5, **{**kwargs, "starts": 1})
    np.testing.assert_allclose(one.e_min, a.e_starts[:, 0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["latent-adam", "latent-lbfgs"])
def test_adam_and_lbfgs_lower_the_energy(pair, data, method):
    vae, _ = pair
    res = run(pair, data, method=method, steps=40, lr=1e-2)
    h = res.energy_history
    assert np.isfinite(h).all() and not res.diverged.any()
    assert (h[:, -1] < h[:, 0] - 1e-3).all()
    if method == "latent-lbfgs":  # per-row acceptance: the energy of a row never rises
        assert (np.diff(h, axis=1) <= 1e-12 * np.abs(h[:, 1:])).all()
    normalised_positive(res.n_min, vae.config.cell_volume)
    gd = run(pair, data, method="latent-gd", steps=40, lr=1e-2)
    assert (res.e_min < gd.e_min).all()  # both beat plain GD at the same lr and budget here


class _Quadratic(_Problem):
    """Rows of ``E = x.H x / 2 - b.x`` with one SPD ``H`` per row; ``V[:, 0]`` carries the row id."""

    def __init__(self, rows: int, dim: int) -> None:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(rows, dim, dim, generator=gen, dtype=torch.float64)
        self.H = a @ a.transpose(1, 2) + 0.5 * torch.eye(dim, dtype=torch.float64)
        self.b = torch.randn(rows, dim, generator=gen, dtype=torch.float64)
        self.V = torch.arange(rows, dtype=torch.float64)[:, None]
        self.x_star = torch.linalg.solve(self.H, self.b)

    def evaluate(self, x, V):
        i = V[:, 0].long()
        g = (self.H[i] @ x[:, :, None]).squeeze(-1) - self.b[i]
        return 0.5 * (x * (g - self.b[i])).sum(1), g, torch.linalg.vector_norm(g, dim=1)


@pytest.mark.parametrize("method,lr,max_steps", [("latent-gd", 0.02, 3000), ("latent-adam", 0.05, 800),
                                                 ("latent-lbfgs", 0.02, 60)])
def test_optimizers_solve_a_quadratic(method, lr, max_steps):
    problem = _Quadratic(4, 6)
    cfg = MinimizeConfig(method=method, steps=3000, lr=lr, tol_energy=1e-13, tol_grad=1e-7)
    out = _descend(problem, torch.zeros(4, 6, dtype=torch.float64), cfg, progress=False)
    assert out["converged"].all() and not out["diverged"].any()
    assert (out["steps"] <= max_steps).all()
    torch.testing.assert_close(out["x"], problem.x_star, rtol=0, atol=1e-6)


def test_convergence_freezes_rows(pair, data):
    """L-BFGS settles within a few dozen steps here; each row freezes when it passes both tolerances."""
    kwargs = {"method": "latent-lbfgs", "lr": 1e-2, "tol_energy": 1e-6, "tol_grad": 1e-2}
    res = run(pair, data, steps=60, **kwargs)
    frozen = np.flatnonzero(res.converged)
    assert frozen.size >= N_TEST // 2 and np.unique(res.steps[frozen]).size > 1  # rows freeze at their own step
    for i in frozen:
        s = res.steps[i]
        assert 1 < s < 60 and res.grad_norm[i] < 1e-2
        assert abs(res.energy_history[i, s] - res.energy_history[i, s - 1]) < 1e-6
        np.testing.assert_array_equal(res.energy_history[i, s:], res.e_min[i])  # holds the last value
    longer = run(pair, data, steps=90, **kwargs)  # a larger budget does not move a frozen row
    for name in ("z_min", "e_min", "steps", "converged"):
        np.testing.assert_array_equal(getattr(longer, name)[frozen], getattr(res, name)[frozen])
    assert (longer.steps[~longer.converged] == 90).all()


class _PoisonedFunctional(nn.Module):
    """Wraps a functional; from its ``start``-th call on it returns NaN for batch rows ``rows``.

    Only while the batch is full (no row dropped yet), so each poisoned row is hit once.
    """

    def __init__(self, base: nn.Module, rows, start: int, full: int) -> None:
        super().__init__()
        self.base, self.rows, self.start, self.full, self.calls = base, list(rows), start, full, 0
        self.config = base.config

    def forward(self, n, *, validate=True):
        out = self.base(n, validate=validate)
        if self.calls >= self.start and n.shape[0] == self.full:
            out = out.clone()
            out[self.rows] = torch.nan
        self.calls += 1
        return out


@pytest.mark.parametrize("start", [0, 5])
def test_nan_rows_are_flagged_diverged_and_others_unaffected(pair, data, start):
    vae, functional = pair
    poisoned = _PoisonedFunctional(functional, rows=[1, 4], start=start, full=N_TEST)
    res = run(pair, data, functional=poisoned, steps=12)
    clean = run(pair, data, steps=12)
    bad = [1, 4]
    good = [i for i in range(N_TEST) if i not in bad]
    np.testing.assert_array_equal(np.flatnonzero(res.diverged), bad)
    assert np.isnan(res.e_min[bad]).all() and not res.converged[bad].any()
    np.testing.assert_array_equal(res.steps[bad], max(start - 1, 0))
    if start:  # frozen at the last finite state, that of step start - 1
        np.testing.assert_allclose(res.e_last[bad], clean.energy_history[bad, start - 1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.z_min[bad], run(pair, data, steps=start - 1).z_min[bad], rtol=0, atol=1e-12)
    else:
        assert np.isnan(res.e_last[bad]).all()
    normalised_positive(res.n_min, vae.config.cell_volume)
    assert_rows_close(clean, _select(res, good), good)
    err = energy_errors(res.e_min, data["test"]["energy"])
    assert err["n_nonfinite"] == 2 and list(err["nonfinite_indices"]) == bad


def _select(res: MinimizeResult, rows) -> MinimizeResult:
    out = MinimizeResult(**{f: getattr(res, f) for f in MinimizeResult.__dataclass_fields__})
    for name in ("e_min", "n_min", "z_min", "energy_history", "e_starts", "steps", "converged", "diverged",
                 "best_start"):
        setattr(out, name, getattr(res, name)[rows])
    return out


def test_energy_blow_up_is_flagged_diverged(data):
    """Plain density GD with a far too large eta: the energy jumps up within a few steps."""
    tb = get_testbed("gaussian1d")
    V = data["test"]["potential"][:4]
    cfg = MinimizeConfig(method="density-gd", steps=20, lr=1e-3, divergence_threshold=1.0, history_every=1)
    res = minimize(V, ExactKineticFunctional(tb.grid), config=cfg, train_densities=data["train"]["density"])
    assert res.diverged.all() and np.isnan(res.e_min).all() and not res.converged.any()
    assert (res.steps < 5).all()
    e_start = res.energy_history[:, 0]
    assert np.isfinite(res.e_last).all() and (res.e_last <= e_start + 1.0).all()  # the last acceptable state
    for i, s in enumerate(res.steps):
        np.testing.assert_array_equal(res.energy_history[i, s:], res.e_last[i])
    normalised_positive(res.n_min, tb.grid.cell_volume)
    err = energy_errors(res.e_min, data["test"]["energy"][:4])
    assert err["n_nonfinite"] == 4 and err["fraction_within_ca"] == 0.0 and math.isnan(err["mean_abs_error"])
    # the same with a small eta does not diverge
    ok = minimize(V, ExactKineticFunctional(tb.grid), config=cfg.replace(lr=1e-9),
                  train_densities=data["train"]["density"])
    assert not ok.diverged.any() and (ok.e_min < ok.energy_history[:, 0]).all()


# ----------------------------------------------------------------------------- density space


def test_density_gd_step_is_eq_10(pair, data):
    _, functional = pair
    V = torch.as_tensor(data["test"]["potential"][:3])
    n0 = torch.as_tensor(data["train"]["density"]).mean(0, keepdim=True).expand(3, -1).clone()
    dx = functional.config.dx
    x = n0.clone().requires_grad_(True)
    (dF,) = torch.autograd.grad(functional(x, validate=False).sum(), x)
    g = dF / dx + V
    n1 = n0 - 1e-5 * (g - g.mean(1, keepdim=True))
    assert (n1 >= 0).all()
    n1 = n1 / (dx * n1.sum(1, keepdim=True))
    cfg = MinimizeConfig(method="density-gd", steps=1, lr=1e-5, tol_energy=0.0)
    res = minimize(V, functional, config=cfg, train_densities=data["train"]["density"])
    np.testing.assert_allclose(res.n_min, n1.detach().numpy(), rtol=0, atol=1e-12)
    assert res.z_min is None


@pytest.mark.parametrize("name", ["gaussian1d", "speckle1d"])
def test_exact_functional_density_gd_reaches_the_ground_state(name):
    """Preconditioned eq. (10) with the exact one-particle functional gives the exact ground states."""
    tb = get_testbed(name)
    V = tb.potential(tb.sample_params(5, np.arange(23)))
    gs = ground_state(V, tb.grid, backend="cpu")
    exact = ExactKineticFunctional(tb.grid)
    with torch.no_grad():  # the functional itself: F[n_gs] + int V n_gs = e_gs
        F = exact(torch.as_tensor(gs.density)).numpy()
    np.testing.assert_allclose(F + tb.grid.integrate(V * gs.density), gs.energy, rtol=0, atol=1e-9)
    cfg = MinimizeConfig(method="density-gd", precondition="kinetic", precondition_shift=0.5, lr=1.0, steps=400,
                         tol_energy=1e-13, tol_grad=1e-6)
    res = minimize(V[:3], exact, config=cfg, train_densities=gs.density[3:])
    assert res.converged.all() and not res.diverged.any()
    e_err = energy_errors(res.e_min, gs.energy[:3])
    assert e_err["max_abs_error"] < 1e-6 and e_err["n_violations"] == 0 and e_err["fraction_within_ca"] == 1.0
    assert density_errors(res.n_min, gs.density[:3], tb.grid.cell_volume)["max"] < 1e-3
    start = density_errors(np.repeat(gs.density[3:].mean(0, keepdims=True), 3, 0), gs.density[:3],
                           tb.grid.cell_volume)
    assert start["mean"] > 0.01  # it had somewhere to go


def test_density_multi_start_from_training_samples():
    """K starts from random training densities (per instance and start) all reach the ground state."""
    tb = get_testbed("gaussian1d")
    V = tb.potential(tb.sample_params(8, np.arange(12)))
    gs = ground_state(V, tb.grid, backend="cpu")
    cfg = MinimizeConfig(method="density-gd", precondition="kinetic", lr=1.0, steps=300, init="sample", starts=3,
                         seed=2, tol_energy=1e-13, tol_grad=1e-6)
    res = minimize(V[:2], ExactKineticFunctional(tb.grid), config=cfg, train_densities=gs.density[2:])
    assert res.e_starts.shape == (2, 3) and res.converged.all()
    np.testing.assert_allclose(res.e_starts, np.repeat(gs.energy[:2, None], 3, 1), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(res.best_start, np.argmin(res.e_starts, axis=1))
    first = minimize(V[:2], ExactKineticFunctional(tb.grid), config=cfg.replace(starts=1),
                     train_densities=gs.density[2:])
    np.testing.assert_allclose(first.e_min, res.e_starts[:, 0], rtol=0, atol=1e-12)


def test_plain_density_gd_reaches_the_ground_state_on_a_coarse_grid():
    """Unpreconditioned eq. (10) converges too where its conditioning allows (16 points)."""
    tb = Gaussian1D(n_grid=16, stencil_points=3)
    V = tb.potential(tb.sample_params(5, np.arange(12)))
    gs = ground_state(V, tb.grid, backend="cpu")
    cfg = MinimizeConfig(method="density-gd", lr=4e-4, steps=6000, tol_energy=1e-12, tol_grad=1e-4)
    res = minimize(V[:2], ExactKineticFunctional(tb.grid), config=cfg, train_densities=gs.density[2:])
    assert res.converged.all()
    assert energy_errors(res.e_min, gs.energy[:2])["max_abs_error"] < 1e-6
    assert density_errors(res.n_min, gs.density[:2], tb.grid.cell_volume)["max"] < 1e-3


def test_pca_gd_keeps_normalisation_and_positivity(pair, data):
    _, functional = pair
    train_n = data["train"]["density"]
    cfg = MinimizeConfig(method="pca-gd", steps=50, lr=1e-4, n_components=6, tol_energy=0.0, history_every=5)
    res = minimize(data["test"]["potential"], functional, config=cfg, train_densities=train_n)
    assert res.z_min is None and res.energy_history.shape == (N_TEST, 11)
    assert not res.diverged.any() and (res.e_min < res.energy_history[:, 0]).all()
    normalised_positive(res.n_min, functional.config.cell_volume)
    # without clamping, every density stays in n_mean + span(U)
    mean, U = principal_components(torch.as_tensor(train_n), 6)
    dev = torch.as_tensor(res.n_min) - mean
    residual = dev - (dev @ U) @ U.T
    assert float(residual.abs().max()) < 1e-8 * float(dev.abs().max()) + 1e-10
    # and with the exact functional it lowers the true energy
    exact = ExactKineticFunctional(get_testbed("gaussian1d").grid)
    res = minimize(data["test"]["potential"][:3], exact, config=cfg.replace(lr=1e-5), train_densities=train_n)
    assert (np.diff(res.energy_history, axis=1) <= 1e-12).all() and (res.e_min < res.energy_history[:, 0]).all()


# ----------------------------------------------------------------------------- metrics


def test_energy_errors_on_hand_made_arrays():
    ca = CHEMICAL_ACCURACY
    assert ca == KCAL_PER_MOL == 1.5936e-3
    e_gs = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    e_min = np.array([1.001, 2.0 - 2e-3, 3.0 - 1e-3, np.nan, 5.01, 6.0 - 0.5])
    out = energy_errors(e_min, e_gs)
    signed = np.array([1e-3, -2e-3, -1e-3, np.nan, 1e-2, -0.5])
    np.testing.assert_allclose(out["signed_error"], signed, rtol=1e-9)
    finite = signed[np.isfinite(signed)]
    np.testing.assert_allclose(out["mean_signed_error"], finite.mean(), rtol=1e-9)
    np.testing.assert_allclose(out["std_signed_error"], finite.std(), rtol=1e-9)
    np.testing.assert_allclose(out["min_signed_error"], -0.5, rtol=1e-9)
    np.testing.assert_allclose(out["max_signed_error"], 1e-2, rtol=1e-9)
    np.testing.assert_allclose(out["mean_abs_error"], np.abs(finite).mean(), rtol=1e-9)
    np.testing.assert_allclose(out["max_abs_error"], 0.5, rtol=1e-9)
    np.testing.assert_allclose(out["mean_abs_error_kcal_per_mol"], np.abs(finite).mean() / 1.5936e-3, rtol=1e-9)
    np.testing.assert_allclose(out["max_abs_error_kcal_per_mol"], 0.5 / 1.5936e-3, rtol=1e-9)
    assert out["n"] == 6
    assert out["fraction_within_ca"] == pytest.approx(2 / 6)  # 1e-3 twice; NaN counts as outside
    assert out["n_violations"] == 2 and list(out["violation_indices"]) == [1, 5]
    assert out["n_nonfinite"] == 1 and list(out["nonfinite_indices"]) == [3]
    # exactly -CA is not a violation; all finite and exact gives zeros
    edge = energy_errors(np.array([1.0 - ca, 2.0]), np.array([1.0, 2.0]))
    assert edge["n_violations"] == 0 and edge["fraction_within_ca"] == 1.0
    with pytest.raises(ValueError):
        energy_errors(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        energy_errors(np.zeros(2), np.array([0.0, np.nan]))


def test_density_errors_on_hand_made_arrays():
    dx = 0.5
    n_gs = np.ones((3, 4))
    n_min = n_gs + np.array([[0.0, 0.0, 0.0, 0.0], [0.1, -0.1, 0.0, 0.0], [0.4, 0.0, 0.0, -0.2]])
    out = density_errors(n_min, n_gs, dx)
    want = np.array([0.0, 0.1, 0.3])  # dx * sum |diff|
    np.testing.assert_allclose(out["per_instance"], want, rtol=1e-12)
    assert out["mean"] == pytest.approx(want.mean()) and out["std"] == pytest.approx(want.std())
    assert out["max"] == pytest.approx(0.3) and out["n_nonfinite"] == 0
    n_min[1, 2] = np.nan
    out = density_errors(torch.as_tensor(n_min), n_gs, dx)
    assert out["n_nonfinite"] == 1 and out["mean"] == pytest.approx(0.15)
    with pytest.raises(ValueError):
        density_errors(n_min[:2], n_gs, dx)


# ----------------------------------------------------------------------------- refusals


def test_bad_inputs_are_refused(pair, data):
    vae, functional = pair
    V = data["test"]["potential"]
    train_n = data["train"]["density"]
    cfg = MinimizeConfig(steps=2)
    with pytest.raises(ValueError, match="shape"):
        minimize(V[:, :255], functional, vae, config=cfg, train_densities=train_n)
    with pytest.raises(ValueError, match="shape"):
        minimize(V[0], functional, vae, config=cfg, train_densities=train_n)
    with pytest.raises(ValueError, match="NaN"):
        minimize(np.where(np.arange(256) == 3, np.nan, V), functional, vae, config=cfg, train_densities=train_n)
    with pytest.raises(ValueError, match="train_densities"):
        minimize(V, functional, vae, config=cfg)
    with pytest.raises(ValueError, match="train_densities must have shape"):
        minimize(V, functional, vae, config=cfg, train_densities=train_n[:, :128])
    with pytest.raises(ValueError, match="needs a VAE"):
        minimize(V, functional, config=cfg, train_densities=train_n)
    with pytest.raises(ValueError, match="indices"):
        minimize(V, functional, vae, config=cfg, train_densities=train_n, indices=[0, 1])
    with pytest.raises(ValueError, match="method"):
        minimize(V, functional, vae, config=MinimizeConfig(method="sgd"), train_densities=train_n)
    with pytest.raises(ValueError, match="n_components"):
        minimize(V, functional, config=MinimizeConfig(method="pca-gd", n_components=20), train_densities=train_n[:5])
    # models built for different testbeds / grids
    speckle_functional = Functional(functional_preset("speckle1d")).double()
    with pytest.raises(ValueError, match="different grids"):
        minimize(V, speckle_functional, vae, config=cfg, train_densities=train_n)
    other_vae = VAE(vae_preset("speckle1d")).double()
    with pytest.raises(ValueError, match="different grids"):
        minimize(V, functional, other_vae, config=cfg, train_densities=train_n)
    # dtype mismatch between the two models
    with pytest.raises(ValueError, match="dtype"):
        minimize(V, Functional(functional.config), vae, config=cfg, train_densities=train_n)
    assert set(METHODS) == {"latent-gd", "latent-adam", "latent-lbfgs", "density-gd", "pca-gd"}
