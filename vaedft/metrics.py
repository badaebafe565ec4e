"""Metrics, one implementation used everywhere (training reports, minimization, the benchmark).

Units: energies in E0; 1 kcal/mol = :data:`KCAL_PER_MOL` E0 (chemical accuracy).  Density
errors are ``int |a - b| d^dx`` with the testbed's own ``dx`` (dimensionless).

The error budget of a minimization (:func:`error_budget`, :func:`budget_summary`) splits
``e_min - e_gs`` into the functional's error, the VAE's representation and roughness, the gap of
the decoder's manifold, and the exact energy of the found density (see :data:`BUDGET_TERMS`);
per-instance terms in E0, summaries in kcal/mol.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "KCAL_PER_MOL",
    "CHEMICAL_ACCURACY",
    "to_kcal_per_mol",
    "density_l1",
    "reconstruction_error",
    "functional_errors",
]

#: 1 kcal/mol in E0 (Hartree): 1 / 627.5095.
KCAL_PER_MOL = 1.5936e-3
#: Chemical accuracy, 1 kcal/mol, in E0.
CHEMICAL_ACCURACY = KCAL_PER_MOL


def to_kcal_per_mol(e):
    """Energies in E0 -> kcal/mol."""
    return np.asarray(e, dtype=np.float64) / KCAL_PER_MOL


def density_l1(a, b, cell_volume: float) -> np.ndarray:
    """``int |a - b| d^dx`` per instance for batches ``(B, *grid)``; returns ``(B,)``."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    if isinstance(b, torch.Tensor):
        b = b.detach().cpu().double().numpy()
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"density batches differ in shape: {a.shape} vs {b.shape}")
    return cell_volume * np.abs(a - b).reshape(a.shape[0], -1).sum(axis=1)


def _summary(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std()), "max": float(values.max())}


@torch.no_grad()
def reconstruction_error(vae, densities, *, batch: int = 500) -> dict:
    """Reconstruction error of a VAE, ``int |D(mu(n)) - n| dx``, over a test set.

    Args:
        vae: a :class:`vaedft.models.VAE` (put in eval mode here: ``z = mu``).
        densities: ``(N, *grid)`` array or tensor.

    Returns:
        ``{"mean", "std", "max", "per_instance"}`` (dimensionless).
    """
    vae.eval()
    p = next(vae.parameters())
    n = torch.as_tensor(np.asarray(densities), dtype=p.dtype, device=p.device)
    errs = []
    for lo in range(0, n.shape[0], batch):
        x = n[lo : lo + batch]
        mu, _ = vae.encode(x)
        errs.append(density_l1(vae.decode(mu), x, vae.config.cell_volume))
    per = np.concatenate(errs)
    return {**_summary(per), "per_instance": per}


@torch.no_grad()
def functional_errors(functional, densities, F_true, *, batch: int = 500) -> dict:
    """Errors of a DL functional on ``F = e - int V n``.

    Returns:
        ``{"mae", "max_abs", "mae_kcal_per_mol", "rmse", "per_instance"}``; errors in E0
        unless named kcal/mol; ``per_instance`` is the signed ``F_pred - F_true``.
    """
    functional.eval()
    p = next(functional.parameters())
    n = torch.as_tensor(np.asarray(densities), dtype=p.dtype, device=p.device)
    F_true = np.asarray(F_true, dtype=np.float64)
    if F_true.shape != (n.shape[0],):
        raise ValueError(f"F_true must have shape ({n.shape[0]},) like the densities' batch, got {F_true.shape}")
    preds = [functional(n[lo : lo + batch]).double().cpu().numpy() for lo in range(0, n.shape[0], batch)]
    err = np.concatenate(preds) - F_true
    mae = float(np.abs(err).mean())
    return {
        "mae": mae,
        "max_abs": float(np.abs(err).max()),
        "mae_kcal_per_mol": float(to_kcal_per_mol(mae)),
        "rmse": float(np.sqrt((err**2).mean())),
        "per_instance": err,
    }


