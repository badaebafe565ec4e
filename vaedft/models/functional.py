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
"""

from __future__ import annotations

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
