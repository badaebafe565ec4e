"""The convolutional DL functional of the paper (Sec. II A 2, Table II), in 1D and 3D.

``len(channels)`` blocks conv (same size, config padding) -> Softplus -> AvgPool(2) (no batch
norm, as in the paper), then a linear projector from the flattened last feature map to the
universal functional ``F[n] = e - int V n`` (dataset field ``F``), returned as ``(B,)``.

Shapes: 1D presets 256 -> 8 (five pools).  3D preset: four pools do not divide 18.  The
choice made here is to Fourier-resample the periodic 18^3 density to 16^3
(:func:`~vaedft.models.layers.fourier_resample`), then pool 16 -> 8 -> 4 -> 2 -> 1:

* it keeps the network translation-covariant and periodic (a shifted density is the same
  band-limited field, shifted), whereas floor pooling (18 -> 9 -> 4 -> 2 -> 1, probably what
  the paper's code did) silently discards one plane of cells per axis at the 9 -> 4 stage,
  breaking the periodicity and making F blind to whole planes of the grid;
* what 16^3 drops is only the top of the spectrum: per axis the |k| = 9 (Nyquist) mode and
  the sine part of |k| = 8, i.e. wavelengths of about two grid spacings, where the smooth
  ground-state densities of the testbed have almost no weight (and where the noise that
  destabilises density-space gradient descent lives);
* upsampling to 32^3 (lossless) would cost about 8x the multiply-adds of 16^3;
* the parameter count is the same as with floor pooling (last map 60 x 1^3 in both).

Parameter counts (:func:`~vaedft.models.layers.count_parameters`):

==================  ===========
preset              parameters
==================  ===========
gaussian1d          188,761
speckle1d           188,761
gaussian3d          293,521
==================  ===========

Closed form: convs ``c_in c_out k^d + c_out``, head ``F + 1`` with
``F = channels[-1] * (resample_n / 2**blocks)**d`` (checked in ``tests/test_models.py``).

Input scale: the convolutions see ``n * config.input_scale`` (default 1.0, the paper's;
``"volume"`` gives the dimensionless ``n L^d``).  The scaling is internal: ``forward(n)``
is F of the unscaled ``n`` in E0 and ``dF/dn`` (autograd) is the derivative with respect to
the unscaled density, as the minimizer needs.

Two buffers, ``target_mean`` (0) and ``target_scale`` (1), map the head's output to
``F = target_mean + target_scale * head(...)``; a training loop may set them to the
training set's mean and standard deviation of F (:meth:`Functional.set_target_scaling`) so
that the network learns an order-one target.  They are saved in the state dict and are not
parameters.

Head refit (:meth:`Functional.refit_head`, a training-recipe option, off in the paper): the head is
linear in the last feature map, so once the convolutions are trained, the head that fits the
training set best is a ridge regression with a closed form.  Adam leaves the head far from it
after a CPU budget of epochs (reports/performance.md: after 20 epochs the closed-form head has a
8x smaller Snyder-set error and a 6x smaller functional-derivative error than Adam's).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import FunctionalConfig
from .layers import DownBlock, FourierResample, check_densities, check_input_dtype

__all__ = ["Functional"]


class Functional(nn.Module):
    """DL functional ``n (B, *grid) -> F (B,)`` in E0 (see the module docstring).

    Args:
        config: a :class:`~vaedft.models.config.FunctionalConfig` (e.g. ``functional_preset("gaussian1d")``).
    """

    def __init__(self, config: FunctionalConfig) -> None:
        super().__init__()
        if not isinstance(config, FunctionalConfig):
            raise ValueError(f"Functional needs a FunctionalConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.resample = FourierResample(c.resample_n, c.ndim) if c.resample_n != c.grid_n else nn.Identity()
        chans = (1, *c.channels)
        self.blocks = nn.Sequential(
            *(
                DownBlock(chans[i], chans[i + 1], c.kernel, c.ndim, c.padding, batch_norm=False)
                for i in range(c.n_blocks)
            )
        )
        self.head = nn.Linear(c.flat_features, 1)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_scale", torch.ones(()))

    def set_target_scaling(self, mean: float, scale: float) -> None:
        """Set ``F = mean + scale * head(...)`` (e.g. the training set's mean and std of F)."""
        mean, scale = float(mean), float(scale)
        if not (torch.isfinite(torch.tensor([mean, scale])).all() and scale > 0):
            raise ValueError(f"target scaling needs a finite mean and a positive scale, got {mean}, {scale}")
        self.target_mean.fill_(mean)
        self.target_scale.fill_(scale)

    @torch.no_grad()
    def refit_head(self, n: torch.Tensor, target: torch.Tensor, ridge: float, *, batch_size: int = 500) -> dict:
        """Replace the head by the ridge regression of ``target`` on this network's features.

        Solves ``min_w (1/B) sum_b (w . z_b + c - F_b)^2 + ridge |w|^2`` in float64, with ``z`` the
        flattened last feature map standardised over the batch (per feature: mean 0, std 1), by SVD
        (singular values below ``1e-12`` of the largest are dropped).  The features are computed in
        the model's own dtype, as inference will compute them; a feature whose spread is below 1000
        rounding errors of that dtype (``std <= 1e3 eps |mean|``: a dead feature, constant but for
        rounding noise) gets no weight.  The new head is kept only if it fits the training set
        better than the old one, evaluated in the model's dtype; otherwise the old head stays
        (``accepted`` False: e.g. a network that has not learned, whose features are all dead).

        Args:
            n: densities ``(B, *grid)`` (the training set), in the model's dtype and device.
            target: ``F`` in E0, ``(B,)``.
            ridge: the penalty, >= 0 (in units of the standardised features; e.g. 1e-6).
            batch_size: densities per forward pass.

        Returns:
            ``{"ridge", "accepted", "features_used", "train_mse_before", "train_mse"}`` (E0^2, on ``n``;
            ``train_mse`` is that of the head kept).
        """
        ridge = float(ridge)
        if not (math.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge must be a finite number >= 0, got {ridge}")
        if n.shape[0] != target.shape[0] or target.dim() != 1 or n.shape[0] < 2:
            raise ValueError(f"refit_head needs B >= 2 densities and B targets, got {tuple(n.shape)} and "
                             f"{tuple(target.shape)}")
        feats = torch.cat([self.features(n[i : i + batch_size]).flatten(1) for i in range(0, n.shape[0], batch_size)])
        z, y = feats.double(), target.double()
        before = float((self.target_mean + self.target_scale * self.head(feats).squeeze(1) - target)
                       .double().square().mean())
        mu, sd = z.mean(0), z.std(0)
        keep = sd > 1e3 * torch.finfo(feats.dtype).eps * mu.abs()  # also drops exactly constant features
        old_head = [p.detach().clone() for p in (self.head.weight, self.head.bias)]
        z = (z - mu) / torch.where(keep, sd, torch.ones_like(sd))
        y_mean = y.mean()
        w = torch.zeros_like(mu)
        if keep.any():
            u, s, vh = torch.linalg.svd(z[:, keep], full_matrices=False)
            inv = torch.where(s > 1e-12 * s[0], s / (s.square() + ridge * z.shape[0]), torch.zeros_like(s))
            w[keep] = (vh.T @ (inv * (u.T @ (y - y_mean)))) / sd[keep]
        bias = y_mean - (mu * w).sum()
        # F = target_mean + target_scale * (W z + b)  ->  W = w / scale, b = (bias - mean) / scale
        scale, mean = self.target_scale.double(), self.target_mean.double()
        self.head.weight.copy_((w / scale).unsqueeze(0))
        self.head.bias.copy_(((bias - mean) / scale).reshape(1))
        pred = self.target_mean + self.target_scale * self.head(feats).squeeze(1)
        after = float((pred - target).double().square().mean())
        accepted = math.isfinite(after) and after < before
        if not accepted:
            self.head.weight.copy_(old_head[0])
            self.head.bias.copy_(old_head[1])
        return {"ridge": ridge, "accepted": accepted, "features_used": int(keep.sum()),
                "train_mse_before": before, "train_mse": after if accepted else before}

    def features(self, n: torch.Tensor) -> torch.Tensor:
        """Last feature map ``(B, channels[-1], m, ...)``, ``m = resample_n / 2**blocks`` (no input checks).

        The convolutions see ``n * config.input_scale`` (the default 1.0 skips the multiply).
        """
        scale = self.config.input_scale
        if scale != 1.0:
            n = n * scale
        return self.blocks(self.resample(n).unsqueeze(1))

    def forward(self, n: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """``F[n]``, shape ``(B,)``.

        ``validate=False`` skips the value checks of :func:`check_densities` (the shape is
        always checked): for decoder outputs in latent minimization, or unnormalised trial
        densities in density-space gradient descent.
        """
        check_densities(n, self.config, values=validate)
        check_input_dtype(n, self)
        out = self.head(self.features(n).flatten(1)).squeeze(1)
        return self.target_mean + self.target_scale * out
