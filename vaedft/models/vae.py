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

Input scale: the encoder sees ``n * config.input_scale`` (1.0, the paper's, by default; with
``input_scale="volume"`` the dimensionless ``n L^d`` of mean 1).  No parameters.

The smooth decoder (``config.decoder = "smooth"``)
--------------------------------------------------

The paper's decoder makes densities that are rough on the scale the kinetic energy
``T = 1/2 int |grad sqrt(n)|^2`` sees: reconstructions of exact gaussian1d ground states
carry hundreds of kcal/mol of spurious kinetic energy (speckle1d, periodic: a few).  Two
causes, and the two changes of this variant:

1. *Zero-insertion upsampling* puts a mirror image of the feature spectrum at the Nyquist
   end of each finer grid (the ``(-1)**i`` checkerboard) that the learned kernels remove only
   approximately.  Here each up-block is :class:`~vaedft.models.layers.ResizeUpBlock`:
   linear x2 interpolation (periodic for circular padding, edge value repeated for hard
   walls), then a same-size convolution with the config padding, -> Softplus -> BatchNorm
   (the last block: identity, no batch norm, one channel).  The interpolation is zero
   insertion followed by the fixed ``(1, 3, 3, 1) / 4`` kernel, of response
   ``2 cos^3(w/2)``, so the image is damped to third order before any learned weight sees it.
2. *sigmoid -> normalise* cannot follow ``n -> 0`` at a hard wall: the sigmoid of a
   zero-padded field sits near 1/2 at the first grid point, and ``sqrt(n)`` drops from there
   to the wall's 0 in one grid step, a kink that costs ``~ n_1 / dx`` of kinetic energy.
   Here the network outputs a log-density ``h`` and the decoder builds a node-free
   amplitude ``psi = E(x) exp(h / 2)`` and ``n = psi**2 / (dx^d sum psi**2)``, with the fixed
   envelope ``E = prod_axes sin(pi x_a / L)`` on hard-wall grids (the free particle's ground
   state, ``x_i = i dx``, ``L = (grid_n + 1) dx``; 1 on periodic grids).  Near a wall
   ``n ~ x^2``, as for every true ground state there, and ``sqrt(n)`` is as smooth as ``h``.
   ``exp`` keeps ``psi > 0`` without nodes (a single-particle ground state has none) and
   makes ``h`` a log-density, so decays over orders of magnitude cost O(1) changes of ``h``;
   ``h`` is shifted by its (detached) maximum before ``exp``, which leaves ``n`` unchanged
   and cannot overflow.

In 3D the 24^3 field ``h`` is Fourier-resampled to 18^3 before the exponential, as the
paper variant resamples its logits before the sigmoid, so positivity and normalisation hold
exactly on the density grid.  Shapes are those of the paper decoder.  The parameters too:
a ``ResizeUpBlock`` has the same convolution and batch norm as an ``UpBlock`` and the
envelope is a fixed, non-persistent buffer (not in the state dict), so the closed form above
and the table hold for both decoders (gaussian1d l_d = 4: 486,689).  The compute does not:
the convolutions run on the upsampled grid (there are no inserted zeros to skip), about 1.5x
the paper decoder's time in 1D and 4x in 3D (CPU, forward + backward).

