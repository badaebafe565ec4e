"""The beta-VAE of the paper (Sec. II A 1, Table I), in 1D and 3D.

Encoder: ``len(channels)`` blocks conv (same size, config padding) -> Softplus ->
AvgPool(2) -> BatchNorm, then two dense heads (``Linear -> Softplus -> Linear(100, 50) ->
Softplus -> Linear(50, l_d)``) giving the mean ``mu`` and the log-variance ``logvar`` of
q(z|n).

Decoder, symmetric: ``Linear(l_d, channels[-1] * m**ndim)`` (no activation) reshaped to the
first feature map, then one up-block per encoder block, channels mirrored
(``channels[-1] -> ... -> channels[0] -> 1``); each up-block is a stride-2 transposed
convolution (zero insertion + same-size conv with the config padding, see
:mod:`vaedft.models.layers`) -> Softplus -> BatchNorm, the last one with identity activation,
no batch norm and one output channel.  Its output goes through a sigmoid and is normalised
so that ``dx**ndim * sum(n) = 1`` exactly (to float rounding).

Shapes (no cropping anywhere):

* 1D presets: 256 -> 128 -> 64 -> 32 -> 16 -> 8 in the encoder, 8 -> ... -> 256 in the decoder.
* 3D preset: 18^3 cannot be halved three times.  The periodic density is first
  Fourier-resampled to 24^3 (band-limited zero padding of the spectrum, exact for periodic
  fields, even-N Nyquist mode split symmetrically; :func:`~vaedft.models.layers.fourier_resample`),
  then pooled 24 -> 12 -> 6 -> 3.  The decoder goes 3 -> 6 -> 12 -> 24 and resamples its
  24^3 output (the logits, before the sigmoid) spectrally back to 18^3.  24 is the smallest
  multiple of 2^3 not below 18, so every Fourier mode of the 18^3 grid is representable
  and the up/down resampling pair is the identity; the sigmoid comes after the resampling, so
  positivity and normalisation hold exactly on the 18^3 grid.

Parameter counts (:func:`~vaedft.models.layers.count_parameters`; BatchNorm running
statistics are buffers, not counted):

==================  ====  ===========
preset              l_d   parameters
==================  ====  ===========
gaussian1d          4     486,689
gaussian1d          8     489,017
speckle1d           16    493,673
gaussian3d          32    2,706,005
==================  ====  ===========

In closed form, with conv ``c_in c_out k^d + c_out``, batch norm ``2 c``, linear
``n_in n_out + n_out``: encoder convs + BN, two heads ``F -> 100 -> 50 -> l_d`` with
``F = channels[-1] * (resample_n / 2**blocks)**d``, decoder ``Linear(l_d, F)``, mirrored
convs, BN on all up-blocks but the last (checked in ``tests/test_models.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import VAEConfig
from .layers import (
    DownBlock,
    FourierResample,
    UpBlock,
    check_densities,
    check_input_dtype,
    dense_stack,
)

__all__ = ["Encoder", "Decoder", "VAE"]


class Encoder(nn.Module):
    """Densities ``(B, *grid)`` -> ``(mu, logvar)``, each ``(B, latent_dim)``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.resample = FourierResample(c.resample_n, c.ndim) if c.resample_n != c.grid_n else nn.Identity()
        chans = (1, *c.channels)
        self.blocks = nn.Sequential(
            *(DownBlock(chans[i], chans[i + 1], c.kernel, c.ndim, c.padding) for i in range(c.n_blocks))
        )
        self.mu_head = dense_stack(c.flat_features, c.dense, c.latent_dim)
        self.logvar_head = dense_stack(c.flat_features, c.dense, c.latent_dim)

    def features(self, n: torch.Tensor) -> torch.Tensor:
        """Last feature map ``(B, channels[-1], m, ...)`` with ``m = resample_n / 2**blocks``."""
        return self.blocks(self.resample(n).unsqueeze(1))

    def forward(self, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(n).flatten(1)
        return self.mu_head(h), self.logvar_head(h)


class Decoder(nn.Module):
    """Latent vectors ``(B, latent_dim)`` -> normalised densities ``(B, *grid)``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.linear = nn.Linear(c.latent_dim, c.flat_features)
        chans = (*reversed(c.channels), 1)
        blocks = []
        for i in range(c.n_blocks):
            last = i == c.n_blocks - 1
            blocks.append(
                UpBlock(chans[i], chans[i + 1], c.kernel, c.ndim, c.padding, activation=not last, batch_norm=not last)
            )
        self.blocks = nn.Sequential(*blocks)
        self.resample = FourierResample(c.grid_n, c.ndim) if c.resample_n != c.grid_n else nn.Identity()

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output before the sigmoid, on the density grid ``(B, *grid)``."""
        c = self.config
        h = self.linear(z).view(z.shape[0], c.channels[-1], *(c.bottleneck_n,) * c.ndim)
        return self.resample(self.blocks(h).squeeze(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = torch.sigmoid(self.logits(z))
        dims = tuple(range(1, n.dim()))
        return n / (self.config.cell_volume * n.sum(dim=dims, keepdim=True))


class VAE(nn.Module):
    """beta-VAE for densities on one grid (see the module docstring for the architecture).

    Args:
        config: a :class:`~vaedft.models.config.VAEConfig` (e.g. ``vae_preset("speckle1d")``).

    Densities are batch-first ``(B, *grid)``; the channel axis is added inside.  Works in
    float32 and, after ``model.to(torch.float64)``, in float64.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise ValueError(f"VAE needs a VAEConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def _check(self, n: torch.Tensor, validate: bool) -> None:
        check_densities(n, self.config, values=validate)
        check_input_dtype(n, self)

    def encode(self, n: torch.Tensor, *, validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of q(z|n), each ``(B, latent_dim)``.

        ``validate=False`` skips the value checks of :func:`check_densities` (the shape is
        always checked), e.g. in a training loop over a dataset validated once.
        """
        self._check(n, validate)
        return self.encoder(n)

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, 1)`` in training mode; ``z = mu`` in eval mode.

        ``generator`` (on the tensors' device) makes the draw reproducible.
        """
        if not self.training:
            return mu
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Densities ``(B, *grid)``, positive with ``dx**ndim * sum(n) = 1``, from ``z`` ``(B, latent_dim)``."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"latent vectors must have shape (B, {self.config.latent_dim}), got {got}")
        check_input_dtype(z, self)
        return self.decoder(z)

    def forward(
        self, n: torch.Tensor, *, generator: torch.Generator | None = None, validate: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(n_hat, mu, logvar)``: reconstruction ``(B, *grid)`` and the posterior parameters."""
        mu, logvar = self.encode(n, validate=validate)
        z = self.reparameterize(mu, logvar, generator)
        return self.decoder(z), mu, logvar
