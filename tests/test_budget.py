"""The error budget of a minimization (:func:`vaedft.metrics.error_budget`), on cases with known answers.

Exact ground states of a few gaussian1d and speckle1d potentials are solved here; the exact
functional (:class:`~vaedft.minimize.ExactKineticFunctional`) stands in for a perfectly trained DL
functional, and stand-in VAEs whose decoder reproduces the ground states exactly (or with noise)
give the VAE terms known values.  A small random-init VAE checks the inequalities that hold for
any model: the exact energy of a normalised density is >= e_gs (variational principle on the
grid) and the manifold gap (a minimum over z) is at most its value at mu(n_gs).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vaedft.metrics import (
    BUDGET_TERMS,
    KCAL_PER_MOL,
    VARIATIONAL_TERMS,
    ErrorBudget,
    budget_summary,
    error_budget,
)
from vaedft.minimize import ExactKineticFunctional, MinimizeConfig, grid_spec, latent_energy, minimize
from vaedft.models import VAE, vae_preset
from vaedft.physics import get_testbed
from vaedft.physics.eigensolver import ground_state
from vaedft.report.markdown import budget_tables

#: the exact functional against the solver's own ground states: agreement to this (E0)
TOL = 1e-8
N = 4

pytestmark = pytest.mark.usefixtures("one_thread")


def _instances(name: str, n: int = N, seed: int = 3) -> dict:
    tb = get_testbed(name)
    V = tb.potential(tb.sample_params(seed, np.arange(n)))
    gs = ground_state(V, tb.grid, backend="cpu")
    F = gs.energy - tb.grid.cell_volume * (V * gs.density).reshape(n, -1).sum(1)
    return {"grid": tb.grid, "V": V, "n_gs": gs.density, "e_gs": gs.energy, "F": F}


@pytest.fixture(scope="module", params=["gaussian1d", "speckle1d"])
def inst(request) -> dict:
    return _instances(request.param)


class BankVAE(nn.Module):
    """A stand-in VAE whose decoder reproduces given densities exactly.

    ``mu(n)`` is the one-hot vector of the bank density closest to ``n``; ``D(z)`` is the mixture
    ``sum_k z_k^2 bank_k / sum_k z_k^2`` (positive, normalised, differentiable), so ``D(e_i)`` is
    ``bank_i`` exactly.  ``noise`` multiplies the decoded density by ``1 + noise * eta`` with a
    fixed random ``eta`` (then renormalises): a rough decoder.
    """

    def __init__(self, bank: np.ndarray, grid, noise: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("bank", torch.as_tensor(bank.reshape(bank.shape[0], -1), dtype=torch.float64))
        spec = grid_spec(ExactKineticFunctional(grid))
        self.config = SimpleNamespace(ndim=spec.ndim, grid_n=spec.grid_n, dx=spec.dx, boundary=spec.boundary,
                                      latent_dim=bank.shape[0], cell_volume=spec.cell_volume)
        self.shape = bank.shape[1:]
        eta = np.random.default_rng(0).uniform(-1.0, 1.0, size=self.bank.shape[1])
        self.register_buffer("rough", torch.as_tensor(1.0 + noise * eta, dtype=torch.float64))

    def encode(self, n, *, validate=True):
        d = torch.cdist(n.reshape(n.shape[0], -1), self.bank)
        z = torch.nn.functional.one_hot(d.argmin(1), self.bank.shape[0]).to(n.dtype)
        return z, torch.zeros_like(z)

    def decode(self, z):
        w = z * z
        n = (w @ self.bank) / w.sum(1, keepdim=True) * self.rough
        n = n / (self.config.cell_volume * n.sum(1, keepdim=True))
        return n.reshape(z.shape[0], *self.shape)


def small_vae(name: str, latent_dim: int = 4, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    cfg = vae_preset(name, latent_dim).replace(channels=(8, 8, 8, 8, 8), dense=(16, 8))
    return VAE(cfg).double().eval()


# ----------------------------------------------------------------------------- known answers


def test_exact_functional_on_exact_ground_states_has_no_error(inst):
    exact = ExactKineticFunctional(inst["grid"])
    b = error_budget(None, exact, inst["V"], inst["n_gs"], inst["e_gs"], inst["F"], grid=inst["grid"],
                     n_min=inst["n_gs"])
    assert list(b.terms) == ["functional_error", "total", "functional_error_at_min", "exact_energy_at_min"]
    for name, values in b.terms.items():
        assert values.shape == (N,) and values.dtype == np.float64
        np.testing.assert_allclose(values, 0.0, atol=TOL, err_msg=name)
    assert b.gap_steps is None and b.gap_config is None and b.dtype == "float64"


def test_a_decoder_that_reproduces_the_ground_state_has_no_representation_error(inst):
    exact = ExactKineticFunctional(inst["grid"])
    vae = BankVAE(inst["n_gs"], inst["grid"])
    z_gs = np.eye(N)  # D(z_gs) = n_gs: a perfect minimization
    b = error_budget(vae, exact, inst["V"], inst["n_gs"], inst["e_gs"], inst["F"], z_gs, grid=inst["grid"],
                     gap_steps=20)
    assert list(b.terms) == list(BUDGET_TERMS)
    for name in BUDGET_TERMS:
        np.testing.assert_allclose(b[name], 0.0, atol=TOL, err_msg=name)
    assert b.gap_steps.shape == (N,) and b.gap_converged.shape == (N,)
    assert b.gap_config["method"] == "latent-lbfgs" and b.gap_config["steps"] == 20


def test_a_noisy_decoder_is_rough_and_its_exact_energy_rises(inst):
    exact = ExactKineticFunctional(inst["grid"])
    vae = BankVAE(inst["n_gs"], inst["grid"], noise=0.05)
    b = error_budget(vae, exact, inst["V"], inst["n_gs"], inst["e_gs"], inst["F"], np.eye(N), grid=inst["grid"],
                     gap=False)
    assert "manifold_gap" not in b
    assert (b["roughness"] > 1e-3).all()
    # the exact functional sees the wiggles: the representation error is the kinetic energy they add
    # plus the change of the potential energy, and the found density's exact energy is above e_gs
    assert (b["representation"] > 0).all() and (b["exact_energy_at_min"] > 0).all()
    np.testing.assert_allclose(b["total"], b["exact_energy_at_min"], atol=1e-12)
    np.testing.assert_allclose(b["functional_error_at_min"], 0.0, atol=1e-12)


def test_the_learned_functional_error_at_the_found_density_closes_the_budget(inst):
    """total = functional_error_at_min + exact_energy_at_min, for any functional; and the functional error on
    n_gs of a functional off by a constant is that constant."""
    exact = ExactKineticFunctional(inst["grid"])

    class Offset(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = exact.config

        def forward(self, n, *, validate=True):
            return 1.01 * exact(n) + 0.003

    vae = BankVAE(inst["n_gs"], inst["grid"], noise=0.02)
    z = np.random.default_rng(1).normal(size=(N, N))
    b = error_budget(vae, Offset(), inst["V"], inst["n_gs"], inst["e_gs"], inst["F"], z, grid=inst["grid"],
                     gap=False)
    np.testing.assert_allclose(b["total"], b["functional_error_at_min"] + b["exact_energy_at_min"], atol=1e-12)
    np.testing.assert_allclose(b["functional_error"], 0.01 * inst["F"] + 0.003, atol=TOL)


# ----------------------------------------------------------------------------- inequalities


def test_the_exact_energy_of_any_normalised_density_is_at_least_e_gs(inst):
    """Variational principle on the grid: E_exact[n] >= e_gs for every normalised n >= 0 (smooth, rough, sparse)."""
    rng = np.random.default_rng(2)
    grid = inst["grid"]
    shape = inst["n_gs"].shape
    candidates = [
        rng.uniform(0, 1, size=shape),  # white noise
        np.exp(rng.normal(size=shape)),
        inst["n_gs"] * (1 + 0.1 * rng.normal(size=shape)) ** 2,
        np.roll(inst["n_gs"], 7, axis=-1),  # a smooth but displaced density
        np.where(rng.uniform(size=shape) < 0.05, 1.0, 0.0) + 1e-300,  # spikes
    ]
    exact = ExactKineticFunctional(grid)
    for n in candidates:
        n = n / (grid.cell_volume * n.reshape(N, -1).sum(1)).reshape(-1, *([1] * (n.ndim - 1)))
        b = error_budget(None, exact, inst["V"], inst["n_gs"], inst["e_gs"], inst["F"], grid=grid, n_min=n)
        assert (b["exact_energy_at_min"] >= -TOL).all(), b["exact_energy_at_min"]


def test_manifold_gap_of_a_real_vae_is_below_its_value_at_mu_and_above_zero(inst):
    """With F_w = the exact functional, representation = E_exact[D(mu)] - e_gs, where the gap's search starts."""
    name = "gaussian1d" if inst["grid"].boundary == "hard_wall" else "speckle1d"
    vae = small_vae(name)
    exact = ExactKineticFunctional(inst["grid"])
    b = error_budget(vae, exact, inst["V"], inst["n_gs"], inst["e_gs"], inst["F"], grid=inst["grid"],
                     gap_steps=30)
    assert (b["manifold_gap"] <= b["representation"] + 1e-12).all()
    assert (b["manifold_gap"] >= -TOL).all() and (b["representation"] > 0).all()
    # the L-BFGS search did move: a random decoder is far from the ground state
    assert (b["manifold_gap"] < b["representation"]).any()
    # it is the engine's minimum from mu(n_gs): the same call by hand gives the same numbers
    with torch.no_grad():
        mu = vae.encode(torch.as_tensor(inst["n_gs"]), validate=False)[0]
    res = minimize(inst["V"], exact, vae, config=MinimizeConfig(**{**b.gap_config}), z0=mu)
    np.testing.assert_allclose(b["manifold_gap"], res.e_min - inst["e_gs"], rtol=0, atol=1e-12)


