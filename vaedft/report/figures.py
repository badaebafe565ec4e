"""Matplotlib figures of the benchmark report (paper Figs. 2-8).

Every ``plot_*`` function writes exactly one PNG to ``path`` (parent directories are created),
returns it as a :class:`~pathlib.Path`, and renders at :data:`DPI` dots per inch.

Figures are built with the object-oriented API, ``matplotlib.figure.Figure`` plus an explicit
``FigureCanvasAgg``: no pyplot, no backend switch, no global figure registry.  Calling these
functions therefore leaves ``matplotlib.get_backend()`` and ``pyplot.get_fignums()`` untouched
and is safe from library code, worker processes and headless machines alike.

Units follow the paper: lengths in a0, densities in 1/a0 (1D), energies in E0 (Hartree).  Energy
*errors* in histograms are shown in kcal/mol, 1 kcal/mol = :data:`KCAL_PER_MOL` E0, which is also
the chemical accuracy (CA).

Inputs are plain numpy arrays / sequences / mappings; malformed inputs (empty, wrong ndim,
mismatched lengths, unknown panel keys) raise :class:`ValueError` before anything is drawn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "KCAL_PER_MOL",
    "histogram_label",
    "histogram_edges",
    "slice_color_limits",
    "plot_sweep",
    "plot_error_histograms",
    "plot_profiles",
    "plot_slices",
    "plot_bars",
]

#: Resolution of every written PNG.
DPI = 110
#: 1 kcal/mol in E0 (Hartree) = the chemical accuracy.  Same value as ``vaedft.metrics.KCAL_PER_MOL``;
#: repeated here so that drawing figures does not import torch.
KCAL_PER_MOL = 1.5936e-3

_PANEL_W = 4.6  # inches per panel column
_PANEL_H = 3.6  # inches per panel row
_SLICE_W = 2.9
_SLICE_H = 2.5

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------


def _array(name: str, value: Any, ndim: int = 1, *, allow_empty: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot convert to a float array ({exc})") from exc
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}D array, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name}: empty array")
    return arr


def _nonempty(name: str, seq: Any) -> None:
    if seq is None or len(seq) == 0:
        raise ValueError(f"{name}: must not be empty")


def _check_keys(name: str, panel: Any, required: set[str], optional: set[str]) -> None:
    if not isinstance(panel, Mapping):
        raise ValueError(f"{name}: expected a mapping, got {type(panel).__name__}")
    missing = required - set(panel)
    if missing:
        raise ValueError(f"{name}: missing key(s) {sorted(missing)}")
    unknown = set(panel) - required - optional
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {sorted(unknown)}; allowed: {sorted(required | optional)}")


def _hlines(name: str, hlines: Any) -> list[tuple[float, str]]:
    out = []
    for i, item in enumerate(hlines or ()):
        try:
            y, label = item
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}[{i}]: expected a (y, label) pair, got {item!r}") from exc
        y = float(y)
        if not math.isfinite(y):
            raise ValueError(f"{name}[{i}]: y must be finite, got {y}")
        out.append((y, str(label)))
    return out


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike, suptitle: str | None = None) -> Path:
    if suptitle:
        fig.suptitle(suptitle)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def _grid(fig: Figure, n: int, ncols: int) -> list:
    nrows = math.ceil(n / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_axis_off()
    return axes[:n]


def _has_positive(values: list[np.ndarray]) -> bool:
    return any(np.any(np.isfinite(v) & (v > 0)) for v in values)


# ----------------------------------------------------------------------------------------------
# 1. parameter sweeps (Figs. 2 and 5)
# ----------------------------------------------------------------------------------------------

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _series(name: str, value: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) not in (2, 3):
        raise ValueError(f"{name}: expected (x, y) or (x, y, yerr), got {type(value).__name__}")
    x = _array(f"{name} x", value[0])
    y = _array(f"{name} y", value[1])
    if x.shape != y.shape:
        raise ValueError(f"{name}: x and y lengths differ ({x.size} vs {y.size})")
    yerr = None
    if len(value) == 3 and value[2] is not None:
        yerr = np.asarray(value[2], dtype=np.float64)
        if yerr.shape not in (y.shape, (2, y.size)):
            raise ValueError(f"{name}: yerr must have shape {y.shape} or (2, {y.size}), got {yerr.shape}")
    return x, y, yerr


def plot_sweep(path: PathLike, panels: Sequence[Mapping], *, suptitle: str | None = None,
               ncols: int | None = None) -> Path:
    """Line+marker plots of a metric against a hyperparameter, one subplot per panel, side by side
    (``ncols`` panels per row; default: all in one row).

    Used for Fig. 2 (reconstruction error vs beta, one series per testbed) and Fig. 5 (mean
    |e_min - e_gs| in E0 and density error vs beta, one series per latent dimension l_d).

    Each panel is a mapping with keys

    * ``series`` (required): mapping label -> ``(x, y)`` or ``(x, y, yerr)``; ``x`` and ``y`` are 1D
      arrays of equal length ``m``, ``yerr`` is ``None``, shape ``(m,)`` or ``(2, m)`` (same units as y).
    * ``title``, ``xlabel``, ``ylabel`` (str, default ``""``).
    * ``logx``, ``logy`` (bool, default ``True``); a log axis without any positive value falls back to linear.
    * ``hlines``: sequence of ``(y, label)`` drawn as dashed horizontal lines (e.g. the chemical
      accuracy, :data:`KCAL_PER_MOL` when y is in E0).

    Returns the written PNG path.
    """
    _nonempty("panels", panels)
    checked = []
    for i, panel in enumerate(panels):
        name = f"panels[{i}]"
        _check_keys(name, panel, {"series"}, {"title", "xlabel", "ylabel", "logx", "logy", "hlines"})
        series = panel["series"]
        if not isinstance(series, Mapping) or len(series) == 0:
            raise ValueError(f"{name}['series']: expected a non-empty mapping label -> (x, y[, yerr])")
        data = {str(lbl): _series(f"{name}['series'][{lbl!r}]", val) for lbl, val in series.items()}
        checked.append((panel, data, _hlines(f"{name}['hlines']", panel.get("hlines"))))

    if ncols is None:
        ncols = len(checked)
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected a positive int, got {ncols!r}")
    ncols = min(ncols, len(checked))
    fig = _new_figure(_PANEL_W * ncols, _PANEL_H * math.ceil(len(checked) / ncols))
    axes = _grid(fig, len(checked), ncols)
    for ax, (panel, data, hlines) in zip(axes, checked, strict=True):
        for j, (label, (x, y, yerr)) in enumerate(data.items()):
            ax.errorbar(x, y, yerr=yerr, marker=_MARKERS[j % len(_MARKERS)], markersize=5, capsize=3, label=label)
        for k, (y, label) in enumerate(hlines):
            ax.axhline(y, linestyle="--", linewidth=1.0, color=f"C{(len(data) + k) % 10}", label=label)
        xs = [x for x, _, _ in data.values()]
        ys = [y for _, y, _ in data.values()] + [np.array([y for y, _ in hlines])]
        if panel.get("logx", True) and _has_positive(xs):
            ax.set_xscale("log")
        if panel.get("logy", True) and _has_positive(ys):
            ax.set_yscale("log")
        ax.set_title(str(panel.get("title", "")))
        ax.set_xlabel(str(panel.get("xlabel", "")))
        ax.set_ylabel(str(panel.get("ylabel", "")))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path, suptitle)


# ----------------------------------------------------------------------------------------------
# 2. energy-error histograms (Figs. 4 and 7)
# ----------------------------------------------------------------------------------------------


def histogram_label(label: str, errors_e0: Any) -> str:
    """Legend label of one error histogram.

    ``errors_e0``: 1D array of ``e_min - e_gs`` in E0; non-finite entries (NaN/inf) are diverged runs.
    Returns e.g. ``"l_d=4: <|err|> = 0.123 kcal/mol, 3 diverged"``; the diverged part is omitted when
    there are none, and ``"l_d=4: all 5 diverged"`` is returned when no run converged.
    """
    err = _array(f"errors[{label!r}]", errors_e0)
    finite = np.isfinite(err)
    n_div = int(err.size - finite.sum())
    if n_div == err.size:
        return f"{label}: all {n_div} diverged"
    mean = float(np.mean(np.abs(err[finite]))) / KCAL_PER_MOL
    text = f"{label}: <|err|> = {mean:.3g} kcal/mol"
    if n_div:
        text += f", {n_div} diverged"
    return text


def histogram_edges(errors_kcal: Sequence[Any], bins: int = 30) -> np.ndarray:
    """Shared bin edges (kcal/mol) over the finite values of all arrays in ``errors_kcal``.

    The range always contains [-1, 1] kcal/mol (the chemical-accuracy band) with a small margin.
    Returns ``bins + 1`` increasing edges.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    finite = [v[np.isfinite(v)] for v in (np.asarray(a, dtype=np.float64).ravel() for a in errors_kcal)]
    finite = [v for v in finite if v.size]
    lo, hi = -1.0, 1.0
    if finite:
        lo = min(lo, min(float(v.min()) for v in finite))
        hi = max(hi, max(float(v.max()) for v in finite))
    pad = 0.05 * (hi - lo)
    return np.linspace(lo - pad, hi + pad, int(bins) + 1)


