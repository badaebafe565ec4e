"""The three testbeds of the paper (Sec. III) as small frozen config objects.

Each testbed fixes a grid and a seeded potential generator:

* :class:`Gaussian1D` -- eq. (15), three Gaussian barriers in a hard-wall box ``L = 1``.
* :class:`Speckle1D` -- optical speckle, periodic ``L = 14``, ``V0 = 0.25``, correlation length 1.
* :class:`Gaussian3D` -- eq. (18), ten Gaussian scatterers in a periodic cube ``L = 1``.

All quantities are in units hbar = m = a0 = 1 (energies in E0).  Generation is in two
steps so that stored parameters reproduce the potentials exactly:
``params = testbed.sample_params(seed, indices)`` then ``V = testbed.potential(params)``.
Instance ``i`` draws only from ``instance_rng(seed, i)``, and ``potential`` works row by
row with element-wise operations, so potentials are bit-identical for any batching.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..rng import instance_rng
from .grid import Grid

__all__ = ["Testbed", "Gaussian1D", "Speckle1D", "Gaussian3D", "TESTBEDS", "get_testbed"]


def _check_range(name: str, lo_hi) -> None:
    lo, hi = lo_hi
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name} must be a finite interval (lo <= hi), got {lo_hi}")


@dataclass(frozen=True)
class Testbed:
    """Common part of a testbed config.

    Attributes:
        box_length: L in a0.
        n_grid: grid points per axis.
        stencil_points: width of the central second-derivative stencil.
    """

    name: ClassVar[str]
    ndim: ClassVar[int]
    boundary: ClassVar[str]

    box_length: float
    n_grid: int
    stencil_points: int

    @property
    def grid(self) -> Grid:
        return Grid(self.box_length, self.n_grid, self.ndim, self.boundary, self.stencil_points)

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], type]]:
        """Per-instance parameter arrays: name -> (shape without batch axis, dtype)."""
        raise NotImplementedError

    def _draw(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def sample_params(self, seed: int, indices) -> dict[str, np.ndarray]:
        """Generator parameters of instances ``indices`` under ``seed``; each ``(B, ...)``."""
        raw = np.asarray(indices).reshape(-1)
        if raw.size and (raw.dtype.kind not in "iu" or raw.min() < 0):
            raise ValueError(f"every instance index must be a non-negative integer, got {raw[:5].tolist()}")
        indices = raw.astype(np.int64)
        draws = [self._draw(instance_rng(seed, int(i))) for i in indices]
        out = {}
        for key, (shape, dtype) in self.param_shapes().items():
            if draws:
                out[key] = np.stack([d[key] for d in draws]).astype(dtype)
            else:
                out[key] = np.zeros((0, *shape), dtype=dtype)
        return out

    def potential(self, params: dict[str, np.ndarray]) -> np.ndarray:
        """Potentials ``(B, *grid.shape)`` in E0 from parameters ``(B, ...)``."""
        raise NotImplementedError

    def check_params(self, params: dict[str, np.ndarray]) -> int:
        """Validate a parameter dict; return the batch size."""
        sizes = set()
        for key, (shape, dtype) in self.param_shapes().items():
            if key not in params:
                raise ValueError(f"{self.name}: missing parameter {key!r}")
            arr = np.asarray(params[key])
            if arr.dtype.kind not in "biufc" or (arr.dtype.kind == "c" and np.dtype(dtype).kind != "c"):
                raise ValueError(f"{self.name}: parameter {key!r} must be real numbers, got dtype {arr.dtype}")
            if arr.shape[1:] != shape:
                raise ValueError(f"{self.name}: parameter {key!r} has shape {arr.shape}, expected (B, {shape})")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{self.name}: parameter {key!r} contains NaN or inf")
            sizes.add(arr.shape[0])
        if len(sizes) != 1:
            raise ValueError(f"{self.name}: parameters disagree on the batch size: {sorted(sizes)}")
        return sizes.pop()

    def attrs(self) -> dict:
        """Every config field plus ``testbed``, ``boundary``, as HDF5-storable attributes."""
        out = {"testbed": self.name, "boundary": self.boundary}
        for f in dataclasses.fields(self):
            val = getattr(self, f.name)
            out[f.name] = np.asarray(val) if isinstance(val, tuple) else val
        return out

    def replace(self, **changes) -> Testbed:
        """A copy with some fields changed (e.g. ``speckle.replace(V0=0.5)``)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Gaussian1D(Testbed):
    """Eq. (15): ``V(x) = sign * sum_{i=1}^{3} a_i exp(-(x - b_i)^2 / (2 c_i^2))`` with hard walls.

    Draw order per instance: ``a`` (3 values), then ``b``, then ``c``, each uniform.
    ``sign = +1`` gives the paper's barriers; ``-1`` gives Snyder's wells.
    """

    name: ClassVar[str] = "gaussian1d"
    ndim: ClassVar[int] = 1
    boundary: ClassVar[str] = "hard_wall"

    box_length: float = 1.0
    n_grid: int = 256
    stencil_points: int = 9
    sign: int = 1
    n_gauss: int = 3
    a_range: tuple[float, float] = (1.0, 10.0)
    b_range: tuple[float, float] = (0.4, 0.6)
    c_range: tuple[float, float] = (0.03, 0.1)

    def __post_init__(self) -> None:
        if isinstance(self.sign, bool) or not isinstance(self.sign, (int, np.integer)) or self.sign not in (1, -1):
            raise ValueError(f"sign must be the integer +1 (barriers) or -1 (wells), got {self.sign!r}")
        if isinstance(self.n_gauss, bool) or not isinstance(self.n_gauss, (int, np.integer)) or self.n_gauss < 1:
            raise ValueError(f"n_gauss must be a positive integer, got {self.n_gauss!r}")
        for nm in ("a_range", "b_range", "c_range"):
            _check_range(nm, getattr(self, nm))
        if self.c_range[0] <= 0:
            raise ValueError(f"c_range must be positive (Gaussian widths), got {self.c_range}")
        _ = self.grid  # building the Grid validates n_grid, box_length and the stencil

    def param_shapes(self):
        g = (self.n_gauss,)
        return {"a": (g, np.float64), "b": (g, np.float64), "c": (g, np.float64)}

    def _draw(self, rng):
        return {
            "a": rng.uniform(*self.a_range, size=self.n_gauss),
            "b": rng.uniform(*self.b_range, size=self.n_gauss),
            "c": rng.uniform(*self.c_range, size=self.n_gauss),
        }

    def potential(self, params):
        self.check_params(params)
        x = self.grid.points[None, None, :]
        a, b, c = (np.asarray(params[k], dtype=np.float64)[:, :, None] for k in "abc")
        if np.any(c <= 0):
            raise ValueError(f"{self.name}: Gaussian widths c must be positive")
        return self.sign * (a * np.exp(-((x - b) ** 2) / (2.0 * c**2))).sum(axis=1)