def test_z0_is_the_start_of_the_engine():
    """``minimize(..., z0=...)`` starts every instance at the given latent vector (no training densities)."""
    d = _instances("gaussian1d", n=3)
    vae = small_vae("gaussian1d")
    exact = ExactKineticFunctional(d["grid"])
    z0 = torch.as_tensor(np.random.default_rng(4).normal(size=(3, 4)))
    res = minimize(d["V"], exact, vae, config=MinimizeConfig(method="latent-gd", steps=1, lr=1e-12), z0=z0)
    with torch.no_grad():
        e0 = latent_energy(vae, exact, z0, torch.as_tensor(d["V"])).numpy()
    np.testing.assert_allclose(res.energy_history[:, 0], e0, rtol=1e-13)
    with pytest.raises(ValueError, match="z0"):
        minimize(d["V"], exact, vae, config=MinimizeConfig(method="latent-gd", steps=1), z0=z0[:2])
    with pytest.raises(ValueError, match="z0"):
        minimize(d["V"], exact, None, config=MinimizeConfig(method="density-gd", steps=1), z0=z0,
                 train_densities=d["n_gs"])


# ----------------------------------------------------------------------------- bookkeeping


def test_float32_models_are_evaluated_in_float64_copies():
    d = _instances("gaussian1d", n=2)
    vae32 = small_vae("gaussian1d").float()
    exact = ExactKineticFunctional(d["grid"])
    b32 = error_budget(vae32, exact, d["V"], d["n_gs"], d["e_gs"], d["F"], grid=d["grid"], gap=False)
    as_torch = [torch.as_tensor(d[k]) for k in ("V", "n_gs", "e_gs", "F")]  # tensors are accepted too
    b64 = error_budget(vae32.double(), exact, *as_torch, grid=d["grid"], gap=False)
    for name in b64.terms:
        np.testing.assert_allclose(b32[name], b64[name], rtol=1e-12, atol=1e-12)


