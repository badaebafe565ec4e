"""Models and losses: shapes, constraints, periodicity, exact resampling, parameter counts, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vaedft.data.store import file_attrs
from vaedft.models import (
    VAE,
    DownBlock,
    Functional,
    FunctionalConfig,
    UpBlock,
    VAEConfig,
    check_densities,
    config_from_dict,
    count_parameters,
    fourier_resample,
    from_testbed,
    functional_from_testbed,
    functional_loss,
    functional_preset,
    kl_divergence,
    preset_names,
    reconstruction_loss,
    vae_loss,
    vae_preset,
    zero_insert_upsample,
)
from vaedft.physics import get_testbed

PRESETS = ("gaussian1d", "speckle1d", "gaussian3d")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
NORM_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def densities(config, batch: int = 3, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """Positive, normalised random densities on the config's grid."""
    g = torch.Generator().manual_seed(seed)
    n = torch.rand((batch, *config.grid_shape), generator=g, dtype=torch.float64) + 0.1
    n = n / (config.cell_volume * n.flatten(1).sum(1)).view(-1, *(1,) * config.ndim)
    return n.to(dtype)


def integrate(n: torch.Tensor, config) -> torch.Tensor:
    return config.cell_volume * n.detach().to(torch.float64).flatten(1).sum(1)


# ----------------------------------------------------------------------------- closed-form counts


def conv_params(c_in, c_out, k, d):
    return c_in * c_out * k**d + c_out


def linear_params(n_in, n_out):
    return n_in * n_out + n_out


