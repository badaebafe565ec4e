"""The recipe study: accuracy per CPU-minute of the paper's networks, with the error budget.

Trains the paper's architectures (Tables I/II) with the CPU recipe (Adam, cosine learning-rate
decay from 1e-3) on gaussian1d and speckle1d, then measures on 100 test instances per testbed
(the Snyder 2012 set for gaussian1d):

* the functional's MAE on the exact test densities, and the effect of the derivative (Sobolev)
  loss at equal CPU time;
* the VAE's reconstruction error with the paper's decoder and with the smooth one;
* latent minimization (the paper's plain GD, and L-BFGS, free or in the trust region
  ``latent_box``) of every test potential, with the error budget of every minimization (functional
  error, representation, decoder roughness, manifold gap, total, exact energy of the found
  density) and the worst instances with their potential parameters;
* the same at batch 32 (``*_b32`` runs): three times the updates per epoch;
* the closed-form refit of the functional's head (``*_ridge`` runs, ``TrainConfig.head_ridge``).

Every stage is resumable (datasets and trainings continue where they stopped; finished
evaluations are cached as JSON in the work directory), so a killed run loses at most one
epoch.  The results go to ``OUT/results.json`` and ``OUT/study.md`` (tables written by this
script from the measured numbers, with the command, commit, machine and wall times).

Usage::

    python benchmark/recipe_study.py --work /path/to/work --out reports/recipe_study
    python benchmark/recipe_study.py --work W --out O --only f_g1d,v_g1d_paper   # a subset of the runs
    python benchmark/recipe_study.py --work W --out O --render    # only rewrite the report from W's caches

Results already in ``OUT/results.json`` are kept (a work directory does not outlive its machine):
the report merges them with what the work directory measured, and a run or minimization measured
again replaces its kept entry.  Each run records the commit it was trained at and its validation
curve, so the figure can be redrawn from ``results.json`` alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from vaedft.data.generate import generate_dataset
from vaedft.data.store import read_arrays, read_attrs
from vaedft.metrics import (
    BUDGET_TERMS,
    energy_errors,
    error_budget,
    functional_errors,
    reconstruction_error,
)
from vaedft.minimize import MinimizeConfig, minimize
from vaedft.models import from_testbed, functional_from_testbed
from vaedft.physics import get_testbed
from vaedft.runs import load_run
from vaedft.train import TrainConfig, train

KCAL = 1.5936e-3  # E0 per kcal/mol

#: Datasets: name -> (testbed, n, seed) or (testbed, "snyder2012").
DATA = {
    "g1d_train": ("gaussian1d", 15000, 1),
    "g1d_test": ("gaussian1d", "snyder2012", None),
    "sp_train": ("speckle1d", 15000, 1),
    "sp_test": ("speckle1d", 100, 2),
}

COSINE = {"lr": 1e-3, "schedule": "cosine", "lr_min": 1e-5, "batch_size": 100}


@dataclass
class Run:
    kind: str
    data: str
    train: dict
    latent_dim: int | None = None
    model: dict = field(default_factory=dict)


#: The trainings, in the order they run.  Epochs are fixed (not time-boxed) so every run is
#: reproducible; the wall times are measured and reported.
RUNS = {
    "f_g1d": Run("functional", "g1d_train", {**COSINE, "epochs": 24}),
    "v_g1d_paper": Run("vae", "g1d_train", {**COSINE, "epochs": 10, "beta": 1e-3}, latent_dim=4),
    "v_g1d_smooth": Run("vae", "g1d_train", {**COSINE, "epochs": 10, "beta": 1e-3}, latent_dim=4,
                        model={"decoder": "smooth"}),
    "f_sp": Run("functional", "sp_train", {**COSINE, "epochs": 12}, model={"input_scale": "volume"}),
    "v_sp_paper": Run("vae", "sp_train", {**COSINE, "epochs": 6, "beta": 1e-5}, latent_dim=16,
                      model={"input_scale": "volume"}),
    "v_sp_smooth": Run("vae", "sp_train", {**COSINE, "epochs": 6, "beta": 1e-5}, latent_dim=16,
                       model={"input_scale": "volume", "decoder": "smooth"}),
    "f_g1d_sobolev": Run("functional", "g1d_train", {**COSINE, "epochs": 10, "derivative_weight": 1e-5}),
    # batch 32: three times the updates per epoch for 15-25 % more time per sample on this CPU
    "f_g1d_b32": Run("functional", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 30}),
    "v_g1d_b32": Run("vae", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 20, "beta": 1e-3}, latent_dim=4),
    "v_g1d_smooth_b32": Run("vae", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 20, "beta": 1e-3},
                            latent_dim=4, model={"decoder": "smooth"}),
    # the long pair: one idle core each for about two hours, to see whether the recipe reaches CA at all here
    "f_g1d_long": Run("functional", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 150}),
    "v_g1d_smooth_long": Run("vae", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 55, "beta": 1e-3},
                             latent_dim=4, model={"decoder": "smooth"}),
    # the 15-CPU-minute functional: as many batch-32 epochs as 15 minutes of one idle core give, with and
    # without a weight average (EMA) that smooths the noise of the large learning rate
    "f_g1d_15min": Run("functional", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 22}),
    "f_g1d_15min_ema": Run("functional", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 22,
                                                       "ema_decay": 0.999}),
    # the same 15 minutes read as wall minutes of the 2-core machine (two threads, --threads 2: 20 s per epoch), as the
    # issue's first measurement did
    "f_g1d_15min_2t_ema": Run("functional", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 44,
                                                          "ema_decay": 0.999}),
    # the head refit: after the last epoch, the functional's linear head is replaced by the closed-form ridge
    # regression of F on the trained features (TrainConfig.head_ridge); one idle core, 5 and 15 minutes
    "f_g1d_5min_ridge": Run("functional", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 15,
                                                        "head_ridge": 1e-6}),
    "f_g1d_15min_ridge": Run("functional", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 45,
                                                         "head_ridge": 1e-6}),
    "f_sp_ridge": Run("functional", "sp_train", {**COSINE, "epochs": 12, "head_ridge": 1e-6},
                      model={"input_scale": "volume"}),
    # speckle1d at batch 32: the smooth decoder trained until it reconstructs at least as well as the paper's
    "v_sp_paper_b32": Run("vae", "sp_train", {**COSINE, "batch_size": 32, "epochs": 10, "beta": 1e-5},
                          latent_dim=16, model={"input_scale": "volume"}),
    # a cheaper gaussian1d VAE for CI's accuracy slice: 30 epochs (about 13 minutes with two threads), with and
    # without a weight average (EMA) over the noise of the large learning rate
    "v_g1d_smooth_30": Run("vae", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 30, "beta": 1e-3},
                           latent_dim=4, model={"decoder": "smooth"}),
    "v_g1d_smooth_30_ema": Run("vae", "g1d_train", {**COSINE, "batch_size": 32, "epochs": 30, "beta": 1e-3,
                                                    "ema_decay": 0.999}, latent_dim=4, model={"decoder": "smooth"}),
    "v_sp_smooth_b32": Run("vae", "sp_train", {**COSINE, "batch_size": 32, "epochs": 20, "beta": 1e-5},
                           latent_dim=16, model={"input_scale": "volume", "decoder": "smooth"}),
    # speckle1d's goal pair with the cpu profile's recipe, its VAE trained twice as long (110 epochs, the profile
    # 55): does the manifold, which holds the fraction within CA at 68-76 %, improve with more CPU time?
    "f_sp_b32_ridge": Run("functional", "sp_train", {**COSINE, "batch_size": 32, "epochs": 45, "head_ridge": 1e-6},
                          model={"input_scale": "volume"}),
    "v_sp_smooth_110": Run("vae", "sp_train", {**COSINE, "batch_size": 32, "epochs": 110, "beta": 1e-5},
                           latent_dim=16, model={"input_scale": "volume", "decoder": "smooth"}),
}

#: The cpu profile's latent minimization (rows stop when settled), trust region 3 std.
CPU_MIN_BOX3 = {"method": "latent-lbfgs", "steps": 300, "lr": 1e-2, "latent_box": 3.0, "tol_energy": 1e-7,
                "tol_grad": 1e30, "settle_window": 20}

#: Minimizations: (vae run, functional run, test set, method settings).
MINIMIZATIONS = {
    "g1d_paper_gd": ("v_g1d_paper", "f_g1d", "g1d_test", {"method": "latent-gd", "steps": 1000, "lr": 1.0}),
    "g1d_paper_lbfgs": ("v_g1d_paper", "f_g1d", "g1d_test", {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2}),
    "g1d_smooth_lbfgs": ("v_g1d_smooth", "f_g1d", "g1d_test", {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2}),
    "g1d_paper_lbfgs_nearest": ("v_g1d_paper", "f_g1d", "g1d_test",
                                {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2, "init": "nearest"}),
    # budget only (no minimization): functional error, representation, roughness and manifold gap
    "g1d_paper_budget": ("v_g1d_paper", "f_g1d", "g1d_test", {"method": None}),
    "g1d_smooth_budget": ("v_g1d_smooth", "f_g1d", "g1d_test", {"method": None}),
    "g1d_sobolev_budget": ("v_g1d_paper", "f_g1d_sobolev", "g1d_test", {"method": None}),
    "g1d_sobolev_lbfgs": ("v_g1d_paper", "f_g1d_sobolev", "g1d_test",
                          {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2}),
    "g1d_b32_budget": ("v_g1d_b32", "f_g1d_b32", "g1d_test", {"method": None}),
    "g1d_b32_gd": ("v_g1d_b32", "f_g1d_b32", "g1d_test", {"method": "latent-gd", "steps": 1000, "lr": 1.0}),
    "g1d_b32_lbfgs": ("v_g1d_b32", "f_g1d_b32", "g1d_test", {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2}),
    "g1d_b32_lbfgs_nearest": ("v_g1d_b32", "f_g1d_b32", "g1d_test",
                              {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2, "init": "nearest"}),
    "g1d_smooth_b32_budget": ("v_g1d_smooth_b32", "f_g1d_b32", "g1d_test", {"method": None}),
    "g1d_smooth_b32_lbfgs": ("v_g1d_smooth_b32", "f_g1d_b32", "g1d_test",
                             {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2}),
    # the trust region: every latent coordinate within the training codes' mean +- 2 std
    "g1d_b32_lbfgs_box2": ("v_g1d_b32", "f_g1d_b32", "g1d_test",
                           {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2, "latent_box": 2.0}),
    "g1d_smooth_b32_lbfgs_box2": ("v_g1d_smooth_b32", "f_g1d_b32", "g1d_test",
                                  {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2, "latent_box": 2.0}),
    "g1d_long_lbfgs_box2": ("v_g1d_smooth_long", "f_g1d_long", "g1d_test",
                            {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2, "latent_box": 2.0}),
    "g1d_smooth_b32_ridge_lbfgs_box2": ("v_g1d_smooth_b32", "f_g1d_15min_ridge", "g1d_test",
                                        {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2, "latent_box": 2.0}),
    "g1d_long_ridge_lbfgs_box2": ("v_g1d_smooth_long", "f_g1d_15min_ridge", "g1d_test",
                                  {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2, "latent_box": 2.0}),
    # the cpu profile's minimization settings (rows stop when settled), trust region 3 std
    "g1d_long_ridge_lbfgs_box3": ("v_g1d_smooth_long", "f_g1d_15min_ridge", "g1d_test",
                                  {"method": "latent-lbfgs", "steps": 300, "lr": 1e-2, "latent_box": 3.0,
                                   "tol_energy": 1e-7, "tol_grad": 1e30, "settle_window": 20}),
    "g1d_long_ridge5_lbfgs_box3": ("v_g1d_smooth_long", "f_g1d_5min_ridge", "g1d_test",
                                   {"method": "latent-lbfgs", "steps": 300, "lr": 1e-2, "latent_box": 3.0,
                                    "tol_energy": 1e-7, "tol_grad": 1e30, "settle_window": 20}),
    "g1d_30_ridge_lbfgs_box3": ("v_g1d_smooth_30", "f_g1d_15min_ridge", "g1d_test", CPU_MIN_BOX3),
    "g1d_30ema_ridge_lbfgs_box3": ("v_g1d_smooth_30_ema", "f_g1d_15min_ridge", "g1d_test", CPU_MIN_BOX3),
    "sp_paper_lbfgs": ("v_sp_paper", "f_sp", "sp_test", {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2}),
    "sp_smooth_lbfgs": ("v_sp_smooth", "f_sp", "sp_test", {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2}),
    "sp_paper_b32_budget": ("v_sp_paper_b32", "f_sp", "sp_test", {"method": None}),
    "sp_smooth_b32_budget": ("v_sp_smooth_b32", "f_sp", "sp_test", {"method": None}),
    "sp_smooth_b32_lbfgs_box2": ("v_sp_smooth_b32", "f_sp", "sp_test",
                                 {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2, "latent_box": 2.0}),
    # the cpu profile's speckle1d descent (no trust region, rows stop when settled)
    "sp_110_ridge_lbfgs": ("v_sp_smooth_110", "f_sp_b32_ridge", "sp_test", {**CPU_MIN_BOX3, "latent_box": 0.0}),
}

TESTBED_OF = {name: spec[0] for name, spec in DATA.items()}


def _trained_elsewhere(work: Path) -> set[str]:
    """Runs that other study processes sharing ``work`` have finished (their caches list them)."""
    names = set()
    for path in work.glob("study_cache_*.json"):
        try:
            names |= set(json.loads(path.read_text())["runs"])
        except (OSError, ValueError, KeyError):
            pass
    return names


def _dump(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float))
    tmp.replace(path)


def make_data(work: Path) -> dict[str, Path]:
    paths = {}
    for name, (testbed, n, seed) in DATA.items():
        path = work / f"{name}.h5"
        if not path.exists():
            tb = get_testbed(testbed)
            if n == "snyder2012":
                generate_dataset(tb, path, test_set="snyder2012", progress=False)
            else:
                generate_dataset(tb, path, n=n, seed=seed, progress=False)
        paths[name] = path
    return paths


def model_config(run: Run, data_path: Path):
    attrs = read_attrs(data_path)
    cfg = from_testbed(attrs, run.latent_dim) if run.kind == "vae" else functional_from_testbed(attrs)
    changes = dict(run.model)
    if changes.get("input_scale") == "volume":
        changes["input_scale"] = cfg.box_volume
    return cfg.replace(**changes) if changes else cfg


def train_run(name: str, work: Path, data: dict[str, Path], previous: dict | None = None) -> dict:
    """Train (or resume) a run and record it; ``previous`` is its cached record, whose commit is kept when
    the run had already finished before this call (the commit is the one it was trained at)."""
    run = RUNS[name]
    out = work / name
    state_path = out / "state.json"
    finished_before = state_path.exists() and json.loads(state_path.read_text()).get("finished", False)
    cfg = TrainConfig.from_dict({"seed": 0, **run.train})
    state = train(run.kind, data[run.data], out, model_config=model_config(run, data[run.data]), config=cfg,
                  device="cpu", progress=False)
    h = pd.read_csv(out / "history.csv")
    metric = (h["val_loss"] ** 0.5) / KCAL if run.kind == "functional" else h["val_rec"]
    curve = {"minutes": (h["wall_time_s"] / 60).round(3).tolist(), "value": metric.tolist()}
    if "head_refit" in state:  # the refit is the curve's last point, at the run's total time
        curve["minutes"].append(round(state["wall_time_s"] / 60, 3))
        curve["value"].append(state["head_refit"]["val_loss"] ** 0.5 / KCAL)
    commit = (previous or {}).get("commit") if finished_before else None
    return {"epochs": state["epoch"], "wall_time_min": state["wall_time_s"] / 60, "train": cfg.to_dict(),
            "model": dict(run.model), "commit": commit or _commit(), "threads": torch.get_num_threads(),
            "curve": curve}


def evaluate_model(name: str, work: Path, data: dict[str, Path]) -> dict:
    run = RUNS[name]
    test = "g1d_test" if run.data.startswith("g1d") else "sp_test"
    arrays = read_arrays(data[test], ("density", "F"))
    model, _ = load_run(work / name, dtype="float64")
    if run.kind == "functional":
        err = functional_errors(model, arrays["density"], arrays["F"])
        return {"test": test, "mae_kcal": err["mae"] / KCAL, "max_kcal": err["max_abs"] / KCAL,
                "rmse_kcal": err["rmse"] / KCAL}
    rec = reconstruction_error(model, arrays["density"])
    return {"test": test, "reconstruction": rec["mean"], "reconstruction_max": rec["max"]}


def run_minimization(name: str, work: Path, data: dict[str, Path], gaps: dict) -> dict:
    vae_name, f_name, test, settings = MINIMIZATIONS[name]
    testbed = get_testbed(TESTBED_OF[test])
    arrays = read_arrays(data[test], ("potential", "density", "energy", "F"))
    vae, _ = load_run(work / vae_name, dtype="float64")
    functional, _ = load_run(work / f_name, dtype="float64")
    t0 = time.perf_counter()
    res = None
    if settings["method"] is not None:
        cfg = MinimizeConfig(**{"init": "mean", "tol_energy": 0.0, "tol_grad": 0.0,
                                "history_every": 100, **settings})
        train = read_arrays(data[RUNS[vae_name].data], ("density", "potential"))
        n_vae = int(json.loads((work / vae_name / "config.json").read_text())["data"]["n_instances"])
        if cfg.init == "mean" and cfg.latent_box == 0:
            starts = {"train_densities": train["density"][:n_vae].mean(axis=0, keepdims=True)}
        else:
            starts = {"train_densities": train["density"][:n_vae], "train_potentials": train["potential"][:n_vae]}
        res = minimize(arrays["potential"], functional, vae, config=cfg, **starts)
    minimize_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    need_gap = vae_name not in gaps
    budget = error_budget(vae, functional, arrays["potential"], arrays["density"], arrays["energy"], arrays["F"],
                          None if res is None else res.z_min, grid=testbed.grid,
                          diverged=None if res is None else res.diverged, gap=need_gap)
    budget_s = time.perf_counter() - t0
    terms = {k: np.asarray(v, dtype=float).tolist() for k, v in budget.terms.items()}
    if need_gap:
        gaps[vae_name] = terms["manifold_gap"]
    terms["manifold_gap"] = gaps[vae_name]
    base = {"vae": vae_name, "functional": f_name, "test": test, "settings": settings, "minimize_s": minimize_s,
            "threads": torch.get_num_threads(),
            "budget_s": budget_s, "budget_kcal": budget_summary_kcal(terms)}
    if res is None:
        return {**base, "energy": None, "outliers": []}
    err = np.asarray(res.e_min, dtype=float) - arrays["energy"]
    ee = energy_errors(res.e_min, arrays["energy"])
    worst = np.argsort(-np.abs(err))[:5]
    params = _params(data[test])
    outliers = [{"index": int(i), "error_kcal": float(err[i] / KCAL),
                 "exact_energy_at_min_kcal": float(terms["exact_energy_at_min"][i] / KCAL),
                 "params": {k: np.asarray(v[i]).round(4).tolist() for k, v in params.items()}} for i in worst]
    summary = {k: v for k, v in ee.items() if not isinstance(v, np.ndarray)}
    summary["n_violations_beyond_ca"] = summary.pop("n_violations")
    return {**base, "energy": summary, "outliers": outliers}


WALL_ZONE = 16  # grid points next to each hard wall counted as "at the walls"


def roughness_location(name: str, work: Path, data: dict[str, Path]) -> dict:
    """Where a VAE's reconstructions of the test ground states carry their excess kinetic energy.

    With ``psi = sqrt(n)`` and the forward-difference kinetic energy density
    ``t_i = (psi_{i+1} - psi_i)^2 / (2 dx)`` (walls or periodic images as neighbours), the excess
    ``t(D(mu(n_gs))) - t(n_gs)`` is summed over the ``WALL_ZONE`` points next to each hard wall and
    over the interior (periodic grids: all interior), in kcal/mol, mean over the instances.  The
    share of the reconstruction error ``psi_rec - psi_gs`` in the upper half of the spectrum measures
    a checkerboard (grid-scale oscillation) of the decoder.
    """
    run = RUNS[name]
    test = "g1d_test" if run.data.startswith("g1d") else "sp_test"
    testbed = get_testbed(TESTBED_OF[test])
    n_gs = read_arrays(data[test], ("density",))["density"]
    vae, _ = load_run(work / name, dtype="float64")
    with torch.no_grad():
        x = torch.as_tensor(n_gs)
        rec = vae.decode(vae.encode(x)[0]).numpy()
    dx, walls = testbed.grid.dx, testbed.grid.boundary == "hard_wall"

    def t_density(n):
        psi = np.sqrt(np.clip(n, 0, None))
        if walls:
            psi = np.pad(psi, ((0, 0), (1, 1)))
            return (np.diff(psi, axis=1) ** 2)[:, :-1] / (2 * dx)  # (N, Ng): the link to the right of point i
        return (np.roll(psi, -1, axis=1) - psi) ** 2 / (2 * dx)

    excess = (t_density(rec) - t_density(n_gs)) / KCAL
    wall = np.zeros(len(n_gs))
    if walls:
        wall = excess[:, :WALL_ZONE].sum(1) + excess[:, -WALL_ZONE:].sum(1)
        inner = excess[:, WALL_ZONE:-WALL_ZONE].sum(1)
    else:
        inner = excess.sum(1)
    err = np.sqrt(np.clip(rec, 0, None)) - np.sqrt(n_gs)
    power = np.abs(np.fft.rfft(err, axis=1)) ** 2
    high = power[:, power.shape[1] // 2 :].sum(1) / power.sum(1)
    return {"walls_kcal": float(wall.mean()), "interior_kcal": float(inner.mean()),
            "high_k_share": float(np.median(high)), "wall_zone_points": WALL_ZONE if walls else 0}


def _params(path: Path) -> dict:
    """The real generator parameters of every instance (gaussian1d: a, b, c of the three Gaussians;
    the complex speckle modes are left out)."""
    with h5py.File(path, "r") as f:
        return {k: f["params"][k][:] for k in f["params"] if f["params"][k].dtype.kind in "fiu"}


def budget_summary_kcal(terms: dict) -> dict:
    out = {}
    for k, v in terms.items():
        a = np.asarray(v, dtype=float) / KCAL
        a = a[np.isfinite(a)]
        out[k] = {"mean": float(a.mean()), "mean_abs": float(np.abs(a).mean()), "max_abs": float(np.abs(a).max())}
    return out


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, type=Path, help="datasets, runs and cached evaluations (resumable)")
    p.add_argument("--out", required=True, type=Path, help="where results.json and study.md go")
    p.add_argument("--only", help="comma-separated run and minimization names (default: all)")
    p.add_argument("--render", action="store_true",
                   help="run nothing: rewrite results.json, study.md and the figure from the work directory's caches")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--tag", default="main", help="name of this process's cache file: several processes with "
                   "disjoint --only sets may share a work directory; the report merges every cache")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    only = set() if args.render else set(args.only.split(",")) if args.only else None
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    cache_path = args.work / f"study_cache_{args.tag}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {"runs": {}, "models": {}, "min": {},
                                                                             "gaps": {}}
    t_start = time.perf_counter()
    data = make_data(args.work)
    for name in RUNS:
        if only is not None and name not in only:
            continue
        print(f"[study] train {name}", flush=True)
        cache["runs"][name] = train_run(name, args.work, data, cache["runs"].get(name))
        cache["models"][name] = evaluate_model(name, args.work, data)
        print(f"[study]   {cache['runs'][name]} {cache['models'][name]}", flush=True)
        _dump(cache_path, cache)
        # the minimizations whose two networks are now trained run at once, so results come early
        for mname, (vae_name, f_name, _, _) in MINIMIZATIONS.items():
            if (only is not None and mname not in only) or mname in cache["min"]:
                continue
            trained = set(cache["runs"]) | _trained_elsewhere(args.work)
            if vae_name not in trained or f_name not in trained:
                continue
            print(f"[study] minimize {mname}", flush=True)
            for path in args.work.glob("study_cache_*.json"):  # a manifold gap another process computed
                if path != cache_path:
                    for vae_name_, gap in json.loads(path.read_text()).get("gaps", {}).items():
                        cache["gaps"].setdefault(vae_name_, gap)
            cache["min"][mname] = run_minimization(mname, args.work, data, cache["gaps"])
            print(f"[study]   {cache['min'][mname]['energy'] or cache['min'][mname]['budget_kcal']}", flush=True)
            _dump(cache_path, cache)
    header = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]), "commit": _commit(),
              "machine": _machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "this_call_min": (time.perf_counter() - t_start) / 60}
    kept = kept_results(args.out / "results.json")
    analysis_path = args.work / "study_analysis.json"
    analysis = json.loads(analysis_path.read_text()) if analysis_path.exists() else {}
    for path in sorted(args.work.glob("study_cache_*.json")):
        for name in json.loads(path.read_text())["models"]:
            if RUNS[name].kind == "vae" and name not in analysis:
                analysis[name] = roughness_location(name, args.work, data)
    _dump(analysis_path, analysis)
    merged = {"runs": dict(kept["runs"]), "models": dict(kept["models"]), "min": dict(kept["min"]), "gaps": {}}
    for path in sorted(args.work.glob("study_cache_*.json")):
        for key, part in json.loads(path.read_text()).items():
            merged[key].update(part)
    order = {k: i for i, k in enumerate([*RUNS, *MINIMIZATIONS])}
    merged = {k: dict(sorted(v.items(), key=lambda kv: order.get(kv[0], 99))) for k, v in merged.items()}
    merged.pop("gaps")
    merged["roughness_location"] = {**kept["roughness_location"], **analysis}
    _dump(args.out / "results.json", {"header": header, **merged})
    (args.out / "study.md").write_text(render(header, merged))
    plot_curves(merged["runs"], args.out / "training_curves.png")
    return 0


def kept_results(path: Path) -> dict:
    """The entries of an earlier ``results.json`` (empty parts when there is none).

    Runs from before runs recorded their commit get the earlier header's commit.
    """
    parts = ("runs", "models", "min", "roughness_location")
    if not path.exists():
        return {k: {} for k in parts}
    try:
        old = json.loads(path.read_text())
        kept = {k: dict(old.get(k, {})) for k in parts}
        for r in kept["runs"].values():
            r.setdefault("commit", old["header"]["commit"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"recipe_study: {path} is not a results file of this study ({exc}); move it away") from None
    return kept


def plot_curves(runs: dict, out: Path) -> None:
    """Validation error against wall minutes of every run with a stored curve (matplotlib object API, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax_f, ax_v = fig.subplots(1, 2)
    for name, r in runs.items():
        if "curve" not in r:
            continue
        ax = ax_f if RUNS[name].kind == "functional" else ax_v
        ax.plot(r["curve"]["minutes"], r["curve"]["value"], marker=".", label=name)
    ax_f.set(xlabel="CPU minutes (1 thread)", ylabel="validation RMS error of F (kcal/mol)", yscale="log",
             title="DL functional (a *_ridge run ends with its head refit)")
    ax_f.axhline(1.0, color="red", lw=0.8, ls="--", label="chemical accuracy")
    ax_v.set(xlabel="CPU minutes (1 thread)", ylabel="validation reconstruction loss", yscale="log", title="beta-VAE")
    for ax in (ax_f, ax_v):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def render(header: dict, cache: dict) -> str:
    from tabulate import tabulate

    lines = ["# Recipe study: the paper's networks on a CPU", "",
             f"Generated by `benchmark/recipe_study.py` ({header['command']}) at commit {header['commit']} on "
             f"{header['machine']}, {header['date']}; entries measured by earlier calls are kept (each run's commit "
             "is in its row: the commit it was trained at, or for runs from before that was recorded, the commit of "
             "the report that first held it). Energies in kcal/mol (1 kcal/mol = 1.5936e-3 E0); "
             "100 test instances per testbed (the Snyder 2012 set for gaussian1d).", "", "## Trainings", ""]
    rows = []
    for name, r in cache["runs"].items():
        m = cache["models"].get(name, {})
        t = r["train"]
        recipe = f"lr {t['lr']:g} {t.get('schedule', 'constant')} -> {t.get('lr_min', 0):g}, batch {t['batch_size']}"
        if t.get("derivative_weight"):
            recipe += f", derivative weight {t['derivative_weight']:g}"
        if t.get("ema_decay"):
            recipe += f", EMA {t['ema_decay']:g}"
        if t.get("head_ridge") is not None:
            recipe += f", head ridge {t['head_ridge']:g}"
        quality = (f"MAE {m['mae_kcal']:.3f} (max {m['max_kcal']:.2f})" if "mae_kcal" in m
                   else f"reconstruction {m.get('reconstruction', float('nan')):.4f}")
        rows.append([name, RUNS[name].kind, RUNS[name].data, json.dumps(r["model"]) if r["model"] else "paper",
                     recipe, r["epochs"], f"{r['wall_time_min']:.1f}", quality, r.get("commit", "-")])
    lines.append(tabulate(rows, ["run", "kind", "data", "model changes", "recipe", "epochs", "minutes",
                                 "test quality", "commit"], tablefmt="github"))
    lines += ["", "## Minimizations", ""]
    rows = []
    for name, m in cache["min"].items():
        e = m["energy"]
        if e is None:
            continue
        method = m["settings"]["method"] + (f" from {m['settings']['init']}" if "init" in m["settings"] else "")
        if m["settings"].get("latent_box"):
            method += f", latent box {m['settings']['latent_box']:g}"
        rows.append([name, m["vae"], m["functional"], method, m["settings"]["steps"],
                     f"{e['mean_abs_error_kcal_per_mol']:.2f}", f"{100 * e['fraction_within_ca']:.0f} %",
                     e.get("n_violations_beyond_ca", "-"), f"{e['max_abs_error_kcal_per_mol']:.1f}",
                     f"{m['minimize_s']:.0f}"])
    lines.append(tabulate(rows, ["minimization", "VAE", "functional", "method", "steps", "mean abs", "within CA",
                                 "violations > CA", "max abs", "seconds"], tablefmt="github"))
    lines += ["", "## Error budgets (mean over the instances; mean |.| in parentheses)", ""]
    terms = list(BUDGET_TERMS)
    rows = []
    for name, m in cache["min"].items():
        b = m["budget_kcal"]
        rows.append([name] + [f"{b[t]['mean']:+.2f} ({b[t]['mean_abs']:.2f})" if t in b else "-" for t in terms])
    lines.append(tabulate(rows, ["minimization", *terms], tablefmt="github"))
    lines += ["", "## Decoder variants: the paper's and the smooth one (same training, same functional)", ""]
    rows = []
    for tb, paper, smooth in (("gaussian1d", "g1d_paper_budget", "g1d_smooth_budget"),
                              ("gaussian1d (batch 32, 20 epochs)", "g1d_b32_budget", "g1d_smooth_b32_budget"),
                              ("speckle1d", "sp_paper_lbfgs", "sp_smooth_lbfgs"),
                              ("speckle1d (batch 32; paper 10, smooth 20 epochs)", "sp_paper_b32_budget",
                               "sp_smooth_b32_budget")):
        if paper not in cache["min"] or smooth not in cache["min"]:
            continue
        p_, s_ = cache["min"][paper], cache["min"][smooth]
        rec = [cache["models"][p_["vae"]]["reconstruction"], cache["models"][s_["vae"]]["reconstruction"]]
        for term in ("roughness", "manifold_gap"):
            a, b = p_["budget_kcal"][term]["mean_abs"], s_["budget_kcal"][term]["mean_abs"]
            ratio = a / b if b > 0 else float("inf")
            rows.append([tb, term, f"{a:.2f}", f"{b:.2f}", f"{ratio:.1f}x", "met" if ratio >= 10 else "NOT met",
                         f"{rec[0]:.4f} / {rec[1]:.4f}"])
    lines.append(tabulate(rows, ["testbed", "term (mean abs, kcal/mol)", "paper decoder", "smooth decoder",
                                 "paper / smooth", "target >= 10x", "reconstruction paper / smooth"],
                          tablefmt="github"))
    lines += ["", "Where the excess kinetic energy of the reconstructions sits (forward-difference kinetic energy "
              "density of D(mu(n_gs)) minus that of n_gs, kcal/mol, mean over the test instances; 'walls': the "
              f"{WALL_ZONE} grid points next to each hard wall), and the median share of the amplitude error "
              "sqrt(D(mu(n))) - sqrt(n) in the upper half of the spectrum (grid-scale oscillation):", ""]
    rows = [[name, f"{r['walls_kcal']:.2f}", f"{r['interior_kcal']:.2f}", f"{r['high_k_share']:.3f}"]
            for name, r in cache.get("roughness_location", {}).items()]
    lines.append(tabulate(rows, ["VAE", "excess T at the walls", "excess T in the interior",
                                 "high-k share of the error"], tablefmt="github"))
    lines += ["", "![validation error vs CPU minutes](training_curves.png)", ""]
    no_curve = [name for name, r in cache["runs"].items() if "curve" not in r]
    if no_curve:
        lines += [f"The runs trained before curves were stored in results.json ({', '.join(no_curve)}) are not in "
                  "this figure; their curves, drawn at commit f827f54: "
                  "[training_curves_f827f54.png](training_curves_f827f54.png).", ""]
    lines += ["## Worst instances", ""]
    for name, m in cache["min"].items():
        if not m["outliers"]:
            continue
        worst = "; ".join(f"#{o['index']}: {o['error_kcal']:+.1f} (exact energy of the found density "
                          f"{o['exact_energy_at_min_kcal']:+.1f})" + f", params {o['params']}"
                          for o in m["outliers"][:3])
        lines.append(f"- {name}: {worst}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
