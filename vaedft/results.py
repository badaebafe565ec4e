"""The minimization result file (``vaedft minimize --out RESULT.h5``): writing, reading, summary.

:func:`write_result` writes it (atomically); :func:`read_result` reads a file back and checks it
against the schema; :func:`summary_table` renders its metrics.  :func:`vaedft.pipeline.minimize_files`
produces it from trained runs and a test file.

Schema (attribute ``format`` = ``"vaedft-minimize-result"``, ``format_version`` = 1), N test
instances in the order of the test file:

* datasets ``e_min`` (N,) final energy (E0; NaN where the minimization diverged), ``e_last`` (N,)
  energy of the returned state (the last finite one for diverged rows), ``e_gs`` (N,) the test
  file's exact ``energy``, ``n_min`` (N, *grid) density of the returned state, ``z_min``
  (N, l_d; latent methods only), ``steps`` (N,) int64, ``converged`` (N,) bool, ``diverged``
  (N,) bool, ``grad_norm`` (N,), ``best_start`` (N,) int64, ``e_starts`` (N, K), ``indices``
  (N,) int64, ``energy_history`` (N, T) and ``history_steps`` (T,);
* group ``metrics``: attributes ``n_instances``, ``chemical_accuracy`` and every scalar of
  :func:`vaedft.metrics.energy_errors` (``mean_abs_error``, ``max_abs_error``, ``std_abs_error``,
  ``min_abs_error``, the same for ``signed_error``, each also ``..._kcal_per_mol``;
  ``fraction_within_ca``, ``n_violations``, ``n_nonfinite``), ``density_error_mean``,
  ``density_error_std``, ``density_error_max``, ``n_density_nonfinite`` (from
  :func:`vaedft.metrics.density_errors`), ``n_converged``, ``n_diverged``; datasets
  ``violation_indices``, ``signed_error`` (N,) and ``density_error`` (N,);
* file attributes ``vaedft_version``, ``testbed``, ``method``, ``minimize_config`` (JSON of
  :class:`~vaedft.minimize.MinimizeConfig`), ``functional_run_config`` and
  ``vae_run_config`` (JSON of the runs' ``config.json``; ``vae_run_config`` is ``""`` for density
  methods), ``functional_checkpoint_sha256`` / ``vae_checkpoint_sha256`` (sha256 of each run's
  ``best.pt``), ``functional_run_dir`` / ``vae_run_dir``, ``test_data_path``,
  ``test_data_sha256``, ``train_data_path`` / ``train_data_sha256`` (``""`` when no training
  densities were needed), ``grid_shape``, ``cell_volume``, ``device``, ``dtype``,
  ``wall_time_s``.

Metrics come from :mod:`vaedft.metrics` only.  Diverged instances: their energy is NaN, so
:func:`~vaedft.metrics.energy_errors` leaves them out of the statistics (they count as outside
chemical accuracy); their density enters :func:`~vaedft.metrics.density_errors` as NaN, so they
are counted in ``n_density_nonfinite`` instead of the density statistics (their last finite
state is still stored in ``n_min``).

Files are written to ``RESULT.h5.tmp`` and renamed, so a complete file is all that ever carries
the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__
from .data.store import open_hdf5, plain_value

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "METRIC_ATTRS",
    "ResultError",
    "compute_metrics",
    "write_result",
    "read_result",
    "summary_table",
]

FORMAT = "vaedft-minimize-result"
FORMAT_VERSION = 1

#: per-instance datasets (first axis N) every result file holds; ``z_min`` in addition for latent methods
INSTANCE_DATASETS = ("e_min", "e_last", "e_gs", "n_min", "steps", "converged", "diverged", "grad_norm",
                     "best_start", "e_starts", "indices", "energy_history")
#: attributes of the ``metrics`` group that :func:`read_result` requires
METRIC_ATTRS = (
    "n_instances", "chemical_accuracy",
    "mean_abs_error", "max_abs_error", "std_abs_error", "min_abs_error",
    "mean_signed_error", "max_signed_error", "std_signed_error", "min_signed_error",
    "mean_abs_error_kcal_per_mol", "max_abs_error_kcal_per_mol",
    "mean_signed_error_kcal_per_mol", "max_signed_error_kcal_per_mol",
    "fraction_within_ca", "n_violations", "n_nonfinite",
    "density_error_mean", "density_error_std", "density_error_max", "n_density_nonfinite",
    "n_converged", "n_diverged",
)
METRIC_DATASETS = ("violation_indices", "signed_error", "density_error")
FILE_ATTRS = (
    "format", "format_version", "vaedft_version", "testbed", "method", "minimize_config",
    "functional_run_config", "functional_checkpoint_sha256", "functional_run_dir",
    "vae_run_config", "vae_checkpoint_sha256", "vae_run_dir",
    "test_data_path", "test_data_sha256", "train_data_path", "train_data_sha256",
    "grid_shape", "cell_volume", "device", "dtype", "wall_time_s",
)


class ResultError(ValueError):
    """A result file that does not follow the schema."""


# ----------------------------------------------------------------------------- metrics


def compute_metrics(e_min, e_gs, n_min, n_gs, cell_volume: float, *, converged, diverged) -> dict:
    """Metrics of a minimization, from :func:`~vaedft.metrics.energy_errors` and
    :func:`~vaedft.metrics.density_errors` (diverged rows enter the density errors as NaN).

    Returns:
        ``{"attrs": {scalar name: value}, "arrays": {"violation_indices", "signed_error",
        "density_error"}}``, the content of the ``metrics`` group.
    """
    from .metrics import CHEMICAL_ACCURACY, density_errors, energy_errors

    e_min = np.asarray(e_min, dtype=np.float64)
    n_min = np.asarray(n_min, dtype=np.float64)
    diverged = np.asarray(diverged, dtype=bool)
    converged = np.asarray(converged, dtype=bool)
    n = e_min.shape[0]
    if diverged.shape != (n,) or converged.shape != (n,):
        raise ValueError(f"converged and diverged must have shape ({n},), got {converged.shape}, {diverged.shape}")
    energy = energy_errors(e_min, e_gs)
    n_for_errors = np.where(diverged.reshape(-1, *([1] * (n_min.ndim - 1))), np.nan, n_min)
    density = density_errors(n_for_errors, n_gs, cell_volume)
    attrs: dict[str, Any] = {"n_instances": int(n), "chemical_accuracy": float(CHEMICAL_ACCURACY)}
    for key, value in energy.items():
        if np.ndim(value) == 0:
            attrs[key] = value
    attrs.pop("n", None)
    attrs.update(
        density_error_mean=density["mean"],
        density_error_std=density["std"],
        density_error_max=density["max"],
        n_density_nonfinite=density["n_nonfinite"],
        n_converged=int(converged.sum()),
        n_diverged=int(diverged.sum()),
    )
    arrays = {
        "violation_indices": np.asarray(energy["violation_indices"], dtype=np.int64),
        "signed_error": np.asarray(energy["signed_error"], dtype=np.float64),
        "density_error": np.asarray(density["per_instance"], dtype=np.float64),
    }
    return {"attrs": attrs, "arrays": arrays}


# ----------------------------------------------------------------------------- writing


def _json(obj) -> str:
    return "" if obj is None else json.dumps(obj, sort_keys=True)


def write_result(
    path: str | Path,
    result,
    *,
    e_gs,
    n_gs,
    cell_volume: float,
    testbed: str,
    functional_run: dict,
    functional_checkpoint_sha256: str,
    test_data_path: str | Path,
    test_data_sha256: str,
    vae_run: dict | None = None,
    vae_checkpoint_sha256: str = "",
    functional_run_dir: str | Path = "",
    vae_run_dir: str | Path = "",
    train_data_path: str | Path | None = None,
    train_data_sha256: str = "",
    device: str = "",
    dtype: str = "",
) -> dict:
    """Write a :class:`~vaedft.minimize.MinimizeResult` and its metrics (atomically: ``path.tmp`` then rename).

    Args:
        path: the result file.
        result: the :class:`~vaedft.minimize.MinimizeResult`.
        e_gs: ``(N,)`` exact ground-state energies; ``n_gs``: ``(N, *grid)`` exact densities.
        cell_volume: ``dx**d`` of the grid (for the density errors).
        testbed: the testbed name.
        functional_run, vae_run: the runs' ``config.json`` contents (``vae_run`` for latent methods).
        functional_checkpoint_sha256, vae_checkpoint_sha256: sha256 of the ``best.pt`` used.
        test_data_path, test_data_sha256: the test file.
        train_data_path, train_data_sha256: the training densities used (None: none were used).

    Returns:
        The metrics, as :func:`compute_metrics` returns them.
    """
    cfg = result.config
    n = len(result)
    e_gs = np.asarray(e_gs, dtype=np.float64)
    n_gs = np.asarray(n_gs, dtype=np.float64)
    if e_gs.shape != (n,):
        raise ValueError(f"e_gs must have shape ({n},), got {e_gs.shape}")
    if n_gs.shape != result.n_min.shape:
        raise ValueError(f"n_gs must have the shape of n_min {result.n_min.shape}, got {n_gs.shape}")
    if cfg.is_latent and (vae_run is None or result.z_min is None):
        raise ValueError(f"{cfg.method} is a latent method: the result needs z_min and the VAE run")
    metrics = compute_metrics(result.e_min, e_gs, result.n_min, n_gs, cell_volume, converged=result.converged,
                              diverged=result.diverged)
    datasets = {
        "e_min": result.e_min, "e_last": result.e_last, "e_gs": e_gs, "n_min": result.n_min,
        "steps": result.steps, "converged": result.converged, "diverged": result.diverged,
        "grad_norm": result.grad_norm, "best_start": result.best_start, "e_starts": result.e_starts,
        "indices": result.indices, "energy_history": result.energy_history, "history_steps": result.history_steps,
    }
    if cfg.is_latent:
        datasets["z_min"] = result.z_min
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vaedft_version": __version__,
        "testbed": str(testbed),
        "method": cfg.method,
        "minimize_config": _json(cfg.to_dict()),
        "functional_run_config": _json(functional_run),
        "functional_checkpoint_sha256": str(functional_checkpoint_sha256),
        "functional_run_dir": str(functional_run_dir),
        "vae_run_config": _json(vae_run if cfg.is_latent else None),
        "vae_checkpoint_sha256": str(vae_checkpoint_sha256) if cfg.is_latent else "",
        "vae_run_dir": str(vae_run_dir) if cfg.is_latent else "",
        "test_data_path": str(test_data_path),
        "test_data_sha256": str(test_data_sha256),
        "train_data_path": "" if train_data_path is None else str(train_data_path),
        "train_data_sha256": "" if train_data_path is None else str(train_data_sha256),
        "grid_shape": np.asarray(result.n_min.shape[1:], dtype=np.int64),
        "cell_volume": float(cell_volume),
        "device": str(device),
        "dtype": str(dtype),
        "wall_time_s": float(result.wall_time_s),
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            for name, value in datasets.items():
                f.create_dataset(name, data=np.asarray(value))
            f.attrs.update(attrs)
            g = f.create_group("metrics")
            g.attrs.update(metrics["attrs"])
            for name, value in metrics["arrays"].items():
                g.create_dataset(name, data=value)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return metrics


# ----------------------------------------------------------------------------- reading


def read_result(path: str | Path) -> dict:
    """Read a result file and check it against the schema.

    Returns:
        A dict with every dataset (NumPy arrays; ``z_min`` is None for density methods),
        ``"metrics"`` (the group's attributes plus its datasets), ``"attrs"`` (file attributes as
        plain values, JSON strings as written), ``"config"`` (the
        :class:`~vaedft.minimize.MinimizeConfig`), ``"functional_run"`` and ``"vae_run"`` (the
        runs' configs as dicts; ``vae_run`` None for density methods).

    Raises:
        ResultError: not a readable result file, or one that breaks the schema.
    """
    from .minimize import MinimizeConfig

    path = Path(path)
    with open_hdf5(path, ResultError) as f:
        attrs = {k: plain_value(v) for k, v in f.attrs.items()}
        if attrs.get("format") != FORMAT:
            raise ResultError(f"{path}: not a vaedft minimization result (format {attrs.get('format')!r})")
        if attrs.get("format_version") != FORMAT_VERSION:
            raise ResultError(f"{path}: format_version {attrs.get('format_version')!r}, expected {FORMAT_VERSION}")
        missing = [a for a in FILE_ATTRS if a not in attrs]
        if missing:
            raise ResultError(f"{path}: missing attributes {missing}")
        try:
            config = MinimizeConfig.from_dict(json.loads(attrs["minimize_config"]))
            functional_run = json.loads(attrs["functional_run_config"])
            vae_run = json.loads(attrs["vae_run_config"]) if attrs["vae_run_config"] else None
        except (ValueError, TypeError) as exc:
            raise ResultError(f"{path}: unreadable config attribute ({exc})") from None
        if attrs["method"] != config.method:
            raise ResultError(f"{path}: method {attrs['method']!r} differs from the config's {config.method!r}")
        names = list(INSTANCE_DATASETS) + ["history_steps"] + (["z_min"] if config.is_latent else [])
        absent = [name for name in names if name not in f]
        if absent:
            raise ResultError(f"{path}: missing datasets {absent}")
        if not config.is_latent and "z_min" in f:
            raise ResultError(f"{path}: a {config.method} result must not hold z_min")
        if config.is_latent and vae_run is None:
            raise ResultError(f"{path}: a {config.method} result needs vae_run_config")
        out: dict[str, Any] = {name: f[name][()] for name in names}
        if "metrics" not in f:
            raise ResultError(f"{path}: missing group 'metrics'")
        g = f["metrics"]
        metrics = {k: plain_value(v) for k, v in g.attrs.items()}
        missing = [a for a in METRIC_ATTRS if a not in metrics]
        absent = [d for d in METRIC_DATASETS if d not in g]
        if missing or absent:
            raise ResultError(f"{path}: metrics group lacks attributes {missing} / datasets {absent}")
        for name in METRIC_DATASETS:
            metrics[name] = g[name][()]

    n = out["e_min"].shape[0] if out["e_min"].ndim == 1 else -1
    if n < 1:
        raise ResultError(f"{path}: e_min must be a non-empty 1-D array, got shape {out['e_min'].shape}")
    grid = tuple(int(s) for s in attrs["grid_shape"])
    t_sub = len(config.history_steps)
    shapes = {name: (n,) for name in INSTANCE_DATASETS}
    shapes.update(n_min=(n, *grid), e_starts=(n, config.starts), energy_history=(n, t_sub), history_steps=(t_sub,))
    if config.is_latent:
        shapes["z_min"] = (n, int(vae_run["model"]["latent_dim"]))
    for name, want in shapes.items():
        if out[name].shape != want:
            raise ResultError(f"{path}: dataset {name!r} has shape {out[name].shape}, expected {want}")
    if not np.array_equal(out["history_steps"], config.history_steps):
        raise ResultError(f"{path}: history_steps disagree with the config (steps, history_every)")
    for name in ("converged", "diverged"):
        if out[name].dtype != np.bool_:
            raise ResultError(f"{path}: dataset {name!r} must be boolean, got {out[name].dtype}")
    if int(metrics["n_instances"]) != n:
        raise ResultError(f"{path}: metrics/n_instances = {metrics['n_instances']} but the file has {n} instances")
    for name in ("signed_error", "density_error"):
        if metrics[name].shape != (n,):
            raise ResultError(f"{path}: metrics/{name} has shape {metrics[name].shape}, expected ({n},)")
    vi = metrics["violation_indices"]
    if vi.ndim != 1 or vi.shape[0] != int(metrics["n_violations"]) or (vi.size and (vi.min() < 0 or vi.max() >= n)):
        raise ResultError(f"{path}: metrics/violation_indices disagrees with n_violations or the instance count")
    if not np.isfinite(out["e_gs"]).all():
        raise ResultError(f"{path}: e_gs has NaN/inf")
    if not config.is_latent:
        out["z_min"] = None
    out.update(metrics=metrics, attrs=attrs, config=config, functional_run=functional_run, vae_run=vae_run)
    return out


def _g(x, fmt: str = ".4g") -> str:
    return "nan" if x is None or not np.isfinite(x) else format(x, fmt)


def summary_table(metrics: dict, *, method: str = "", steps: int | None = None, wall_time_s: float | None = None,
                  violation_indices=None, tablefmt: str = "simple") -> str:
    """The metrics as a two-column table (tabulate).

    Args:
        metrics: the ``attrs`` of :func:`compute_metrics` (or ``read_result(...)["metrics"]``).
        violation_indices: listed (the first 10) next to the number of violations when given.
    """
    from tabulate import tabulate

    m = metrics
    n = int(m["n_instances"])
    violations = str(int(m["n_violations"]))
    if violation_indices is not None and len(violation_indices):
        shown = [int(i) for i in violation_indices[:10]]
        violations += f" (instances {', '.join(map(str, shown))}{', ...' if len(violation_indices) > 10 else ''})"
    rows = []
    if method:
        rows.append(("method", method))
    rows.append(("instances", str(n)))
    if steps is not None:
        rows.append(("step budget (t_max)", str(steps)))
    rows += [
        ("mean |e_min - e_gs| (E0)", _g(m["mean_abs_error"])),
        ("max |e_min - e_gs| (E0)", _g(m["max_abs_error"])),
        ("mean |e_min - e_gs| (kcal/mol)", _g(m["mean_abs_error_kcal_per_mol"])),
        ("max |e_min - e_gs| (kcal/mol)", _g(m["max_abs_error_kcal_per_mol"])),
        ("mean e_min - e_gs (kcal/mol)", _g(m["mean_signed_error_kcal_per_mol"])),
        ("within chemical accuracy (1 kcal/mol)", f"{m['fraction_within_ca']:.1%}"),
        ("variational violations (e_min < e_gs - CA)", violations),
        ("density error int|n_min - n_gs| dx: mean", _g(m["density_error_mean"])),
        ("density error: std", _g(m["density_error_std"])),
        ("density error: max", _g(m["density_error_max"])),
        ("converged", f"{int(m['n_converged'])} / {n}"),
        ("diverged", f"{int(m['n_diverged'])} / {n}"),
    ]
    if wall_time_s is not None:
        rows.append(("wall time of the descent (s)", f"{wall_time_s:.3g}"))
    return tabulate(rows, headers=("metric", "value"), tablefmt=tablefmt, disable_numparse=True)
