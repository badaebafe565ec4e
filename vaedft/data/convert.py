"""The authors' ``.npz`` datasets in vaedft's HDF5 schema, their unit conventions found from the data.

Two layouts are known from the authors' code (Costa, Scriva, Pilati 2024):

* ``dft``: keys ``density``, ``potential``, ``energy``, ``F`` (their speckle files
  ``data_train.npz`` / ``data_test.npz``);
* ``raw``: keys ``dens``, ``speckle`` (the potential, even in the 3D Gaussian file) and ``ene``
  (e.g. ``Gaussian1stbatch.npz``); ``F`` is ``ene - int V n``.

Fields may be stored flat, ``(N, prod(grid))``, or on the grid, ``(N, *grid)``.  Two unit traps are
known: their speckle energies are in ``hbar^2/(2 m a0^2) = E0/2``, and their 3D code integrates
with ``dx = 2/18`` (a box of length 2).  No flag is trusted; :func:`detect_conventions` finds
both factors from the data of every instance:

1. **lengths**: the density is normalised, ``dx_f^d sum n = 1``, which gives the file's cell
   ``dx_f``, and ``r = dx_f / dx`` (1 for our box, 2 for a box of twice the length);
2. **energies**: for one particle ``F`` is the von Weizsaecker kinetic energy of ``sqrt(n)``,
   computed with our finite-difference operator (:class:`~vaedft.physics.ExactKineticFunctional`)
   in the file's lengths; ``u = F / T`` is 1 (E0) or 2 (``hbar^2/(2 m a0^2)``);
3. **consistency**: ``F + dx_f^d sum V n = energy`` in the file's units.

A file passes only if ``r`` is the same for every instance, ``u`` is within
:data:`UNIT_TOL` of 1 or 2 for every instance, and step 3 holds; otherwise it is refused
(:class:`ConversionError`) and nothing is written.  The conversion to our box and units:
lengths ``x -> x / r``, so ``n -> r^d n``, and energies ``E -> E r^2 / u`` (``V``, ``energy``,
``F`` alike).  What was found and done is recorded in the file's attributes (``origin =
"converted"``, ``source_*``, ``energy_unit``, ``energy_divisor``, ``length_scale``).

``vaedft validate --resolve N`` then re-solves N of the converted potentials with our solver:
agreement to 1e-6 E0 is what proves the conventions, not this module's detection.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..physics.testbeds import Testbed, get_testbed
from .store import DatasetError, file_attrs

__all__ = ["LAYOUTS", "UNIT_TOL", "ConversionError", "Conventions", "read_authors_npz", "detect_conventions",
           "convert_npz"]

#: The authors' layouts: name -> (density key, potential key, energy key, F key or None).
LAYOUTS = {"dft": ("density", "potential", "energy", "F"), "raw": ("dens", "speckle", "ene", None)}

#: Known energy units of the authors' files: divisor u -> name (the file's energy / u is in E0).
ENERGY_UNITS = {1.0: "E0 = hbar^2/(m a0^2)", 2.0: "hbar^2/(2 m a0^2) = E0/2"}

#: Largest relative deviation of ``F / T[sqrt(n)]`` from a known unit (1 or 2): room for a
#: different finite-difference stencil in the authors' solver, far from the factor-2 trap.
UNIT_TOL = 0.03

#: Relative tolerance of ``F + int V n = energy`` and of the per-instance normalisation cell.
CONSISTENCY_TOL = 1e-5


class ConversionError(DatasetError):
    """An authors' file that cannot be read or reconciled with our conventions (nothing was written)."""


@dataclass(frozen=True)
class Conventions:
    """What :func:`detect_conventions` found.

    Attributes:
        length_scale: ``r = dx_file / dx``: the file's lengths are ``r`` times ours.
        energy_divisor: ``u``: the file's energies (in its lengths) divided by ``u`` are in E0.
        energy_unit: the name of that unit.
        unit_ratio_range: min and max over instances of ``F / T[sqrt(n)]`` (before rounding to ``u``).
    """

    length_scale: float
    energy_divisor: float
    energy_unit: str
    unit_ratio_range: tuple[float, float]


