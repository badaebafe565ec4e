"""Run directories of the training loop: what a finished run holds and how it is read back.

A run directory (written by :func:`vaedft.train.train`) holds ``config.json`` (kind, model and
training config, the dataset's path, sha256 and testbed), ``last.pt`` and ``best.pt`` (dicts of
tensors and plain numbers), ``state.json`` and ``history.csv``.  This module is the one place
that reads them: :func:`load_run` builds the model a run describes and loads its weights,
:func:`check_run_fits_data` refuses a dataset of another testbed or grid, and
:func:`load_checkpoint` opens a checkpoint with ``torch.load(weights_only=True)``, turning every
failure (a truncated file, a pickle that would run code) into a one-line
:class:`CheckpointError` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

from .data.store import read_attrs, testbed_from_attrs
from .models import VAE, Functional, FunctionalConfig, VAEConfig, config_from_dict
from .physics.backend import resolve_device

__all__ = [
    "KINDS",
    "DTYPES",
    "CheckpointError",
    "file_sha256",
    "atomic_json",
    "atomic_torch",
    "build_model",
    "check_grid",
    "load_checkpoint",
    "load_run",
    "check_run_fits_data",
]

KINDS = ("vae", "functional")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class CheckpointError(ValueError):
    """A run directory or checkpoint that does not match what is asked of it."""


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """sha256 of a file's content, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def atomic_torch(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build_model(kind: str, config: VAEConfig | FunctionalConfig) -> torch.nn.Module:
    if kind == "vae":
        return VAE(config)
    if kind == "functional":
        return Functional(config)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def check_grid(config, attrs: dict, what: str) -> None:
    testbed = testbed_from_attrs(attrs)
    grid = testbed.grid
    mismatch = []
    if config.ndim != grid.ndim:
        mismatch.append(f"ndim {config.ndim} vs {grid.ndim}")
    if config.grid_n != grid.n:
        mismatch.append(f"grid_n {config.grid_n} vs {grid.n}")
    if not math.isclose(config.dx, grid.dx, rel_tol=1e-12):
        mismatch.append(f"dx {config.dx} vs {grid.dx}")
    if config.boundary != grid.boundary:
        mismatch.append(f"boundary {config.boundary} vs {grid.boundary}")
    if mismatch:
        raise CheckpointError(f"{what} does not fit the {testbed.name} data: " + ", ".join(mismatch))


def load_checkpoint(path: str | Path, *, map_location="cpu") -> dict:
    """A checkpoint's content: a dict of tensors and plain numbers, read with ``weights_only=True``.

    Raises:
        CheckpointError: a missing, truncated or foreign file, or one that holds anything but
            tensors and plain data (a pickle that would run code is never executed), with a
            one-line message that names the file.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            reason = "it holds objects other than tensors and plain data (a pickle that could run code)"
        raise CheckpointError(f"{path} is not a vaedft checkpoint: {reason}; refusing to load it") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{path} is not a vaedft checkpoint (no 'model' weights)")
    return obj


def load_run(run_dir: str | Path, *, which: str = "best", device: str = "cpu", dtype: str | None = None):
    """Load a trained model from a run directory (``which``: ``"best"`` or ``"last"``).

    Returns:
        ``(model in eval mode, run config dict)``.

    Raises:
        CheckpointError: missing files, or weights that do not fit the recorded config.
    """
    run_dir = Path(run_dir)
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / f"{which}.pt"
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    if not cfg_path.exists() or not ckpt_path.exists():
        raise CheckpointError(f"{run_dir} is not a finished training run (needs config.json and {which}.pt)")
    run = json.loads(cfg_path.read_text())
    model_config = config_from_dict(run["model"])
    model = build_model(run["kind"], model_config)
    ckpt = load_checkpoint(ckpt_path)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{ckpt_path} does not match the model in config.json: {exc}") from None
    dt = DTYPES[dtype or run["train"]["dtype"]]
    model = model.to(device=resolve_device(device), dtype=dt).eval()
    return model, run


def check_run_fits_data(run: dict, data_path: str | Path) -> None:
    """Refuse a dataset whose testbed or grid differs from the one a run was trained on."""
    attrs = read_attrs(data_path)
    if attrs.get("testbed") != run["data"]["testbed"]:
        raise CheckpointError(
            f"{data_path} is {attrs.get('testbed')} data; the model was trained on {run['data']['testbed']}"
        )
    check_grid(config_from_dict(run["model"]), attrs, "the trained model")
