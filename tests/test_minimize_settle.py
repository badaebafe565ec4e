"""Per-row stopping when the energy has settled (``MinimizeConfig.settle_window``).

Density-space descent with the exact one-particle functional (:class:`ExactKineticFunctional`)
has a known answer, the exact ground state, so a row that stops early must stop there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaedft.minimize import MinimizeConfig, minimize
from vaedft.physics import ExactKineticFunctional, get_testbed, ground_state

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def case():
    tb = get_testbed("gaussian1d")
    V = tb.potential(tb.sample_params(7, np.arange(10)))
    gs = ground_state(V, tb.grid, backend="cpu")
    return tb, V, gs


def _run(case, **changes):
    tb, V, gs = case
    settings = {"method": "density-gd", "precondition": "kinetic", "precondition_shift": 0.5, "lr": 1.0,
                "steps": 400, "tol_energy": 1e-12, "tol_grad": float("inf"), **changes}
    cfg = MinimizeConfig(**settings)
    return minimize(V[:4], ExactKineticFunctional(tb.grid).double(), config=cfg, train_densities=gs.density[4:])


def test_settled_rows_stop_early_at_the_ground_state(case):
    _, _, gs = case
    res = _run(case, settle_window=5)
    assert res.converged.all() and not res.diverged.any()
    assert (res.steps < 400).all() and len(set(res.steps.tolist())) > 1  # each row stops on its own
    np.testing.assert_allclose(res.e_min, gs.energy[:4], rtol=0, atol=1e-9)
    full = _run(case, tol_energy=0.0)  # every row runs the whole budget
    assert (full.steps == 400).all()
    np.testing.assert_allclose(res.e_min, full.e_min, rtol=0, atol=1e-10)


def test_a_creeping_row_is_not_mistaken_for_a_settled_one(case):
    """With a tiny step the per-step change is below tol at once; the window sees the drift."""
    # lr 1e-4: each step lowers E by about 2e-5 E0, while the rows are still ~0.02 E0 above e_gs
    per_step = _run(case, lr=1e-4, tol_energy=3e-5)
    window = _run(case, lr=1e-4, tol_energy=3e-5, settle_window=50)
    assert (per_step.steps <= 2).all()
    assert (window.steps > 50).all()
    assert (window.e_min < per_step.e_min - 2e-4).all()


def test_result_of_a_row_does_not_depend_on_its_batch(case):
    tb, V, gs = case
    cfg = MinimizeConfig(method="density-gd", precondition="kinetic", precondition_shift=0.5, lr=1.0, steps=400,
                         tol_energy=1e-12, tol_grad=float("inf"), settle_window=5)
    exact = ExactKineticFunctional(tb.grid).double()
    both = minimize(V[:2], exact, config=cfg, train_densities=gs.density[4:])
    one = minimize(V[1:2], exact, config=cfg, train_densities=gs.density[4:], indices=[1])
    assert one.steps[0] == both.steps[1]
    np.testing.assert_allclose(one.e_min[0], both.e_min[1], rtol=0, atol=1e-13)


def test_settle_window_config():
    assert "settle_window" not in MinimizeConfig().to_dict()  # cached results keep their keys
    cfg = MinimizeConfig(settle_window=20, tol_grad=float("inf"))
    assert MinimizeConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="settle_window"):
            MinimizeConfig(settle_window=bad)
    assert torch.isinf(torch.tensor(cfg.tol_grad))