def expected_vae_params(ndim, channels, kernel, dense, latent, bottleneck_n):
    flat = channels[-1] * bottleneck_n**ndim
    chans = [1, *channels]
    encoder = sum(conv_params(chans[i], chans[i + 1], kernel, ndim) + 2 * chans[i + 1] for i in range(len(channels)))
    sizes = [flat, *dense, latent]
    head = sum(linear_params(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    dec_chans = [*reversed(channels), 1]
    decoder = linear_params(latent, flat)
    for i in range(len(channels)):
        decoder += conv_params(dec_chans[i], dec_chans[i + 1], kernel, ndim)
        if i < len(channels) - 1:
            decoder += 2 * dec_chans[i + 1]
    return encoder + 2 * head + decoder


def expected_functional_params(ndim, channels, kernel, bottleneck_n):
    chans = [1, *channels]
    convs = sum(conv_params(chans[i], chans[i + 1], kernel, ndim) for i in range(len(channels)))
    return convs + linear_params(channels[-1] * bottleneck_n**ndim, 1)


# Paper sizes written out by hand (Tables I and II; 3D bottleneck 24 / 2^3 = 3 and 16 / 2^4 = 1).
PAPER_VAE = {
    ("gaussian1d", 4): (1, (60,) * 5, 13, 4, 8),
    ("gaussian1d", 8): (1, (60,) * 5, 13, 8, 8),
    ("speckle1d", 16): (1, (60,) * 5, 13, 16, 8),
    ("gaussian3d", 32): (3, (60, 120, 180), 3, 32, 3),
}
PAPER_FUNCTIONAL = {
    "gaussian1d": (1, (60,) * 5, 13, 8),
    "speckle1d": (1, (60,) * 5, 13, 8),
    "gaussian3d": (3, (60,) * 4, 3, 1),
}
# the numbers documented in vaedft/models/vae.py and functional.py
DOCUMENTED_VAE = {
    ("gaussian1d", 4): 486_689,
    ("gaussian1d", 8): 489_017,
    ("speckle1d", 16): 493_673,
    ("gaussian3d", 32): 2_706_005,
}
DOCUMENTED_FUNCTIONAL = {"gaussian1d": 188_761, "speckle1d": 188_761, "gaussian3d": 293_521}


@pytest.mark.parametrize("key", list(PAPER_VAE))
def test_vae_parameter_count_matches_closed_form(key):
    ndim, channels, kernel, latent, m = PAPER_VAE[key]
    want = expected_vae_params(ndim, channels, kernel, (100, 50), latent, m)
    model = VAE(vae_preset(key[0], latent_dim=key[1]))
    assert count_parameters(model) == want == DOCUMENTED_VAE[key]


@pytest.mark.parametrize("name", PRESETS)
def test_functional_parameter_count_matches_closed_form(name):
    ndim, channels, kernel, m = PAPER_FUNCTIONAL[name]
    want = expected_functional_params(ndim, channels, kernel, m)
    assert count_parameters(Functional(functional_preset(name))) == want == DOCUMENTED_FUNCTIONAL[name]


def test_orientation_sizes_of_the_issue():
    # "the 1D VAE with 60 channels and l_d = 16 has about 0.5 M parameters, the 1D functional about 0.19 M"
    assert abs(count_parameters(VAE(vae_preset("speckle1d", 16))) - 0.5e6) < 0.02e6
    assert abs(count_parameters(Functional(functional_preset("speckle1d"))) - 0.19e6) < 0.01e6


# ----------------------------------------------------------------------------- presets and configs


def test_presets_follow_the_paper_tables():
    assert preset_names() == PRESETS
    g1, s1, g3 = (vae_preset(n) for n in PRESETS)
    assert (g1.channels, g1.kernel, g1.latent_dim, g1.dense) == ((60,) * 5, 13, 4, (100, 50))
    assert vae_preset("gaussian1d", latent_dim=8).latent_dim == 8
    assert (s1.channels, s1.kernel, s1.latent_dim) == ((60,) * 5, 13, 16)
    assert (g3.channels, g3.kernel, g3.latent_dim) == ((60, 120, 180), 3, 32)
    assert (g1.grid_n, g1.dx, g1.boundary) == (256, 1 / 257, "hard_wall")
    assert (s1.grid_n, s1.dx, s1.boundary) == (256, 14 / 256, "periodic")
    assert (g3.ndim, g3.grid_n, g3.dx, g3.boundary) == (3, 18, 1 / 18, "periodic")
    f3 = functional_preset("gaussian3d")
    assert (f3.channels, f3.kernel) == ((60,) * 4, 3)
    assert functional_preset("speckle1d").channels == (60,) * 5


def test_padding_and_resampling_are_recorded():
    assert vae_preset("gaussian1d").padding == "zeros"
    assert functional_preset("gaussian1d").padding == "zeros"
    assert vae_preset("speckle1d").padding == "circular"
    assert vae_preset("gaussian3d").padding == "circular"
    assert vae_preset("gaussian1d").resample_n == 256
    assert vae_preset("gaussian3d").resample_n == 24
    assert functional_preset("gaussian3d").resample_n == 16
    assert vae_preset("gaussian3d").to_dict()["resample_n"] == 24
    assert vae_preset("gaussian1d").to_dict()["padding"] == "zeros"
    # the modules really use the recorded padding
    model = VAE(vae_preset("gaussian1d", 8))
    modes = {m.padding_mode for m in model.modules() if isinstance(m, torch.nn.Conv1d)}
    assert modes == {"zeros"}
    modes = {
        m.padding_mode for m in Functional(functional_preset("gaussian3d")).modules() if isinstance(m, torch.nn.Conv3d)
    }
    assert modes == {"circular"}


@pytest.mark.parametrize("config", [vae_preset(n) for n in PRESETS] + [functional_preset(n) for n in PRESETS])
def test_config_json_round_trip(config):
    text = json.dumps(config.to_dict())
    back = type(config).from_dict(json.loads(text))
    assert back == config
    assert config_from_dict(json.loads(text)) == config


def test_config_refuses_unknown_keys_and_bad_values():
    d = vae_preset("speckle1d").to_dict()
    with pytest.raises(ValueError, match="unknown"):
        VAEConfig.from_dict({**d, "dropout": 0.1})
    with pytest.raises(ValueError, match="missing"):
        VAEConfig.from_dict({k: v for k, v in d.items() if k != "latent_dim"})
    with pytest.raises(ValueError, match="kind"):
        FunctionalConfig.from_dict(d)
    with pytest.raises(ValueError, match="kind"):
        config_from_dict({**d, "kind": "gan"})
    bad = {
        "kernel": 12,
        "latent_dim": 0,
        "boundary": "open",
        "padding": "reflect",
        "channels": [],
        "dense": [100, -1],
        "dx": float("nan"),
        "ndim": 4,
        "grid_n": 1,
        "latent_dim ": 3,
        "resample_n": 0,
    }
    for key, value in bad.items():
        with pytest.raises(ValueError):
            VAEConfig.from_dict({**d, key: value})
    with pytest.raises(ValueError):
        VAEConfig.from_dict({**d, "latent_dim": True})
    with pytest.raises(ValueError):
        VAEConfig.from_dict({**d, "channels": "60"})
    with pytest.raises(ValueError):
        VAEConfig.from_dict([("ndim", 1)])
    # hard walls cannot be Fourier-resampled
    g1 = vae_preset("gaussian1d").to_dict()
    with pytest.raises(ValueError, match="periodic"):
        VAEConfig.from_dict({**g1, "grid_n": 250, "resample_n": None})
    with pytest.raises(ValueError, match="periodic"):
        VAEConfig.from_dict({**g1, "resample_n": 512})
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig.from_dict({**d, "resample_n": 250})
    with pytest.raises(ValueError, match="wraps"):
        VAEConfig.from_dict({**d, "grid_n": 64, "resample_n": None, "kernel": 13})


def test_replace_resolves_again():
    c = vae_preset("gaussian3d").replace(grid_n=20)
    assert c.resample_n == 24
    c = vae_preset("speckle1d").replace(boundary="hard_wall")
    assert c.padding == "zeros"


def test_from_testbed_reads_dataset_attributes():
    for name in PRESETS:
        attrs = file_attrs(get_testbed(name), n=10, seed=0)
        attrs = json.loads(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}))
        assert from_testbed(attrs, latent_dim=7) == vae_preset(name, latent_dim=7)
        assert functional_from_testbed(attrs) == functional_preset(name)
    small = get_testbed("speckle1d").replace(n_grid=128)
    c = from_testbed(small, 16)
    assert (c.grid_n, c.dx, c.resample_n) == (128, 14 / 128, 128)
    with pytest.raises(ValueError):
        from_testbed(3.0, 4)
    with pytest.raises(ValueError):
        vae_preset("gaussian2d")