def test_diverged_instances_are_nan_and_left_out_of_the_summary():
    d = _instances("gaussian1d")
    exact = ExactKineticFunctional(d["grid"])
    diverged = np.array([False, True, False, False])
    b = error_budget(None, exact, d["V"], d["n_gs"], d["e_gs"], d["F"], grid=d["grid"], n_min=d["n_gs"],
                     diverged=diverged)
    for name in ("total", "functional_error_at_min", "exact_energy_at_min"):
        assert np.isnan(b[name][1]) and np.isfinite(b[name][[0, 2, 3]]).all()
    s = budget_summary(b)
    assert s["total_n_finite"] == 3 and s["functional_error_n_finite"] == 4 and s["n_instances"] == 4


def test_budget_summary_by_hand():
    terms = {"functional_error": np.array([1.0, -3.0]) * KCAL_PER_MOL,
             "manifold_gap": np.array([0.5, 1.5]) * KCAL_PER_MOL,
             "total": np.array([np.nan, 2.0]) * KCAL_PER_MOL}
    s = budget_summary(ErrorBudget(terms=terms))
    assert s["functional_error_mean_kcal_per_mol"] == pytest.approx(-1.0)
    assert s["functional_error_mean_abs_kcal_per_mol"] == pytest.approx(2.0)
    assert s["manifold_gap_mean_kcal_per_mol"] == pytest.approx(1.0)
    assert s["manifold_gap_min_kcal_per_mol"] == pytest.approx(0.5) and "manifold_gap_mean_abs_kcal_per_mol" not in s
    assert s["total_mean_kcal_per_mol"] == pytest.approx(2.0) and s["total_n_finite"] == 1
    assert not any(k.startswith("roughness") for k in s)
    assert set(VARIATIONAL_TERMS) == {"manifold_gap", "exact_energy_at_min"}
    all_nan = budget_summary({"total": np.array([np.nan])})
    assert np.isnan(all_nan["total_mean_kcal_per_mol"]) and all_nan["total_n_finite"] == 0


