"""The smooth decoder of the VAE (``VAEConfig.decoder = "smooth"``): constraints, walls, smoothness.

The paper's decoder is the negative control of the smoothness tests: the same measurement
must separate the two, so the properties checked here are not true of any decoder.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vaedft.models import (
    DECODERS,
    VAE,
    ResizeUpBlock,
    UpBlock,
    VAEConfig,
    config_from_dict,
    count_parameters,
    linear_upsample,
    vae_loss,
    vae_preset,
    wall_envelope,
)

PRESETS = ("gaussian1d", "speckle1d", "gaussian3d")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
NORM_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
# documented in vaedft/models/vae.py; the smooth decoder has the paper's parameters
DOCUMENTED_VAE = {
    ("gaussian1d", 4): 486_689,
    ("gaussian1d", 8): 489_017,
    ("speckle1d", 16): 493_673,
    ("gaussian3d", 32): 2_706_005,
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def smooth(name: str, latent_dim: int | None = None) -> VAEConfig:
    return vae_preset(name, latent_dim, decoder="smooth")


def densities(config, batch: int = 3, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = torch.rand((batch, *config.grid_shape), generator=g, dtype=torch.float64) + 0.1
    n = n / (config.cell_volume * n.flatten(1).sum(1)).view(-1, *(1,) * config.ndim)
    return n.to(dtype)


def integrate(n: torch.Tensor, config) -> torch.Tensor:
    return config.cell_volume * n.detach().to(torch.float64).flatten(1).sum(1)


def kinetic_1d(psi: torch.Tensor, config) -> torch.Tensor:
    """``1/2 int |psi'|^2`` by forward differences, psi = 0 on hard walls, wrapped when periodic."""
    if config.boundary == "hard_wall":
        zero = torch.zeros_like(psi[:, :1])
        ext = torch.cat([zero, psi, zero], dim=1)
    else:
        ext = torch.cat([psi, psi[:, :1]], dim=1)
    return 0.5 * config.dx * (torch.diff(ext, dim=1) / config.dx).square().sum(1)


