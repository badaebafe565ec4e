"""Metrics, one implementation used everywhere (training reports, minimization, the benchmark).

Units: energies in E0; 1 kcal/mol = :data:`KCAL_PER_MOL` E0 (chemical accuracy).  Density
errors are ``int |a - b| d^dx`` with the testbed's own ``dx`` (dimensionless).
"""

from __future__ import annotations

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
