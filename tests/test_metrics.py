"""Metrics (:mod:`vaedft.metrics`): density L1 distance, VAE reconstruction error, functional errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vaedft.metrics import (
    CHEMICAL_ACCURACY,
    KCAL_PER_MOL,
    density_l1,
    functional_errors,
    reconstruction_error,
    to_kcal_per_mol,
)
from vaedft.models import VAE, Functional, functional_preset, vae_preset


def normalised(shape, dx, ndim=1, seed=0) -> np.ndarray:
    """Random positive densities ``(B, *grid)`` with ``dx**ndim * sum = 1``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape)
    flat = logits.reshape(shape[0], -1)
    p = np.exp(flat - flat.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return (p / dx**ndim).reshape(shape)


# ----------------------------------------------------------------------------- units


def test_units():
    assert KCAL_PER_MOL == 1.5936e-3 and CHEMICAL_ACCURACY == KCAL_PER_MOL
    assert to_kcal_per_mol(KCAL_PER_MOL) == 1.0
    np.testing.assert_array_equal(to_kcal_per_mol([0.0, 2 * KCAL_PER_MOL]), [0.0, 2.0])


# ----------------------------------------------------------------------------- density_l1


def test_density_l1_hand_computed():
    a = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = np.array([[0.0, 2.0, 5.0], [1.0, 1.0, 1.0]])
    # instance 0: 0.5 * (1 + 0 + 2); instance 1: 0.5 * (1 + 1 + 1)
    np.testing.assert_array_equal(density_l1(a, b, 0.5), [1.5, 1.5])
    np.testing.assert_array_equal(density_l1(torch.tensor(a, dtype=torch.float32), b, 0.25), [0.75, 0.75])
    assert density_l1(a, a, 0.5).tolist() == [0.0, 0.0]


def test_density_l1_sums_over_every_grid_axis():
    dx = 0.1
    a = np.zeros((2, 3, 3, 3))
    b = np.zeros((2, 3, 3, 3))
    a[0, 0, 0, 0], b[0, 2, 2, 2] = 4.0, 1.0
    a[1] = 2.0
    out = density_l1(torch.tensor(a), torch.tensor(b), dx**3)
    assert out.shape == (2,) and out.dtype == np.float64
    np.testing.assert_allclose(out, [5.0 * dx**3, 2.0 * 27 * dx**3], rtol=1e-15)


def test_density_l1_of_normalised_densities_is_at_most_two():
    dx = 0.05
    a, b = normalised((20, 40), dx, seed=1), normalised((20, 40), dx, seed=2)
    d = density_l1(a, b, dx)
    assert ((d > 0) & (d <= 2)).all()
    disjoint_a, disjoint_b = np.zeros((1, 40)), np.zeros((1, 40))
    disjoint_a[0, :20], disjoint_b[0, 20:] = 1 / (20 * dx), 1 / (20 * dx)
    assert density_l1(disjoint_a, disjoint_b, dx)[0] == pytest.approx(2.0, rel=1e-14)


@pytest.mark.parametrize("shape_a, shape_b", [((3, 4), (2, 4)), ((3, 4), (3, 3)), ((3, 4), (4,)), ((3, 3), (3, 3, 1))])
def test_density_l1_shape_mismatch_raises(shape_a, shape_b):
    with pytest.raises(ValueError, match="shape"):
        density_l1(np.zeros(shape_a), torch.zeros(shape_b), 1.0)


# ----------------------------------------------------------------------------- reconstruction_error


class ShiftVAE(nn.Module):
    """Stand-in with the interface reconstruction_error uses: ``D(mu(n))`` is ``n`` rolled by ``shift``."""

    def __init__(self, cell_volume: float, shift: int) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.config = SimpleNamespace(cell_volume=cell_volume)
        self.shift = shift

    def encode(self, x):
        return x, torch.zeros_like(x)

    def decode(self, z):
        return torch.roll(z, self.shift, dims=-1)


def test_reconstruction_error_hand_computed():
    x = np.array([[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    dx = 0.5  # every row integrates to 1
    exact = reconstruction_error(ShiftVAE(dx, 0), x)
    np.testing.assert_array_equal(exact["per_instance"], [0.0, 0.0, 0.0])
    assert exact["mean"] == exact["max"] == exact["std"] == 0.0
    err = reconstruction_error(ShiftVAE(dx, 1), x, batch=2)
    # |roll - x| summed: row 0: 2 + 2, row 1: 1 + 0 + 1, row 2: 0; times dx
    np.testing.assert_allclose(err["per_instance"], [2.0, 1.0, 0.0], rtol=1e-15)
    assert err["mean"] == pytest.approx(1.0) and err["max"] == 2.0
    assert err["std"] == pytest.approx(np.std([2.0, 1.0, 0.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reconstruction_error_of_a_vae(dtype):
    torch.manual_seed(0)
    vae = VAE(vae_preset("gaussian1d", latent_dim=4)).to(dtype)
    vae.train()
    dx = vae.config.dx
    dens = normalised((7, 256), dx, seed=3)
    err = reconstruction_error(vae, dens, batch=3)
    assert not vae.training  # evaluated with z = mu
    per = err["per_instance"]
    assert per.shape == (7,) and per.dtype == np.float64
    assert ((per >= 0) & (per <= 2 + 1e-6)).all()  # L1 distance of two normalised densities
    assert err["mean"] == pytest.approx(per.mean(), rel=1e-12)
    assert err["std"] == pytest.approx(per.std(), rel=1e-12) and err["max"] == per.max()
    # batching does not matter (batch norm uses its running statistics in eval mode) ...
    np.testing.assert_allclose(reconstruction_error(vae, torch.as_tensor(dens))["per_instance"], per, rtol=1e-5)
    # ... and it is int |D(mu(n)) - n| dx
    x = torch.as_tensor(dens, dtype=dtype)
    with torch.no_grad():
        manual = density_l1(vae.decode(vae.encode(x)[0]), x, dx)
    np.testing.assert_allclose(per, manual, rtol=1e-5)


def test_reconstruction_error_refuses_bad_densities():
    vae = VAE(vae_preset("gaussian1d", latent_dim=4))
    with pytest.raises(ValueError):
        reconstruction_error(vae, normalised((2, 128), vae.config.dx))  # other grid
    with pytest.raises(ValueError):
        reconstruction_error(vae, 2 * normalised((2, 256), vae.config.dx))  # not normalised


# ----------------------------------------------------------------------------- functional_errors


def constant_functional(c: float, dtype=torch.float32) -> Functional:
    """The 1D preset with a zeroed head: predicts exactly ``c`` (target_mean) for every density."""
    f = Functional(functional_preset("gaussian1d"))
    f.set_target_scaling(c, 0.25)
    with torch.no_grad():
        f.head.weight.zero_()
        f.head.bias.zero_()
    return f.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_functional_errors_of_a_constant_predictor(dtype):
    c = 5.375  # exact in float32
    f = constant_functional(c, dtype)
    dens = normalised((9, 256), f.config.dx, seed=4)
    F_true = np.random.default_rng(5).normal(5.4, 0.3, size=9)
    err = functional_errors(f, dens, F_true, batch=4)
    np.testing.assert_array_equal(err["per_instance"], c - F_true)  # signed F_pred - F_true
    assert err["mae"] == pytest.approx(np.abs(c - F_true).mean(), rel=1e-14)
    assert err["max_abs"] == pytest.approx(np.abs(c - F_true).max(), rel=1e-14)
    assert err["rmse"] == pytest.approx(np.sqrt(((c - F_true) ** 2).mean()), rel=1e-14)
    assert err["mae_kcal_per_mol"] == pytest.approx(err["mae"] / 1.5936e-3, rel=1e-14)
    same = functional_errors(f, torch.as_tensor(dens), torch.as_tensor(F_true))
    assert same["mae"] == err["mae"]


def test_functional_errors_zero_for_exact_predictions():
    f = constant_functional(-1.5)
    dens = normalised((3, 256), f.config.dx)
    err = functional_errors(f, dens, np.full(3, -1.5))
    assert err["mae"] == err["max_abs"] == err["rmse"] == err["mae_kcal_per_mol"] == 0.0


def test_functional_errors_length_mismatch_raises():
    f = constant_functional(1.0)
    dens = normalised((4, 256), f.config.dx)
    with pytest.raises(ValueError):
        functional_errors(f, dens, np.zeros(3))


def test_functional_errors_refuses_column_shaped_targets():
    f = constant_functional(1.0)
    dens = normalised((4, 256), f.config.dx)
    with pytest.raises(ValueError):
        functional_errors(f, dens, np.arange(4.0).reshape(4, 1))
