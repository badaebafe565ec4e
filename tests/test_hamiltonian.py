"""The discretised Hamiltonian: FFT kinetic operator vs an explicit matrix, hard-wall spectra, free particles.

References used here, none taken from the code under test:
* the sparse matrix of :func:`sparse_hamiltonian` (stencil taps + ghost-index rules, no FFT);
* a third, real-space application written in this file (odd extension + ``np.roll``) with
  the closed-form stencil coefficients;
* the analytic spectrum of the hard-wall operator (sine modes, eigenvalue = stencil symbol);
* the free particle in a box, ``pi^2 / 2`` for ``L = 1``, with the stencil's leading error term.
"""

from __future__ import annotations

from fractions import Fraction
from math import factorial

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from vaedft.physics import Grid, KineticOperator, get_testbed, ground_state, sparse_hamiltonian
from vaedft.physics.hamiltonian import kinetic_matrix_1d


def closed_form_weights(points: int) -> np.ndarray:
    """``(c_-m .. c_m)`` of the maximal-order central stencil from its closed form."""
    m = (points - 1) // 2
    c0 = -2 * sum(Fraction(1, k * k) for k in range(1, m + 1))
    ck = [
        Fraction(2 * (-1) ** (k + 1) * factorial(m) ** 2, k * k * factorial(m - k) * factorial(m + k))
        for k in range(1, m + 1)
    ]
    c = [float(v) for v in [c0, *ck]]
    return np.array(c[:0:-1] + c)


def symbol(theta: np.ndarray, points: int) -> np.ndarray:
    """``-1/2 (c_0 + 2 sum_j c_j cos(j theta))`` from the closed-form coefficients."""
    w = closed_form_weights(points)
    m = (points - 1) // 2
    return -0.5 * (w[m] + 2 * sum(w[m + j] * np.cos(j * np.asarray(theta)) for j in range(1, m + 1)))


def realspace_kinetic(psi: np.ndarray, grid: Grid) -> np.ndarray:
    """``T psi`` for a batch ``(B, *grid.shape)`` by rolling the stencil over each axis; hard walls
    by explicit odd extension ``[0, psi, 0, -reversed(psi)]`` (period ``2(n+1)``)."""
    w = closed_form_weights(grid.stencil_points) * (-0.5 / grid.dx**2)
    m = (grid.stencil_points - 1) // 2
    n = grid.n
    out = np.zeros_like(psi)
    for axis in range(1, grid.ndim + 1):
        if grid.boundary == "hard_wall":
            zero = np.zeros_like(np.take(psi, [0], axis=axis))
            ext = np.concatenate([zero, psi, zero, -np.flip(psi, axis=axis)], axis=axis)
        else:
            ext = psi
        acc = sum(w[j + m] * np.roll(ext, -j, axis=axis) for j in range(-m, m + 1))
        if grid.boundary == "hard_wall":
            acc = np.take(acc, np.arange(1, n + 1), axis=axis)
        out += acc
    return out


def apply_kinetic(grid: Grid, psi: np.ndarray) -> np.ndarray:
    return KineticOperator(grid, "cpu").apply(torch.from_numpy(psi)).numpy()


GRIDS = [
    # (box_length, n, ndim, boundary, stencil_points)
    (1.0, 9, 1, "hard_wall", 9),
    (1.0, 2, 1, "hard_wall", 11),  # taps reflect off both walls more than once
    (3.0, 3, 1, "hard_wall", 11),
    (0.7, 20, 1, "hard_wall", 3),
    (2.0, 6, 1, "periodic", 11),  # taps wrap around the box
    (5.0, 7, 1, "periodic", 3),
    (1.5, 33, 1, "periodic", 7),
    (1.0, 6, 3, "periodic", 11),
    (2.0, 8, 3, "periodic", 5),
    (1.0, 5, 3, "hard_wall", 9),
    (1.0, 4, 2, "hard_wall", 7),
]
GRID_IDS = [f"{b}-{d}d-n{n}-{p}pt" for (_, n, d, b, p) in GRIDS]
TESTBED_GRIDS = {name: get_testbed(name).grid for name in ("gaussian1d", "speckle1d", "gaussian3d")}


def _random_fields(grid: Grid, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *grid.shape))


