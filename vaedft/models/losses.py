"""Training losses of the beta-VAE and the DL functional (paper eqs. (6)-(9)).

* :func:`vae_loss` -- ``L = L_rec + beta * L_KL`` with the reconstruction term the squared
  error summed over the grid (the Gaussian decoder likelihood of eq. (5), up to constants)
  and the KL divergence of q(z|n) = N(mu, diag(exp(logvar))) from N(0, 1) summed over the
  latent dimensions; both are averaged over the batch.  The paper's code summed both terms
  over the batch instead: the ratio of the two terms, hence the meaning of beta, is the same,
  while the batch average makes the loss independent of the batch size.
* :func:`functional_loss` -- mean squared error on F (eq. (9)).
* :func:`kinetic_error` -- the reconstruction's error in the kinetic-energy norm,
  ``<dpsi| T |dpsi>`` with ``dpsi = sqrt(n_hat) - sqrt(n)``: an optional VAE loss term (not the
  paper's; ``TrainConfig.kinetic_weight``).  For a normalised one-particle ground state ``n`` with
  energy ``e``, ``E_V[n_hat] - e = <dpsi| H - e |dpsi>`` exactly, so this term is the kinetic part
  of the reconstruction's energy excess, the error the latent minimization inherits, while the
  squared error of :func:`reconstruction_loss` barely sees a wrong slope.
"""

from __future__ import annotations

import math

import torch

__all__ = ["reconstruction_loss", "kl_divergence", "vae_loss", "functional_loss", "kinetic_error"]


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)} (no broadcasting)")
    if a.dim() < 1 or a.shape[0] < 1:
        raise ValueError(f"{what}: need a batch axis with at least one instance, got shape {tuple(a.shape)}")


def reconstruction_loss(n_hat: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``mean_b sum_grid (n_hat - n)^2`` for batches ``(B, *grid)``; a scalar."""
    _check_same_shape(n_hat, n, "reconstruction_loss")
    return (n_hat - n).square().flatten(1).sum(dim=1).mean()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``mean_b KL(N(mu, exp(logvar)) || N(0, 1))``, summed over latent dims; ``mu``, ``logvar`` ``(B, l_d)``."""
    _check_same_shape(mu, logvar, "kl_divergence")
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(dim=1).mean()


def vae_loss(
    n_hat: torch.Tensor, n: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """beta-VAE loss.

    Args:
        n_hat: reconstructions ``(B, *grid)``.
        n: target densities ``(B, *grid)``.
        mu, logvar: posterior parameters ``(B, l_d)``.
        beta: weight of the KL term (``>= 0``).

    Returns:
        ``(total, rec, kl)`` scalars with ``total = rec + beta * kl``, each averaged over the batch.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if n_hat.shape[:1] != mu.shape[:1]:
        raise ValueError(f"vae_loss: batch sizes differ, densities {n_hat.shape[0]} vs latents {mu.shape[0]}")
    rec = reconstruction_loss(n_hat, n)
    kl = kl_divergence(mu, logvar)
    return rec + beta * kl, rec, kl


def functional_loss(F_pred: torch.Tensor, F_true: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``mean_b (F_pred - F_true)^2`` for ``(B,)`` tensors."""
    _check_same_shape(F_pred, F_true, "functional_loss")
    return (F_pred - F_true).square().mean()


def kinetic_error(n_hat: torch.Tensor, n: torch.Tensor, kinetic, floor: float = 1e-30) -> torch.Tensor:
    """``mean_b dx^d sum_x dpsi (T dpsi)`` with ``dpsi = sqrt(n_hat) - sqrt(n)``, in E0; a scalar >= 0.

    Args:
        n_hat, n: densities ``(B, *grid)`` (normalised, ``dx^d sum n = 1``).
        kinetic: the grid's kinetic operator ``T`` (:class:`~vaedft.physics.hamiltonian.KineticOperator`,
            positive semi-definite) on the densities' device and dtype.
        floor: smallest density under the square roots (the slope of ``sqrt`` at 0 is infinite).
    """
    _check_same_shape(n_hat, n, "kinetic_error")
    d = n_hat.clamp_min(floor).sqrt() - n.clamp_min(floor).sqrt()
    return kinetic.expectation(d).mean()