# ----------------------------------------------------------------------------- Fourier resampling


@pytest.mark.parametrize("n,m", [(18, 24), (18, 32), (17, 24), (16, 24), (9, 16), (18, 19)])
def test_fourier_resample_up_then_down_is_identity(n, m):
    x = torch.randn(2, 3, n, n, n, dtype=torch.float64)
    back = fourier_resample(fourier_resample(x, m, 3), n, 3)
    assert back.shape == x.shape
    assert torch.max(torch.abs(back - x)) < 1e-12
    y = torch.randn(4, n, dtype=torch.float64)
    assert torch.max(torch.abs(fourier_resample(fourier_resample(y, m, 1), n, 1) - y)) < 1e-12


def test_fourier_resample_interpolates_band_limited_fields_exactly():
    L = 1.0

    def field(npts):
        x = torch.arange(npts, dtype=torch.float64) * L / npts
        return (
            0.3
            + torch.cos(2 * math.pi * 3 * x)
            + 0.5 * torch.sin(2 * math.pi * 7 * x - 0.4)
            + 0.2 * torch.cos(2 * math.pi * 8 * x + 1.0)
        )

    for n, m in [(18, 24), (18, 48), (24, 18), (48, 17), (17, 18)]:
        got = fourier_resample(field(n)[None], m, 1)[0]
        assert torch.max(torch.abs(got - field(m))) < 1e-12, (n, m)
    # 3D separable product
    x18 = torch.arange(18, dtype=torch.float64) / 18
    x24 = torch.arange(24, dtype=torch.float64) / 24

    def f3(x):
        a, b, c = torch.meshgrid(x, x, x, indexing="ij")
        return torch.cos(2 * math.pi * 2 * a) * torch.sin(2 * math.pi * 5 * b + 0.3) + torch.cos(2 * math.pi * 8 * c)

    assert torch.max(torch.abs(fourier_resample(f3(x18)[None], 24, 3)[0] - f3(x24))) < 1e-12
    # the even-N Nyquist mode cos(pi j) is split symmetrically: it becomes cos(2 pi 9 x) on the finer grid
    nyq = torch.cos(math.pi * torch.arange(18, dtype=torch.float64))
    assert torch.max(torch.abs(fourier_resample(nyq[None], 24, 1)[0] - torch.cos(2 * math.pi * 9 * x24))) < 1e-12
    # modes that do not fit are dropped, the mean is kept
    assert torch.max(torch.abs(fourier_resample(nyq[None] + 0.7, 16, 1) - 0.7)) < 1e-12


