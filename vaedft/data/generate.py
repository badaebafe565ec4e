"""Exact ground-state datasets, generated in chunks, resumable, written to HDF5.

How a run survives interruption (even ``kill -9``): every chunk is solved and
written to its own part file ``OUT.parts/part-<lo>-<hi>.h5`` under a temporary name
and then renamed, so a part either exists whole or not at all.  Rerunning the same
command finds the parts, solves only the missing index ranges (with whatever chunk
size is asked for now), then assembles ``OUT.tmp`` and renames it to ``OUT``: only a
complete file ever carries the final name.  Instance ``i`` depends only on
``(testbed, seed, i)``, so the result does not depend on chunking or resumption.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from ..physics.eigensolver import DEFAULT_MAXITER, DEFAULT_TOL, ConvergenceError, ground_state
from ..physics.testbeds import Testbed
from ..progress import progress_bar
from ..rng import check_seed
from .snyder import load_snyder2012
from .store import FIELDS, file_attrs, manifest_text, read_attrs

__all__ = ["TEST_SETS", "generate_dataset", "default_chunk"]

TEST_SETS = ("snyder2012",)
_PART = re.compile(r"^part-(\d{9})-(\d{9})\.h5$")


def default_chunk(testbed: Testbed) -> int:
    """Instances per part file: about 2 M grid values (16 MB per float64 field)."""
    return int(max(1, 2_000_000 // int(np.prod(testbed.grid.shape))))


def _instance_source(testbed: Testbed, seed: int | None, test_set: str | None) -> Callable:
    if test_set is None:
        return lambda idx: testbed.sample_params(seed, idx)
    if test_set != "snyder2012":
        raise ValueError(f"unknown test set {test_set!r}; expected one of {TEST_SETS}")
    if testbed.name != "gaussian1d" or testbed.n_gauss != 3:
        raise ValueError(f"test set 'snyder2012' belongs to gaussian1d with 3 Gaussians, not {testbed.name}")
    table = load_snyder2012()
    return lambda idx: {k: v[idx] for k, v in table.items()}


def _done_ranges(parts: Path) -> list[tuple[int, int]]:
    """Index ranges already on disk; unreadable parts (cannot happen short of disk faults) are removed."""
    ranges = []
    for p in parts.iterdir():
        m = _PART.match(p.name)
        if not m:
            if p.name.endswith(".tmp"):
                p.unlink()  # a part that was being written when the run died
            continue
        try:
            with h5py.File(p, "r") as f:
                ok = f["energy"].shape == (int(m.group(2)) - int(m.group(1)),)
        except (OSError, KeyError):
            ok = False
        if ok:
            ranges.append((int(m.group(1)), int(m.group(2))))
        else:
            p.unlink()
    return sorted(ranges)


def _missing(ranges: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    for lo, hi in ranges:
        if lo > pos:
            out.append((pos, lo))
        pos = max(pos, hi)
    if pos < n:
        out.append((pos, n))
    return out


def _solve_part(testbed, source, lo, hi, *, backend, tol, maxiter, field_dtype) -> dict:
    idx = np.arange(lo, hi)
    params = source(idx)
    grid = testbed.grid
    v = testbed.potential(params)
    try:
        gs = ground_state(v, grid, backend=backend, tol=tol, maxiter=maxiter)
    except ConvergenceError as exc:
        bad = (exc.failed + lo).tolist()
        raise RuntimeError(
            f"instances {bad[:10]}{'...' if len(bad) > 10 else ''} did not converge (tol={tol:g}, "
            f"maxiter={maxiter}); the completed parts are kept: rerun with a larger --maxiter to continue"
        ) from None
    F = gs.energy - grid.integrate(v * gs.density)
    return {
        "potential": v.astype(field_dtype),
        "density": gs.density.astype(field_dtype),
        "energy": gs.energy,
        "F": F,
        "residual": gs.residual,
        "params": params,
    }


def _write_part(parts: Path, lo: int, hi: int, arrays: dict) -> None:
    final = parts / f"part-{lo:09d}-{hi:09d}.h5"
    tmp = final.with_name(final.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for k, val in arrays.items():
            if k == "params":
                g = f.create_group("params")
                for pk, pv in val.items():
                    g.create_dataset(pk, data=pv)
            else:
                f.create_dataset(k, data=val)
    os.replace(tmp, final)


def _assemble(out: Path, parts: Path, ranges, attrs: dict, testbed: Testbed, field_dtype) -> None:
    n = int(attrs["n_instances"])
    shape = testbed.grid.shape
    per_chunk = max(1, min(n, 131_072 // int(np.prod(shape))))  # ~1 MB HDF5 chunks
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w", track_order=True) as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        opts = {"track_times": False}
        for k in FIELDS:
            f.create_dataset(k, shape=(n, *shape), dtype=field_dtype, chunks=(per_chunk, *shape), **opts)
        for k in ("energy", "F", "residual"):
            f.create_dataset(k, shape=(n,), dtype=np.float64, **opts)
        g = f.create_group("params")
        for k, (pshape, dtype) in testbed.param_shapes().items():
            g.create_dataset(k, shape=(n, *pshape), dtype=dtype, **opts)
        for lo, hi in ranges:
            with h5py.File(parts / f"part-{lo:09d}-{hi:09d}.h5", "r") as p:
                for k in (*FIELDS, "energy", "F", "residual"):
                    f[k][lo:hi] = p[k][...]
                for k in g:
                    g[k][lo:hi] = p["params"][k][...]
        f.attrs["max_residual"] = float(np.max(f["residual"][...]))
    os.replace(tmp, out)


def generate_dataset(
    testbed: Testbed,
    out: str | Path,
    *,
    n: int | None = None,
    seed: int | None = None,
    test_set: str | None = None,
    backend: str = "auto",
    chunk: int | None = None,
    field_dtype: str = "float64",
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Solve ``n`` instances of ``testbed`` exactly and store them in ``out`` (HDF5).

    Args:
        testbed: the testbed config.
        out: destination file; only the complete file is ever given this name.
        n, seed: number of random instances and the seed (omit both for a test set).
        test_set: ``"snyder2012"`` for the paper's 100 gaussian1d test potentials.
        backend: solver backend (``auto``, ``cpu``, ``cuda``).
        chunk: instances per part file (default :func:`default_chunk`); any value gives the
            same file.
        field_dtype: ``float64`` (default) or ``float32`` for ``potential`` and ``density``.
        tol, maxiter: solver convergence settings (stored in the file).
        overwrite: replace an existing ``out`` whose settings differ.
        progress: show a progress bar.

    Returns:
        The path of the finished file.  If ``out`` already holds a dataset made with the
        same settings it is left as it is.
    """
    out = Path(out)
    if test_set is not None:
        if n is not None or seed is not None:
            raise ValueError("a test set fixes its instances: give no --n or --seed with --test-set")
        source = _instance_source(testbed, None, test_set)
        n = len(load_snyder2012()["a"])
        seed_attr = -1
    else:
        if n is None or seed is None:
            raise ValueError("random datasets need both n (number of instances) and seed")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        seed_attr = check_seed(seed)
        source = _instance_source(testbed, seed_attr, None)
    n = int(n)
    chunk = default_chunk(testbed) if chunk is None else chunk
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if field_dtype not in ("float64", "float32"):
        raise ValueError(f"field_dtype must be 'float64' or 'float32', got {field_dtype!r}")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be positive, got {tol}")

    attrs = file_attrs(testbed, n=n, seed=seed_attr, test_set=test_set or "none")
    attrs.update(field_dtype=field_dtype, solver="lobpcg-fft (vaedft.physics.eigensolver)", solver_tol=float(tol))
    identity = manifest_text(attrs)

    if out.exists():
        try:
            same = manifest_text({k: v for k, v in read_attrs(out).items() if k != "max_residual"}) == identity
        except OSError:
            same = False
        if same and not overwrite:
            print(f"{out}: already complete with these settings; nothing to do", file=sys.stderr)
            return out
        if not overwrite:
            raise FileExistsError(f"{out} exists and was made with other settings; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = out.with_name(out.name + ".parts")
    manifest = parts / "manifest.json"
    if parts.exists():
        old = manifest.read_text() if manifest.exists() else None
        if old != identity:
            if not overwrite:
                raise FileExistsError(
                    f"{parts} holds a partial run with other settings; delete it, pass --overwrite, "
                    "or choose another output file"
                )
            shutil.rmtree(parts)
    parts.mkdir(exist_ok=True)
    if not manifest.exists():
        tmp = manifest.with_name("manifest.json.tmp")
        tmp.write_text(identity)
        os.replace(tmp, manifest)

    done = _done_ranges(parts)
    todo = _missing(done, n)
    n_done = n - sum(hi - lo for lo, hi in todo)
    desc = f"{testbed.name} ({test_set or f'seed {seed_attr}'})"
    with progress_bar(total=n, initial=n_done, desc=desc, unit="inst", disable=not progress, smoothing=0.1) as bar:
        for start, stop in todo:
            for lo in range(start, stop, chunk):
                hi = min(lo + chunk, stop)
                arrays = _solve_part(
                    testbed, source, lo, hi, backend=backend, tol=tol, maxiter=maxiter, field_dtype=field_dtype
                )
                _write_part(parts, lo, hi, arrays)
                bar.update(hi - lo)
    _assemble(out, parts, _done_ranges(parts), attrs, testbed, field_dtype)
    shutil.rmtree(parts)
    return out


def describe(path: str | Path) -> str:
    """A short human-readable summary of a dataset file."""
    attrs = read_attrs(path)
    with h5py.File(path, "r") as f:
        e = f["energy"][...]
    return json.dumps(
        {
            "testbed": attrs["testbed"],
            "n_instances": attrs["n_instances"],
            "grid_shape": attrs["grid_shape"],
            "seed": attrs["seed"],
            "test_set": attrs["test_set"],
            "energy_min": float(e.min()),
            "energy_mean": float(e.mean()),
            "energy_max": float(e.max()),
            "max_residual": attrs.get("max_residual"),
        },
        indent=2,
    )
