"""Time to chemical accuracy: our batched minimizer against the authors' recipe, same trained pair.

The 100 gaussian1d Snyder instances are minimised twice with the same VAE and functional:

* ``ours``: one batched call, latent L-BFGS from the ``nearest`` start (the training ground state
  of the nearest training potential; ``VAEDFT_TTCA_INIT=mean`` starts from the mean training
  density), each row stopping when its energy has settled (``settle_window``), optionally inside
  the trust region ``latent_box`` (``VAEDFT_TTCA_BOX``, in standard deviations of the training
  codes; default 0, none); all 100 instances together;
* ``authors``: the paper's recipe as the authors' code runs it: plain latent GD (eq. 14), step
  ``ETA``, ``STEPS`` = 15 000 steps from the encoded mean training density, **one instance at a
  time**.  The loop is timed on the first ``SEQ`` instances for the full ``STEPS`` and its time per
  instance scaled to the 100 (every instance does the same steps of the same networks); the
  summary says so.  With ``VAEDFT_TTCA_ACCURACY_N=N`` the same recipe also runs on the first N
  instances in one batched call (each row's descent is independent, so its result is the
  one-at-a-time result up to float rounding), to compare the final accuracy on more instances than
  the timed ones (all 100 take about an hour of a 2-core CPU); its wall time is reported but not
  used for the ratio.

Reported (never asserted: timings depend on the machine): both wall times, the ratio (the issue's
goal is >= 100x), and the final accuracy of both on the timed instances and of ours on all 100
(mean |e_min - e_gs|, share within chemical accuracy).  The comparison is fair only if ours is at
least as accurate; the summary marks it (on the first N instances when ``VAEDFT_TTCA_ACCURACY_N`` is
set, else on the timed ones).

The trained pair is not made here (a paper-size pair takes CPU-hours): give it with
``VAEDFT_TTCA_VAE`` and ``VAEDFT_TTCA_FUNCTIONAL`` (run directories of ``vaedft train-*`` on
gaussian1d; their recorded training file must exist).  Optional: ``VAEDFT_TTCA_STEPS``,
``VAEDFT_TTCA_SEQ``, ``VAEDFT_TTCA_ETA``, ``VAEDFT_TTCA_BOX``, ``VAEDFT_TTCA_ACCURACY_N``,
``VAEDFT_TTCA_JSON`` (write the summary there), ``VAEDFT_TTCA_DTYPE`` (``float32``, the authors', or
``float64``), ``VAEDFT_TTCA_INIT`` (our start: ``nearest``, the default, or ``mean``).  Skipped
when the pair is not given.  Example::

    VAEDFT_TTCA_VAE=runs/vae VAEDFT_TTCA_FUNCTIONAL=runs/f pytest --benchmark -k time_to_ca -s
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from vaedft.bench.runner import environment
from vaedft.data.generate import generate_dataset
from vaedft.data.store import read_arrays
from vaedft.metrics import CHEMICAL_ACCURACY, KCAL_PER_MOL
from vaedft.minimize import MinimizeConfig, minimize
from vaedft.physics import get_testbed
from vaedft.runs import load_run

pytestmark = pytest.mark.benchmark

STEPS = int(os.environ.get("VAEDFT_TTCA_STEPS", 15000))
SEQ = int(os.environ.get("VAEDFT_TTCA_SEQ", 2))
ETA = float(os.environ.get("VAEDFT_TTCA_ETA", 1.0))
DTYPE = os.environ.get("VAEDFT_TTCA_DTYPE", "float32")
BOX = float(os.environ.get("VAEDFT_TTCA_BOX", 0.0))
ACCURACY_N = int(os.environ.get("VAEDFT_TTCA_ACCURACY_N", 0))
INIT = os.environ.get("VAEDFT_TTCA_INIT", "nearest")
OURS = {"method": "latent-lbfgs", "steps": 400, "lr": 1e-2, "init": INIT, "tol_energy": 1e-7,
        "tol_grad": float("inf"), "settle_window": 20, "divergence_threshold": float("inf"), "latent_box": BOX}


def _summary(e_min, e_gs) -> dict:
    err = np.abs(np.asarray(e_min) - np.asarray(e_gs))
    return {"mean_abs_kcal": float(err.mean() / KCAL_PER_MOL), "max_abs_kcal": float(err.max() / KCAL_PER_MOL),
            "within_ca": float((err <= CHEMICAL_ACCURACY).mean())}


def test_time_to_chemical_accuracy(tmp_path):
    vae_dir, f_dir = os.environ.get("VAEDFT_TTCA_VAE"), os.environ.get("VAEDFT_TTCA_FUNCTIONAL")
    if not (vae_dir and f_dir):
        pytest.skip("set VAEDFT_TTCA_VAE and VAEDFT_TTCA_FUNCTIONAL to a trained gaussian1d pair")
    vae, run = load_run(vae_dir, dtype=DTYPE)
    functional, _ = load_run(f_dir, dtype=DTYPE)
    train = read_arrays(run["data"]["path"], ("density", "potential"), sl=slice(0, run["data"]["n_instances"]))
    test = read_arrays(generate_dataset(get_testbed("gaussian1d"), tmp_path / "snyder.h5", test_set="snyder2012",
                                        progress=False), ("potential", "energy"))
    V, e_gs = test["potential"], test["energy"]

    t0 = time.perf_counter()
    ours = minimize(V, functional, vae, config=MinimizeConfig(**OURS), train_densities=train["density"],
                    train_potentials=train["potential"])
    t_ours = time.perf_counter() - t0

    authors = MinimizeConfig(method="latent-gd", steps=STEPS, lr=ETA, init="mean", tol_energy=0.0, tol_grad=0.0,
                             history_every=STEPS, divergence_threshold=float("inf"))
    mean = train["density"].mean(axis=0, keepdims=True)
    e_seq, t_seq = [], []
    for i in range(SEQ):
        t0 = time.perf_counter()
        r = minimize(V[i : i + 1], functional, vae, config=authors, train_densities=mean, indices=[i])
        t_seq.append(time.perf_counter() - t0)
        e_seq.append(r.e_min[0])
    t_authors_100 = float(np.mean(t_seq)) * len(V)

    rec = {
        "environment": {**environment("cpu"), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "vae": vae_dir, "functional": f_dir},
        "instances": len(V), "dtype": DTYPE, "ours": OURS, "authors": {"steps": STEPS, "eta": ETA, "timed": SEQ},
        "ours_s": t_ours, "authors_s_scaled": t_authors_100, "ratio": t_authors_100 / t_ours,
        "ours_steps_median": float(np.median(ours.steps)),
        "ours_all": _summary(ours.e_min, e_gs), "ours_timed": _summary(ours.e_min[:SEQ], e_gs[:SEQ]),
        "authors_timed": _summary(e_seq, e_gs[:SEQ]),
    }
    rec["fair"] = rec["ours_timed"]["mean_abs_kcal"] <= rec["authors_timed"]["mean_abs_kcal"]
    rec["fair_judged_on"] = "timed"
    if ACCURACY_N:
        n = min(ACCURACY_N, len(V))
        t0 = time.perf_counter()
        batched = minimize(V[:n], functional, vae, config=authors, train_densities=mean)
        rec["authors_batched_s"] = time.perf_counter() - t0
        rec["accuracy_n"] = n
        rec["authors_first_n"] = _summary(batched.e_min, e_gs[:n])
        rec["ours_first_n"] = _summary(ours.e_min[:n], e_gs[:n])
        rec["fair"] = rec["ours_first_n"]["mean_abs_kcal"] <= rec["authors_first_n"]["mean_abs_kcal"]
        rec["fair_judged_on"] = f"first {n}"
    print("\ntime to chemical accuracy:", json.dumps(rec, indent=2, default=float))
    out = os.environ.get("VAEDFT_TTCA_JSON")
    if out:
        Path(out).write_text(json.dumps(rec, indent=2, default=float))
    assert np.isfinite(ours.e_min).all()