def test_fourier_resample_float32_grad_and_errors():
    x = torch.rand(2, 18, 18, 18, requires_grad=True)
    y = fourier_resample(x, 24, 3)
    assert y.dtype == torch.float32 and y.shape == (2, 24, 24, 24)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError):
        fourier_resample(torch.zeros(3, dtype=torch.int64), 4, 1)
    with pytest.raises(ValueError):
        fourier_resample(x, 0, 3)
    with pytest.raises(ValueError):
        fourier_resample(x, 8, 5)


# ----------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("ndim,kernel,n", [(1, 13, 8), (1, 1, 5), (1, 5, 3), (3, 3, 3), (2, 5, 4)])
@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_up_block_fast_path_equals_zero_insertion_reference(ndim, kernel, n, mode):
    block = UpBlock(4, 3, kernel, ndim, mode).double().eval()
    x = torch.randn(2, 4, *(n,) * ndim, dtype=torch.float64)
    fast, ref = block(x), block.forward_reference(x)
    assert fast.shape == (2, 3, *(2 * n,) * ndim)
    assert torch.max(torch.abs(fast - ref)) < 1e-13


def test_zero_insertion():
    x = torch.arange(1.0, 5.0).view(1, 1, 2, 2)
    u = zero_insert_upsample(x, 2)
    assert u.shape == (1, 1, 4, 4)
    assert torch.equal(u[..., ::2, ::2], x) and u.sum() == x.sum()


def test_up_block_is_a_stride2_transposed_convolution():
    k, p, n = 13, 6, 8
    block = UpBlock(5, 4, k, 1, "zeros", activation=False, batch_norm=False).double()
    x = torch.randn(3, 5, n, dtype=torch.float64)
    w_t = block.conv.weight.transpose(0, 1).flip(-1)
    ref = F.conv_transpose1d(x, w_t, block.conv.bias, stride=2, padding=p, output_padding=1)
    assert torch.max(torch.abs(block(x) - ref)) < 1e-13
    # circular: the transposed convolution of the periodically continued input, one period of it
    block_c = UpBlock(5, 4, k, 1, "circular", activation=False, batch_norm=False).double()
    block_c.load_state_dict(block.state_dict())
    tiled = F.conv_transpose1d(x.repeat(1, 1, 3), w_t, block.conv.bias, stride=2, padding=p, output_padding=1)
    assert torch.max(torch.abs(block_c(x) - tiled[..., 2 * n : 4 * n])) < 1e-13
    assert sum(p.numel() for p in block.parameters()) == sum(
        q.numel() for q in torch.nn.ConvTranspose1d(5, 4, k).parameters()
    )


@pytest.mark.parametrize("ndim,kernel,n", [(1, 13, 32), (3, 3, 6)])
def test_circular_blocks_are_translation_equivariant(ndim, kernel, n):
    axes = tuple(range(2, 2 + ndim))
    down = DownBlock(2, 3, kernel, ndim, "circular").double().eval()
    up = UpBlock(2, 3, kernel, ndim, "circular").double().eval()
    x = torch.randn(2, 2, *(n,) * ndim, dtype=torch.float64)
    for ax in axes:
        assert torch.allclose(down(torch.roll(x, 2, ax)), torch.roll(down(x), 1, ax), atol=1e-13)
        assert torch.allclose(up(torch.roll(x, 1, ax)), torch.roll(up(x), 2, ax), atol=1e-13)
    # zero padding (hard walls) is not periodic: the edges see zeros, not the other side of the box
    down_z = DownBlock(2, 3, kernel, ndim, "zeros").double().eval()
    up_z = UpBlock(2, 3, kernel, ndim, "zeros").double().eval()
    down_z.load_state_dict(down.state_dict())
    up_z.load_state_dict(up.state_dict())
    assert not torch.allclose(down_z(torch.roll(x, 2, 2)), torch.roll(down_z(x), 1, 2), atol=1e-6)
    assert not torch.allclose(up_z(torch.roll(x, 1, 2)), torch.roll(up_z(x), 2, 2), atol=1e-6)
    p = kernel // 2
    pad = (p, p) * ndim
    conv = F.conv1d if ndim == 1 else F.conv3d
    assert torch.allclose(down_z.conv(x), conv(F.pad(x, pad), down_z.conv.weight, down_z.conv.bias), atol=1e-13)
    assert torch.allclose(
        down.conv(x), conv(F.pad(x, pad, mode="circular"), down.conv.weight, down.conv.bias), atol=1e-13
    )