def _check_apply_vs_sparse(grid: Grid, seed: int) -> None:
    psi = _random_fields(grid, 3, seed)
    fft = apply_kinetic(grid, psi)
    tmat = sparse_hamiltonian(grid, np.zeros(grid.shape))
    mat = (tmat @ psi.reshape(3, -1).T).T.reshape(psi.shape)
    real = realspace_kinetic(psi, grid)
    scale = np.linalg.norm(mat)
    assert scale > 0
    assert np.linalg.norm(fft - mat) / scale < 1e-10
    assert np.linalg.norm(real - mat) / scale < 1e-10


@pytest.mark.parametrize("spec", GRIDS, ids=GRID_IDS)
def test_kinetic_apply_matches_sparse_matrix(spec):
    _check_apply_vs_sparse(Grid(*spec), seed=11)


@pytest.mark.parametrize("name", sorted(TESTBED_GRIDS))
def test_kinetic_apply_matches_sparse_on_testbed_grids(name):
    _check_apply_vs_sparse(TESTBED_GRIDS[name], seed=12)


@pytest.mark.parametrize("name", sorted(TESTBED_GRIDS))
def test_sparse_hamiltonian_potential_is_diagonal_in_c_order(name):
    grid = TESTBED_GRIDS[name]
    v = np.random.default_rng(3).uniform(-2, 5, size=grid.shape)
    diff = sparse_hamiltonian(grid, v) - sparse_hamiltonian(grid, np.zeros(grid.shape))
    np.testing.assert_allclose(diff.diagonal(), v.ravel(), rtol=0, atol=1e-9)
    assert abs(diff - sp.diags(v.ravel())).max() < 1e-9
    h = sparse_hamiltonian(grid, v)
    assert abs(h - h.T).max() < 1e-9 * abs(h).max()
    with pytest.raises(ValueError, match="shape"):
        sparse_hamiltonian(grid, v.ravel()[:-1])


