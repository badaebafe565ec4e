"""The batched ground-state solver against independent eigensolvers, analytic cases and symmetry.

References: dense ``numpy.linalg.eigh`` and ``scipy.sparse.linalg.eigsh`` of the explicit sparse
matrix (built without FFT), the harmonic oscillator ``E = omega/2`` with its Gaussian density,
and exact symmetries of the Hamiltonian (reflection, translation, axis permutation, shift of V).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh

from vaedft.physics import (
    ConvergenceError,
    Grid,
    GroundState,
    get_testbed,
    ground_state,
    sparse_hamiltonian,
)

E_TOL = 1e-9  # E0
N_TOL = 1e-6  # max-abs density difference


def dense_ground_state(grid: Grid, v: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Lowest eigenvalue, its density (normalised with dx^d) and the gap, by dense eigh."""
    w, u = np.linalg.eigh(sparse_hamiltonian(grid, v).toarray())
    n = u[:, 0] ** 2 / grid.cell_volume
    return float(w[0]), n.reshape(grid.shape), float(w[1] - w[0])


def _instances(name: str, seed: int, count: int, **changes):
    tb = get_testbed(name).replace(**changes) if changes else get_testbed(name)
    return tb, tb.potential(tb.sample_params(seed, range(count)))


def _check_normalised(gs: GroundState, grid: Grid) -> None:
    assert np.all(gs.density >= 0)
    axes = tuple(range(1, grid.ndim + 1))
    np.testing.assert_allclose(grid.cell_volume * gs.density.sum(axis=axes), 1.0, rtol=0, atol=1e-12)


def _compare_dense(grid: Grid, v: np.ndarray, gs: GroundState) -> None:
    assert gs.converged.all()
    for b in range(v.shape[0]):
        e, n, gap = dense_ground_state(grid, v[b])
        assert gap > 1e-3, "test case must have a non-degenerate ground state"
        assert abs(gs.energy[b] - e) <= E_TOL, (b, gs.energy[b], e)
        assert np.abs(gs.density[b] - n).max() <= N_TOL
    _check_normalised(gs, grid)


@pytest.mark.parametrize(
    "spec",
    [(1.3, 12, 1, "hard_wall", 5), (3.0, 16, 1, "periodic", 7), (2.0, 40, 1, "hard_wall", 11),
     (1.0, 9, 1, "periodic", 3)],
)
def test_small_1d_grids_match_dense_eigh(spec):
    grid = Grid(*spec)
    rng = np.random.default_rng(2024)
    v = rng.uniform(-3.0, 8.0, size=(5, *grid.shape))
    v[0] = 0.0 if grid.boundary == "hard_wall" else v[0]  # free particle in a box
    _compare_dense(grid, v, ground_state(v, grid, backend="cpu"))


@pytest.mark.parametrize("sign", [1, -1])
def test_gaussian1d_matches_dense_eigh(sign):
    tb, v = _instances("gaussian1d", seed=101, count=6, sign=sign)
    _compare_dense(tb.grid, v, ground_state(v, tb.grid, backend="cpu"))


def test_speckle1d_matches_dense_eigh():
    tb, v = _instances("speckle1d", seed=102, count=4)
    _compare_dense(tb.grid, v, ground_state(v, tb.grid, backend="cpu"))


def test_gaussian3d_matches_eigsh():
    tb, v = _instances("gaussian3d", seed=103, count=3)
    grid = tb.grid
    gs = ground_state(v, grid, backend="cpu")
    assert gs.converged.all()
    _check_normalised(gs, grid)
    for b in range(v.shape[0]):
        h = sparse_hamiltonian(grid, v[b])
        w, u = eigsh(h, k=1, which="SA")
        assert abs(gs.energy[b] - w[0]) <= E_TOL
        n = (u[:, 0] ** 2 / grid.cell_volume).reshape(grid.shape)
        assert np.abs(gs.density[b] - n).max() <= N_TOL
        # the energy is the Rayleigh quotient of the returned (nodeless) state sqrt(n)
        psi = np.sqrt(gs.density[b].ravel() * grid.cell_volume)
        assert abs(psi @ (h @ psi) - gs.energy[b]) <= E_TOL