def _finite_summary(values: np.ndarray, prefix: str, suffix: str = "") -> dict:
    """mean/std/max (and min) of the finite entries; NaN when there are none."""
    ok = values[np.isfinite(values)]
    stats = {"mean": np.nan, "std": np.nan, "max": np.nan, "min": np.nan}
    if ok.size:
        stats = {"mean": float(ok.mean()), "std": float(ok.std()), "max": float(ok.max()), "min": float(ok.min())}
    return {f"{k}_{prefix}{suffix}": v for k, v in stats.items()}


def energy_errors(e_min, e_gs, *, chemical_accuracy: float = CHEMICAL_ACCURACY) -> dict:
    """Energy errors of a minimisation against the exact ground-state energies.

    Args:
        e_min: ``(N,)`` minimised energies in E0 (NaN for instances that diverged).
        e_gs: ``(N,)`` exact ground-state energies in E0.
        chemical_accuracy: the tolerance CA in E0 (default 1 kcal/mol = 1.5936e-3 E0).

    Returns:
        A dict with

        * ``n``; ``signed_error`` ``(N,)`` = ``e_min - e_gs`` and ``abs_error`` ``(N,)`` (E0);
        * ``mean_signed_error``, ``std_signed_error``, ``max_signed_error``, ``min_signed_error``,
          ``mean_abs_error``, ``std_abs_error``, ``max_abs_error``, ``min_abs_error`` (E0) and the same
          keys ending in ``_kcal_per_mol``; statistics over the finite errors only;
        * ``fraction_within_ca``: share of **all** N instances with ``|error| <= CA`` (a non-finite
          energy counts as outside);
        * ``n_violations`` and ``violation_indices``: instances with ``e_min < e_gs - CA``
          (variational violations beyond chemical accuracy);
        * ``n_nonfinite`` and ``nonfinite_indices``: instances whose ``e_min`` is NaN/inf
          (diverged minimisations), excluded from the statistics and reported here instead.

    Raises:
        ValueError: shapes differ, an empty batch, or a non-finite ``e_gs``.
    """
    e_min = np.atleast_1d(np.asarray(e_min, dtype=np.float64))
    e_gs = np.atleast_1d(np.asarray(e_gs, dtype=np.float64))
    if e_min.ndim != 1 or e_min.shape != e_gs.shape:
        raise ValueError(f"e_min and e_gs must be 1-D of the same length, got {e_min.shape} and {e_gs.shape}")
    if e_min.size == 0:
        raise ValueError("energy_errors needs at least one instance")
    if not np.isfinite(e_gs).all():
        raise ValueError(f"e_gs must be finite; non-finite at {np.flatnonzero(~np.isfinite(e_gs))[:10].tolist()}")
    if not (np.isfinite(chemical_accuracy) and chemical_accuracy > 0):
        raise ValueError(f"chemical_accuracy must be positive, got {chemical_accuracy}")
    signed = e_min - e_gs
    absolute = np.abs(signed)
    finite = np.isfinite(signed)
    violations = np.flatnonzero(finite & (signed < -chemical_accuracy))
    out = {"n": int(signed.size), "signed_error": signed, "abs_error": absolute}
    for name, values in (("signed_error", signed), ("abs_error", absolute)):
        out.update(_finite_summary(values, name))
        out.update(_finite_summary(values / KCAL_PER_MOL, name, "_kcal_per_mol"))
    out.update(
        fraction_within_ca=float((finite & (absolute <= chemical_accuracy)).mean()),
        n_violations=int(violations.size),
        violation_indices=violations,
        n_nonfinite=int((~finite).sum()),
        nonfinite_indices=np.flatnonzero(~finite),
    )
    return out


