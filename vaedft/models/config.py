"""Architecture configs of the beta-VAE and the DL functional, with the paper's presets.

Two frozen dataclasses describe every size of the networks:

* :class:`VAEConfig` -- the beta-VAE of Sec. II A 1 (Table I);
* :class:`FunctionalConfig` -- the convolutional DL functional of Sec. II A 2 (Table II).

Both are plain data: ``config.to_dict()`` gives JSON-ready values (with a ``kind`` key) and
``Config.from_dict(d)`` rebuilds the same object, refusing unknown keys and bad values with
``ValueError``.  Two fields are *resolved* when a config is built, so that the stored JSON
always says what the network really does:

* ``padding`` -- ``"circular"`` for periodic grids, ``"zeros"`` for hard walls (the walls,
  where the density vanishes) unless given;
* ``input_scale`` -- a factor applied to the density before the first convolution of the
  encoder / functional (default 1.0: the paper's networks, which see ``n`` itself).  The
  string ``"volume"`` resolves to the box volume ``L**ndim`` (:attr:`~VAEConfig.box_volume`),
  so that the networks see the dimensionless ``n * L**d`` of mean 1 whatever the box size
  (speckle1d: L = 14 a0, so raw densities are ~1/14).  The scaling is internal: the
  functional still returns F in E0 for the unscaled ``n``, and autograd gives dF/dn of the
  unscaled ``n``.  A config stores the resolved number.
* ``resample_n`` -- the grid size the convolutional stack works on.  It equals ``grid_n``
  when ``grid_n`` is divisible by ``2**len(channels)`` (every 1D preset: 256 -> 8).  The
  periodic 18^3 grid of ``gaussian3d`` is not; there the density is Fourier-resampled
  (exact for band-limited periodic fields, see :func:`vaedft.models.layers.fourier_resample`):
  the VAE works on 24^3 (3 pools: 24 -> 12 -> 6 -> 3; the smallest size >= 18, so the
  decoder can represent every Fourier mode of the 18^3 grid) and the functional on 16^3
  (4 pools: 16 -> 8 -> 4 -> 2 -> 1; the nearest size, see :mod:`vaedft.models.functional`).
  Resampling is refused for hard-wall grids, which are not periodic.

The VAE config also chooses the decoder (``decoder``, see :mod:`vaedft.models.vae`):
``"paper"`` (default; stride-2 transposed convolutions, sigmoid, normalise) or ``"smooth"``
(linear-interpolation upsampling + convolutions, node-free amplitude ``psi`` vanishing
smoothly at hard walls, ``n = psi**2`` normalised).

``to_dict`` leaves out ``decoder`` and ``input_scale`` while they hold their defaults, so the
JSON of a paper config -- stored in training runs, and hashed into the benchmark's artifact
cache keys -- is the same as before these fields existed; ``from_dict`` fills them in.

Presets are named after the columns of Tables I and II (the testbed names):
``vae_preset("gaussian1d", latent_dim=8)``, ``functional_preset("gaussian3d")``.
:func:`from_testbed` / :func:`functional_from_testbed` build the paper's architecture for any
testbed config or a dataset file's attributes, on that dataset's own grid.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..physics.grid import BOUNDARIES, GridFields

__all__ = [
    "PADDINGS",
    "DECODERS",
    "INPUT_SCALES",
    "PAPER_LATENT_DIMS",
    "DEFAULT_LATENT_DIM",
    "VAE_ARCHITECTURES",
    "FUNCTIONAL_ARCHITECTURES",
    "VAEConfig",
    "FunctionalConfig",
    "config_from_dict",
    "preset_names",
    "vae_preset",
    "functional_preset",
    "from_testbed",
    "functional_from_testbed",
]

PADDINGS = ("zeros", "circular")
#: Decoder variants of the VAE (:mod:`vaedft.models.vae`): the paper's, and the smooth one.
DECODERS = ("paper", "smooth")
#: Named values of ``input_scale`` (besides a positive number): ``"volume"`` = ``L**ndim``.
INPUT_SCALES = ("volume",)

#: Latent dimensions l_d used in the paper (Table I).
PAPER_LATENT_DIMS: dict[str, tuple[int, ...]] = {"gaussian1d": (4, 8), "speckle1d": (16,), "gaussian3d": (32,)}
#: l_d used when none is given: for gaussian1d the value the paper found best for the
#: latent-space minimization (Fig. 4: l_d = 4 removes the variational violations of l_d = 8).
DEFAULT_LATENT_DIM: dict[str, int] = {"gaussian1d": 4, "speckle1d": 16, "gaussian3d": 32}

#: Table I (beta-VAE): conv blocks (one channel count per block), kernel, dense layers.
VAE_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "gaussian1d": {"channels": (60,) * 5, "kernel": 13, "dense": (100, 50)},
    "speckle1d": {"channels": (60,) * 5, "kernel": 13, "dense": (100, 50)},
    "gaussian3d": {"channels": (60, 120, 180), "kernel": 3, "dense": (100, 50)},
}
#: Table II (DL functional): conv blocks and kernel.
FUNCTIONAL_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "gaussian1d": {"channels": (60,) * 5, "kernel": 13},
    "speckle1d": {"channels": (60,) * 5, "kernel": 13},
    "gaussian3d": {"channels": (60,) * 4, "kernel": 3},
}


# ----------------------------------------------------------------------------- validation helpers


def _as_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _as_int_tuple(name: str, value, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
        raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}")
    out = tuple(_as_int(f"{name}[{i}]", v) for i, v in enumerate(value))
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return out


def _as_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _as_positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return value


class _ConfigMixin(GridFields):
    """Shared validation, derived sizes and JSON round trip of the two configs."""

    kind: ClassVar[str]
    _tuple_fields: ClassVar[tuple[str, ...]]

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def _validate_common(self, *, upsample_when_needed: bool) -> None:
        self._set("ndim", _as_int("ndim", self.ndim))
        if self.ndim > 3:
            raise ValueError(f"ndim must be 1, 2 or 3, got {self.ndim}")
        self._set("grid_n", _as_int("grid_n", self.grid_n, minimum=2))
        self._set("dx", _as_positive_float("dx", self.dx))
        _as_choice("boundary", self.boundary, BOUNDARIES)
        self._set("channels", _as_int_tuple("channels", self.channels, allow_empty=False))
        self._set("kernel", _as_int("kernel", self.kernel))
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same-size convolutions), got {self.kernel}")
        if self.padding is None:
            self._set("padding", "circular" if self.boundary == "periodic" else "zeros")
        _as_choice("padding", self.padding, PADDINGS)
        if isinstance(self.input_scale, str):
            _as_choice("input_scale", self.input_scale, INPUT_SCALES)
            self._set("input_scale", self.box_volume)
        self._set("input_scale", _as_positive_float("input_scale", self.input_scale))

        factor = 2**self.n_blocks
        if self.resample_n is None:
            if self.grid_n % factor == 0:
                resample_n = self.grid_n
            elif self.boundary != "periodic":
                raise ValueError(
                    f"grid_n = {self.grid_n} is not divisible by 2**{self.n_blocks} = {factor} (one factor 2 per "
                    f"pooling block) and a {self.boundary} grid cannot be Fourier-resampled (not periodic); "
                    "use fewer blocks or another grid size"
                )
            else:
                down, up = factor * (self.grid_n // factor), factor * (self.grid_n // factor + 1)
                if upsample_when_needed or down == 0:
                    resample_n = up
                else:
                    resample_n = down if (self.grid_n - down) <= (up - self.grid_n) else up
            self._set("resample_n", resample_n)
        self._set("resample_n", _as_int("resample_n", self.resample_n))
        if self.resample_n % factor != 0:
            raise ValueError(
                f"resample_n = {self.resample_n} must be divisible by 2**{self.n_blocks} = {factor} "
                "(one factor 2 per pooling block)"
            )
        if self.resample_n != self.grid_n and self.boundary != "periodic":
            raise ValueError(
                f"resample_n = {self.resample_n} != grid_n = {self.grid_n} needs Fourier resampling, "
                f"which is exact only for periodic fields, not for a {self.boundary} grid"
            )
        smallest = self.resample_n // 2 ** (self.n_blocks - 1)  # the smallest map a convolution sees
        if self.padding == "circular" and self.kernel // 2 > smallest:
            raise ValueError(
                f"kernel {self.kernel} wraps around the smallest feature map ({smallest} points) more than once "
                "with circular padding; use a smaller kernel or fewer blocks"
            )

    # derived sizes -------------------------------------------------------------------------
    @property
    def box_length(self) -> float:
        """L, the box side: ``(grid_n + 1) * dx`` between hard walls (``x_i = i dx``, walls at 0
        and L), ``grid_n * dx`` for a periodic grid (as :class:`~vaedft.physics.grid.Grid`)."""
        return (self.grid_n + 1) * self.dx if self.boundary == "hard_wall" else self.grid_n * self.dx

    @property
    def box_volume(self) -> float:
        """``box_length**ndim``, the value ``input_scale="volume"`` resolves to."""
        return self.box_length**self.ndim

    @property
    def n_blocks(self) -> int:
        """Number of conv blocks (pooling stages)."""
        return len(self.channels)

    @property
    def bottleneck_n(self) -> int:
        """Points per axis of the last feature map, ``resample_n / 2**n_blocks``."""
        return self.resample_n // 2**self.n_blocks

    @property
    def flat_features(self) -> int:
        """Size of the flattened last feature map, ``channels[-1] * bottleneck_n**ndim``."""
        return self.channels[-1] * self.bottleneck_n**self.ndim

    # JSON round trip -------------------------------------------------------------------------
    #: Fields left out of :meth:`to_dict` while they equal their default (added after the
    #: paper configs were first stored; their JSON and cache keys stay unchanged).
    _omit_when_default: ClassVar[tuple[str, ...]] = ("decoder", "input_scale")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists) with a ``kind`` key; inverse of :meth:`from_dict`.

        ``decoder`` and ``input_scale`` appear only when they differ from their defaults.
        """
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            val = getattr(self, f.name)
            if f.name in self._omit_when_default and val == f.default:
                continue
            out[f.name] = list(val) if isinstance(val, tuple) else val
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Rebuild a config from :meth:`to_dict` output; unknown or missing keys raise ``ValueError``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}.from_dict needs a mapping, got {type(data).__name__}")
        data = dict(data)
        kind = data.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"config of kind {kind!r} given to {cls.__name__} (kind {cls.kind!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; expected a subset of {sorted(names)}")
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"{cls.__name__} is missing keys {missing}")
        for key in cls._tuple_fields:
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        return cls(**data)

    def replace(self, **changes):
        """A copy with some fields changed (validated again).

        The resolved fields follow the change unless given: ``resample_n`` is resolved again
        when ``grid_n``, ``boundary`` or ``channels`` change, ``padding`` when ``boundary`` does.
        ``input_scale`` is stored as a number and is kept; pass ``input_scale="volume"`` again
        to resolve it on a changed grid.
        """
        if "resample_n" not in changes and {"grid_n", "boundary", "channels"} & set(changes):
            changes["resample_n"] = None
        if "padding" not in changes and "boundary" in changes:
            changes["padding"] = None
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class VAEConfig(_ConfigMixin):
    """Sizes of the beta-VAE (paper Sec. II A 1, Table I).

    Attributes:
        ndim: spatial dimensions of the densities (1 or 3; 2 works too).
        grid_n: grid points per axis; densities have shape ``(B, grid_n, ..., grid_n)``.
        dx: grid spacing (a0); the decoder normalises ``dx**ndim * sum(n) = 1``.
        boundary: ``"hard_wall"`` or ``"periodic"`` (of the dataset's grid).
        latent_dim: l_d, the size of the latent vector z.
        channels: output channels of each encoder conv block (the decoder mirrors them).
        kernel: odd kernel size of every convolution (per axis).
        dense: hidden sizes of each dense head; the last layer maps to ``latent_dim``.
        padding: ``"zeros"`` or ``"circular"``; ``None`` resolves to circular for periodic
            and zeros for hard-wall grids.
        resample_n: grid size the conv stack works on; ``None`` resolves to ``grid_n`` if it is
            divisible by ``2**len(channels)``, else (periodic only) to the next larger multiple.
        decoder: ``"paper"`` (stride-2 transposed convolutions, sigmoid, normalise) or
            ``"smooth"`` (linear upsampling + convolutions, amplitude ``psi`` with
            ``n = psi**2``, vanishing like ``sin(pi x / L)`` at hard walls); see
            :mod:`vaedft.models.vae`.  Same parameter count for both.
        input_scale: the encoder sees ``n * input_scale``; a positive number or ``"volume"``
            (resolved to :attr:`box_volume`, ``L**ndim``).  1.0 is the paper's encoder.
    """

    kind: ClassVar[str] = "vae"
    _tuple_fields: ClassVar[tuple[str, ...]] = ("channels", "dense")

    ndim: int
    grid_n: int
    dx: float
    boundary: str
    latent_dim: int
    channels: tuple[int, ...]
    kernel: int
    dense: tuple[int, ...] = (100, 50)
    padding: str | None = None
    resample_n: int | None = None
    decoder: str = "paper"
    input_scale: float | str = 1.0

    def __post_init__(self) -> None:
        self._set("latent_dim", _as_int("latent_dim", self.latent_dim))
        _as_choice("decoder", self.decoder, DECODERS)
        self._set("dense", _as_int_tuple("dense", self.dense, allow_empty=True))
        self._validate_common(upsample_when_needed=True)


