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
* group ``budget`` (optional: absent in files written before the error budget existed, or with
  ``budget=None``), the error budget of :func:`vaedft.metrics.error_budget`:

  - one dataset (N,) float64 **in E0** per computed term of
    :data:`vaedft.metrics.BUDGET_TERMS` (``functional_error``, ``representation``,
    ``roughness``, ``manifold_gap``, ``total``, ``functional_error_at_min``,
    ``exact_energy_at_min``; the VAE terms are absent for density methods, ``manifold_gap``
    when the gap was skipped; NaN in ``total`` and ``*_at_min`` for diverged instances);
    ``gap_steps`` (N,) int64 and ``gap_converged`` (N,) bool when the gap was computed;
  - attributes ``terms`` (JSON list of the stored terms, in order), ``gap_config`` (JSON of the
    gap minimization's :class:`~vaedft.minimize.MinimizeConfig`, ``""`` without gap),
    ``dtype``, ``wall_time_s``, and every scalar of :func:`vaedft.metrics.budget_summary`
    **in kcal/mol** (``<term>_mean_kcal_per_mol``, ``<term>_mean_abs_kcal_per_mol`` or, for
    the variational terms, ``<term>_min_kcal_per_mol``; ``<term>_n_finite``; ``n_instances``);
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
    "BUDGET_ATTRS",
    "ResultError",
    "compute_metrics",
    "write_result",
    "read_result",
    "summary_table",
    "budget_table",
]

FORMAT = "vaedft-minimize-result"
FORMAT_VERSION = 1

#: per-instance datasets (first axis N) every result file holds; ``z_min`` in addition for latent methods
INSTANCE_DATASETS = ("e_min", "e_last", "e_gs", "n_min", "steps", "converged", "diverged", "grad_norm",
                     "best_start", "e_starts", "indices", "energy_history")
#: attributes of the optional ``budget`` group that :func:`read_result` requires
BUDGET_ATTRS = ("terms", "gap_config", "dtype", "wall_time_s", "n_instances")
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
    budget=None,
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
        budget: the :class:`~vaedft.metrics.ErrorBudget` of this minimization (group ``budget``),
            or None to write none.

    Returns:
        The metrics, as :func:`compute_metrics` returns them, plus ``"budget"``: the
        :func:`~vaedft.metrics.budget_summary` (kcal/mol), or None without a budget.
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
    budget_group = None if budget is None else _budget_group(budget, n)
    metrics["budget"] = None if budget_group is None else budget_group["summary"]
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
            if budget_group is not None:
                b = f.create_group("budget")
                b.attrs.update(budget_group["attrs"])
                b.attrs.update(budget_group["summary"])
                for name, value in budget_group["arrays"].items():
                    b.create_dataset(name, data=value)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return metrics


def _budget_group(budget, n: int) -> dict:
    """The content of the ``budget`` group: ``{"arrays", "attrs", "summary"}``."""
    from .metrics import BUDGET_TERMS, ErrorBudget, budget_summary

    if not isinstance(budget, ErrorBudget):
        raise ValueError(f"budget must be a vaedft.metrics.ErrorBudget, got {type(budget).__name__}")
    arrays = {}
    for name, values in budget.terms.items():
        if name not in BUDGET_TERMS:
            raise ValueError(f"unknown budget term {name!r}; expected some of {list(BUDGET_TERMS)}")
        arrays[name] = np.asarray(values, dtype=np.float64)
        if arrays[name].shape != (n,):
            raise ValueError(f"budget term {name!r} must have shape ({n},), got {arrays[name].shape}")
    if budget.gap_steps is not None:
        arrays["gap_steps"] = np.asarray(budget.gap_steps, dtype=np.int64)
        arrays["gap_converged"] = np.asarray(budget.gap_converged, dtype=bool)
    attrs = {"terms": json.dumps(list(budget.terms)), "gap_config": _json(budget.gap_config),
             "dtype": str(budget.dtype), "wall_time_s": float(budget.wall_time_s)}
    summary = budget_summary(budget)
    summary["n_instances"] = int(n)
    return {"arrays": arrays, "attrs": attrs, "summary": summary}