def density_errors(n_min, n_gs, cell_volume: float) -> dict:
    """Density errors ``int |n_min - n_gs| d^dx`` (testbed's own ``dx``) of a minimisation.

    Args:
        n_min: ``(N, *grid)`` minimised densities (array or tensor).
        n_gs: ``(N, *grid)`` exact ground-state densities.
        cell_volume: ``dx**d`` of the grid.

    Returns:
        ``{"mean", "std", "max", "per_instance", "n_nonfinite"}``; the statistics cover the
        finite per-instance errors (NaN densities, e.g. of failed rows, are counted instead).
    """
    if not (np.isfinite(cell_volume) and cell_volume > 0):
        raise ValueError(f"cell_volume must be positive, got {cell_volume}")
    per = density_l1(n_min, n_gs, cell_volume)
    if per.size == 0:
        raise ValueError("density_errors needs at least one instance")
    ok = per[np.isfinite(per)]
    stats = _summary(ok) if ok.size else {"mean": np.nan, "std": np.nan, "max": np.nan}
    return {**stats, "per_instance": per, "n_nonfinite": int(per.size - ok.size)}


__all__ += ["energy_errors", "density_errors"]


# ----------------------------------------------------------------------------- the error budget

#: The terms of :func:`error_budget`, in the order they are shown, with their definitions.
#: ``E_w[n] = F_w[n] + int V n`` (the learned energy), ``E_exact[n] = T[n] + int V n`` with ``T``
#: the exact (von Weizsaecker) kinetic functional on the testbed grid, ``D``/``mu`` the VAE's
#: decoder and encoder mean, ``n_min`` the found density (``D(z_min)`` for latent methods).
BUDGET_TERMS: dict[str, str] = {
    "functional_error": "F_w[n_gs] - F[n_gs]",
    "representation": "E_w[D(mu(n_gs))] - e_gs",
    "roughness": "T[D(mu(n_gs))] - T[n_gs]",
    "manifold_gap": "min_z E_exact[D(z)] - e_gs",
    "total": "E_w[n_min] - e_gs",
    "functional_error_at_min": "F_w[n_min] - T[n_min]",
    "exact_energy_at_min": "E_exact[n_min] - e_gs",
}
#: Terms bounded below by 0 (variational principle on the grid, up to the solver's tolerance): their
#: summary gives the minimum instead of the mean absolute value.
VARIATIONAL_TERMS = ("manifold_gap", "exact_energy_at_min")
#: Terms that need the VAE (absent from the budget of a density-space method).
VAE_TERMS = ("representation", "roughness", "manifold_gap")
#: Terms that need the found state (``z_min`` or ``n_min``).
MIN_TERMS = ("total", "functional_error_at_min", "exact_energy_at_min")
#: Step budget of the manifold-gap minimization (latent L-BFGS with the exact functional).
DEFAULT_GAP_STEPS = 200


@dataclass
class ErrorBudget:
    """Per-instance error budget of one minimization (what :func:`error_budget` returns).

    Attributes:
        terms: ``{name: (N,) float64}`` in E0, the computed terms of :data:`BUDGET_TERMS` in that
            order (terms that could not be computed are absent: no VAE, no found state, or the gap
            skipped).  ``total`` and the ``*_at_min`` terms are NaN for diverged instances.
        gap_steps: ``(N,)`` int64 steps the manifold-gap minimization took (None without gap).
        gap_converged: ``(N,)`` bool, its convergence test passed (None without gap).
        gap_config: the :class:`~vaedft.minimize.MinimizeConfig` of the gap minimization as a
            dict (None without gap).
        dtype: the dtype the budget was computed in.
        wall_time_s: seconds spent computing the budget (the gap minimization included).

    ``budget["total"]`` is ``budget.terms["total"]``; ``"total" in budget`` tests for a term.
    """

    terms: dict[str, np.ndarray]
    gap_steps: np.ndarray | None = None
    gap_converged: np.ndarray | None = None
    gap_config: dict | None = None
    dtype: str = "float64"
    wall_time_s: float = 0.0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.terms[name]

    def __contains__(self, name: object) -> bool:
        return name in self.terms

    def __len__(self) -> int:
        return int(next(iter(self.terms.values())).shape[0]) if self.terms else 0


