"""The ``nearest`` start: each instance starts from the training ground state whose potential is
nearest to its own.  A test instance that is also in the training set starts at its exact answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaedft.cli import main
from vaedft.minimize import MinimizeConfig, minimize
from vaedft.minimize.engine import nearest_potentials
from vaedft.physics import ExactKineticFunctional, get_testbed, ground_state
from vaedft.results import read_result

pytestmark = pytest.mark.usefixtures("one_thread")


def test_nearest_potentials_is_the_brute_force_argmin():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5, 4)), rng.normal(size=(23, 5, 4))
    want = np.argmin(((a[:, None] - b[None]) ** 2).sum(axis=(2, 3)), axis=1)
    np.testing.assert_array_equal(nearest_potentials(torch.as_tensor(a), torch.as_tensor(b), chunk=5), want)


def test_an_instance_of_the_training_set_starts_at_its_ground_state():
    tb = get_testbed("gaussian1d")
    V = tb.potential(tb.sample_params(3, np.arange(12)))
    gs = ground_state(V, tb.grid, backend="cpu")
    order = np.random.default_rng(1).permutation(12)  # the training set in another order
    cfg = MinimizeConfig(method="density-gd", precondition="kinetic", lr=1.0, steps=1, init="nearest", tol_energy=0)
    res = minimize(V[:4], ExactKineticFunctional(tb.grid).double(), config=cfg, train_densities=gs.density[order],
                   train_potentials=V[order])
    np.testing.assert_allclose(res.energy_history[:, 0], gs.energy[:4], rtol=0, atol=1e-9)
    mean = minimize(V[:4], ExactKineticFunctional(tb.grid).double(), config=cfg.replace(init="mean"),
                    train_densities=gs.density[order])
    assert (mean.energy_history[:, 0] > gs.energy[:4] + 1e-3).all()  # the mean density is not


def test_nearest_needs_the_training_potentials():
    tb = get_testbed("gaussian1d")
    V = tb.potential(tb.sample_params(3, np.arange(3)))
    cfg = MinimizeConfig(method="density-gd", steps=1, init="nearest")
    f = ExactKineticFunctional(tb.grid).double()
    with pytest.raises(ValueError, match="train_potentials"):
        minimize(V, f, config=cfg, train_densities=np.abs(V))
    with pytest.raises(ValueError, match="rows"):
        minimize(V, f, config=cfg, train_densities=np.abs(V), train_potentials=V[:2])


def test_vaedft_minimize_init_nearest(tmp_path, tiny_pair):
    out = tmp_path / "r.h5"
    assert main(["minimize", "--vae", str(tiny_pair["vae"]), "--functional", str(tiny_pair["functional"]), "--data",
                 str(tiny_pair["test"]), "--out", str(out), "--steps", "3", "--init", "nearest", "--no-progress",
                 "--no-gap"]) == 0
    res = read_result(out)
    assert res["config"].init == "nearest"