def plot_error_histograms(path: PathLike, panels: Sequence[Mapping], *, suptitle: str | None = None) -> Path:
    """Overlaid step histograms of energy errors, one subplot per panel (Fig. 4 / Fig. 7 style).

    Each panel is a mapping with keys

    * ``errors`` (required): mapping label -> 1D array of ``e_min - e_gs`` in **E0**; NaN/inf entries
      mark diverged runs: they are dropped from the histogram and counted in the legend label.
    * ``title`` (str, default ``""``), ``bins`` (int, default 30).

    Errors are converted to kcal/mol; all labels of a panel share bin edges
    (:func:`histogram_edges`, always covering +-1 kcal/mol), and dashed vertical lines mark the
    chemical accuracy at +-1 kcal/mol.  Returns the written PNG path.
    """
    _nonempty("panels", panels)
    checked = []
    for i, panel in enumerate(panels):
        name = f"panels[{i}]"
        _check_keys(name, panel, {"errors"}, {"title", "bins"})
        errors = panel["errors"]
        if not isinstance(errors, Mapping) or len(errors) == 0:
            raise ValueError(f"{name}['errors']: expected a non-empty mapping label -> 1D array (E0)")
        data = {str(lbl): _array(f"{name}['errors'][{lbl!r}]", val) for lbl, val in errors.items()}
        edges = histogram_edges([v / KCAL_PER_MOL for v in data.values()], panel.get("bins", 30))
        checked.append((panel, data, edges))

    fig = _new_figure(_PANEL_W * len(checked), _PANEL_H)
    axes = _grid(fig, len(checked), len(checked))
    for ax, (panel, data, edges) in zip(axes, checked, strict=True):
        for j, (label, err) in enumerate(data.items()):
            kcal = err[np.isfinite(err)] / KCAL_PER_MOL
            text = histogram_label(label, err)
            if kcal.size:
                ax.hist(kcal, bins=edges, histtype="step", linewidth=1.6, color=f"C{j % 10}", label=text)
            else:
                ax.plot([], [], color=f"C{j % 10}", label=text)
        ax.axvline(-1.0, color="red", linestyle="--", linewidth=1.0, label="chemical accuracy")
        ax.axvline(1.0, color="red", linestyle="--", linewidth=1.0)
        ax.set_xlim(edges[0], edges[-1])
        if any(np.isfinite(err).any() for err in data.values()):
            ax.set_ylim(bottom=0)
        else:
            ax.set_ylim(0, 1)
        ax.set_title(str(panel.get("title", "")))
        ax.set_xlabel(r"$e_\mathrm{min} - e_\mathrm{gs}$ (kcal/mol)")
        ax.set_ylabel("count")
        ax.legend(fontsize="small")
    return _save(fig, path, suptitle)


