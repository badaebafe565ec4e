"""Tests of vaedft.report.figures: valid PNGs, NaN handling, validation, no global matplotlib state."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from vaedft.report import figures as F

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 2 * 1024 * 1024
CA = F.KCAL_PER_MOL


@pytest.fixture(autouse=True)
def no_global_state():
    """Every test: the backend is unchanged and no pyplot figure is left open."""
    backend = matplotlib.get_backend()
    before = plt.get_fignums()
    yield
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == before == []


def read_png(path):
    """Check the file is a small valid PNG; return the decoded image (h, w, channels)."""
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) < MAX_BYTES
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] > 100 and img.shape[1] > 100
    # not a blank canvas
    assert float(img[..., :3].std()) > 0.01
    return img


def sweep_panel(**extra):
    beta = np.logspace(-6, 0, 5)
    panel = {
        "title": "reconstruction",
        "xlabel": "beta",
        "ylabel": "|n_hat - n|",
        "series": {
            "gaussian": (beta, 1e-3 * (1 + 10 * beta), 1e-4 * np.ones(5)),
            "speckle": (beta, 2e-3 * (1 + 5 * beta)),
            "no-err": (beta, 3e-3 * np.ones(5), None),
        },
        "hlines": [(CA, "chemical accuracy")],
    }
    panel.update(extra)
    return panel


# ---------------------------------------------------------------------------- constants


def test_kcal_per_mol_matches_metrics():
    from vaedft.metrics import KCAL_PER_MOL

    assert F.KCAL_PER_MOL == KCAL_PER_MOL == pytest.approx(1.5936e-3)


# ---------------------------------------------------------------------------- plot_sweep


def test_plot_sweep_writes_png_and_creates_parents(tmp_path):
    out = F.plot_sweep(tmp_path / "a" / "b" / "fig2.png", [sweep_panel()], suptitle="Fig. 2")
    assert out == tmp_path / "a" / "b" / "fig2.png"
    one = read_png(out)
    two = read_png(F.plot_sweep(str(tmp_path / "fig5.png"), [sweep_panel(), sweep_panel(logx=False, logy=False)]))
    assert one.shape[0] == two.shape[0]
    assert two.shape[1] > 1.8 * one.shape[1]  # panels side by side
    grid = read_png(F.plot_sweep(tmp_path / "grid.png", [sweep_panel()] * 3, ncols=2))
    assert grid.shape[0] > 1.8 * one.shape[0] and grid.shape[1] == two.shape[1]  # two rows of two columns
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="ncols"):
            F.plot_sweep(tmp_path / "bad.png", [sweep_panel()], ncols=bad)
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize(
    "panels",
    [
        [],
        [{"title": "no series"}],
        [{"series": {}}],
        [{"series": {"a": ([1, 2, 3], [1, 2])}}],  # mismatched lengths
        [{"series": {"a": ([[1, 2]], [[1, 2]])}}],  # 2D
        [{"series": {"a": ([], [])}}],  # empty
        [{"series": {"a": ([1, 2], [1, 2], [0.1, 0.2, 0.3])}}],  # bad yerr
        [{"series": {"a": ([1, 2],)}}],  # not (x, y)
        [{"series": {"a": ([1, 2], [1, 2])}, "lgoy": False}],  # typo'd key
        [{"series": {"a": ([1, 2], [1, 2])}, "hlines": [(1.0,)]}],
    ],
)
def test_plot_sweep_rejects_bad_input(tmp_path, panels):
    with pytest.raises(ValueError):
        F.plot_sweep(tmp_path / "bad.png", panels)
    assert not (tmp_path / "bad.png").exists()


# ---------------------------------------------------------------------------- histograms


def test_histogram_label_counts_diverged():
    err = np.array([0.5, -0.5, np.nan, 1.0, np.nan, np.inf]) * CA
    label = F.histogram_label("l_d=8", err)
    assert label.startswith("l_d=8")
    assert "3 diverged" in label
    assert "0.667 kcal/mol" in label  # mean |err| of the finite entries, in kcal/mol


def test_histogram_label_without_and_all_diverged():
    clean = F.histogram_label("beta=1", np.array([2.0, -4.0]) * CA)
    assert "diverged" not in clean
    assert "3 kcal/mol" in clean
    assert F.histogram_label("x", np.array([np.nan, np.nan])) == "x: all 2 diverged"
    with pytest.raises(ValueError):
        F.histogram_label("x", np.array([]))
    with pytest.raises(ValueError):
        F.histogram_label("x", np.zeros((2, 2)))


def test_histogram_edges_cover_chemical_accuracy_and_data():
    edges = F.histogram_edges([np.array([0.01, 0.02]), np.array([np.nan])], bins=10)
    assert edges.shape == (11,)
    assert np.all(np.diff(edges) > 0)
    assert edges[0] < -1.0 and edges[-1] > 1.0
    wide = F.histogram_edges([np.array([-7.0, 0.0]), np.array([12.0, np.nan])], bins=5)
    assert wide[0] <= -7.0 and wide[-1] >= 12.0
    only_nan = F.histogram_edges([np.array([np.nan])], bins=4)
    assert only_nan[0] < -1.0 and only_nan[-1] > 1.0
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError):
            F.histogram_edges([np.array([0.0])], bins=bad)


def test_plot_error_histograms(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 0.3 * CA, 100)
    b = rng.normal(2.0 * CA, 1.0 * CA, 100)
    b[:3] = np.nan
    panels = [
        {"title": "1D Gaussian", "errors": {"beta=1": b, "beta=1e-5": a}},
        {"title": "all diverged", "errors": {"x": np.full(4, np.nan)}, "bins": 10},
    ]
    read_png(F.plot_error_histograms(tmp_path / "fig4.png", panels, suptitle="Fig. 4"))


@pytest.mark.parametrize(
    "panels",
    [
        [],
        [{"title": "t"}],
        [{"errors": {}}],
        [{"errors": {"a": np.array([])}}],
        [{"errors": {"a": np.zeros((3, 2))}}],
        [{"errors": {"a": np.zeros(3)}, "bins": 0}],
        [{"errors": {"a": np.zeros(3)}, "colour": "r"}],
    ],
)
def test_plot_error_histograms_rejects_bad_input(tmp_path, panels):
    with pytest.raises(ValueError):
        F.plot_error_histograms(tmp_path / "bad.png", panels)


# ---------------------------------------------------------------------------- profiles


def profile_panel(m=64, **extra):
    x = np.linspace(0.0, 1.0, m)
    n = np.sin(np.pi * x) ** 2 * 2
    panel = {
        "title": "1D Gaussian",
        "x": x,
        "curves": {"exact": n, "beta=1e-3": n * 1.05, "beta=1": n * 0.9},
        "potential": -np.exp(-((x - 0.5) ** 2) / 0.01),
        "styles": {"exact": {"color": "k", "linewidth": 3}},
    }
    panel.update(extra)
    return panel


def test_plot_profiles_grid(tmp_path):
    one = read_png(F.plot_profiles(tmp_path / "p1.png", [profile_panel(potential=None, styles=None)]))
    four = read_png(F.plot_profiles(tmp_path / "p4.png", [profile_panel() for _ in range(4)], suptitle="Fig. 6"))
    # 4 panels -> 2 rows x 3 columns
    assert four.shape[1] > 2.5 * one.shape[1]
    assert four.shape[0] > 1.8 * one.shape[0]


@pytest.mark.parametrize(
    "change",
    [
        {"x": np.linspace(0, 1, 10)},  # curves longer than x
        {"x": np.zeros((8, 8))},
        {"curves": {}},
        {"curves": {"a": np.zeros(5)}},
        {"potential": np.zeros(3)},
        {"styles": {"missing": {"color": "r"}}},
        {"styles": {"exact": "k-"}},
        {"potnetial": np.zeros(64)},
    ],
)
def test_plot_profiles_rejects_bad_input(tmp_path, change):
    with pytest.raises(ValueError):
        F.plot_profiles(tmp_path / "bad.png", [profile_panel(**change)])


def test_plot_profiles_rejects_empty(tmp_path):
    with pytest.raises(ValueError):
        F.plot_profiles(tmp_path / "bad.png", [])


# ---------------------------------------------------------------------------- slices


def volumes(n=12):
    g = np.linspace(0, 1, n, endpoint=False)
    X, Y, Z = np.meshgrid(g, g, g, indexing="ij")
    exact = np.exp(-((X - 0.5) ** 2 + (Y - 0.3) ** 2 + (Z - 0.5) ** 2) / 0.05)
    return [("n_gs", exact), ("n_min", 1.5 * exact), ("V (E0)", -10.0 * exact + 3.0)]


def test_slice_color_limits_shared_rows():
    rows = volumes()
    lims = F.slice_color_limits(rows, [2, 6], shared_scale_rows=[0, 1])
    assert lims[0] == lims[1]
    assert lims[0][1] == pytest.approx(max(rows[1][1][:, :, [2, 6]].max(), rows[0][1][:, :, [2, 6]].max()))
    assert lims[2] != lims[0]
    own = F.slice_color_limits(rows, [2, 6])
    assert own[0] != own[1]
    assert own[2] == pytest.approx((rows[2][1][:, :, [2, 6]].min(), rows[2][1][:, :, [2, 6]].max()))


def test_plot_slices(tmp_path):
    out = F.plot_slices(
        tmp_path / "s" / "fig8.png", volumes(), [0, 6, 11], box_length=10.0, suptitle="Fig. 8", shared_scale_rows=[0, 1]
    )
    img = read_png(out)
    assert img.shape[1] > img.shape[0] * 0.8  # 3 columns next to each other


@pytest.mark.parametrize(
    "rows, z, kwargs",
    [
        ([], [0], {}),
        (volumes(), [], {}),
        (volumes(), [12], {}),
        (volumes(), [-1], {}),
        (volumes(), [1.5], {}),
        ([("a", np.zeros((4, 4, 5)))], [0], {}),
        ([("a", np.zeros((4, 4)))], [0], {}),
        ([("a", np.zeros((4, 4, 4))), ("b", np.zeros((5, 5, 5)))], [0], {}),
        (volumes(), [0], {"shared_scale_rows": [3]}),
        (volumes(), [0], {"box_length": 0.0}),
        (volumes(), [0], {"box_length": float("nan")}),
    ],
)
def test_plot_slices_rejects_bad_input(tmp_path, rows, z, kwargs):
    kwargs = {"box_length": 10.0, **kwargs}
    with pytest.raises(ValueError):
        F.plot_slices(tmp_path / "bad.png", rows, z, **kwargs)


# ---------------------------------------------------------------------------- bars


def test_plot_bars_with_nan(tmp_path):
    cats = ["1D gauss", "1D speckle", "3D gauss"]
    series = {"latent GD": [1e-4, 2e-4, 3e-4], "density GD": [5e-2, np.nan, 1e-1], "PCA GD": [1e-3, 2e-3, np.nan]}
    out = F.plot_bars(tmp_path / "bars.png", cats, series, ylabel="|e_min - e_gs| (E0)", title="baselines",
                      hlines=[(CA, "chemical accuracy")])
    read_png(out)
    read_png(F.plot_bars(tmp_path / "lin.png", cats, {"t": [0.0, 1.0, np.nan]}, ylabel="s", title="t", logy=False))
    read_png(F.plot_bars(tmp_path / "allnan.png", ["a"], {"t": [np.nan]}, ylabel="s", title="all n/a"))


@pytest.mark.parametrize(
    "cats, series, kwargs",
    [
        ([], {"a": []}, {}),
        (["x"], {}, {}),
        (["x", "y"], {"a": [1.0]}, {}),
        (["x"], {"a": [[1.0]]}, {}),
        (["x"], {"a": [0.0]}, {}),  # non-positive on log axis
        (["x"], {"a": [np.inf]}, {"logy": False}),
        ("xy", {"a": [1.0, 2.0]}, {}),
    ],
)
def test_plot_bars_rejects_bad_input(tmp_path, cats, series, kwargs):
    with pytest.raises(ValueError):
        F.plot_bars(tmp_path / "bad.png", cats, series, ylabel="y", title="t", **kwargs)


# ---------------------------------------------------------------------------- global state


def test_import_and_drawing_need_neither_pyplot_nor_torch(tmp_path):
    """In a fresh interpreter, importing the module and drawing a figure loads no pyplot (hence
    no backend resolution / figure registry) and no torch (figures stay cheap to draw)."""
    code = (
        "import sys, numpy as np\n"
        "from vaedft.report import figures as F\n"
        f"F.plot_bars({str(tmp_path / 'x.png')!r}, ['a'], {{'s': [1.0]}}, ylabel='y', title='t')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    read_png(tmp_path / "x.png")
