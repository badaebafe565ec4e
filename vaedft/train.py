"""One training loop for both networks: the beta-VAE and the DL functional.

Paper defaults (Sec. II A): Adam, learning rate 1e-4, batch 100, 1200 epochs, 80/20
train/validation split after a seeded shuffle; all overridable through :class:`TrainConfig`.

A run directory holds:

* ``config.json``: kind, model config, training config, the dataset's path, sha256 and testbed
  (written once; a rerun must match it, or it is refused);
* ``last.pt`` (weights, optimizer state, epoch, run state and loss history) and ``best.pt``
  (best-validation weights): dicts of tensors and plain numbers, each written atomically,
  loaded with ``weights_only=True``.  ``last.pt`` is all a resume needs;
* ``state.json`` (epoch reached, best epoch and loss, early-stopping flag, wall time) and
  ``history.csv`` (per-epoch losses, learning rate and cumulative wall time): readable views of
  ``last.pt``.

The recipe (:class:`TrainConfig`; the paper's constant learning rate is the default):

* learning-rate schedules from :mod:`torch.optim.lr_scheduler`, stepped once per epoch:
  ``constant``, or ``cosine`` decay from ``lr`` to ``lr_min`` over the epochs after the warm-up;
  ``warmup_epochs`` > 0 prepends a linear warm-up from ``lr / 10``;
* ``ema_decay``: an exponential moving average of the weights (and batch-norm buffers) kept by
  :class:`torch.optim.swa_utils.AveragedModel`, updated after every step.  The averaged weights
  are validated and are what ``best.pt`` and ``last.pt["model"]`` serve; the raw weights are kept
  in ``last.pt`` for the resume;
* ``derivative_weight`` (functional only): Sobolev training.  For a single-particle ground state
  the exact functional derivative is known from the data, ``dF/dn(x) = e - V(x)`` up to a
  constant (the chemical potential), so the loss gains ``w * mean_b dx^d sum_x (g - g_mean +
  V - V_mean)^2`` with ``g = dF_w/dn`` (autograd of ``F_w`` divided by ``dx^d``) by double
  backpropagation; the grid means remove the unknown constant;
* ``kinetic_weight`` (VAE only): the loss gains ``w * <dpsi| T |dpsi>`` (E0), the reconstruction's
  error in the kinetic-energy norm (:func:`~vaedft.models.kinetic_error`, ``dpsi = sqrt(n_hat) -
  sqrt(n)``, ``T`` the testbed's finite-difference kinetic operator).  It is the kinetic part of
  the reconstruction's energy excess over the ground state, which the squared error weighs little:
  a decoder can be close in density and far in energy.  Not the paper's (0: off);
* ``head_ridge`` (functional only): when the last epoch is done, the functional's linear head is
  replaced by the closed-form ridge regression of F on the trained features of the training split
  (:meth:`~vaedft.models.functional.Functional.refit_head`), and that network is what ``best.pt``
  and ``last.pt["model"]`` serve; ``state.json`` records the validation loss before and after under
  ``head_refit`` (with ``accepted`` False and the weights left as they were if the new head does not
  fit the training split better).  A run killed before the refit is saved does it on the rerun.

Resuming: rerun the same command.  The data order and the reparameterisation noise of
epoch ``e`` are pure functions of ``(seed, e)``, and weights, optimizer and batch-norm
statistics are restored exactly, so an interrupted run ends bit-identical (on a CPU) to an
uninterrupted one.  Nothing syncs with the host inside an epoch: losses accumulate on the
device and are read once per epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from . import __version__
from .data.store import testbed_from_attrs, validate_dataset
from .models import (
    FunctionalConfig,
    VAEConfig,
    from_testbed,
    functional_from_testbed,
    functional_loss,
    kinetic_error,
    vae_loss,
)
from .physics.backend import resolve_device
from .physics.hamiltonian import KineticOperator
from .progress import progress_bar
from .runs import DTYPES, KINDS, CheckpointError, build_model, check_grid, file_sha256, load_checkpoint, load_run
from .runs import atomic_json as _atomic_json
from .runs import atomic_torch as _atomic_torch

__all__ = ["KINDS", "TrainConfig", "train", "train_step", "load_run", "file_sha256", "CheckpointError"]

SCHEDULES = ("constant", "cosine")
#: Settings added after the first release; left out of ``TrainConfig.to_dict`` at their defaults.
RECIPE_FIELDS = ("schedule", "lr_min", "warmup_epochs", "ema_decay", "derivative_weight", "head_ridge",
                 "kinetic_weight")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper defaults).

    Attributes:
        epochs: passes over the training split.
        lr: Adam learning rate.
        batch_size: instances per step.
        val_fraction: share of the (shuffled) dataset held out for validation.
        seed: fixes the split, the initial weights, the data order and the VAE noise.
        dtype: ``"float32"`` (default) or ``"float64"``.
        beta: weight of the KL term (VAE only).
        patience: stop after this many epochs without a better validation loss (None: never).
        n_limit: use only the first ``n_limit`` instances of the file (None: all).
        schedule: ``"constant"`` (paper) or ``"cosine"`` (to ``lr_min`` at the last epoch).
        lr_min: final learning rate of the cosine schedule.
        warmup_epochs: linear warm-up from ``lr / 10`` to ``lr`` over this many epochs (0: none).
        ema_decay: decay of the weight average that the checkpoints serve (None: no averaging).
        derivative_weight: weight of the functional-derivative (Sobolev) loss, in units of
            ``E0^-1 a0^-d`` times the F loss (functional only; 0: off, the paper).
        head_ridge: after the last epoch, refit the functional's head by ridge regression with
            this penalty (standardised features; e.g. 1e-6; None: off, the paper).
        kinetic_weight: weight of the kinetic-energy-norm reconstruction error, in ``E0^-1`` times
            the squared error (VAE only; 0: off, the paper).

    ``to_dict`` leaves out the recipe fields that hold their defaults, so the runs and cached
    artifacts made before they existed keep their identity.
    """

    epochs: int = 1200
    lr: float = 1e-4
    batch_size: int = 100
    val_fraction: float = 0.2
    seed: int = 0
    dtype: str = "float32"
    beta: float = 1.0
    patience: int | None = None
    n_limit: int | None = None
    schedule: str = "constant"
    lr_min: float = 0.0
    warmup_epochs: int = 0
    ema_decay: float | None = None
    derivative_weight: float = 0.0
    head_ridge: float | None = None
    kinetic_weight: float = 0.0

    def __post_init__(self) -> None:
        def positive_int(name, allow_none=False):
            v = getattr(self, name)
            if allow_none and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        for name in ("epochs", "batch_size"):
            positive_int(name)
        for name in ("patience", "n_limit"):
            positive_int(name, allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not (0.0 < self.val_fraction < 1.0):
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (isinstance(self.lr_min, (int, float)) and math.isfinite(self.lr_min) and 0 <= self.lr_min <= self.lr):
            raise ValueError(f"lr_min must lie in [0, lr = {self.lr}], got {self.lr_min!r}")
        w = self.warmup_epochs
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or not 0 <= w < self.epochs:
            raise ValueError(f"warmup_epochs must be an integer in [0, epochs = {self.epochs}), got {w!r}")
        d = self.ema_decay
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < d < 1.0):
            raise ValueError(f"ema_decay must lie in (0, 1) or be None, got {d!r}")
        for name in ("derivative_weight", "kinetic_weight"):
            w = getattr(self, name)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
        r = self.head_ridge
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))
                              or not (math.isfinite(r) and r >= 0)):
            raise ValueError(f"head_ridge must be a finite number >= 0 or None, got {r!r}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.name in RECIPE_FIELDS and out[f.name] == f.default:
                del out[f.name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        return cls(**data)


def _stream(seed: int, epoch: int, what: int) -> int:
    """A 63-bit seed for one (seed, epoch, purpose) stream."""
    return int(np.random.SeedSequence(seed, spawn_key=(epoch, what)).generate_state(1, np.uint64)[0] >> 1)


def _write_views(out: Path, state: dict, history: list[dict]) -> None:
    """The human-readable views of a checkpoint: state.json and history.csv."""
    tmp = out / "history.csv.tmp"
    pd.DataFrame(history).to_csv(tmp, index=False)
    os.replace(tmp, out / "history.csv")
    _atomic_json(out / "state.json", state)


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31,))).permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < 1:
        raise ValueError(f"{n} instances are too few for a train/validation split")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _load_tensors(path: Path, kind: str, n: int, dtype, device, potential: bool = False):
    """``(densities, F or None, V or None)`` of the first ``n`` instances, on the device."""
    def field(f, name):
        return torch.from_numpy(np.asarray(f[name][:n], dtype=np.float64)).to(device=device, dtype=dtype)

    with h5py.File(path, "r") as f:
        dens = field(f, "density")
        target = field(f, "F") if kind == "functional" else None
        V = field(f, "potential") if potential else None
    return dens, target, V


