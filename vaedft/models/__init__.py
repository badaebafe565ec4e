"""Neural networks of vaedft: the beta-VAE and the DL functional, 1D and 3D (paper Sec. II A).

Typical use::

    from vaedft.models import VAE, Functional, vae_preset, functional_from_testbed
    vae = VAE(vae_preset("speckle1d", latent_dim=16))
    functional = Functional(functional_from_testbed(read_attrs("train.h5")))
"""

from .config import (
    DECODERS,
    DEFAULT_LATENT_DIM,
    FUNCTIONAL_ARCHITECTURES,
    INPUT_SCALES,
    PADDINGS,
    PAPER_LATENT_DIMS,
    VAE_ARCHITECTURES,
    FunctionalConfig,
    VAEConfig,
    config_from_dict,
    from_testbed,
    functional_from_testbed,
    functional_preset,
    preset_names,
    vae_preset,
)
from .functional import Functional
from .layers import (
    DownBlock,
    FourierResample,
    ResizeUpBlock,
    UpBlock,
    check_densities,
    count_parameters,
    fourier_resample,
    linear_upsample,
    zero_insert_upsample,
)
from .losses import functional_loss, kinetic_error, kl_divergence, reconstruction_loss, vae_loss
from .vae import VAE, Decoder, Encoder, wall_envelope

__all__ = [
    "DECODERS",
    "DEFAULT_LATENT_DIM",
    "FUNCTIONAL_ARCHITECTURES",
    "INPUT_SCALES",
    "PADDINGS",
    "PAPER_LATENT_DIMS",
    "VAE_ARCHITECTURES",
    "FunctionalConfig",
    "VAEConfig",
    "config_from_dict",
    "from_testbed",
    "functional_from_testbed",
    "functional_preset",
    "preset_names",
    "vae_preset",
    "Functional",
    "VAE",
    "Encoder",
    "Decoder",
    "DownBlock",
    "UpBlock",
    "ResizeUpBlock",
    "FourierResample",
    "check_densities",
    "count_parameters",
    "fourier_resample",
    "linear_upsample",
    "wall_envelope",
    "zero_insert_upsample",
    "functional_loss",
    "kinetic_error",
    "kl_divergence",
    "reconstruction_loss",
    "vae_loss",
]
