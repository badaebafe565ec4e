"""HDF5 schema of vaedft datasets: writing, reading and validation.

One file per dataset (documented in ``datasets/README.md``):

* datasets ``potential`` (N, *grid) and ``density`` (N, *grid) (float64 by default),
  ``energy`` (N,) and ``F`` (N,) = energy - dx^d sum(V n) (float64), ``residual`` (N,)
  (solver residual, E0);
* group ``params`` with each instance's generator parameters (shapes ``(N, ...)``);
* file attributes ``testbed``, ``box_length``, ``grid_shape``, ``dx``, ``boundary``,
  ``stencil_points``, ``seed``, ``units``, ``vaedft_version``, ``n_instances``,
  ``test_set`` and every field of the testbed config (``sign``, ``V0``, ``n_gauss``,
  ``sigma``, ...).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np

from ..physics.testbeds import Testbed, get_testbed

__all__ = [
    "FIELDS",
    "REQUIRED_ATTRS",
    "UNITS",
    "DatasetError",
    "open_hdf5",
    "plain_value",
    "file_attrs",
    "read_attrs",
    "read_arrays",
    "testbed_from_attrs",
    "validate_dataset",
]

UNITS = "hbar = m = a0 = 1; energies in E0 = hbar^2/(m a0^2) (Hartree for electrons), lengths in a0"
FIELDS = ("potential", "density")
SCALARS = ("energy", "F", "residual")
REQUIRED_ATTRS = (
    "testbed", "box_length", "grid_shape", "dx", "boundary", "stencil_points",
    "seed", "units", "vaedft_version", "n_instances", "test_set",
)
NORM_TOL = 1e-9


class DatasetError(ValueError):
    """A dataset file that does not follow the schema or fails a physics check."""


def file_attrs(testbed: Testbed, *, n: int, seed: int, test_set: str = "none") -> dict:
    """The attributes every dataset file carries (seed -1 marks a fixed test set)."""
    from .. import __version__

    grid = testbed.grid
    attrs = testbed.attrs()
    attrs.update(
        testbed=testbed.name,
        box_length=float(grid.box_length),
        grid_shape=np.asarray(grid.shape, dtype=np.int64),
        dx=float(grid.dx),
        boundary=grid.boundary,
        stencil_points=int(grid.stencil_points),
        seed=int(seed),
        units=UNITS,
        vaedft_version=__version__,
        n_instances=int(n),
        test_set=test_set,
    )
    return attrs


def plain_value(value):
    """An HDF5 attribute value as a plain Python value (str, list, int, float)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_hdf5(path: Path, error: type[Exception] = DatasetError) -> h5py.File:
    """Open an HDF5 file for reading, or raise ``error`` saying it is missing or unreadable."""
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise error(f"{path}: not a readable HDF5 file ({exc})") from None


def read_attrs(path: str | Path) -> dict:
    """File attributes as plain Python values."""
    with h5py.File(path, "r") as f:
        return {k: plain_value(v) for k, v in f.attrs.items()}


def testbed_from_attrs(attrs: dict) -> Testbed:
    """Rebuild the testbed config that wrote a file; refuses unknown testbeds or fields."""
    base = get_testbed(attrs.get("testbed"))
    changes = {}
    for f in dataclasses.fields(base):
        if f.name not in attrs:
            raise DatasetError(f"attribute {f.name!r} of testbed {base.name} is missing")
        val = attrs[f.name]
        changes[f.name] = tuple(val) if isinstance(val, list) else val
    try:
        return base.replace(**changes)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"invalid {base.name} config in file: {exc}") from None


def read_arrays(path: str | Path, names=("potential", "density", "energy", "F"), sl=slice(None)) -> dict:
    """Read some datasets (optionally a slice of instances) into memory."""
    with h5py.File(path, "r") as f:
        return {n: f[n][sl] for n in names}