def _in_dtype(module, dtype: torch.dtype):
    """``module`` itself if its floating tensors already have ``dtype``, else a converted copy."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    if all(t.dtype == dtype for t in tensors):
        return module
    return copy.deepcopy(module).to(dtype)


def _device_of(*modules) -> torch.device:
    for m in modules:
        if m is None:
            continue
        for t in (*m.parameters(), *m.buffers()):
            return t.device
    return torch.device("cpu")


def _host(a) -> np.ndarray:
    """An array or tensor (any device) as a float64 NumPy array."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _batch_tensor(name: str, a, shape: tuple, dtype, device) -> torch.Tensor:
    arr = _host(a)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return torch.as_tensor(arr, dtype=dtype, device=device)


def error_budget(
    vae,
    functional,
    V,
    n_gs,
    e_gs,
    F,
    z_min=None,
    *,
    grid,
    n_min=None,
    diverged=None,
    gap: bool = True,
    gap_steps: int = DEFAULT_GAP_STEPS,
    gap_options: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float64,
    batch: int = 500,
) -> ErrorBudget:
    """The error budget of a minimization: where the energy error ``e_min - e_gs`` comes from.

    All terms are per instance, in E0 (see :data:`BUDGET_TERMS`; summarise with
    :func:`budget_summary`, which reports kcal/mol).  With ``E_w[n] = F_w[n] + int V n`` the learned
    energy and ``E_exact[n] = T[n] + int V n`` the exact one (``T``: the exact von Weizsaecker
    functional, :class:`~vaedft.minimize.ExactKineticFunctional` on ``grid``):

    * ``functional_error`` = ``F_w[n_gs] - F[n_gs]``: the learned functional on the exact density;
    * ``representation`` = ``E_w[D(mu(n_gs))] - e_gs``: the learned energy of the VAE's
      reconstruction of the ground state (where the descent would stop if it found ``mu(n_gs)``);
    * ``roughness`` = ``T[D(mu(n_gs))] - T[n_gs]``: the kinetic energy the decoder adds (wiggles);
    * ``manifold_gap`` = ``min_z E_exact[D(z)] - e_gs``: the best the decoder's manifold allows with
      a perfect functional, found by latent L-BFGS (the engine :func:`~vaedft.minimize.minimize`)
      with the exact functional from ``mu(n_gs)``, so it is ``<= E_exact[D(mu(n_gs))] - e_gs``;
    * ``total`` = ``E_w[n_min] - e_gs`` (= ``e_min - e_gs``);
    * ``functional_error_at_min`` = ``F_w[n_min] - T[n_min]`` (= ``total - exact_energy_at_min``);
    * ``exact_energy_at_min`` = ``E_exact[n_min] - e_gs``: how good the found density really is;
      ``>= 0`` for every normalised density (variational principle on the grid).

    ``n_min = D(z_min)`` for latent methods, or the given ``n_min`` (density methods).

    Args:
        vae: the VAE, or None (density methods: the VAE terms are left out).
        functional: the DL functional ``F_w`` (or any module called like it).
        V: ``(N, *grid)`` potentials (E0).
        n_gs: ``(N, *grid)`` exact ground-state densities.
        e_gs: ``(N,)`` exact ground-state energies (E0).
        F: ``(N,)`` exact ``F = e_gs - int V n_gs`` (the dataset's ``F``).
        z_min: ``(N, l_d)`` minimizer's latent result (latent methods), or None.
        grid: the testbed's :class:`~vaedft.physics.grid.Grid` (with its stencil).
        n_min: ``(N, *grid)`` found densities when there is no ``z_min`` (density methods), or None.
        diverged: ``(N,)`` bool; these instances get NaN in ``total`` and the ``*_at_min`` terms.
        gap: compute the manifold gap (a latent minimization; the expensive term).
        gap_steps: its step budget per instance.
        gap_options: further :class:`~vaedft.minimize.MinimizeConfig` fields of the gap minimization
            (default: ``latent-lbfgs``, ``lr`` 1e-2, ``tol_energy`` 1e-10, ``tol_grad`` 1e-7).
        dtype: computation dtype (float64 by default; the models are converted copies if needed).
        batch: instances per forward pass.

    Returns:
        :class:`ErrorBudget`.

    Raises:
        ValueError: shapes that disagree, non-finite inputs, a grid that is not the models'.
    """
    import time

    from .minimize import ExactKineticFunctional, MinimizeConfig, grid_spec, minimize

    t0 = time.perf_counter()
    exact = ExactKineticFunctional(grid)
    spec = grid_spec(exact)
    for name, model in (("functional", functional), ("vae", vae)):
        if model is None:
            continue
        ms = grid_spec(model)
        same = (ms.ndim, ms.grid_n, ms.boundary) == (spec.ndim, spec.grid_n, spec.boundary)
        if not same or not np.isclose(ms.dx, spec.dx, rtol=1e-9, atol=0):
            raise ValueError(f"the {name} was built for grid {ms}, not the budget's grid {spec}")
    if z_min is not None and vae is None:
        raise ValueError("z_min needs the VAE that decodes it")
    if z_min is not None and n_min is not None:
        raise ValueError("give z_min (latent methods) or n_min (density methods), not both")
    device = _device_of(functional, vae)
    shape = spec.grid_shape
    Vt = torch.as_tensor(_host(V), dtype=dtype, device=device)
    N = Vt.shape[0] if Vt.dim() == len(shape) + 1 else -1
    if N < 1 or tuple(Vt.shape[1:]) != shape:
        raise ValueError(f"V must have shape (N, {', '.join(map(str, shape))}), got {tuple(Vt.shape)}")
    n_gs_t = _batch_tensor("n_gs", n_gs, (N, *shape), dtype, device)
    e_gs, F = _host(e_gs), _host(F)
    for name, arr in (("e_gs", e_gs), ("F", F)):
        if arr.shape != (N,) or not np.isfinite(arr).all():
            raise ValueError(f"{name} must be {N} finite numbers, got shape {arr.shape}")
    div = np.zeros(N, dtype=bool) if diverged is None else np.asarray(diverged, dtype=bool)
    if div.shape != (N,):
        raise ValueError(f"diverged must have shape ({N},), got {div.shape}")
    f_w = _in_dtype(functional, dtype)
    vae_d = None if vae is None else _in_dtype(vae, dtype)
    z_t = None
    if z_min is not None:
        z_t = torch.as_tensor(_host(z_min), dtype=dtype, device=device)
        if tuple(z_t.shape) != (N, int(vae.config.latent_dim)):
            raise ValueError(f"z_min must have shape ({N}, {vae.config.latent_dim}), got {tuple(z_t.shape)}")
    nmin_t = None if n_min is None else torch.as_tensor(_host(n_min), dtype=dtype, device=device)
    if nmin_t is not None and tuple(nmin_t.shape) != (N, *shape):
        raise ValueError(f"n_min must have shape ({N}, {', '.join(map(str, shape))}), got {tuple(nmin_t.shape)}")
    cell = spec.cell_volume
    have_min = z_t is not None or nmin_t is not None

    def pot(n, v):
        return cell * (v * n).flatten(1).sum(1)

    cols: dict[str, list] = {k: [] for k in BUDGET_TERMS}
    mus = []
    modes = [(m, m.training) for m in (f_w, vae_d) if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        with torch.no_grad():
            for lo in range(0, N, batch):
                sl = slice(lo, lo + batch)
                v, n = Vt[sl], n_gs_t[sl]
                cols["functional_error"].append(f_w(n, validate=False))
                t_gs = exact(n)
                if vae_d is not None:
                    mu = vae_d.encode(n, validate=False)[0]
                    mus.append(mu)
                    rec = vae_d.decode(mu)
                    t_rec = exact(rec)
                    cols["representation"].append(f_w(rec, validate=False) + pot(rec, v))
                    cols["roughness"].append(t_rec - t_gs)
                if have_min:
                    found = vae_d.decode(z_t[sl]) if z_t is not None else nmin_t[sl]
                    fw_found, t_found, v_found = f_w(found, validate=False), exact(found), pot(found, v)
                    cols["total"].append(fw_found + v_found)
                    cols["functional_error_at_min"].append(fw_found - t_found)
                    cols["exact_energy_at_min"].append(t_found + v_found)
    finally:
        for m, was_training in modes:
            m.train(was_training)

    def cat(name):
        return torch.cat(cols[name]).double().cpu().numpy()

    terms: dict[str, np.ndarray] = {"functional_error": cat("functional_error") - F}
    if vae_d is not None:
        terms["representation"] = cat("representation") - e_gs
        terms["roughness"] = cat("roughness")
    out = ErrorBudget(terms=terms, dtype=str(dtype).removeprefix("torch."))
    if vae_d is not None and gap:
        options = {"method": "latent-lbfgs", "lr": 1e-2, "tol_energy": 1e-10, "tol_grad": 1e-7,
                   **dict(gap_options or {}), "steps": int(gap_steps)}
        cfg = MinimizeConfig(**options)
        if not cfg.is_latent:
            raise ValueError(f"the manifold gap is a latent minimization; method {cfg.method} is not one")
        res = minimize(Vt, exact, vae_d, config=cfg, z0=torch.cat(mus))
        terms["manifold_gap"] = res.e_min - e_gs
        out.gap_steps, out.gap_converged, out.gap_config = res.steps, res.converged, cfg.to_dict()
    if have_min:
        terms["total"] = np.where(div, np.nan, cat("total") - e_gs)
        terms["functional_error_at_min"] = np.where(div, np.nan, cat("functional_error_at_min"))
        terms["exact_energy_at_min"] = np.where(div, np.nan, cat("exact_energy_at_min") - e_gs)
    out.terms = {k: terms[k] for k in BUDGET_TERMS if k in terms}
    out.wall_time_s = time.perf_counter() - t0
    return out


def budget_summary(budget) -> dict:
    """Means of the budget terms in kcal/mol, over the finite instances.

    Args:
        budget: an :class:`ErrorBudget` or a mapping ``{term: (N,) array in E0}``.

    Returns:
        ``{"n_instances": N}`` and, per present term, ``<term>_mean_kcal_per_mol``, then
        ``<term>_mean_abs_kcal_per_mol`` for signed terms or ``<term>_min_kcal_per_mol`` for the
        :data:`VARIATIONAL_TERMS` (a minimum below ``-tol`` flags a broken variational bound), and
        ``<term>_n_finite``.  NaN statistics where a term has no finite value.
    """
    terms = budget.terms if isinstance(budget, ErrorBudget) else budget
    out: dict[str, float | int] = {}
    for name in BUDGET_TERMS:
        if name not in terms:
            continue
        values = np.asarray(terms[name], dtype=np.float64) / KCAL_PER_MOL
        out.setdefault("n_instances", int(values.shape[0]))
        ok = values[np.isfinite(values)]
        out[f"{name}_mean_kcal_per_mol"] = float(ok.mean()) if ok.size else np.nan
        if name in VARIATIONAL_TERMS:
            out[f"{name}_min_kcal_per_mol"] = float(ok.min()) if ok.size else np.nan
        else:
            out[f"{name}_mean_abs_kcal_per_mol"] = float(np.abs(ok).mean()) if ok.size else np.nan
        out[f"{name}_n_finite"] = int(ok.size)
    return out


__all__ += ["BUDGET_TERMS", "VARIATIONAL_TERMS", "VAE_TERMS", "MIN_TERMS", "DEFAULT_GAP_STEPS", "ErrorBudget",
            "error_budget", "budget_summary"]