@dataclass(frozen=True)
class FunctionalConfig(_ConfigMixin):
    """Sizes of the convolutional DL functional (paper Sec. II A 2, Table II).

    Attributes:
        ndim, grid_n, dx, boundary, channels, kernel, padding: as in :class:`VAEConfig`.
        resample_n: grid size the conv stack works on; ``None`` resolves to ``grid_n`` if it is
            divisible by ``2**len(channels)``, else (periodic only) to the nearest multiple
            (18 -> 16 for the 3D preset).
        input_scale: the convolutions see ``n * input_scale``; a positive number or
            ``"volume"`` (resolved to :attr:`box_volume`).  F is still that of ``n``.
    """

    kind: ClassVar[str] = "functional"
    _tuple_fields: ClassVar[tuple[str, ...]] = ("channels",)

    ndim: int
    grid_n: int
    dx: float
    boundary: str
    channels: tuple[int, ...]
    kernel: int
    padding: str | None = None
    resample_n: int | None = None
    input_scale: float | str = 1.0

    def __post_init__(self) -> None:
        self._validate_common(upsample_when_needed=False)


_KINDS = {VAEConfig.kind: VAEConfig, FunctionalConfig.kind: FunctionalConfig}


def config_from_dict(data: Mapping[str, Any]) -> VAEConfig | FunctionalConfig:
    """Rebuild either config from a dict carrying its ``kind`` (``"vae"`` or ``"functional"``)."""
    if not isinstance(data, Mapping) or data.get("kind") not in _KINDS:
        got = data.get("kind") if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"config dict needs kind in {sorted(_KINDS)}, got {got!r}")
    return _KINDS[data["kind"]].from_dict(data)