# ----------------------------------------------------------------------------------------------
# 3. 1D density profiles (Figs. 3 and 6)
# ----------------------------------------------------------------------------------------------


def plot_profiles(path: PathLike, panels: Sequence[Mapping], *, suptitle: str | None = None) -> Path:
    """1D density profiles, one subplot per panel in a grid of at most 3 columns (Fig. 3 / Fig. 6).

    Each panel is a mapping with keys

    * ``x`` (required): 1D grid of length ``m`` in a0.
    * ``curves`` (required): mapping label -> 1D density of length ``m`` in 1/a0.
    * ``potential``: 1D external potential of length ``m`` in E0, drawn in grey against a twin
      right-hand axis labelled "V(x) (E0)".
    * ``styles``: mapping label (a key of ``curves``) -> dict of ``Axes.plot`` keyword arguments,
      e.g. ``{"exact": {"color": "k", "linewidth": 3}}``.
    * ``title``, ``xlabel`` (default "x (a0)"), ``ylabel`` (default "n(x) (1/a0)").

    Returns the written PNG path.
    """
    _nonempty("panels", panels)
    checked = []
    for i, panel in enumerate(panels):
        name = f"panels[{i}]"
        _check_keys(name, panel, {"x", "curves"}, {"title", "potential", "styles", "xlabel", "ylabel"})
        x = _array(f"{name}['x']", panel["x"])
        curves = panel["curves"]
        if not isinstance(curves, Mapping) or len(curves) == 0:
            raise ValueError(f"{name}['curves']: expected a non-empty mapping label -> 1D density (1/a0)")
        data = {}
        for lbl, val in curves.items():
            arr = _array(f"{name}['curves'][{lbl!r}]", val)
            if arr.shape != x.shape:
                raise ValueError(f"{name}['curves'][{lbl!r}]: length {arr.size} differs from len(x) = {x.size}")
            data[str(lbl)] = arr
        potential = None
        if panel.get("potential") is not None:
            potential = _array(f"{name}['potential']", panel["potential"])
            if potential.shape != x.shape:
                raise ValueError(f"{name}['potential']: length {potential.size} differs from len(x) = {x.size}")
        styles = panel.get("styles") or {}
        if not isinstance(styles, Mapping):
            raise ValueError(f"{name}['styles']: expected a mapping label -> dict of line kwargs")
        styles = {str(k): v for k, v in styles.items()}
        for lbl, style in styles.items():
            if lbl not in data:
                raise ValueError(f"{name}['styles']: label {lbl!r} is not one of the curves {sorted(data)}")
            if not isinstance(style, Mapping):
                raise ValueError(f"{name}['styles'][{lbl!r}]: expected a dict of line kwargs")
        checked.append((panel, x, data, potential, styles))

    n = len(checked)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(_PANEL_W * ncols, _PANEL_H * nrows)
    axes = _grid(fig, n, ncols)
    for ax, (panel, x, data, potential, styles) in zip(axes, checked, strict=True):
        handles = []
        for label, y in data.items():
            kwargs = {"linewidth": 1.5, **styles.get(label, {})}
            kwargs.setdefault("label", label)
            handles += ax.plot(x, y, **kwargs)
        if potential is not None:
            ax2 = ax.twinx()
            handles += ax2.plot(x, potential, color="0.55", linestyle=":", linewidth=1.2, label="V(x)")
            ax2.set_ylabel("V(x) (E0)", color="0.4")
            ax2.tick_params(axis="y", colors="0.4")
        ax.set_xlim(float(x.min()), float(x.max()))
        ax.set_title(str(panel.get("title", "")))
        ax.set_xlabel(str(panel.get("xlabel", "x (a0)")))
        ax.set_ylabel(str(panel.get("ylabel", "n(x) (1/a0)")))
        ax.legend(handles=handles, labels=[h.get_label() for h in handles], fontsize="small")
    return _save(fig, path, suptitle)