def derivative_loss(model, x: torch.Tensor, V: torch.Tensor, *, create_graph: bool = True):
    """``(F_w[x], loss)``: the functional's values ``(B,)`` and the mean squared error of its
    derivative against the exact one, a scalar in E0^2 a0^d.

    For a ground state ``n`` of ``-1/2 Laplacian + V`` the exact derivative is ``e - V(x)``:
    the loss is ``mean_b dx^d sum_x (g - <g> + V - <V>)^2`` with ``g = dF_w/dn`` (the gradient of
    ``F_w`` divided by the cell volume ``dx^d``) and ``<.>`` the grid mean, which removes the
    unknown constant.  ``x`` and ``V`` are ``(B, *grid)``; ``create_graph`` keeps the graph for
    the second backward pass of training (works under ``torch.no_grad`` too, for validation).
    """
    cell = model.config.cell_volume
    dims = tuple(range(1, x.dim()))
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        pred = model(xr, validate=False)
        (g,) = torch.autograd.grad(pred.sum(), xr, create_graph=create_graph)
    g = g / cell
    r = (g - g.mean(dim=dims, keepdim=True)) + (V - V.mean(dim=dims, keepdim=True))
    return pred, cell * r.square().sum(dim=dims).mean()


def _losses(kind, model, x, y, beta, generator, v=None, derivative_weight=0.0, kinetic=None):
    """(total, parts) for one batch; parts are detached per-batch values for the history
    (VAE: reconstruction, KL, and the kinetic-norm error when ``kinetic = (weight, error(n_hat, n))``
    is given; functional with the derivative loss: F loss, derivative loss)."""
    if kind == "vae":
        n_hat, mu, logvar = model(x, generator=generator, validate=False)
        total, rec, kl = vae_loss(n_hat, x, mu, logvar, beta)
        if kinetic is None:
            return total, (rec.detach(), kl.detach())
        weight, error = kinetic
        kin = error(n_hat, x)
        return total + weight * kin, (rec.detach(), kl.detach(), kin.detach())
    if derivative_weight:
        pred, dloss = derivative_loss(model, x, v, create_graph=torch.is_grad_enabled())
        floss = functional_loss(pred, y)
        return floss + derivative_weight * dloss, (floss.detach(), dloss.detach())
    pred = model(x, validate=False)
    return functional_loss(pred, y), ()