@dataclass(frozen=True)
class Speckle1D(Testbed):
    """Optical speckle: ``V = V0 |E(x)|^2`` with ``E`` a complex Gaussian field, periodic box.

    ``E(x) = sum_n c_n exp(2 pi i n x / L)`` over exactly ``M = L / correlation_length``
    modes ``n = -M//2 .. M - M//2 - 1`` with i.i.d. complex normal ``c_n`` of variance
    ``1/M``.  Then ``<|E|^2> = 1`` over the ensemble (no per-instance rescaling), so
    ``P(V) = exp(-V/V0)/V0`` and the autocorrelation is ``|sin(pi M d/L) / (M sin(pi d/L))|^2``
    ~ ``sinc^2(pi d / correlation_length)`` with its first zero at ``d = correlation_length``.

    Parameters stored per instance: ``modes`` (M,) complex128.
    """

    name: ClassVar[str] = "speckle1d"
    ndim: ClassVar[int] = 1
    boundary: ClassVar[str] = "periodic"

    box_length: float = 14.0
    n_grid: int = 256
    stencil_points: int = 11
    V0: float = 0.25
    correlation_length: float = 1.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.V0) and self.V0 >= 0):
            raise ValueError(f"V0 must be >= 0, got {self.V0}")
        if not (np.isfinite(self.correlation_length) and self.correlation_length > 0):
            raise ValueError(f"correlation_length must be positive, got {self.correlation_length}")
        ratio = self.box_length / self.correlation_length
        if not (ratio >= 1 and abs(ratio - round(ratio)) < 1e-9):
            raise ValueError(
                f"box_length / correlation_length must be a positive integer (number of modes), got {ratio}"
            )
        if round(ratio) > self.n_grid // 2:
            raise ValueError(f"{round(ratio)} speckle modes do not fit on {self.n_grid} grid points")
        _ = self.grid  # building the Grid validates n_grid, box_length and the stencil

    @property
    def n_modes(self) -> int:
        return int(round(self.box_length / self.correlation_length))

    @property
    def mode_numbers(self) -> np.ndarray:
        m = self.n_modes
        return np.arange(-(m // 2), m - m // 2)

    def param_shapes(self):
        return {"modes": ((self.n_modes,), np.complex128)}

    def _draw(self, rng):
        m = self.n_modes
        re = rng.standard_normal(m)
        im = rng.standard_normal(m)
        return {"modes": (re + 1j * im) * np.sqrt(0.5 / m)}

    def field(self, params) -> np.ndarray:
        """The complex field ``E(x_j)``, shape ``(B, n_grid)``."""
        self.check_params(params)
        modes = np.asarray(params["modes"], dtype=np.complex128)
        phase = np.exp(2j * np.pi * np.outer(self.mode_numbers, self.grid.points) / self.box_length)
        return (modes[:, :, None] * phase[None]).sum(axis=1)

    def potential(self, params):
        e = self.field(params)
        return self.V0 * (e.real**2 + e.imag**2)

    def attrs(self):
        out = super().attrs()
        out["n_modes"] = self.n_modes
        return out


@dataclass(frozen=True)
class Gaussian3D(Testbed):
    """Eq. (18): ``V(r) = (1/N) sum_i A_i / ((2 pi)^{3/2} sigma^3) exp(-|dr_i|^2 / (2 sigma^2))``.

    Periodic cube; ``dr_i`` by the minimum-image convention ``d - L * round(d / L)``.
    Draw order per instance: ``centers`` (N, 3) uniform in ``[0, L)``, then ``amplitudes``
    (N,) uniform in ``amplitude_range``.  ``sigma`` defaults to ``L / 6``.
    """

    name: ClassVar[str] = "gaussian3d"
    ndim: ClassVar[int] = 3
    boundary: ClassVar[str] = "periodic"

    box_length: float = 1.0
    n_grid: int = 18
    stencil_points: int = 11
    n_gauss: int = 10
    sigma: float = 1.0 / 6.0
    amplitude_range: tuple[float, float] = (0.0, 2.0)

    def __post_init__(self) -> None:
        if self.n_gauss < 1:
            raise ValueError(f"n_gauss must be >= 1, got {self.n_gauss}")
        if not (self.sigma > 0 and np.isfinite(self.sigma)):
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        _check_range("amplitude_range", self.amplitude_range)
        _ = self.grid  # building the Grid validates n_grid, box_length and the stencil

    def param_shapes(self):
        return {
            "centers": ((self.n_gauss, 3), np.float64),
            "amplitudes": ((self.n_gauss,), np.float64),
        }

    def _draw(self, rng):
        return {
            "centers": rng.uniform(0.0, self.box_length, size=(self.n_gauss, 3)),
            "amplitudes": rng.uniform(*self.amplitude_range, size=self.n_gauss),
        }

    def potential(self, params):
        self.check_params(params)
        L, s = self.box_length, self.sigma
        x = self.grid.points
        centers = np.asarray(params["centers"], dtype=np.float64)  # (B, N, 3)
        amps = np.asarray(params["amplitudes"], dtype=np.float64)  # (B, N)
        d = x[None, None, None, :] - centers[:, :, :, None]  # (B, N, 3, n)
        d = d - L * np.round(d / L)
        g = np.exp(-(d**2) / (2.0 * s**2))
        norm = amps / (self.n_gauss * (2.0 * np.pi) ** 1.5 * s**3)  # (B, N)
        gx = (norm[:, :, None] * g[:, :, 0])[:, :, :, None, None]
        gy = g[:, :, 1][:, :, None, :, None]
        gz = g[:, :, 2][:, :, None, None, :]
        return (gx * gy * gz).sum(axis=1)


TESTBEDS: dict[str, Testbed] = {t.name: t for t in (Gaussian1D(), Speckle1D(), Gaussian3D())}


def get_testbed(name: str) -> Testbed:
    """The default config of a testbed by name (``gaussian1d``, ``speckle1d``, ``gaussian3d``)."""
    try:
        return TESTBEDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown testbed {name!r}; expected one of {', '.join(TESTBEDS)}") from None