# ----------------------------------------------------------------------------------------------
# 4. 3D slices (Fig. 8)
# ----------------------------------------------------------------------------------------------


def _check_slices(
    rows: Sequence[tuple[str, np.ndarray]], z_indices: Sequence[int], shared_scale_rows: Sequence[int]
) -> tuple[list[tuple[str, np.ndarray]], list[int], set[int]]:
    _nonempty("rows", rows)
    _nonempty("z_indices", z_indices)
    vols = []
    for i, row in enumerate(rows):
        try:
            label, vol = row
        except (TypeError, ValueError) as exc:
            raise ValueError(f"rows[{i}]: expected a (label, volume) pair") from exc
        arr = _array(f"rows[{i}] ({label!r})", vol, ndim=3)
        if not arr.shape[0] == arr.shape[1] == arr.shape[2]:
            raise ValueError(f"rows[{i}] ({label!r}): volume must be cubic (n, n, n), got shape {arr.shape}")
        if vols and arr.shape != vols[0][1].shape:
            raise ValueError(f"rows[{i}] ({label!r}): shape {arr.shape} differs from rows[0] {vols[0][1].shape}")
        vols.append((str(label), arr))
    n = vols[0][1].shape[0]
    zs = []
    for k in z_indices:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"z_indices: expected integers, got {k!r}")
        if not 0 <= k < n:
            raise ValueError(f"z_indices: index {k} out of range [0, {n})")
        zs.append(int(k))
    shared = set()
    for r in shared_scale_rows:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < len(vols):
            raise ValueError(f"shared_scale_rows: {r!r} is not a row index in [0, {len(vols)})")
        shared.add(int(r))
    return vols, zs, shared