def test_periodic_models_are_translation_equivariant():
    # speckle1d: a shift by 2^5 = 32 points shifts the last 8-point feature map by one
    s1 = vae_preset("speckle1d")
    vae, fun = VAE(s1).double().eval(), Functional(functional_preset("speckle1d")).double().eval()
    n = densities(s1, 2)
    for feats in (vae.encoder.features, fun.features):
        assert torch.allclose(feats(torch.roll(n, 32, 1)), torch.roll(feats(n), 1, 2), atol=1e-12)
    h = torch.randn(2, 60, 8, dtype=torch.float64)
    logits = vae.decoder.blocks(h).squeeze(1)
    assert torch.allclose(vae.decoder.blocks(torch.roll(h, 1, 2)).squeeze(1), torch.roll(logits, 32, 1), atol=1e-12)
    # gaussian3d: 18 -> 24 resampling maps a shift by 6 points to 8, i.e. one cell of the 3^3 map
    g3 = vae_preset("gaussian3d")
    vae3 = VAE(g3).double().eval()
    n3 = densities(g3, 2)
    f = vae3.encoder.features(n3)
    for ax in (1, 2, 3):
        assert torch.allclose(vae3.encoder.features(torch.roll(n3, 6, ax)), torch.roll(f, 1, ax + 1), atol=1e-12)
    h3 = torch.randn(2, 180, 3, 3, 3, dtype=torch.float64)

    def dec(h):
        return vae3.decoder.resample(vae3.decoder.blocks(h).squeeze(1))

    for ax in (2, 3, 4):  # (B, C, x, y, z) -> (B, x, y, z)
        assert torch.allclose(dec(torch.roll(h3, 1, ax)), torch.roll(dec(h3), 6, ax - 1), atol=1e-12)


# ----------------------------------------------------------------------------- decoder constraints


@pytest.mark.parametrize("decoder", ["paper", "smooth"])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("name", PRESETS)
def test_decoder_output_shape_positivity_normalisation(name, dtype, decoder):
    config = vae_preset(name, decoder=decoder)
    model = VAE(config).to(dtype)
    for mode in (model.train, model.eval):
        mode()
        z = 3.0 * torch.randn(4, config.latent_dim, dtype=dtype)
        out = model.decode(z)
        assert out.shape == (4, *config.grid_shape) and out.dtype == dtype
        assert torch.all(out > 0)
        assert torch.max(torch.abs(integrate(out, config) - 1.0)) < NORM_TOL[dtype]
        check_densities(out, config)  # decoder output is a valid model input


@pytest.mark.parametrize("name", PRESETS)
def test_forward_shapes(name):
    config = vae_preset(name)
    model = VAE(config).double()
    n = densities(config, 2)
    n_hat, mu, logvar = model(n)
    assert n_hat.shape == n.shape
    assert mu.shape == logvar.shape == (2, config.latent_dim)
    fun = Functional(functional_preset(name)).double()
    assert fun(n).shape == (2,)
    fun32 = Functional(functional_preset(name))
    assert fun32(n.float()).dtype == torch.float32


def _assert_all_grads(model):
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert torch.any(p.grad != 0), name


@pytest.mark.parametrize("name", PRESETS)
def test_gradients_reach_every_parameter(name):
    config = vae_preset(name)
    model = VAE(config).train()
    n = densities(config, 3, torch.float32)
    n_hat, mu, logvar = model(n, generator=torch.Generator().manual_seed(0))
    total, _, _ = vae_loss(n_hat, n, mu, logvar, beta=1e-2)
    total.backward()
    _assert_all_grads(model)
    fun = Functional(functional_preset(name))
    functional_loss(fun(n), torch.randn(3)).backward()
    _assert_all_grads(fun)


