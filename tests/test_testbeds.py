"""Testbed potentials: the paper's formulas recomputed by hand, speckle statistics, determinism, bad configs.

* Gaussian1D, eq. (15), and Gaussian3D, eq. (18), are recomputed point by point from the
  stored parameters with explicit loops (minimum image found by searching the images).
* Speckle: over many instances, ``<V> = V0``, ``P(V) = exp(-V/V0)/V0`` and the intensity
  autocorrelation ``<V(x)V(x+d)>/V0^2 - 1 = sin^2(pi d)/(pi d)^2`` (a0 = 1), first zero at d = 1.
  These are properties of a circular complex Gaussian field, independent of the code.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from vaedft.physics import TESTBEDS, Gaussian1D, Gaussian3D, Speckle1D, get_testbed

N_SPECKLE = 16000
SEED = 20240611


@pytest.fixture(scope="module")
def speckle_ensemble():
    tb = get_testbed("speckle1d")
    params = tb.sample_params(SEED, range(N_SPECKLE))
    chunks = [tb.potential({"modes": params["modes"][i : i + 1000]}) for i in range(0, N_SPECKLE, 1000)]
    return tb, params, np.concatenate(chunks)


# ---------------------------------------------------------------- configs and grids


def test_registry_and_default_grids():
    assert set(TESTBEDS) == {"gaussian1d", "speckle1d", "gaussian3d"}
    g = get_testbed("gaussian1d").grid
    assert (g.box_length, g.n, g.ndim, g.boundary, g.stencil_points) == (1.0, 256, 1, "hard_wall", 9)
    assert g.dx == 1.0 / 257
    np.testing.assert_allclose(g.points, np.arange(1, 257) / 257, rtol=0, atol=1e-15)
    g = get_testbed("speckle1d").grid
    assert (g.box_length, g.n, g.ndim, g.boundary, g.stencil_points) == (14.0, 256, 1, "periodic", 11)
    np.testing.assert_allclose(g.points, np.arange(256) * 14 / 256, rtol=0, atol=1e-14)
    g = get_testbed("gaussian3d").grid
    assert (g.box_length, g.n, g.ndim, g.boundary, g.stencil_points) == (1.0, 18, 3, "periodic", 11)
    assert g.cell_volume == pytest.approx((1 / 18) ** 3, rel=1e-15)


def test_get_testbed_unknown_raises():
    with pytest.raises(ValueError, match="unknown testbed 'nope'"):
        get_testbed("nope")
    with pytest.raises(ValueError, match="unknown testbed"):
        get_testbed(None)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: Gaussian1D(sign=2),
        lambda: Gaussian1D(sign=0),
        lambda: Gaussian1D(c_range=(0.0, 0.1)),
        lambda: Gaussian1D(a_range=(10.0, 1.0)),
        lambda: Gaussian1D(b_range=(np.nan, 0.6)),
        lambda: Gaussian1D(n_grid=1),
        lambda: Gaussian1D(stencil_points=4),
        lambda: Speckle1D(correlation_length=3.0),  # 14/3 modes
        lambda: Speckle1D(box_length=14.5),
        lambda: Speckle1D(correlation_length=-1.0),
        lambda: Speckle1D(correlation_length=20.0),  # fewer than one mode
        lambda: Speckle1D(V0=-0.25),
        lambda: Speckle1D(V0=np.inf),
        lambda: Speckle1D(n_grid=20),  # 14 modes do not fit on 20 points
        lambda: Gaussian3D(n_gauss=0),
        lambda: Gaussian3D(n_gauss=-2),
        lambda: Gaussian3D(sigma=0.0),
        lambda: Gaussian3D(sigma=np.nan),
        lambda: Gaussian3D(amplitude_range=(2.0, 0.0)),
        lambda: Gaussian3D(n_grid=4),  # 11-point stencil wider than the grid
        lambda: get_testbed("gaussian1d").replace(sign=-2),
    ],
)
def test_bad_configs_raise(factory):
    with pytest.raises(ValueError):
        factory()


@pytest.mark.parametrize(
    "params,word",
    [
        ({"a": np.ones((2, 3)), "b": np.ones((2, 3))}, "missing"),
        ({"a": np.ones((2, 3)), "b": np.ones((2, 3)), "c": np.ones((3, 3))}, "batch size"),
        ({"a": np.ones((2, 3)), "b": np.ones((2, 3)), "c": np.ones((2, 4))}, "shape"),
        ({"a": np.ones((2, 3)), "b": np.ones((2, 3)), "c": np.full((2, 3), np.nan)}, "NaN"),
    ],
)
def test_bad_params_raise(params, word):
    with pytest.raises(ValueError, match=word):
        Gaussian1D().potential(params)


def test_bad_seed_or_index_raise():
    tb = get_testbed("gaussian1d")
    for seed in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="seed"):
            tb.sample_params(seed, [0])
    with pytest.raises(ValueError, match="index"):
        tb.sample_params(0, [-1])


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", ["gaussian1d", "speckle1d", "gaussian3d"])
def test_instances_are_pure_functions_of_seed_and_index(name):
    tb = get_testbed(name)
    full = tb.sample_params(7, range(10))
    part = tb.sample_params(7, [5, 6, 7])
    rev = tb.sample_params(7, [7, 6, 5])
    for key in full:
        np.testing.assert_array_equal(part[key], full[key][5:8])
        np.testing.assert_array_equal(rev[key], full[key][7:4:-1])
    v_full, v_part = tb.potential(full), tb.potential(part)
    np.testing.assert_array_equal(v_part, v_full[5:8])  # bitwise
    # chunked generation concatenates to the same thing
    chunks = [tb.sample_params(7, range(lo, lo + 4)) for lo in (0, 4, 8)]
    for key in full:
        np.testing.assert_array_equal(np.concatenate([c[key] for c in chunks])[:10], full[key])
    # other seeds, other indices: different draws
    other = tb.sample_params(8, range(10))
    for key in full:
        assert not np.any(np.all(other[key] == full[key], axis=tuple(range(1, full[key].ndim))))
    assert not np.array_equal(v_full[0], v_full[1])


def test_empty_index_list():
    tb = get_testbed("gaussian3d")
    p = tb.sample_params(0, [])
    assert p["centers"].shape == (0, 10, 3) and p["amplitudes"].shape == (0, 10)
    assert tb.potential(p).shape == (0, 18, 18, 18)


# ---------------------------------------------------------------- Gaussian1D, eq. (15)


def test_gaussian1d_eq15_by_hand():
    tb = get_testbed("gaussian1d")
    p = tb.sample_params(3, range(4))
    v = tb.potential(p)
    assert v.shape == (4, 256)
    for b in range(4):
        for i in (0, 17, 100, 127, 128, 200, 255):
            x = (i + 1) / 257  # hard-wall grid: x_i = i L/(Ng+1), i = 1..Ng
            ref = 0.0
            for a, c0, w in zip(p["a"][b], p["b"][b], p["c"][b], strict=True):
                ref += a * np.exp(-((x - c0) ** 2) / (2 * w**2))
            assert v[b, i] == pytest.approx(ref, rel=1e-12)
    assert np.all(v > 0)


def test_gaussian1d_sign_flips():
    pos, neg = get_testbed("gaussian1d"), Gaussian1D(sign=-1)
    p_pos, p_neg = pos.sample_params(4, range(5)), neg.sample_params(4, range(5))
    for key in p_pos:  # the draws do not depend on the sign
        np.testing.assert_array_equal(p_pos[key], p_neg[key])
    np.testing.assert_array_equal(neg.potential(p_pos), -pos.potential(p_pos))
    assert np.all(neg.potential(p_pos) < 0)


def test_gaussian1d_parameter_ranges():
    tb = get_testbed("gaussian1d")
    p = tb.sample_params(5, range(3000))
    for key, (lo, hi) in {"a": (1.0, 10.0), "b": (0.4, 0.6), "c": (0.03, 0.1)}.items():
        vals = p[key]
        assert vals.shape == (3000, 3) and vals.dtype == np.float64
        assert vals.min() >= lo and vals.max() <= hi
        span = hi - lo
        assert vals.min() < lo + 0.01 * span and vals.max() > hi - 0.01 * span  # the whole range is used
        se = span / np.sqrt(12 * vals.size)  # uniform: sd = span / sqrt(12)
        assert abs(vals.mean() - (lo + hi) / 2) < 5 * se
        # every Gaussian slot draws from the same distribution
        assert stats.ks_2samp(vals[:, 0], vals[:, 2]).pvalue > 1e-3


# ---------------------------------------------------------------- Gaussian3D, eq. (18)


def _eq18_by_hand(centers, amps, sigma, box, point):
    """Eq. (18) at one point with an explicit search over the 27 periodic images of each centre."""
    total = 0.0
    n = len(amps)
    for (cx, cy, cz), a in zip(centers, amps, strict=True):
        best = np.inf
        for sx, sy, sz in itertools.product((-1, 0, 1), repeat=3):
            r2 = (point[0] - cx - sx * box) ** 2 + (point[1] - cy - sy * box) ** 2 + (point[2] - cz - sz * box) ** 2
            best = min(best, r2)
        total += a / ((2 * np.pi) ** 1.5 * sigma**3) * np.exp(-best / (2 * sigma**2))
    return total / n


def test_gaussian3d_eq18_by_hand():
    tb = get_testbed("gaussian3d")
    p = tb.sample_params(6, range(3))
    v = tb.potential(p)
    assert v.shape == (3, 18, 18, 18)
    idx = [(0, 0, 0), (17, 17, 17), (0, 9, 17), (4, 13, 8), (9, 9, 9), (1, 16, 2)]
    for b in range(3):
        for i, j, k in idx:
            point = np.array([i, j, k]) / 18  # periodic grid: x_i = i L / Ng
            ref = _eq18_by_hand(p["centers"][b], p["amplitudes"][b], 1 / 6, 1.0, point)
            assert v[b, i, j, k] == pytest.approx(ref, rel=1e-12)


def test_gaussian3d_parameter_ranges_and_normalisation():
    tb = get_testbed("gaussian3d")
    p = tb.sample_params(8, range(400))
    assert p["centers"].min() >= 0 and p["centers"].max() < 1.0
    assert p["amplitudes"].min() >= 0 and p["amplitudes"].max() <= 2.0
    # each Gaussian carries weight A_i / N: int V = mean(A) times the fraction of a Gaussian's mass
    # inside the minimum-image cell, erf(L / (2 sqrt 2 sigma))^3 = erf(3/sqrt 2)^3
    from scipy.special import erf

    v = tb.potential({k: p[k][:20] for k in p})
    integral = tb.grid.cell_volume * v.sum(axis=(1, 2, 3))
    expected = p["amplitudes"][:20].mean(axis=1) * erf(3 / np.sqrt(2)) ** 3
    np.testing.assert_allclose(integral, expected, rtol=5e-3)


def _single(center, amp=1.0):
    return {"centers": np.array([[center]], dtype=float), "amplitudes": np.array([[amp]])}


def test_gaussian3d_wraps_across_faces():
    tb = Gaussian3D(n_gauss=1)
    # a centre on the face x = 0: values on both sides of the face mirror each other
    v = tb.potential(_single([0.0, 0.5, 0.5]))[0]
    np.testing.assert_allclose(v[1:], v[:0:-1], rtol=1e-12)
    assert v[17, 9, 9] == pytest.approx(v[1, 9, 9], rel=1e-12)
    assert v[17, 9, 9] > 0.5 * v[0, 9, 9]  # the far-side neighbour is really close to the centre
    # a centre near a corner: value at the diagonally opposite grid point by hand
    c = [0.98, 0.01, 0.99]
    v = tb.potential(_single(c))[0]
    assert v[0, 17, 0] == pytest.approx(_eq18_by_hand([c], [1.0], 1 / 6, 1.0, np.array([0, 17, 0]) / 18), rel=1e-12)
    assert v[0, 17, 0] > v[9, 9, 9]
    # moving a centre by a whole box changes nothing; by one grid step rolls the field
    full = Gaussian3D()
    pp = full.sample_params(9, range(2))
    base = full.potential(pp)
    shifted = {"centers": pp["centers"] + np.array([1.0, -1.0, 2.0]), "amplitudes": pp["amplitudes"]}
    np.testing.assert_allclose(full.potential(shifted), base, rtol=1e-10, atol=1e-14)
    step = {"centers": pp["centers"] + np.array([1 / 18, 0.0, -2 / 18]), "amplitudes": pp["amplitudes"]}
    np.testing.assert_allclose(full.potential(step), np.roll(base, (1, -2), axis=(1, 3)), rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- Speckle1D


def test_speckle_field_is_the_mode_sum():
    """V = V0 |E|^2 with E(x_j) = sum_{n=-7}^{6} c_n exp(2 pi i n x_j / L), by an independent FFT."""
    tb = get_testbed("speckle1d")
    p = tb.sample_params(11, range(5))
    assert p["modes"].shape == (5, 14) and p["modes"].dtype == np.complex128
    np.testing.assert_array_equal(tb.mode_numbers, np.arange(-7, 7))
    spec = np.zeros((5, 256), dtype=complex)
    spec[:, np.arange(-7, 7) % 256] = p["modes"]
    e = 256 * np.fft.ifft(spec, axis=1)
    np.testing.assert_allclose(tb.potential(p), 0.25 * np.abs(e) ** 2, rtol=1e-12, atol=1e-15)
    # Parseval: the grid mean of V is V0 sum |c_n|^2 exactly (all products are resolved)
    np.testing.assert_allclose(tb.potential(p).mean(axis=1), 0.25 * (np.abs(p["modes"]) ** 2).sum(axis=1), rtol=1e-12)
    # V0 scales the potential linearly
    np.testing.assert_allclose(tb.replace(V0=0.5).potential(p), 2 * tb.potential(p), rtol=1e-15)


def test_speckle_mean_intensity(speckle_ensemble):
    tb, params, v = speckle_ensemble
    assert np.all(v >= 0)
    per_instance = v.mean(axis=1) / tb.V0
    se = per_instance.std() / np.sqrt(N_SPECKLE)
    assert abs(per_instance.mean() - 1.0) < 4 * se
    assert se < 0.005  # the test has resolution: a 2% normalisation error would fail
    # mode variance 1/M per mode: sum |c_n|^2 has mean 1 and variance 1/M for M = 14 modes
    power = (np.abs(params["modes"]) ** 2).sum(axis=1)
    assert per_instance.var() == pytest.approx(1 / 14, rel=0.05)
    np.testing.assert_allclose(power, per_instance, rtol=1e-12)


def test_speckle_intensity_is_exponential(speckle_ensemble):
    tb, _, v = speckle_ensemble
    u = v / tb.V0
    # one grid point per instance (instances are independent): a valid KS sample
    sample = u[np.arange(N_SPECKLE), np.arange(N_SPECKLE) % 256]
    assert stats.kstest(sample, "expon").pvalue > 1e-3
    assert stats.kstest(sample, "rayleigh").pvalue < 1e-6  # the test can tell distributions apart
    # tails, pooled over all points; standard errors from the spread over instances
    for t in (0.5, 1.0, 2.0, 3.0, 5.0):
        frac = (u > t).mean(axis=1)
        se = frac.std() / np.sqrt(N_SPECKLE)
        assert abs(frac.mean() - np.exp(-t)) < 4 * se + 1e-4, t


def test_speckle_autocorrelation_is_sinc_squared(speckle_ensemble):
    tb, _, v = speckle_ensemble
    dx = tb.grid.dx
    shifts = np.arange(0, 64)  # d up to 3.5 a0
    u = v / tb.V0
    corr = np.stack([(u * np.roll(u, -s, axis=1)).mean(axis=1) for s in shifts], axis=1) - 1.0
    mean = corr.mean(axis=0)
    se = corr.std(axis=0) / np.sqrt(N_SPECKLE)
    d = shifts * dx
    theory = np.sinc(d) ** 2  # numpy sinc(x) = sin(pi x)/(pi x)
    assert mean[0] == pytest.approx(1.0, abs=4 * se[0])  # <V^2> = 2 V0^2 for an exponential law
    assert np.all(np.abs(mean - theory) < 4 * se + 0.005), np.max(np.abs(mean - theory) / se)
    # the first zero sits at d = a0 = correlation length: minimum of C(d) over 0.5 < d < 1.5
    window = np.flatnonzero((d > 0.5) & (d < 1.5))
    d_min = d[window[np.argmin(mean[window])]]
    assert abs(d_min - 1.0) < dx, d_min
    # and C there is consistent with zero
    assert abs(mean[window].min()) < 4 * se[window].max()


# ---------------------------------------------------------------- input validation found missing in review


def test_speckle_zero_correlation_length_raises_value_error():
    with pytest.raises(ValueError):
        Speckle1D(correlation_length=0.0)


@pytest.mark.parametrize("n_gauss", [0, -1])
def test_gaussian1d_bad_n_gauss_raises(n_gauss):
    with pytest.raises(ValueError, match="n_gauss"):
        Gaussian1D(n_gauss=n_gauss)


def test_fractional_index_raises():
    with pytest.raises(ValueError, match="index"):
        get_testbed("gaussian1d").sample_params(0, [1.5])