def train_step(kind, model, opt, x, y, beta, noise, sums, *, v=None, derivative_weight=0.0, ema=None,
               kinetic=None) -> None:
    """One optimisation step on a batch; adds ``(loss, *parts) * batch size`` to ``sums`` (length
    >= 1 + number of parts) on the device (no host sync); updates the weight average ``ema`` if
    given.  The training loop and the throughput benchmark share it."""
    loss, parts = _losses(kind, model, x, y, beta, noise, v, derivative_weight, kinetic)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if ema is not None:
        ema.update_parameters(model)
    k = x.shape[0]
    sums[0] += loss.detach() * k
    for j, p in enumerate(parts, 1):
        sums[j] += p * k


def make_scheduler(opt: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch learning-rate schedule of ``config`` (see the module docstring)."""
    sched = torch.optim.lr_scheduler
    w = config.warmup_epochs
    if config.schedule == "cosine":
        main = sched.CosineAnnealingLR(opt, T_max=max(1, config.epochs - w - 1), eta_min=config.lr_min)
    else:
        main = sched.ConstantLR(opt, factor=1.0, total_iters=0)
    if w == 0:
        return main
    warm = sched.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=w)
    return sched.SequentialLR(opt, [warm, main], milestones=[w])


def make_ema(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """Exponential moving average of ``model``'s weights and buffers (batch-norm statistics)."""
    swa = torch.optim.swa_utils
    return swa.AveragedModel(model, multi_avg_fn=swa.get_ema_multi_avg_fn(decay), use_buffers=True)


def train(
    kind: str,
    data: str | Path,
    out: str | Path,
    *,
    model_config: VAEConfig | FunctionalConfig | None = None,
    latent_dim: int | None = None,
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    progress: bool = True,
    max_epochs_this_call: int | None = None,
) -> dict:
    """Train a VAE or a functional on a dataset file; resumable.

    Args:
        kind: ``"vae"`` or ``"functional"``.
        data: HDF5 dataset from ``vaedft generate``.
        out: run directory (created; an existing one must hold the same run).
        model_config: architecture; default the paper's for the dataset's testbed.
        latent_dim: VAE latent size when ``model_config`` is not given (default: the paper's).
        config: optimisation settings.
        device: ``auto``, ``cpu``, ``cuda``.
        progress: show a progress bar.
        max_epochs_this_call: stop after this many epochs even if unfinished (resumable
            later; for time-boxed jobs and tests).

    Returns:
        The final ``state.json`` content.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    data, out = Path(data), Path(out)
    attrs = validate_dataset(data)
    if model_config is None:
        model_config = from_testbed(attrs, latent_dim) if kind == "vae" else functional_from_testbed(attrs)
    elif latent_dim is not None:
        raise ValueError("give either model_config or latent_dim, not both")
    if kind == "functional" and latent_dim is not None:
        raise ValueError("latent_dim applies to the VAE only")
    expected = VAEConfig if kind == "vae" else FunctionalConfig
    if not isinstance(model_config, expected):
        raise ValueError(f"a {kind} needs a {expected.__name__}, got {type(model_config).__name__}")
    check_grid(model_config, attrs, "model config")
    n_total = int(attrs["n_instances"])
    n = min(n_total, config.n_limit) if config.n_limit else n_total

    dev = resolve_device(device)
    dtype = DTYPES[config.dtype]
    run = {
        "kind": kind,
        "model": model_config.to_dict(),
        "train": config.to_dict(),
        "data": {"path": str(data.resolve()), "sha256": file_sha256(data), "testbed": attrs["testbed"],
                 "n_instances": n},
        "vaedft_version": __version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        for key in ("kind", "model", "train"):
            if old.get(key) != run[key]:
                raise CheckpointError(f"{out} holds a different run ({key} differs); choose another --out")
        if old["data"]["sha256"] != run["data"]["sha256"] or old["data"]["n_instances"] != n:
            raise CheckpointError(f"{out} was trained on other data ({old['data']['path']}); choose another --out")
    else:
        _atomic_json(cfg_path, run)

    if kind == "vae" and config.derivative_weight:
        raise ValueError("derivative_weight applies to the functional only")
    if kind == "vae" and config.head_ridge is not None:
        raise ValueError("head_ridge applies to the functional only")
    if kind == "functional" and config.kinetic_weight:
        raise ValueError("kinetic_weight applies to the VAE only")
    train_idx, val_idx = _split(n, config.val_fraction, config.seed)
    dens, target, pot = _load_tensors(data, kind, n, dtype, dev, potential=bool(config.derivative_weight))
    ti, vi = torch.as_tensor(train_idx, device=dev), torch.as_tensor(val_idx, device=dev)
    x_tr, x_val = dens[ti], dens[vi]
    y_tr, y_val = (None, None) if target is None else (target[ti], target[vi])
    v_tr, v_val = (None, None) if pot is None else (pot[ti], pot[vi])
    del dens, target, pot

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(kind, model_config)
    if kind == "functional":
        model.set_target_scaling(float(y_tr.mean()), float(y_tr.std()) if len(y_tr) > 1 else 1.0)
    model = model.to(device=dev, dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = make_scheduler(opt, config)
    ema = make_ema(model, config.ema_decay) if config.ema_decay is not None else None
    served = model if ema is None else ema.module  # the weights validated and checkpointed

    state = {"epoch": 0, "best_epoch": None, "best_val_loss": None, "stopped_early": False,
             "finished": False, "wall_time_s": 0.0}
    history: list[dict] = []
    last = out / "last.pt"
    if last.exists():
        ckpt = load_checkpoint(last, map_location=dev)
        try:
            model.load_state_dict(ckpt["train_model"] if ema is not None else ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            if "scheduler" in ckpt:
                scheduler.load_state_dict(ckpt["scheduler"])
            else:  # a checkpoint from before schedules existed: replay the (deterministic) schedule
                for _ in range(int(ckpt["epoch"])):
                    scheduler.step()
            if ema is not None:
                ema.load_state_dict(ckpt["ema"])
            state, history = dict(ckpt["state"]), [dict(r) for r in ckpt["history"]]
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{last} does not fit this run: {exc}") from None
        _write_views(out, state, history)  # a crash may have left them behind last.pt

    def refit_once() -> dict:
        """The head refit of a finished run, once (a rerun after a kill before it does it)."""
        if not (state["finished"] and config.head_ridge is not None and "head_refit" not in state):
            return state
        t_refit = time.perf_counter()
        served.eval()
        chunk = max(4 * config.batch_size, 256)

        def val_loss() -> float:
            pred = torch.cat([served(x_val[i : i + chunk], validate=False) for i in range(0, len(x_val), chunk)])
            return float(functional_loss(pred, y_val))

        with torch.no_grad():
            before = val_loss()
            info = served.refit_head(x_tr, y_tr, config.head_ridge, batch_size=chunk)
            info.update(val_loss_before=before, val_loss=val_loss())
        state["head_refit"] = info
        state["wall_time_s"] += time.perf_counter() - t_refit
        ckpt = load_checkpoint(last, map_location=dev)
        ckpt["state"] = dict(state)
        if info["accepted"]:  # a rejected refit leaves both checkpoints' weights as they were
            ckpt["model"] = served.state_dict()
            _atomic_torch(out / "best.pt", {"model": served.state_dict(), "epoch": state["epoch"]})
        _atomic_torch(last, ckpt)
        _write_views(out, state, history)
        return state

    if state["finished"]:
        return refit_once()

    kinetic = None
    if config.kinetic_weight:
        op = KineticOperator(testbed_from_attrs(attrs).grid, dev, dtype)
        kinetic = (config.kinetic_weight, functools.partial(kinetic_error, kinetic=op))
    if kind == "vae":
        part_names = ("rec", "kl", "kin") if kinetic else ("rec", "kl")
    else:
        part_names = ("f", "deriv") if config.derivative_weight else ()
    n_tr = x_tr.shape[0]
    bs = config.batch_size
    noise = torch.Generator(device=dev)
    start_epoch = state["epoch"]
    stop_at = config.epochs if max_epochs_this_call is None else min(config.epochs, start_epoch + max_epochs_this_call)
    t0 = time.perf_counter()
    bar = progress_bar(total=config.epochs, initial=start_epoch, desc=f"train {kind}", unit="epoch",
                       disable=not progress)
    try:
        for epoch in range(start_epoch, stop_at):
            lr_now = opt.param_groups[0]["lr"]
            model.train()
            order_gen = torch.Generator().manual_seed(_stream(config.seed, epoch, 0))
            order = torch.randperm(n_tr, generator=order_gen).to(dev)
            noise.manual_seed(_stream(config.seed, epoch, 1))
            sums = torch.zeros(1 + len(part_names), dtype=torch.float64, device=dev)
            for lo in range(0, n_tr, bs):
                idx = order[lo : lo + bs]
                train_step(kind, model, opt, x_tr[idx], None if y_tr is None else y_tr[idx], config.beta, noise, sums,
                           v=None if v_tr is None else v_tr[idx], derivative_weight=config.derivative_weight, ema=ema,
                           kinetic=kinetic)
            scheduler.step()
            served.eval()
            vsums = torch.zeros(1 + len(part_names), dtype=torch.float64, device=dev)
            with torch.no_grad():
                for lo in range(0, x_val.shape[0], 4 * bs):
                    sl = slice(lo, lo + 4 * bs)
                    xv = x_val[sl]
                    loss, parts = _losses(kind, served, xv, None if y_val is None else y_val[sl], config.beta, None,
                                          None if v_val is None else v_val[sl], config.derivative_weight, kinetic)
                    vsums[0] += (parts[0] if kind == "functional" and parts else loss) * xv.shape[0]
                    for j, p in enumerate(parts, 1):
                        vsums[j] += p * xv.shape[0]
            tr = (sums / n_tr).tolist()  # the one host sync of the epoch
            va = (vsums / x_val.shape[0]).tolist()
            state["wall_time_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            # the functional's val_loss is the F loss alone, with or without the derivative term
            row = {"epoch": epoch + 1, "train_loss": tr[0], "val_loss": va[0]}
            row.update({f"train_{name}": tr[j] for j, name in enumerate(part_names, 1)})
            row.update({f"val_{name}": va[j] for j, name in enumerate(part_names, 1)})
            row.update(lr=lr_now, wall_time_s=state["wall_time_s"])
            history.append(row)
            if not math.isfinite(va[0]) or not math.isfinite(tr[0]):
                raise FloatingPointError(f"loss became {tr[0]} / {va[0]} at epoch {epoch + 1}; lower the lr")
            state["epoch"] = epoch + 1
            if state["best_val_loss"] is None or va[0] < state["best_val_loss"]:
                state["best_val_loss"], state["best_epoch"] = va[0], epoch + 1
                _atomic_torch(out / "best.pt", {"model": served.state_dict(), "epoch": epoch + 1})
            if config.patience is not None and epoch + 1 - state["best_epoch"] >= config.patience:
                state["stopped_early"] = True
            state["finished"] = state["stopped_early"] or state["epoch"] >= config.epochs
            # last.pt alone (one atomic write) is what a resume reads; state.json and
            # history.csv are views of it, rewritten on resume if a crash left them behind
            ckpt = {"model": served.state_dict(), "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1, "state": dict(state), "history": history}
            if ema is not None:
                ckpt.update(train_model=model.state_dict(), ema=ema.state_dict())
            _atomic_torch(last, ckpt)
            _write_views(out, state, history)
            bar.update(1)
            bar.set_postfix(train=f"{tr[0]:.3g}", val=f"{va[0]:.3g}", lr=f"{lr_now:.2g}")
            if state["stopped_early"]:
                break
    finally:
        bar.close()
    return refit_once()