def test_functional_target_scaling():
    fun = Functional(functional_preset("speckle1d")).double()
    n = densities(fun.config, 2)
    raw = fun(n)
    fun.set_target_scaling(5.0, 2.0)
    assert torch.allclose(fun(n), 5.0 + 2.0 * raw)
    assert set(fun.state_dict()) >= {"target_mean", "target_scale"}
    with pytest.raises(ValueError):
        fun.set_target_scaling(0.0, 0.0)


# ----------------------------------------------------------------------------- reparameterisation


def test_reparameterisation_train_samples_eval_mean():
    config = vae_preset("speckle1d")
    model = VAE(config).double()
    n = densities(config, 2)
    model.train()
    mu, logvar = torch.zeros(5, 16, dtype=torch.float64), torch.full((5, 16), -1.0, dtype=torch.float64)
    z1 = model.reparameterize(mu, logvar, torch.Generator().manual_seed(1))
    z1b = model.reparameterize(mu, logvar, torch.Generator().manual_seed(1))
    z2 = model.reparameterize(mu, logvar, torch.Generator().manual_seed(2))
    assert torch.equal(z1, z1b) and not torch.allclose(z1, z2)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(z1, mu + math.exp(-0.5) * eps)
    a = model(n, generator=torch.Generator().manual_seed(3))[0]
    b = model(n, generator=torch.Generator().manual_seed(3))[0]
    c = model(n, generator=torch.Generator().manual_seed(4))[0]
    assert torch.equal(a, b) and not torch.allclose(a, c)
    model.eval()
    assert torch.equal(model.reparameterize(mu, logvar, torch.Generator().manual_seed(1)), mu)
    n_hat, mu_e, _ = model(n)
    assert torch.equal(model(n)[0], n_hat)
    assert torch.allclose(model.decode(mu_e), n_hat, atol=1e-15)


# ----------------------------------------------------------------------------- losses


def test_vae_loss_terms():
    mu = torch.zeros(4, 8, dtype=torch.float64)
    logvar = torch.zeros(4, 8, dtype=torch.float64)
    n = torch.rand(4, 32, dtype=torch.float64)
    total, rec, kl = vae_loss(n, n, mu, logvar, beta=0.5)
    assert total == 0 and rec == 0 and kl == 0
    # closed forms: rec = mean_b sum_x d^2; KL per dim = (mu^2 + s^2 - 1 - log s^2) / 2
    n_hat = n + 0.1
    mu = torch.full((4, 8), 0.3, dtype=torch.float64)
    logvar = torch.full((4, 8), math.log(2.0), dtype=torch.float64)
    total, rec, kl = vae_loss(n_hat, n, mu, logvar, beta=0.5)
    assert math.isclose(rec.item(), 32 * 0.01, rel_tol=1e-12)
    assert math.isclose(kl.item(), 8 * 0.5 * (0.09 + 2.0 - 1.0 - math.log(2.0)), rel_tol=1e-12)
    assert math.isclose(total.item(), rec.item() + 0.5 * kl.item(), rel_tol=1e-12)
    t3, r3, k3 = vae_loss(n_hat, n, mu, logvar, beta=3.0)
    assert r3 == rec and k3 == kl and math.isclose(t3.item(), rec.item() + 3.0 * kl.item(), rel_tol=1e-12)
    assert vae_loss(n_hat, n, mu, logvar, beta=0.0)[0] == rec
    # batch average: a batch duplicated gives the same loss
    n_hat2, n2, mu2, lv2 = (torch.cat([t, t]) for t in (n_hat + torch.randn_like(n), n, mu * torch.rand(4, 8), logvar))
    one = vae_loss(n_hat2[:4], n2[:4], mu2[:4], lv2[:4], 0.7)
    two = vae_loss(n_hat2, n2, mu2, lv2, 0.7)
    for a, b in zip(one, two, strict=True):
        assert torch.allclose(a, b, rtol=1e-14)
    assert torch.allclose(reconstruction_loss(n_hat2, n2), one[1]) and torch.allclose(kl_divergence(mu2, lv2), one[2])
    for bad_beta in (-1.0, float("nan"), True):
        with pytest.raises(ValueError):
            vae_loss(n_hat, n, mu, logvar, beta=bad_beta)
    with pytest.raises(ValueError, match="shapes"):
        vae_loss(n_hat[:, :16], n, mu, logvar, beta=1.0)