def _finite_range(arrays: list[np.ndarray]) -> tuple[float, float] | None:
    vals = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if vals.size == 0:
        return None
    return float(vals.min()), float(vals.max())


def slice_color_limits(
    rows: Sequence[tuple[str, np.ndarray]], z_indices: Sequence[int], shared_scale_rows: Sequence[int] = ()
) -> list[tuple[float, float] | None]:
    """Color limits ``(vmin, vmax)`` per row of :func:`plot_slices`, from the finite values of the shown slices.

    Rows listed in ``shared_scale_rows`` all get the common range over their shown slices; every
    other row gets its own.  ``None`` for a row without finite values (matplotlib autoscale).
    """
    vols, zs, shared = _check_slices(rows, z_indices, shared_scale_rows)
    per_row = [[vol[:, :, k] for k in zs] for _, vol in vols]
    common = _finite_range([s for r in sorted(shared) for s in per_row[r]]) if shared else None
    return [common if r in shared else _finite_range(slices) for r, slices in enumerate(per_row)]


def plot_slices(
    path: PathLike,
    rows: Sequence[tuple[str, np.ndarray]],
    z_indices: Sequence[int],
    *,
    box_length: float,
    suptitle: str | None = None,
    shared_scale_rows: Sequence[int] = (),
) -> Path:
    """Constant-z slices of 3D fields: one row per field, one column per z index (Fig. 8 style).

    ``rows``: sequence of ``(label, volume)``; every volume has the same cubic shape ``(n, n, n)``,
    indexed ``[x, y, z]`` on the grid ``x_i = i * box_length / n`` (a0); densities in 1/a0^3,
    potentials in E0.  ``z_indices``: integers in ``[0, n)``; column titles read ``z = {k L / n} a0``.
    Each panel shows ``volume[:, :, k]`` with x horizontal and y vertical (``origin="lower"``,
    extent ``[0, L, 0, L]``).  Each row has its own colorbar; the rows in ``shared_scale_rows``
    share one color scale (e.g. exact and minimized densities), see :func:`slice_color_limits`.
    Returns the written PNG path.
    """
    box_length = float(box_length)
    if not (math.isfinite(box_length) and box_length > 0):
        raise ValueError(f"box_length must be a positive finite length (a0), got {box_length}")
    vols, zs, _ = _check_slices(rows, z_indices, shared_scale_rows)
    limits = slice_color_limits(rows, z_indices, shared_scale_rows)
    n = vols[0][1].shape[0]
    L = box_length

    fig = _new_figure(_SLICE_W * len(zs) + 0.8, _SLICE_H * len(vols))
    axes = fig.subplots(len(vols), len(zs), squeeze=False, sharex=True, sharey=True)
    for r, ((label, vol), lim) in enumerate(zip(vols, limits, strict=True)):
        vmin, vmax = lim if lim is not None else (None, None)
        image = None
        for c, k in enumerate(zs):
            ax = axes[r, c]
            image = ax.imshow(
                vol[:, :, k].T,
                origin="lower",
                extent=(0.0, L, 0.0, L),
                vmin=vmin,
                vmax=vmax,
                cmap="viridis",
                interpolation="nearest",
                aspect="equal",
            )
            if r == 0:
                ax.set_title(f"z = {k * L / n:.2f} a0")
            if r == len(vols) - 1:
                ax.set_xlabel("x (a0)")
            if c == 0:
                ax.set_ylabel(f"{label}\ny (a0)")
        fig.colorbar(image, ax=axes[r, :].tolist(), shrink=0.9, pad=0.02)
    return _save(fig, path, suptitle)