def test_refusals():
    d = _instances("gaussian1d", n=2)
    exact = ExactKineticFunctional(d["grid"])
    args = (d["V"], d["n_gs"], d["e_gs"], d["F"])
    with pytest.raises(ValueError, match="needs the VAE"):
        error_budget(None, exact, *args, np.zeros((2, 4)), grid=d["grid"])
    with pytest.raises(ValueError, match="grid"):
        error_budget(None, exact, *args, grid=get_testbed("speckle1d").grid)
    with pytest.raises(ValueError, match="n_gs"):
        error_budget(None, exact, d["V"], d["n_gs"][:1], d["e_gs"], d["F"], grid=d["grid"])
    with pytest.raises(ValueError, match="e_gs"):
        error_budget(None, exact, d["V"], d["n_gs"], d["e_gs"][:1], d["F"], grid=d["grid"])
    with pytest.raises(ValueError, match="z_min"):
        error_budget(small_vae("gaussian1d"), exact, *args, np.zeros((2, 3)), grid=d["grid"], gap=False)
    with pytest.raises(ValueError, match="latent minimization"):
        error_budget(small_vae("gaussian1d"), exact, *args, grid=d["grid"], gap_options={"method": "density-gd"})


def test_budget_tables_in_the_report():
    metrics = {
        "gaussian1d/ld4/beta1e-05/mean_abs_energy_error": 0.01,
        "gaussian1d/ld4/beta1e-05/budget_total_mean_kcal_per_mol": 1.25,
        "gaussian1d/ld4/beta1e-05/budget_total_mean_abs_kcal_per_mol": 2.5,
        "gaussian1d/ld4/beta1e-05/budget_manifold_gap_mean_kcal_per_mol": 0.5,
        "gaussian1d/ld8/beta1e-05/budget_total_mean_kcal_per_mol": float("nan"),
        "speckle1d/density-gd/budget_functional_error_mean_kcal_per_mol": -0.125,
        "speckle1d/ld16/beta1e-05/instance0/budget_total_kcal_per_mol": 3.0,
    }
    text = "\n".join(budget_tables(metrics))
    assert "**Error budget, gaussian1d**" in text and "**Error budget, speckle1d**" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| case") and "manifold_gap" in line)
    assert header.index("manifold_gap") < header.index("total")  # the order of BUDGET_TERMS
    assert any("ld4/beta1e-05" in line and "1.25" in line and "0.5" in line for line in lines)
    assert any("ld8/beta1e-05" in line and "nan" in line for line in lines)
    assert any("density-gd" in line and "-0.125" in line for line in lines)
    assert any("instance0" in line and "3" in line for line in lines)
    assert "2.5" not in text  # mean per term only
    assert budget_tables({"gaussian1d/ld4/beta1e-05/mean_abs_energy_error": 0.01}) == []