def test_functional_loss():
    f = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert functional_loss(f, f) == 0
    assert math.isclose(functional_loss(f + torch.tensor([1.0, -2.0, 0.0]), f).item(), 5.0 / 3.0)
    assert functional_loss(torch.cat([f + 1, f + 1]), torch.cat([f, f])) == functional_loss(f + 1, f)
    with pytest.raises(ValueError, match="shapes"):
        functional_loss(f[:, None], f)  # (B, 1) vs (B,) would broadcast silently


# ----------------------------------------------------------------------------- input validation


@pytest.mark.parametrize("name", PRESETS)
def test_bad_densities_are_refused(name):
    config = vae_preset(name)
    vae, fun = VAE(config).double(), Functional(functional_preset(name)).double()
    good = densities(config, 3)
    nan, inf, neg = good.clone(), good.clone(), good.clone()
    nan.view(3, -1)[1, 5] = float("nan")
    inf.view(3, -1)[2, 0] = float("inf")
    neg.view(3, -1)[0, 7] = -1e-3
    neg.view(3, -1)[0, 8] += 1e-3  # keep the norm
    cases = {
        "shape": good[..., :-1],
        "batch axis": good[0],
        "NaN": nan,
        "NaN or inf": inf,
        ">= 0": neg,
        "normalised": good * (1 + 1e-5),
    }
    for match, bad in cases.items():
        for call in (vae, vae.encode, fun):
            with pytest.raises(ValueError, match=match if match != "batch axis" else "shape"):
                call(bad)
    check_densities(good * (1 + 5e-7), config)  # within 1e-6
    # validate=False skips the value checks (for internal use), never the shape check
    vae(good * 2, validate=False)
    fun(good * 2, validate=False)
    with pytest.raises(ValueError, match="shape"):
        fun(good[..., :-1], validate=False)
    with pytest.raises(ValueError, match="dtype"):
        vae(good.float())
    with pytest.raises(ValueError, match="latent"):
        vae.decode(torch.zeros(2, config.latent_dim + 1, dtype=torch.float64))
    with pytest.raises(ValueError):
        check_densities(good.numpy(), config)


def test_float32_datasets_pass_validation():
    # a float32 density normalised in float64 and then rounded still integrates to 1 within 1e-6
    config = vae_preset("gaussian3d")
    n = densities(config, 4, torch.float32)
    check_densities(n, config)
    VAE(config)(n)


# ----------------------------------------------------------------------------- input scale


def test_input_scale_default_and_volume():
    for name in PRESETS:
        for config in (vae_preset(name), functional_preset(name)):
            assert config.input_scale == 1.0
            assert "input_scale" not in config.to_dict()  # paper configs keep their stored JSON
            assert type(config).from_dict(config.to_dict()).input_scale == 1.0
    # L = (n + 1) dx between hard walls, n dx on a periodic grid (as physics.grid.Grid)
    for name in PRESETS:
        tb = get_testbed(name)
        c = vae_preset(name)
        assert math.isclose(c.box_length, tb.box_length, rel_tol=1e-14)
        assert math.isclose(c.box_volume, tb.box_length**tb.ndim, rel_tol=1e-13)
    assert vae_preset("speckle1d", input_scale="volume").input_scale == pytest.approx(14.0, rel=1e-14)
    assert functional_preset("speckle1d", input_scale="volume").input_scale == pytest.approx(14.0, rel=1e-14)
    assert vae_preset("gaussian1d", input_scale="volume").input_scale == pytest.approx(1.0, rel=1e-14)
    wide = get_testbed("gaussian3d").replace(box_length=2.0)
    assert from_testbed(wide, 32, input_scale="volume").input_scale == pytest.approx(8.0, rel=1e-13)
    assert functional_from_testbed(wide, input_scale="volume").input_scale == pytest.approx(8.0, rel=1e-13)
    assert functional_from_testbed("speckle1d", input_scale=2.5).input_scale == 2.5
    attrs = json.loads(
        json.dumps(
            {
                k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in file_attrs(get_testbed("speckle1d"), n=10, seed=0).items()
            }
        )
    )
    assert from_testbed(attrs, 16, input_scale="volume") == vae_preset("speckle1d", 16, input_scale="volume")