def test_kinetic_preserves_batch_dtype_and_shape():
    grid = TESTBED_GRIDS["gaussian3d"]
    psi = torch.from_numpy(_random_fields(grid, 2, 0))
    kin = KineticOperator(grid, "cpu")
    out = kin.apply(psi)
    assert out.shape == psi.shape and out.dtype == torch.float64
    # row i of a batch is T applied to row i alone
    np.testing.assert_allclose(kin.apply(psi[1:2]).numpy()[0], out.numpy()[1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("boundary", ["hard_wall", "periodic"])
@pytest.mark.parametrize("points", [3, 5, 7, 9, 11])
@pytest.mark.parametrize("n", [6, 17])
def test_kinetic_matrix_1d_spectrum_is_the_stencil_symbol(boundary, points, n):
    """Hard walls: ``sin(p pi x_i / L)``, p = 1..n, are exact eigenvectors with eigenvalue
    ``S(p pi dx / L) / dx^2``.  Periodic: ``cos/sin(2 pi q i / n)`` with ``S(2 pi q / n) / dx^2``."""
    box = 1.7
    grid = Grid(box, n, 1, boundary, points)
    dx = grid.dx
    t = kinetic_matrix_1d(n, dx, boundary, points)
    dense = t.toarray()
    np.testing.assert_array_equal(dense, dense.T)
    x = grid.points
    if boundary == "hard_wall":
        modes = np.arange(1, n + 1)
        vecs = np.sin(np.outer(x, modes) * np.pi / box)
        vals = symbol(modes * np.pi * dx / box, points) / dx**2
        spectrum = vals
    else:
        i, q = np.arange(n), np.arange(n)
        vecs = np.concatenate([np.cos(2 * np.pi * np.outer(i, q) / n), np.sin(2 * np.pi * np.outer(i, q[1:]) / n)], 1)
        vals = np.concatenate([symbol(2 * np.pi * q / n, points), symbol(2 * np.pi * q[1:] / n, points)]) / dx**2
        spectrum = symbol(2 * np.pi * q / n, points) / dx**2
    scale = vals.max()
    resid = dense @ vecs - vecs * vals[None, :]
    assert np.abs(resid).max() < 1e-12 * scale * np.abs(vecs).max()
    # and these are all of them
    np.testing.assert_allclose(np.linalg.eigvalsh(dense), np.sort(spectrum), rtol=0, atol=1e-11 * scale)


def test_hard_wall_sine_modes_through_fft_operator():
    grid = TESTBED_GRIDS["gaussian1d"]
    modes = np.array([1, 2, 5, 40, 128, 256])
    psi = np.sin(np.outer(modes, grid.points) * np.pi / grid.box_length)
    out = apply_kinetic(grid, psi)
    vals = symbol(modes * np.pi * grid.dx / grid.box_length, grid.stencil_points) / grid.dx**2
    np.testing.assert_allclose(out, vals[:, None] * psi, rtol=0, atol=1e-9 * vals.max())


@pytest.mark.parametrize(
    "spec",
    [(1.0, 256, 1, "hard_wall", 9), (14.0, 256, 1, "periodic", 11), (1.0, 18, 3, "periodic", 11),
     (1.0, 5, 3, "hard_wall", 9), (2.0, 3, 1, "hard_wall", 11)],
)
def test_solve_shifted_inverts_t_plus_shift(spec):
    grid = Grid(*spec)
    rng = np.random.default_rng(5)
    rhs = rng.standard_normal((3, *grid.shape))
    shift = np.array([0.01, 1.0, 250.0])
    kin = KineticOperator(grid, "cpu")
    x = kin.solve_shifted(torch.from_numpy(rhs), torch.from_numpy(shift)).numpy()
    t = sparse_hamiltonian(grid, np.zeros(grid.shape))
    for b in range(3):
        lhs = t @ x[b].ravel() + shift[b] * x[b].ravel()
        assert np.linalg.norm(lhs - rhs[b].ravel()) / np.linalg.norm(rhs[b]) < 1e-10
    if grid.ndim == 1:  # against a direct dense solve too
        for b in range(3):
            direct = np.linalg.solve(t.toarray() + shift[b] * np.eye(grid.n), rhs[b])
            np.testing.assert_allclose(x[b], direct, rtol=0, atol=1e-10 * np.abs(direct).max())


def test_kinetic_symbol_bounds_spectrum():
    grid = TESTBED_GRIDS["gaussian1d"]
    kin = KineticOperator(grid, "cpu")
    top = np.linalg.eigvalsh(sparse_hamiltonian(grid, np.zeros(grid.shape)).toarray()).max()
    assert top <= kin.max_eigenvalue * (1 + 1e-12)
    assert top > 0.9 * kin.max_eigenvalue


def _free_energy(n: int) -> float:
    grid = Grid(1.0, n, 1, "hard_wall", 9)
    return float(ground_state(np.zeros((1, n)), grid, backend="cpu", tol=1e-10).energy[0])


def test_free_particle_hard_wall_box():
    """L = 1 box, 9-point stencil: E -> pi^2/2, from below, at 8th order, with the predicted
    leading error ``(m!)^2 (pi dx)^(2m+2) / ((2m+2)! dx^2)`` (m = 4)."""
    exact = np.pi**2 / 2
    e256 = _free_energy(256)  # the gaussian1d grid
    assert abs(e256 - exact) < 1e-8
    e16, e32 = exact - _free_energy(16), exact - _free_energy(32)
    assert e16 > 0 and e32 > 0  # the 9-point symbol lies below k^2/2
    order = np.log(e16 / e32) / np.log(33 / 17)  # dx = 1/(n+1)
    assert 7.7 < order < 8.3, order
    dx = 1 / 17
    predicted = factorial(4) ** 2 * (np.pi * dx) ** 10 / factorial(10) / dx**2
    assert e16 == pytest.approx(predicted, rel=0.03)


@pytest.mark.parametrize("box,n,ndim,points", [(14.0, 256, 1, 11), (1.0, 18, 3, 11), (2.5, 8, 3, 5), (3.0, 10, 2, 7)])
def test_free_particle_periodic_box(box, n, ndim, points):
    grid = Grid(box, n, ndim, "periodic", points)
    gs = ground_state(np.zeros((2, *grid.shape)), grid, backend="cpu")
    np.testing.assert_allclose(gs.energy, 0.0, atol=1e-12)
    np.testing.assert_allclose(gs.density, 1.0 / box**ndim, rtol=1e-12)
    # a constant potential only shifts the energy
    gs = ground_state(np.full((1, *grid.shape), 0.75), grid, backend="cpu")
    assert gs.energy[0] == pytest.approx(0.75, abs=1e-12)