# ----------------------------------------------------------------------------- presets


def preset_names() -> tuple[str, ...]:
    """Names of the paper presets (the columns of Tables I and II)."""
    return tuple(VAE_ARCHITECTURES)


def _resolve_testbed(testbed_or_attrs):
    """A Testbed from a Testbed, a testbed name, or a dataset file's attribute dict."""
    from ..physics.testbeds import Testbed, get_testbed

    if isinstance(testbed_or_attrs, Testbed):
        return testbed_or_attrs
    if isinstance(testbed_or_attrs, str):
        return get_testbed(testbed_or_attrs)
    if isinstance(testbed_or_attrs, Mapping):
        from ..data.store import testbed_from_attrs

        attrs = dict(testbed_or_attrs)
        testbed = testbed_from_attrs(attrs)
        grid = testbed.grid
        if "grid_shape" in attrs and tuple(int(s) for s in np.ravel(attrs["grid_shape"])) != grid.shape:
            raise ValueError(f"attribute grid_shape {attrs['grid_shape']} disagrees with the {testbed.name} config")
        if "dx" in attrs and not math.isclose(float(attrs["dx"]), grid.dx, rel_tol=1e-12):
            raise ValueError(f"attribute dx {attrs['dx']} disagrees with the {testbed.name} config ({grid.dx})")
        if "boundary" in attrs and attrs["boundary"] != grid.boundary:
            raise ValueError(f"attribute boundary {attrs['boundary']!r} disagrees with the {testbed.name} config")
        return testbed
    raise ValueError(
        f"expected a Testbed, a testbed name or a dataset attribute dict, got {type(testbed_or_attrs).__name__}"
    )