def read_authors_npz(path: str | os.PathLike, testbed: Testbed) -> tuple[str, dict[str, np.ndarray]]:
    """Load an authors' ``.npz`` (no pickles) as ``(layout, {"density", "potential", "energy", "F"})``.

    Densities and potentials come back on the testbed's grid, ``(N, *grid)`` float64; ``F`` is
    None for the ``raw`` layout.  Raises :class:`ConversionError` for a file that is not a
    readable npz, has neither layout's keys, or whose shapes do not fit the testbed's grid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            layout = next((name for name, k in LAYOUTS.items() if {x for x in k if x} <= keys), None)
            if layout is None:
                raise ConversionError(
                    f"{path}: not in a known authors' layout: keys {sorted(keys)}; expected "
                    + " or ".join(str(sorted(x for x in k if x)) for k in LAYOUTS.values()))
            dk, vk, ek, fk = LAYOUTS[layout]
            raw = {"density": z[dk], "potential": z[vk], "energy": z[ek], "F": z[fk] if fk else None}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, ConversionError):
            raise
        raise ConversionError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    shape = testbed.grid.shape
    size = int(np.prod(shape))
    n = raw["energy"].shape[0] if raw["energy"].ndim == 1 else -1
    if n < 1:
        raise ConversionError(f"{path}: energies must be a non-empty vector, got shape {raw['energy'].shape}")
    out = {}
    for name in ("density", "potential"):
        a = raw[name]
        if a.shape[0] != n or int(np.prod(a.shape[1:])) != size:
            raise ConversionError(f"{path}: {name} has shape {a.shape}; {testbed.name} needs ({n}, {size}) or "
                                  f"({n}, {', '.join(map(str, shape))})")
        out[name] = np.asarray(a, dtype=np.float64).reshape(n, *shape)
    for name in ("energy", "F"):
        a = raw[name]
        if a is not None and a.shape != (n,):
            raise ConversionError(f"{path}: {name} has shape {a.shape}, expected ({n},)")
        out[name] = None if a is None else np.asarray(a, dtype=np.float64)
    for name, a in out.items():
        if a is not None and not np.all(np.isfinite(a)):
            raise ConversionError(f"{path}: {name} has NaN or inf values")
    if np.any(out["density"] < 0):
        raise ConversionError(f"{path}: negative density values")
    return layout, out


def _kinetic(density: np.ndarray, testbed: Testbed, chunk: int = 512) -> np.ndarray:
    """``T[sqrt(n)]`` (E0) of densities normalised on our grid, with our operator, in float64."""
    import torch

    from ..physics.kinetic import ExactKineticFunctional

    f = ExactKineticFunctional(testbed.grid)
    out = []
    with torch.no_grad():
        for lo in range(0, len(density), chunk):
            out.append(f(torch.from_numpy(density[lo : lo + chunk])).numpy())
    return np.concatenate(out)


def _interaction(arrays: dict[str, np.ndarray], cell: float) -> np.ndarray:
    """``cell * sum(V n)`` per instance: the potential energy in the file's units and cell."""
    n = len(arrays["energy"])
    return cell * (arrays["potential"] * arrays["density"]).reshape(n, -1).sum(axis=1)


def _file_F(arrays: dict[str, np.ndarray], cell: float) -> np.ndarray:
    """The file's ``F``, or ``energy - int V n`` for the raw layout, which has none."""
    return arrays["F"] if arrays.get("F") is not None else arrays["energy"] - _interaction(arrays, cell)


def detect_conventions(arrays: dict[str, np.ndarray], testbed: Testbed, *, where: str = "file") -> Conventions:
    """The length scale and energy unit of an authors' file (module docstring), or :class:`ConversionError`."""
    grid = testbed.grid
    d = grid.ndim
    n, e = arrays["density"], arrays["energy"]
    sums = n.reshape(len(n), -1).sum(axis=1)
    if np.any(sums <= 0):
        raise ConversionError(f"{where}: a density is zero everywhere")
    cell = sums ** (-1.0 / d)  # dx_f of every instance
    r = float(np.median(cell)) / grid.dx
    spread = float(np.max(np.abs(cell / np.median(cell) - 1)))
    if spread > CONSISTENCY_TOL:
        raise ConversionError(f"{where}: the densities are not normalised alike (their cells differ by "
                              f"{spread:.2g} relative); cannot find the file's length unit")
    cell_f = (r * grid.dx) ** d
    vint = _interaction(arrays, cell_f)
    F = _file_F(arrays, cell_f)
    scale = np.maximum(1.0, np.abs(e))
    worst = float(np.max(np.abs(F + vint - e) / scale))
    if worst > CONSISTENCY_TOL:
        raise ConversionError(f"{where}: F + int V n differs from the energy by up to {worst:.3g} (relative), "
                              f"with the cell dx^{d} the density normalisation implies (dx = {r * grid.dx:.6g})")
    t_file = _kinetic(n * r**d, testbed) / r**2  # T[sqrt(n)] in E0, in the file's lengths
    ratio = F / t_file
    lo, hi = float(ratio.min()), float(ratio.max())
    u = min(ENERGY_UNITS, key=lambda k: abs(np.median(ratio) / k - 1))
    if max(abs(lo / u - 1), abs(hi / u - 1)) > UNIT_TOL:
        raise ConversionError(
            f"{where}: F is {lo:.4g} to {hi:.4g} times the kinetic energy of sqrt(n) (our operator, file lengths "
            f"{r:.4g} x ours): not a known energy unit ({', '.join(ENERGY_UNITS.values())}) within {UNIT_TOL:.0%}")
    return Conventions(length_scale=r, energy_divisor=u, energy_unit=ENERGY_UNITS[u], unit_ratio_range=(lo, hi))