@pytest.mark.parametrize("name", ["gaussian1d", "speckle1d"])
def test_harmonic_oscillator(name):
    """``V = omega^2 (x - c)^2 / 2``, well inside the box: ``E = omega/2`` and
    ``n = sqrt(omega/pi) exp(-omega (x - c)^2)``."""
    grid = get_testbed(name).grid
    omega = {"gaussian1d": 200.0, "speckle1d": 2.0}[name]
    c = grid.box_length / 2
    x = grid.points
    v = 0.5 * omega**2 * (x - c) ** 2
    gs = ground_state(v[None], grid, backend="cpu")
    assert gs.energy[0] == pytest.approx(omega / 2, rel=1e-7)
    exact = np.sqrt(omega / np.pi) * np.exp(-omega * (x - c) ** 2)
    assert np.abs(gs.density[0] - exact).max() < N_TOL * exact.max()


@pytest.mark.parametrize("name", ["gaussian1d", "speckle1d", "gaussian3d"])
def test_results_do_not_depend_on_block_size(name):
    tb, v = _instances(name, seed=104, count=9)
    runs = [ground_state(v, tb.grid, backend="cpu", block_size=bs) for bs in (1, 7, None)]
    for other in runs[1:]:
        np.testing.assert_allclose(other.energy, runs[0].energy, rtol=0, atol=1e-12)
        np.testing.assert_allclose(other.density, runs[0].density, rtol=0, atol=1e-12)
        assert other.converged.all()
    # an instance alone gives what it gives inside a batch
    alone = ground_state(v[4:5], tb.grid, backend="cpu")
    assert abs(alone.energy[0] - runs[0].energy[4]) <= 1e-12


def test_symmetries_1d():
    tb, v = _instances("gaussian1d", seed=105, count=3)
    grid = tb.grid
    gs = ground_state(v, grid, backend="cpu")
    # the hard-wall grid is symmetric about L/2: reflect V -> reflected density
    ref = ground_state(v[:, ::-1].copy(), grid, backend="cpu")
    np.testing.assert_allclose(ref.energy, gs.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ref.density, gs.density[:, ::-1], rtol=0, atol=1e-7)
    # V + const -> E + const, same density
    up = ground_state(v + 3.25, grid, backend="cpu")
    np.testing.assert_allclose(up.energy, gs.energy + 3.25, rtol=0, atol=1e-10)
    np.testing.assert_allclose(up.density, gs.density, rtol=0, atol=1e-7)
    # periodic: translation by grid steps
    tb, v = _instances("speckle1d", seed=106, count=2)
    gs = ground_state(v, tb.grid, backend="cpu")
    sh = ground_state(np.roll(v, 37, axis=1), tb.grid, backend="cpu")
    np.testing.assert_allclose(sh.energy, gs.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sh.density, np.roll(gs.density, 37, axis=1), rtol=0, atol=1e-7)