def _architecture(table: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    try:
        return dict(table[name])
    except KeyError:
        raise ValueError(f"no paper architecture for testbed {name!r}; presets: {', '.join(table)}") from None


def from_testbed(
    testbed_or_attrs, latent_dim: int | None = None, *, decoder: str = "paper", input_scale: float | str = 1.0
) -> VAEConfig:
    """The paper's VAE (Table I) on the grid of a testbed or dataset file.

    Args:
        testbed_or_attrs: a :class:`~vaedft.physics.testbeds.Testbed`, a testbed name, or the
            attribute dict of a dataset file (``vaedft.data.read_attrs(path)``).
        latent_dim: l_d; ``None`` takes :data:`DEFAULT_LATENT_DIM` of the testbed.
        decoder: ``"paper"`` or ``"smooth"`` (:data:`DECODERS`).
        input_scale: factor on the encoder's input, a positive number or ``"volume"`` (``L**d``
            of this grid).
    """
    testbed = _resolve_testbed(testbed_or_attrs)
    arch = _architecture(VAE_ARCHITECTURES, testbed.name)
    grid = testbed.grid
    if latent_dim is None:
        latent_dim = DEFAULT_LATENT_DIM[testbed.name]
    return VAEConfig(
        ndim=grid.ndim,
        grid_n=grid.n,
        dx=grid.dx,
        boundary=grid.boundary,
        latent_dim=latent_dim,
        decoder=decoder,
        input_scale=input_scale,
        **arch,
    )


def functional_from_testbed(testbed_or_attrs, *, input_scale: float | str = 1.0) -> FunctionalConfig:
    """The paper's DL functional (Table II) on the grid of a testbed or dataset file.

    ``input_scale``: factor on the network's input, a positive number or ``"volume"`` (``L**d``).
    """
    testbed = _resolve_testbed(testbed_or_attrs)
    arch = _architecture(FUNCTIONAL_ARCHITECTURES, testbed.name)
    grid = testbed.grid
    return FunctionalConfig(
        ndim=grid.ndim, grid_n=grid.n, dx=grid.dx, boundary=grid.boundary, input_scale=input_scale, **arch
    )


def vae_preset(
    name: str, latent_dim: int | None = None, *, decoder: str = "paper", input_scale: float | str = 1.0
) -> VAEConfig:
    """Table I preset on the testbed's default grid, e.g. ``vae_preset("gaussian1d", latent_dim=8)``.

    ``decoder`` and ``input_scale`` as in :func:`from_testbed`.
    """
    _architecture(VAE_ARCHITECTURES, name)
    return from_testbed(name, latent_dim, decoder=decoder, input_scale=input_scale)


def functional_preset(name: str, *, input_scale: float | str = 1.0) -> FunctionalConfig:
    """Table II preset on the testbed's default grid, e.g. ``functional_preset("gaussian3d")``.

    ``input_scale`` as in :func:`functional_from_testbed`.
    """
    _architecture(FUNCTIONAL_ARCHITECTURES, name)
    return functional_from_testbed(name, input_scale=input_scale)