def convert_npz(source: str | os.PathLike, testbed: str | Testbed, out: str | os.PathLike, *,
                overwrite: bool = False, record: dict | None = None, limit: int | None = None) -> Path:
    """Convert an authors' ``.npz`` into a vaedft HDF5 dataset (schema of ``datasets/README.md``).

    Args:
        source: the ``.npz`` file.
        testbed: ``"gaussian1d"``, ``"speckle1d"``, ``"gaussian3d"`` or a testbed config (fixes the grid).
        out: the HDF5 file to write (atomically: a temporary name, renamed when complete).
        overwrite: replace an existing ``out``.
        record: extra provenance attributes (e.g. ``{"source_doi": ...}``), strings.
        limit: keep only the first ``limit`` instances (all if the file has fewer; the
            conventions are detected on every instance either way).

    Returns:
        ``out``.  The file has ``seed = -1``, ``origin = "converted"``, no generator ``params`` (the
        authors' files do not have them), a ``residual`` per instance (``||H psi - e psi||`` of
        ``psi = sqrt(n)`` with our operator, E0: small only where the authors' discretisation is ours),
        and the detected conventions in its attributes.
    """
    import pooch

    testbed = get_testbed(testbed) if isinstance(testbed, str) else testbed
    source, out = Path(source), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another output or pass --overwrite")
    layout, arrays = read_authors_npz(source, testbed)
    conv = detect_conventions(arrays, testbed, where=str(source))
    n_source = len(arrays["energy"])
    if limit is not None:
        arrays = {k: None if v is None else v[:limit] for k, v in arrays.items()}
    r, u, d = conv.length_scale, conv.energy_divisor, testbed.grid.ndim
    F_file = _file_F(arrays, (r * testbed.grid.dx) ** d)
    to_e0 = r**2 / u
    fields = {"potential": arrays["potential"] * to_e0, "density": arrays["density"] * r**d,
              "energy": arrays["energy"] * to_e0, "F": F_file * to_e0}
    fields["residual"] = _residuals(fields, testbed)
    attrs = file_attrs(testbed, n=len(fields["energy"]), seed=-1)
    attrs.update(origin="converted", source_file=source.name, source_instances=n_source,
                 source_sha256=pooch.file_hash(str(source), alg="sha256"), source_layout=layout,
                 energy_unit=conv.energy_unit, energy_divisor=float(u), length_scale=float(r),
                 unit_ratio_min=conv.unit_ratio_range[0], unit_ratio_max=conv.unit_ratio_range[1],
                 field_dtype="float64", solver="none (converted)", conversion=(
                     f"lengths / {r:.6g}, energies x {r:.6g}^2 / {u:g}; densities x {r:.6g}^{d}"))
    attrs.update({k: str(v) for k, v in (record or {}).items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        with h5py.File(tmp, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = v
            for name, a in fields.items():
                f.create_dataset(name, data=a)
            f.create_group("params")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _residuals(fields: dict[str, np.ndarray], testbed: Testbed, chunk: int = 512) -> np.ndarray:
    """``||H psi - e psi||`` (unit-norm ``psi = sqrt(n)``, E0) of every converted instance with our operator."""
    import torch

    from ..physics.hamiltonian import KineticOperator

    grid = testbed.grid
    op = KineticOperator(grid, torch.device("cpu"), torch.float64)
    out = []
    for lo in range(0, len(fields["energy"]), chunk):
        sl = slice(lo, lo + chunk)
        psi = torch.from_numpy(np.sqrt(fields["density"][sl] * grid.cell_volume))
        v = torch.from_numpy(fields["potential"][sl])
        e = torch.from_numpy(fields["energy"][sl]).reshape(-1, *([1] * grid.ndim))
        res = op.apply(psi) + v * psi - e * psi
        out.append(res.flatten(1).norm(dim=1).numpy())
    return np.concatenate(out)
