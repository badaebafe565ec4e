"""The latent trust region (``latent_box``): every latent coordinate stays within the training codes'
mean +- k standard deviations, where the decoder makes the densities the networks were trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaedft.cli import main
from vaedft.minimize import MinimizeConfig, minimize
from vaedft.minimize.engine import latent_bounds
from vaedft.models import VAE, vae_preset
from vaedft.physics import ExactKineticFunctional, get_testbed, ground_state
from vaedft.results import read_result

pytestmark = pytest.mark.usefixtures("one_thread")

TB = get_testbed("gaussian1d")


class _Rough(ExactKineticFunctional):
    """F = -T[n]: rewards rough densities, so a free descent runs off the data; a 'functional with holes'."""

    def forward(self, n, *, validate=False):
        return -super().forward(n, validate=validate)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    vae = VAE(vae_preset("gaussian1d", 3).replace(channels=(4,) * 5, kernel=3, dense=(8, 8))).double().eval()
    V = TB.potential(TB.sample_params(3, np.arange(24)))
    gs = ground_state(V, TB.grid, backend="cpu")
    return vae, V[:4], gs.density


def test_bounds_are_mean_and_std_of_the_training_codes_encoded_one_by_one(setup):
    vae, _, train = setup
    with torch.no_grad():
        mu = np.stack([vae.encode(torch.as_tensor(n[None]))[0][0].numpy() for n in train])
        lo, hi = latent_bounds(vae, torch.as_tensor(train), 2.5)
    np.testing.assert_allclose(lo.numpy(), mu.mean(0) - 2.5 * mu.std(0, ddof=1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hi.numpy(), mu.mean(0) + 2.5 * mu.std(0, ddof=1), rtol=1e-10, atol=1e-12)


def test_a_descent_that_runs_off_the_data_stays_in_the_box(setup):
    vae, V, train = setup
    cfg = MinimizeConfig(method="latent-gd", steps=200, lr=10.0, init="mean", tol_energy=0, tol_grad=0,
                         divergence_threshold=float("inf"))
    free = minimize(V, _Rough(TB.grid).double(), vae, config=cfg, train_densities=train)
    boxed = minimize(V, _Rough(TB.grid).double(), vae, config=cfg.replace(latent_box=2.0), train_densities=train)
    with torch.no_grad():
        lo, hi = (b.numpy() for b in latent_bounds(vae, torch.as_tensor(train), 2.0))
    assert ((free.z_min < lo - 1e-9) | (free.z_min > hi + 1e-9)).any()  # the free descent left the region
    assert ((boxed.z_min >= lo - 1e-12) & (boxed.z_min <= hi + 1e-12)).all()
    assert np.isclose(boxed.z_min, lo, atol=1e-12).any() or np.isclose(boxed.z_min, hi, atol=1e-12).any()
    assert (boxed.e_min > free.e_min).all()  # the holes it found are outside the box


def test_a_box_that_is_never_reached_changes_nothing(setup):
    vae, V, train = setup
    cfg = MinimizeConfig(method="latent-lbfgs", steps=30, lr=1e-2, init="mean", tol_energy=0, tol_grad=0)
    f = ExactKineticFunctional(TB.grid).double()
    free = minimize(V, f, vae, config=cfg, train_densities=train)
    wide = minimize(V, f, vae, config=cfg.replace(latent_box=1e9), train_densities=train)
    np.testing.assert_array_equal(wide.z_min, free.z_min)
    np.testing.assert_array_equal(wide.e_min, free.e_min)


def test_config_checks_and_cache_identity(setup):
    vae, V, train = setup
    with pytest.raises(ValueError, match="latent_box must be >= 0"):
        MinimizeConfig(latent_box=-1.0)
    with pytest.raises(ValueError, match="not a latent method"):
        MinimizeConfig(method="density-gd", latent_box=3.0)
    assert "latent_box" not in MinimizeConfig().to_dict()  # cache keys of older configs unchanged
    cfg = MinimizeConfig(latent_box=3.0, steps=2)
    assert MinimizeConfig.from_dict(cfg.to_dict()) == cfg and cfg.needs_training_densities
    with pytest.raises(ValueError, match="at least two"):
        minimize(V, ExactKineticFunctional(TB.grid).double(), vae, config=cfg, train_densities=train.mean(0)[None])
    with pytest.raises(ValueError, match="needs train_densities"):
        minimize(V, ExactKineticFunctional(TB.grid).double(), vae, config=cfg, z0=np.zeros((4, 3)))


def test_vaedft_minimize_latent_box(tmp_path, tiny_pair):
    out = tmp_path / "r.h5"
    assert main(["minimize", "--vae", str(tiny_pair["vae"]), "--functional", str(tiny_pair["functional"]), "--data",
                 str(tiny_pair["test"]), "--out", str(out), "--steps", "3", "--latent-box", "3", "--no-progress",
                 "--no-gap"]) == 0
    assert read_result(out)["config"].latent_box == 3.0