def high_frequency_fraction(h: torch.Tensor) -> torch.Tensor:
    """Share of the spectral power of ``h - mean(h)`` in the upper half of the band (1D, per row).

    Scale-invariant: it measures roughness, not amplitude.  A field built from a coarse map by
    zero insertion carries the mirror image of its spectrum there.
    """
    power = torch.fft.rfft(h - h.mean(1, keepdim=True), dim=1).abs().square()
    k = power.shape[1]
    return power[:, k // 2 :].sum(1) / power.sum(1)


# ----------------------------------------------------------------------------- config


def test_decoder_field_round_trip_and_validation():
    assert DECODERS == ("paper", "smooth")
    assert vae_preset("speckle1d").decoder == "paper"
    for name in PRESETS:
        c = smooth(name)
        d = c.to_dict()
        assert d["decoder"] == "smooth"
        back = VAEConfig.from_dict(json.loads(json.dumps(d)))
        assert back == c and config_from_dict(d) == c
        # the default is left out of the JSON (paper configs keep their stored form and cache keys)
        paper = vae_preset(name).to_dict()
        assert "decoder" not in paper and VAEConfig.from_dict(paper).decoder == "paper"
    assert vae_preset("speckle1d").replace(decoder="smooth") == smooth("speckle1d")
    d = vae_preset("speckle1d").to_dict()
    for bad in ("Smooth", "nearest", "", None, 1, True):
        with pytest.raises(ValueError, match="decoder"):
            VAEConfig.from_dict({**d, "decoder": bad})
    with pytest.raises(ValueError, match="decoder"):
        vae_preset("gaussian1d", decoder="sigmoid")


# ----------------------------------------------------------------------------- blocks


def test_linear_upsample_matches_interpolate_and_is_periodic():
    x = torch.randn(2, 3, 7, dtype=torch.float64)
    ref = F.interpolate(x, scale_factor=2, mode="linear", align_corners=False)
    assert torch.allclose(linear_upsample(x, 1, periodic=False), ref, atol=1e-14)
    x3 = torch.randn(2, 3, 4, 5, 3, dtype=torch.float64)
    ref3 = F.interpolate(x3, scale_factor=2, mode="trilinear", align_corners=False)
    assert torch.allclose(linear_upsample(x3, 3, periodic=False), ref3, atol=1e-14)
    # periodic: a shift by one coarse point is a shift by two fine points, the mean is kept
    up = linear_upsample(x, 1, periodic=True)
    assert torch.allclose(linear_upsample(torch.roll(x, 1, 2), 1, True), torch.roll(up, 2, 2), atol=1e-14)
    assert torch.allclose(up.mean(-1), x.mean(-1), atol=1e-14)
    for ax in (2, 3, 4):
        assert torch.allclose(
            linear_upsample(torch.roll(x3, 1, ax), 3, True), torch.roll(linear_upsample(x3, 3, True), 2, ax), atol=1e-14
        )
    # exact on a linear function away from the edges (fine points at the centres of the halved cells)
    i = torch.arange(8, dtype=torch.float64)
    fine = linear_upsample((2.0 * i + 1.0)[None, None], 1, periodic=False)[0, 0]
    j = torch.arange(16, dtype=torch.float64)
    assert torch.allclose(fine[1:-1], (2.0 * ((j - 0.5) / 2) + 1.0)[1:-1], atol=1e-14)
    # no Nyquist image: the (-1)^i mode of the fine grid receives nothing from a coarse field
    alt = (-1.0) ** torch.arange(14, dtype=torch.float64)
    assert abs(float((linear_upsample(x, 1, periodic=True) * alt).sum())) < 1e-12


def test_resize_up_block_shapes_and_parameters():
    for ndim, n in ((1, 8), (2, 4), (3, 3)):
        for mode in ("zeros", "circular"):
            block = ResizeUpBlock(4, 3, 3, ndim, mode).double()
            out = block(torch.randn(2, 4, *(n,) * ndim, dtype=torch.float64))
            assert out.shape == (2, 3, *(2 * n,) * ndim)
            assert count_parameters(block) == count_parameters(UpBlock(4, 3, 3, ndim, mode))
            assert block.conv.padding_mode == mode


# ----------------------------------------------------------------------------- parameters and shapes


@pytest.mark.parametrize("key", list(DOCUMENTED_VAE))
def test_smooth_decoder_has_the_paper_parameter_count(key):
    model = VAE(smooth(*key))
    assert count_parameters(model) == DOCUMENTED_VAE[key]
    assert all(isinstance(b, ResizeUpBlock) for b in model.decoder.blocks)
    # the envelope is a fixed, non-persistent buffer: same state-dict keys as the paper VAE
    paper = VAE(vae_preset(*key))
    assert set(model.state_dict()) == set(paper.state_dict())
    model.load_state_dict(paper.state_dict())


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("name", PRESETS)
def test_smooth_decoder_amplitude_squares_to_the_density(name, dtype):
    """Shape, positivity and normalisation of both decoders: tests/test_models.py."""
    config = smooth(name)
    model = VAE(config).to(dtype)
    for mode in (model.train, model.eval):
        mode()
        z = 3.0 * torch.randn(4, config.latent_dim, dtype=dtype)
        out = model.decode(z)
        psi = model.decoder.amplitude(z)
        assert psi.dtype == dtype and torch.all(psi > 0)
        assert torch.allclose(psi.square(), out, rtol=1e-5 if dtype == torch.float32 else 1e-12)
    n = densities(config, 2, dtype)
    n_hat, mu, logvar = model(n)
    assert n_hat.shape == n.shape and mu.shape == logvar.shape == (2, config.latent_dim)


def test_smooth_decoder_does_not_overflow():
    # exp of a large log-density: shifted by its maximum, so huge latents stay finite and normalised
    config = smooth("speckle1d")
    model = VAE(config).eval()
    with torch.no_grad():
        model.decoder.blocks[-1].conv.weight.mul_(1e3)
    out = model.decode(1e3 * torch.randn(3, config.latent_dim))
    assert torch.isfinite(out).all() and torch.all(out >= 0)
    assert torch.max(torch.abs(integrate(out, config) - 1.0)) < 1e-5


@pytest.mark.parametrize("name", PRESETS)
def test_smooth_decoder_gradients_reach_every_parameter(name):
    config = smooth(name)
    model = VAE(config).train()
    n = densities(config, 3, torch.float32)
    n_hat, mu, logvar = model(n, generator=torch.Generator().manual_seed(0))
    vae_loss(n_hat, n, mu, logvar, beta=1e-2)[0].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert torch.any(p.grad != 0), pname


# ----------------------------------------------------------------------------- hard walls


def test_wall_envelope():
    c = smooth("gaussian1d")
    env = wall_envelope(c)
    assert env.shape == (256,) and env.dtype == torch.float64
    x = torch.arange(1, 257, dtype=torch.float64) * c.dx
    assert torch.allclose(env, torch.sin(math.pi * x / c.box_length), atol=1e-15)
    assert torch.allclose(env, env.flip(0), atol=1e-15)
    assert wall_envelope(smooth("speckle1d")) is None and wall_envelope(smooth("gaussian3d")) is None
    c2 = VAEConfig(ndim=2, grid_n=16, dx=1 / 17, boundary="hard_wall", latent_dim=2, channels=(4, 4), kernel=3)
    e2 = wall_envelope(c2)
    assert e2.shape == (16, 16) and torch.allclose(e2, e2[:, 8:9] * e2[8:9, :] / e2[8, 8], atol=1e-15)


def test_smooth_density_vanishes_quadratically_at_hard_walls():
    # n ~ x^2 near a wall, as for every ground state there: n_1 = O(dx^2) relative to the bulk,
    # and n_1 / n_2 ~ (x_1 / x_2)^2 = 1/4.  The paper's sigmoid sits at O(1) on the first point.
    config = smooth("gaussian1d")
    eps = (math.pi * config.dx / config.box_length) ** 2  # sin^2(pi x_1 / L) = 1.5e-4
    z = 3.0 * torch.randn(8, config.latent_dim, dtype=torch.float64)
    for mode in ("train", "eval"):
        model = getattr(VAE(config).double(), mode)()
        paper = getattr(VAE(vae_preset("gaussian1d")).double(), mode)()
        with torch.no_grad():
            n, n_paper = model.decode(z), paper.decode(z)
        for first, second in ((n[:, 0], n[:, 1]), (n[:, -1], n[:, -2])):
            assert torch.all(first / n.amax(1) < 10 * eps)
            assert torch.all((first / second > 0.15) & (first / second < 0.4))
        assert torch.all(n_paper[:, 0] / n_paper.amax(1) > 0.1)
    # every face of a 2D hard-wall box
    c2 = VAEConfig(
        ndim=2, grid_n=32, dx=1 / 33, boundary="hard_wall", latent_dim=2, channels=(4, 4), kernel=3, decoder="smooth"
    )
    n2 = VAE(c2).double().eval().decode(torch.randn(2, 2, dtype=torch.float64)).detach()
    edge = (math.pi / 33) ** 2
    for face in (n2[:, 0, :], n2[:, -1, :], n2[:, :, 0], n2[:, :, -1]):
        assert torch.all(face.amax(1) / n2.flatten(1).amax(1) < 10 * edge)


# ----------------------------------------------------------------------------- smoothness


@pytest.mark.parametrize("name", ("gaussian1d", "speckle1d"))
def test_smooth_decoder_output_has_no_checkerboard(name):
    # the field before the output map: the paper decoder's logits are dominated by the mirror
    # image of zero insertion (more than a third of their power in the upper half band), the
    # smooth decoder's log-density carries a few per cent at most -- at random initialisation,
    # before any training could smooth either
    fractions = {}
    for decoder in DECODERS:
        model = VAE(vae_preset(name, decoder=decoder)).double().train()
        with torch.no_grad():
            h = model.decoder.logits(torch.randn(16, model.config.latent_dim, dtype=torch.float64))
        fractions[decoder] = high_frequency_fraction(h)
    assert torch.all(fractions["paper"] > 0.3)
    assert torch.median(fractions["smooth"]) < 0.05
    assert torch.all(fractions["smooth"] < 0.1 * fractions["paper"])


def test_smooth_decoder_kinetic_energy_is_far_below_the_paper_decoder():
    # T[n] = 1/2 int |d sqrt(n)/dx|^2 on gaussian1d (L = 1, free-particle ground state pi^2/2 = 4.93):
    # the paper decoder at random initialisation gives hundreds of E0 (sqrt(n) jumps to zero at
    # the walls and zig-zags inside), the smooth decoder stays near the free-particle value
    config = smooth("gaussian1d")
    t0 = math.pi**2 / (2 * config.box_length**2)
    z = torch.randn(16, config.latent_dim, dtype=torch.float64)
    for mode in ("train", "eval"):
        s_model = getattr(VAE(config).double(), mode)()
        p_model = getattr(VAE(vae_preset("gaussian1d")).double(), mode)()
        with torch.no_grad():
            t_smooth = kinetic_1d(s_model.decoder.amplitude(z), config)
            t_paper = kinetic_1d(torch.sqrt(p_model.decode(z)), config)
        assert torch.all(t_smooth >= 0.99 * t0)  # nothing is below the free particle's ground state
        assert torch.all(t_paper > 20 * t0)
        assert t_smooth.max() < t_paper.min() / 5


# ----------------------------------------------------------------------------- periodic grids


def test_smooth_decoder_is_translation_equivariant_on_periodic_grids():
    s1 = VAE(smooth("speckle1d")).double().eval()
    h = torch.randn(2, 60, 8, dtype=torch.float64)

    def dec1(h):
        return s1.decoder.blocks(h).squeeze(1)

    assert torch.allclose(dec1(torch.roll(h, 1, 2)), torch.roll(dec1(h), 32, 1), atol=1e-12)
    g3 = VAE(smooth("gaussian3d")).double().eval()
    h3 = torch.randn(2, 180, 3, 3, 3, dtype=torch.float64)

    def dec3(h):
        return g3.decoder.resample(g3.decoder.blocks(h).squeeze(1))

    for ax in (2, 3, 4):  # one bottleneck cell = 8 points of 24^3 = 6 points of 18^3
        assert torch.allclose(dec3(torch.roll(h3, 1, ax)), torch.roll(dec3(h3), 6, ax - 1), atol=1e-12)


def test_halving_pool_is_avgpool1d_bit_for_bit():
    from vaedft.models.layers import HalvingAvgPool1d

    for dtype in (torch.float32, torch.float64):
        x = torch.randn(7, 5, 64, dtype=dtype, generator=torch.Generator().manual_seed(0), requires_grad=True)
        w = torch.randn(7, 5, 32, dtype=dtype, generator=torch.Generator().manual_seed(1))
        ours, ref = HalvingAvgPool1d()(x), torch.nn.AvgPool1d(2)(x)
        assert torch.equal(ours, ref)
        g_ours = torch.autograd.grad((ours * w).sum(), x)[0]
        g_ref = torch.autograd.grad((ref * w).sum(), x)[0]
        assert torch.equal(g_ours, g_ref)