Measured (random initialisation, gaussian1d, ``T = 1/2 int |d sqrt(n)/dx|^2``): paper decoder
median 499 E0, smooth decoder 5.0 E0 (the free particle's ``pi^2 / 2 = 4.93``).  After the
same short training of a 16-channel variant on 1000 exact ground states (75 s CPU each, same
test L1 error 0.016), the exact energy of the reconstructions exceeded ``e_gs`` by a median
of 6975 kcal/mol with the paper decoder and 29 kcal/mol with the smooth one.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import VAEConfig
from .layers import (
    DownBlock,
    FourierResample,
    ResizeUpBlock,
    UpBlock,
    check_densities,
    check_input_dtype,
    dense_stack,
)

__all__ = ["Encoder", "Decoder", "VAE", "wall_envelope"]


def wall_envelope(config: VAEConfig) -> torch.Tensor | None:
    """``prod_axes sin(pi x_a / L)`` on a hard-wall grid (float64, ``config.grid_shape``); ``None`` if periodic.

    With ``x_i = i dx`` and ``L = (grid_n + 1) dx`` this is ``sin(pi i / (grid_n + 1))``, ``i = 1..grid_n``
    per axis: the free particle's ground state, positive inside and ``O(dx)`` at the first point.
    """
    if config.boundary != "hard_wall":
        return None
    n = config.grid_n
    s = torch.sin(torch.pi * torch.arange(1, n + 1, dtype=torch.float64) / (n + 1))
    env = torch.ones((1,) * config.ndim, dtype=torch.float64)
    for a in range(config.ndim):
        shape = [1] * config.ndim
        shape[a] = n
        env = env * s.view(shape)
    return env


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
        scale = self.config.input_scale
        if scale != 1.0:  # the default skips the multiply: bit-identical to the paper encoder
            n = n * scale
        return self.blocks(self.resample(n).unsqueeze(1))

    def forward(self, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(n).flatten(1)
        return self.mu_head(h), self.logvar_head(h)


class Decoder(nn.Module):
    """Latent vectors ``(B, latent_dim)`` -> normalised densities ``(B, *grid)``.

    ``config.decoder`` picks the paper's decoder (``"paper"``: transposed convolutions,
    sigmoid) or the smooth one (``"smooth"``: linear upsampling, ``n = (E exp(h/2))**2``);
    see the module docstring.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.linear = nn.Linear(c.latent_dim, c.flat_features)
        chans = (*reversed(c.channels), 1)
        block = ResizeUpBlock if c.decoder == "smooth" else UpBlock
        blocks = []
        for i in range(c.n_blocks):
            last = i == c.n_blocks - 1
            blocks.append(
                block(chans[i], chans[i + 1], c.kernel, c.ndim, c.padding, activation=not last, batch_norm=not last)
            )
        self.blocks = nn.Sequential(*blocks)
        self.resample = FourierResample(c.grid_n, c.ndim) if c.resample_n != c.grid_n else nn.Identity()
        if c.decoder == "smooth":
            # fixed, follows .to(dtype/device), not saved (it is a function of the config)
            self.register_buffer("envelope", wall_envelope(c), persistent=False)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Network output on the density grid ``(B, *grid)``, before the output map.

        ``"paper"``: the logits of the sigmoid.  ``"smooth"``: the log-density ``h``,
        ``n = E**2 exp(h) / norm``.
        """
        c = self.config
        h = self.linear(z).view(z.shape[0], c.channels[-1], *(c.bottleneck_n,) * c.ndim)
        return self.resample(self.blocks(h).squeeze(1))

    def amplitude(self, z: torch.Tensor) -> torch.Tensor:
        """``psi = sqrt(n)``, ``(B, *grid)``, with ``dx^d sum psi**2 = 1``.

        For the smooth decoder this is built directly, ``psi = E exp(h/2) / norm`` (no square root
        of a small density); for the paper decoder it is ``sqrt(forward(z))``.
        """
        if self.config.decoder != "smooth":
            return torch.sqrt(self.forward(z))
        h = self.logits(z)
        dims = tuple(range(1, h.dim()))
        psi = torch.exp(0.5 * (h - h.detach().amax(dim=dims, keepdim=True)))
        if self.envelope is not None:
            psi = psi * self.envelope
        return psi / torch.sqrt(self.config.cell_volume * psi.square().sum(dim=dims, keepdim=True))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.logits(z)
        dims = tuple(range(1, h.dim()))
        if self.config.decoder == "smooth":
            n = torch.exp(h - h.detach().amax(dim=dims, keepdim=True))
            if self.envelope is not None:
                n = n * self.envelope.square()
        else:
            n = torch.sigmoid(h)
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