def validate_dataset(path: str | Path, *, physics: bool = True, chunk: int = 1024) -> dict:
    """Check a dataset file against the schema (and, by default, its physics).

    Physics checks, streamed in chunks: finite values, ``n >= 0``, ``dx^d sum n = 1``,
    ``F + dx^d sum(V n) = energy``.

    Returns:
        The file attributes (plain values).

    Raises:
        DatasetError: with a message naming the first problem found.
    """
    path = Path(path)
    with open_hdf5(path, DatasetError) as f:
        attrs = {k: plain_value(v) for k, v in f.attrs.items()}
        missing = [a for a in REQUIRED_ATTRS if a not in attrs]
        if missing:
            raise DatasetError(f"{path}: missing attributes {missing}")
        testbed = testbed_from_attrs(attrs)
        grid = testbed.grid
        if tuple(attrs["grid_shape"]) != grid.shape or not np.isclose(attrs["dx"], grid.dx, rtol=1e-12):
            raise DatasetError(f"{path}: grid_shape/dx attributes disagree with the {testbed.name} config")
        n = int(attrs["n_instances"])
        for name in FIELDS + SCALARS:
            if name not in f:
                raise DatasetError(f"{path}: missing dataset {name!r}")
            want = (n, *grid.shape) if name in FIELDS else (n,)
            if f[name].shape != want:
                raise DatasetError(f"{path}: dataset {name!r} has shape {f[name].shape}, expected {want}")
        if "params" not in f:
            raise DatasetError(f"{path}: missing group 'params'")
        converted = attrs.get("origin") == "converted"  # the authors' files carry no generator parameters
        for key, (shape, _) in ({} if converted else testbed.param_shapes()).items():
            if key not in f["params"] or f["params"][key].shape != (n, *shape):
                got = f["params"][key].shape if key in f["params"] else None
                raise DatasetError(f"{path}: params/{key} has shape {got}, expected {(n, *shape)}")
        if physics:
            for lo in range(0, n, chunk):
                sl = slice(lo, min(lo + chunk, n))
                v, d = f["potential"][sl].astype(np.float64), f["density"][sl].astype(np.float64)
                e, F = f["energy"][sl], f["F"][sl]
                for name, arr in (("potential", v), ("density", d), ("energy", e), ("F", F)):
                    if not np.all(np.isfinite(arr)):
                        raise DatasetError(f"{path}: {name} has NaN/inf in instances {sl.start}..{sl.stop - 1}")
                if np.any(d < 0):
                    raise DatasetError(f"{path}: negative density values")
                tol = NORM_TOL if f["density"].dtype == np.float64 else 1e-5
                norm = grid.integrate(d)
                if np.max(np.abs(norm - 1.0)) > tol:
                    raise DatasetError(f"{path}: density normalisation off by {np.max(np.abs(norm - 1)):.3g}")
                vint = grid.integrate(v * d)
                scale = np.maximum(1.0, np.abs(e))
                if np.max(np.abs(F + vint - e) / scale) > tol:
                    raise DatasetError(f"{path}: F + int V n differs from energy")
    return attrs


def manifest_text(attrs: dict) -> str:
    """Canonical JSON of the attributes that identify a dataset (for resume checks)."""
    keep = {k: plain_value(v) for k, v in attrs.items() if k != "vaedft_version"}
    return json.dumps(keep, sort_keys=True, default=str)


def resolve_check(path: str | Path, n: int, *, tol: float = 1e-6, backend: str = "auto") -> dict:
    """Re-solve ``n`` instances of a dataset with our solver and compare their energies.

    The instances are evenly spaced over the file (the first and the last included).  This is
    how a converted file's unit conventions are proven: its energies must be the ground-state
    energies of its own potentials on our grid with our operator.

    Returns:
        ``{"indices", "max_abs_diff" (E0), "energy_file", "energy_solver"}``.

    Raises:
        DatasetError: if any energy differs by more than ``tol`` E0 (the message names the worst instance).
    """
    from ..physics.eigensolver import ground_state

    path = Path(path)
    attrs = validate_dataset(path, physics=False)
    total = int(attrs["n_instances"])
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    idx = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))
    with open_hdf5(path) as f:
        v = f["potential"][idx].astype(np.float64)
        e_file = f["energy"][idx]
    e_solver = ground_state(v, testbed_from_attrs(attrs).grid, backend=backend).energy
    diff = np.abs(e_solver - e_file)
    worst = int(np.argmax(diff))
    if diff[worst] > tol:
        raise DatasetError(f"{path}: instance {idx[worst]}: our solver gives e = {e_solver[worst]:.10g} E0, the file "
                           f"{e_file[worst]:.10g} ({diff[worst]:.3g} apart, tolerance {tol:g}); "
                           f"{int((diff > tol).sum())} of {len(idx)} re-solved instances disagree")
    return {"indices": idx.tolist(), "max_abs_diff": float(diff.max()), "energy_file": e_file.tolist(),
            "energy_solver": e_solver.tolist()}