def test_symmetries_3d():
    tb, v = _instances("gaussian3d", seed=107, count=2)
    grid = tb.grid
    gs = ground_state(v, grid, backend="cpu")
    perm = (0, 3, 1, 2)
    rot = ground_state(v.transpose(perm).copy(), grid, backend="cpu")
    np.testing.assert_allclose(rot.energy, gs.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(rot.density, gs.density.transpose(perm), rtol=0, atol=1e-7)
    sh = ground_state(np.roll(v, (5, -3), axis=(1, 3)), grid, backend="cpu")
    np.testing.assert_allclose(sh.energy, gs.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sh.density, np.roll(gs.density, (5, -3), axis=(1, 3)), rtol=0, atol=1e-7)


def test_result_fields():
    tb, v = _instances("gaussian1d", seed=108, count=3)
    gs = ground_state(v, tb.grid, backend="cpu")
    assert gs.energy.shape == (3,) and gs.energy.dtype == np.float64
    assert gs.density.shape == (3, 256) and gs.density.dtype == np.float64
    assert gs.converged.dtype == bool and gs.converged.all()
    assert np.all(gs.residual <= 1e-8 * np.maximum(1.0, np.abs(gs.energy)))
    assert np.all(gs.iterations >= 1)
    # a looser tolerance is honoured and costs fewer iterations, with energies still close
    loose = ground_state(v, tb.grid, backend="cpu", tol=1e-4)
    assert np.all(loose.iterations <= gs.iterations)
    assert np.all(loose.residual <= 1e-4 * np.maximum(1.0, np.abs(loose.energy)))
    np.testing.assert_allclose(loose.energy, gs.energy, rtol=0, atol=1e-5)
    # accepts lists and the numpy alias
    lst = ground_state(v[:1].tolist(), tb.grid, backend="numpy")
    assert lst.energy[0] == gs.energy[0]


# ---------------------------------------------------------------- failures are reported


def test_nonconvergence_raises_with_result():
    tb, v = _instances("gaussian1d", seed=109, count=3)
    with pytest.raises(ConvergenceError, match="did not converge") as info:
        ground_state(v, tb.grid, backend="cpu", maxiter=1)
    err = info.value
    np.testing.assert_array_equal(err.failed, [0, 1, 2])
    assert isinstance(err.result, GroundState)
    assert not err.result.converged.any()
    assert np.isnan(err.result.energy).all() and np.isnan(err.result.density).all()
    assert np.all(err.result.residual > 1e-8)


def test_nonconvergence_without_raising_flags_rows():
    tb = get_testbed("speckle1d")
    v = tb.potential(tb.sample_params(110, range(2)))
    v[0] = 0.4  # a constant potential: the positive start vector is already exact
    gs = ground_state(v, tb.grid, backend="cpu", maxiter=2, raise_on_failure=False)
    np.testing.assert_array_equal(gs.converged, [True, False])
    assert gs.energy[0] == pytest.approx(0.4, abs=1e-12)
    np.testing.assert_allclose(gs.density[0], 1 / tb.box_length, rtol=1e-12)
    assert np.isnan(gs.energy[1]) and np.isnan(gs.density[1]).all()
    with pytest.raises(ConvergenceError) as info:
        ground_state(v, tb.grid, backend="cpu", maxiter=2)
    np.testing.assert_array_equal(info.value.failed, [1])
    assert info.value.result.energy[0] == pytest.approx(0.4, abs=1e-12)


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def g1d():
    tb = get_testbed("gaussian1d")
    return tb.grid, tb.potential(tb.sample_params(0, range(3)))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_potential_raises(g1d, value):
    grid, v = g1d
    v = v.copy()
    v[1, 17] = value
    with pytest.raises(ValueError, match=r"NaN or inf.*\[1\]"):
        ground_state(v, grid, backend="cpu")


def test_wrong_shapes_raise(g1d):
    grid, v = g1d
    with pytest.raises(ValueError, match="single field"):
        ground_state(v[0], grid, backend="cpu")
    with pytest.raises(ValueError, match="expected"):
        ground_state(v[:, :100], grid, backend="cpu")
    with pytest.raises(ValueError, match="expected"):
        ground_state(v[None], grid, backend="cpu")
    with pytest.raises(ValueError, match="empty batch"):
        ground_state(np.zeros((0, 256)), grid, backend="cpu")
    with pytest.raises(ValueError, match="numeric"):
        ground_state([["a"] * 256], grid, backend="cpu")
    grid3 = get_testbed("gaussian3d").grid
    with pytest.raises(ValueError, match="single field"):
        ground_state(np.zeros(grid3.shape), grid3, backend="cpu")
    with pytest.raises(ValueError, match="expected"):
        ground_state(np.zeros((2, 18, 18, 17)), grid3, backend="cpu")


def test_bad_solver_options_raise(g1d):
    grid, v = g1d
    for kw, word in [({"tol": 0.0}, "tol"), ({"tol": np.nan}, "tol"), ({"maxiter": 0}, "maxiter"),
                     ({"block_size": 0}, "block_size")]:
        with pytest.raises(ValueError, match=word):
            ground_state(v, grid, backend="cpu", **kw)


def test_bad_backend_names_raise(g1d):
    grid, v = g1d
    with pytest.raises(ValueError, match="unknown backend"):
        ground_state(v, grid, backend="tpu")
    with pytest.raises(ValueError, match="backend must be a string"):
        ground_state(v, grid, backend=3)
    with pytest.raises(ValueError, match="cupy.*not a solver backend"):
        ground_state(v, grid, backend="cupy")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("name", ["cuda", "gpu", "cuda:0"])
def test_cuda_without_gpu_raises(g1d, name):
    grid, v = g1d
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        ground_state(v, grid, backend=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["gaussian1d", "speckle1d", "gaussian3d"])
def test_cuda_matches_cpu(name):
    tb, v = _instances(name, seed=111, count=8)
    cpu = ground_state(v, tb.grid, backend="cpu")
    gpu = ground_state(v, tb.grid, backend="cuda")
    np.testing.assert_allclose(gpu.energy, cpu.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(gpu.density, cpu.density, rtol=0, atol=N_TOL)


def test_complex_potential_raises(g1d):
    grid, v = g1d
    with pytest.raises(ValueError):
        ground_state(v + 1j, grid, backend="cpu")
