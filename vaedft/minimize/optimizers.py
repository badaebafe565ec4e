"""The step rules of the methods, written per row: rows never interact.

An optimizer turns the rows ``x`` ``(A, P)`` and their directions ``G`` (from a problem,
:mod:`vaedft.minimize.problems`) into trial points, with a per-row state (a dict of tensors whose
first axis is the row) that the loop (:mod:`vaedft.minimize.engine`) advances, compacts and
freezes row by row.  ``accepts_rises`` says whether the loop takes every finite trial (and watches
for divergence) or asks the optimizer per row (:meth:`_LBFGS.acceptable`, :meth:`_LBFGS.after`).

Methods (:attr:`~vaedft.minimize.MinimizeConfig.method`):

* ``latent-gd`` (:class:`_GD`) -- plain gradient descent in the VAE's latent space, exactly
  eq. (14), ``z <- z - eta dE/dz``, on the latent energy of eq. (12).
* ``latent-adam`` (:class:`_Adam`) -- Adam in latent space, written out element-wise per row
  (moments and step counter per row), so a frozen row freezes its moments too and rows never
  interact.
* ``latent-lbfgs`` (:class:`_LBFGS`) -- L-BFGS per row: batched two-loop recursion over a per-row
  history of ``lbfgs_memory`` pairs.  Quasi-Newton steps have unit length (the direction carries
  the scale); a row whose memory is empty (first step, after a reset, or while the curvature
  condition ``s.y > 0`` fails, e.g. in concave regions) takes a plain GD step of its own length
  ``alpha`` (initially ``lr``; x1.25 after an accepted GD step, x0.5 after a rejected one).  Every
  trial point is evaluated once (one energy and gradient per step, as for GD); a row accepts its
  trial only if its energy did not rise (beyond a few ulps), otherwise it stays and forgets its
  memory.  No line search across rows: each row decides alone.
* ``density-gd`` and ``pca-gd`` (:class:`_GD`) -- ``x <- x - eta d`` along the projected (or
  preconditioned, or PCA-restricted) direction of :class:`~vaedft.minimize.problems._DensityProblem`.
"""

from __future__ import annotations

import torch

from .config import MinimizeConfig


class _GD:
    """Eq. (14) / (10): ``x <- x - lr * d``."""

    accepts_rises = True

    def __init__(self, cfg: MinimizeConfig) -> None:
        self.lr = cfg.lr

    def init_state(self, x):
        return {}

    def propose(self, x, G, st):
        return x - self.lr * G, st


class _Adam(_GD):
    """Adam, per row: moments and step counters live in the row."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.b1, self.b2 = cfg.adam_betas
        self.eps = cfg.adam_eps

    def init_state(self, x):
        return {"m": torch.zeros_like(x), "v": torch.zeros_like(x), "t": torch.zeros(x.shape[0], dtype=x.dtype,
                                                                                      device=x.device)}

    def propose(self, x, G, st):
        t = st["t"] + 1
        m = self.b1 * st["m"] + (1 - self.b1) * G
        v = self.b2 * st["v"] + (1 - self.b2) * G * G
        m_hat = m / (1 - self.b1 ** t)[:, None]
        v_hat = v / (1 - self.b2 ** t)[:, None]
        return x - self.lr * m_hat / (torch.sqrt(v_hat) + self.eps), {"m": m, "v": v, "t": t}


class _LBFGS:
    """L-BFGS per row with per-row step acceptance (see the module docstring)."""

    accepts_rises = False

    grow, shrink = 1.25, 0.5  # a row's plain-GD step after an accepted / a rejected GD step

    def __init__(self, cfg):
        self.lr = cfg.lr
        self.mem = cfg.lbfgs_memory

    @staticmethod
    def acceptable(E_new, E_old):
        """No rise beyond rounding (a few ulps of the energy)."""
        slack = 8 * torch.finfo(E_old.dtype).eps * E_old.abs().clamp_min(1.0)
        return E_new <= E_old + slack

    def init_state(self, x):
        r, p = x.shape
        z = dict(dtype=x.dtype, device=x.device)
        return {
            "S": torch.zeros(r, self.mem, p, **z),
            "Y": torch.zeros(r, self.mem, p, **z),
            "rho": torch.zeros(r, self.mem, **z),
            "count": torch.zeros(r, dtype=torch.long, device=x.device),
            "alpha": torch.full((r,), self.lr, **z),
            "qn": torch.zeros(r, dtype=torch.bool, device=x.device),
        }

    def _direction(self, G, st):
        S, Y, rho, count = st["S"], st["Y"], st["rho"], st["count"]
        m = self.mem
        q = G.clone()
        alphas = []
        for j in reversed(range(m)):  # newest (m - 1) to oldest
            valid = count > (m - 1 - j)
            a = torch.where(valid, rho[:, j] * (S[:, j] * q).sum(1), 0.0)
            q = q - a[:, None] * Y[:, j]
            alphas.append(a)
        alphas.reverse()
        sy = (S[:, -1] * Y[:, -1]).sum(1)
        yy = (Y[:, -1] * Y[:, -1]).sum(1)
        gamma = torch.where(count > 0, sy / torch.where(yy > 0, yy, 1.0), 1.0)
        r = gamma[:, None] * q
        for j in range(m):  # oldest to newest
            valid = count > (m - 1 - j)
            b = rho[:, j] * (Y[:, j] * r).sum(1)
            r = r + torch.where(valid, alphas[j] - b, 0.0)[:, None] * S[:, j]
        return -r

    def propose(self, x, G, st):
        d = self._direction(G, st)
        qn = (st["count"] > 0) & ((d * G).sum(1) < 0) & torch.isfinite(d).all(1)
        x_new = torch.where(qn[:, None], x + d, x - st["alpha"][:, None] * G)
        return x_new, {**st, "qn": qn}

    def after(self, x, G, x_new, G_new, accepted, st):
        """Memory update for accepted rows; reset and step halving for rejected ones."""
        s, y = x_new - x, G_new - G
        sy = (s * y).sum(1)
        good = accepted & torch.isfinite(sy) & (sy > 1e-12 * torch.linalg.vector_norm(s, dim=1)
                                                * torch.linalg.vector_norm(y, dim=1))
        push = good[:, None, None]
        S = torch.where(push, torch.cat([st["S"][:, 1:], s[:, None]], 1), st["S"])
        Y = torch.where(push, torch.cat([st["Y"][:, 1:], y[:, None]], 1), st["Y"])
        rho = torch.where(good[:, None], torch.cat([st["rho"][:, 1:], (1.0 / torch.where(good, sy, 1.0))[:, None]], 1),
                          st["rho"])
        count = torch.where(good, (st["count"] + 1).clamp_max(self.mem), st["count"])
        count = torch.where(accepted, count, torch.zeros_like(count))  # a rejected row forgets its memory
        gd = ~st["qn"]
        alpha = torch.where(gd & accepted, self.grow * st["alpha"], st["alpha"])
        alpha = torch.where(gd & ~accepted, self.shrink * alpha, alpha)
        return {"S": S, "Y": Y, "rho": rho, "count": count, "alpha": alpha, "qn": st["qn"]}


_OPTIMIZERS = {"latent-gd": _GD, "latent-adam": _Adam, "latent-lbfgs": _LBFGS, "density-gd": _GD, "pca-gd": _GD}