# ----------------------------------------------------------------------------------------------
# 5. grouped bars (baselines, timings)
# ----------------------------------------------------------------------------------------------


def plot_bars(
    path: PathLike,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    title: str,
    logy: bool = True,
    hlines: Sequence[tuple[float, str]] = (),
) -> Path:
    """Grouped bar chart: one group per category, one bar per series (e.g. latent GD vs density GD
    vs PCA GD per testbed, or wall times).

    ``categories``: non-empty sequence of group names (length ``c``).  ``series``: non-empty mapping
    name -> ``c`` values (units given by ``ylabel``); NaN values (missing / diverged) are not drawn
    and marked "n/a" at the bar's position.  With ``logy`` every finite value must be positive.
    ``hlines``: ``(y, label)`` pairs drawn dashed (e.g. chemical accuracy).  Returns the PNG path.
    """
    _nonempty("categories", categories)
    if isinstance(categories, str):
        raise ValueError("categories: expected a sequence of names, not a single string")
    cats = [str(c) for c in categories]
    if not isinstance(series, Mapping) or len(series) == 0:
        raise ValueError("series: expected a non-empty mapping name -> values")
    data = {}
    for name, values in series.items():
        arr = _array(f"series[{name!r}]", values)
        if arr.size != len(cats):
            raise ValueError(f"series[{name!r}]: {arr.size} values for {len(cats)} categories")
        if np.any(np.isinf(arr)):
            raise ValueError(f"series[{name!r}]: infinite values (use NaN for missing entries)")
        if logy and np.any(arr[np.isfinite(arr)] <= 0):
            raise ValueError(f"series[{name!r}]: non-positive values cannot be drawn with logy=True")
        data[str(name)] = arr
    lines = _hlines("hlines", hlines)

    fig = _new_figure(max(4.5, 0.9 + 0.45 * len(cats) * (len(data) + 1)), 3.8)
    ax = fig.subplots()
    positions = np.arange(len(cats), dtype=np.float64)
    width = 0.8 / len(data)
    missing_tf = ax.get_xaxis_transform()  # x in data, y in axes coordinates
    for j, (name, arr) in enumerate(data.items()):
        xs = positions - 0.4 + (j + 0.5) * width
        ok = np.isfinite(arr)
        ax.bar(xs[ok], arr[ok], width=width * 0.95, color=f"C{j % 10}", label=name)
        for x in xs[~ok]:
            ax.text(x, 0.02, "n/a", transform=missing_tf, rotation=90, ha="center", va="bottom", fontsize="small",
                    color=f"C{j % 10}")
    for k, (y, label) in enumerate(lines):
        ax.axhline(y, linestyle="--", linewidth=1.0, color=f"C{(len(data) + k) % 10}", label=label)
    if logy and (_has_positive(list(data.values())) or lines):
        ax.set_yscale("log")
    ax.set_xticks(positions, cats, rotation=20 if len(cats) > 4 else 0)
    ax.set_xlim(-0.6, len(cats) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)