@pytest.mark.parametrize(
    "config",
    [vae_preset("speckle1d", input_scale="volume"), functional_preset("gaussian3d", input_scale=3.0)]
    + [vae_preset("gaussian1d", decoder="smooth", input_scale=0.5)],
)
def test_input_scale_json_round_trip(config):
    d = json.loads(json.dumps(config.to_dict()))
    assert d["input_scale"] == config.input_scale
    assert type(config).from_dict(d) == config and config_from_dict(d) == config
    # replace keeps the number (not re-resolved); "volume" again resolves on the new grid
    assert config.replace(grid_n=128).input_scale == config.input_scale
    assert config.replace(grid_n=128, input_scale="volume").input_scale == pytest.approx(
        config.replace(grid_n=128).box_volume
    )


def test_input_scale_bad_values_are_refused():
    for config in (vae_preset("speckle1d"), functional_preset("speckle1d")):
        d = config.to_dict()
        for bad in (0, -1.0, float("nan"), float("inf"), True, "area", "Volume", None, [1.0]):
            with pytest.raises(ValueError, match="input_scale"):
                type(config).from_dict({**d, "input_scale": bad})
    with pytest.raises(ValueError, match="input_scale"):
        vae_preset("gaussian1d", input_scale="L")
    with pytest.raises(ValueError, match="input_scale"):
        functional_from_testbed("speckle1d", input_scale=-2.0)


@pytest.mark.parametrize("name", PRESETS)
def test_input_scale_multiplies_the_density_before_the_first_conv(name):
    s = 7.25
    fun1 = Functional(functional_preset(name)).double()
    fun_s = Functional(functional_preset(name, input_scale=s)).double()
    fun_s.load_state_dict(fun1.state_dict())  # same weights, no new parameters or buffers
    fun1.set_target_scaling(2.0, 3.0)
    fun_s.set_target_scaling(2.0, 3.0)
    n = densities(fun1.config, 2).requires_grad_(True)
    f_s = fun_s(n)
    n_scaled = (n.detach() * s).requires_grad_(True)
    f_1 = fun1(n_scaled, validate=False)
    assert torch.equal(f_s, f_1)
    # dF/dn of the unscaled density: the chain rule through the internal scaling
    (g_s,) = torch.autograd.grad(f_s.sum(), n)
    (g_1,) = torch.autograd.grad(f_1.sum(), n_scaled)
    assert torch.allclose(g_s, s * g_1, rtol=1e-12, atol=0)
    # the VAE encoder, same contract (eval mode: batch norm running statistics)
    vae1 = VAE(vae_preset(name)).double().eval()
    vae_s = VAE(vae_preset(name, input_scale=s)).double().eval()
    vae_s.load_state_dict(vae1.state_dict())
    mu_s, lv_s = vae_s.encode(n.detach())
    mu_1, lv_1 = vae1.encode(n.detach() * s, validate=False)
    assert torch.equal(mu_s, mu_1) and torch.equal(lv_s, lv_1)
    # the decoder is untouched by the input scale
    z = torch.randn(2, vae1.config.latent_dim, dtype=torch.float64)
    assert torch.equal(vae_s.decode(z), vae1.decode(z))
    # a different scale changes the output (the factor really enters)
    assert not torch.allclose(fun1(n.detach()), f_s)


def test_input_scale_one_is_the_paper_network():
    # 1.0 given explicitly is the default, bit for bit
    fun = Functional(functional_preset("speckle1d")).double()
    fun1 = Functional(functional_preset("speckle1d", input_scale=1.0)).double()
    fun1.load_state_dict(fun.state_dict())
    n = densities(fun.config, 2)
    assert torch.equal(fun(n), fun1(n))
    assert functional_preset("speckle1d", input_scale=1) == functional_preset("speckle1d")