def _read_budget(path: Path, g, n: int) -> dict:
    """The ``budget`` group as ``{"terms": {name: (N,)}, "summary": {...}, "gap_steps", "gap_converged",
    "gap_config", "dtype", "wall_time_s"}``, checked against the schema."""
    from .metrics import BUDGET_TERMS

    attrs = {k: plain_value(v) for k, v in g.attrs.items()}
    missing = [a for a in BUDGET_ATTRS if a not in attrs]
    if missing:
        raise ResultError(f"{path}: budget group lacks attributes {missing}")
    try:
        names = json.loads(attrs["terms"])
        gap_config = json.loads(attrs["gap_config"]) if attrs["gap_config"] else None
    except (ValueError, TypeError) as exc:
        raise ResultError(f"{path}: unreadable budget attribute ({exc})") from None
    unknown = [t for t in names if t not in BUDGET_TERMS] if isinstance(names, list) else names
    if unknown:
        raise ResultError(f"{path}: budget/terms lists unknown terms {unknown}")
    terms = {}
    for name in names:
        if name not in g:
            raise ResultError(f"{path}: budget group lacks the dataset of its term {name!r}")
        terms[name] = g[name][()]
        if terms[name].shape != (n,):
            raise ResultError(f"{path}: budget/{name} has shape {terms[name].shape}, expected ({n},)")
    gap = {k: (g[k][()] if k in g else None) for k in ("gap_steps", "gap_converged")}
    if "manifold_gap" in terms and any(v is None or v.shape != (n,) for v in gap.values()):
        raise ResultError(f"{path}: a budget with manifold_gap needs gap_steps and gap_converged of shape ({n},)")
    summary = {k: v for k, v in attrs.items() if k not in ("terms", "gap_config", "dtype", "wall_time_s")}
    if int(summary["n_instances"]) != n:
        raise ResultError(f"{path}: budget/n_instances = {summary['n_instances']} but the file has {n} instances")
    return {"terms": terms, "summary": summary, **gap, "gap_config": gap_config, "dtype": attrs["dtype"],
            "wall_time_s": float(attrs["wall_time_s"])}


# ----------------------------------------------------------------------------- reading


def read_result(path: str | Path) -> dict:
    """Read a result file and check it against the schema.

    Returns:
        A dict with every dataset (NumPy arrays; ``z_min`` is None for density methods),
        ``"metrics"`` (the group's attributes plus its datasets), ``"budget"`` (the ``budget``
        group as ``{"terms": {name: (N,) E0}, "summary": {... kcal/mol}, "gap_steps",
        "gap_converged", "gap_config", "dtype", "wall_time_s"}``, or None for a file without one),
        ``"attrs"`` (file attributes as
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
        budget = _read_budget(path, f["budget"], n) if "budget" in f else None
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
    out.update(metrics=metrics, budget=budget, attrs=attrs, config=config, functional_run=functional_run,
               vae_run=vae_run)
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


def budget_table(summary: dict | None, *, tablefmt: str = "simple") -> str:
    """The error budget's means (kcal/mol) as a table (tabulate), one row per term.

    Args:
        summary: :func:`~vaedft.metrics.budget_summary` (or ``read_result(...)["budget"]["summary"]``);
            None renders a one-line note that there is no budget.

    Terms that were not computed show ``not computed``; signed terms show the mean of ``|term|``,
    the variational ones (``>= 0`` up to the solver's tolerance) their minimum instead.
    """
    from tabulate import tabulate

    from .metrics import BUDGET_TERMS, VARIATIONAL_TERMS

    if summary is None:
        return "error budget: not computed"
    rows = []
    for name, definition in BUDGET_TERMS.items():
        if f"{name}_mean_kcal_per_mol" not in summary:
            rows.append((name, definition, "not computed", ""))
            continue
        spread = (f"min {_g(summary[f'{name}_min_kcal_per_mol'], '.3g')}" if name in VARIATIONAL_TERMS
                  else _g(summary[f"{name}_mean_abs_kcal_per_mol"], ".3g"))
        rows.append((name, definition, _g(summary[f"{name}_mean_kcal_per_mol"], ".3g"), spread))
    return tabulate(rows, headers=("error budget", "definition", "mean (kcal/mol)", "mean |.| or min (kcal/mol)"),
                    tablefmt=tablefmt, disable_numparse=True)
