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
