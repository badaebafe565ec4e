"""The training recipe of :mod:`vaedft.train`: learning-rate schedules, weight averaging (EMA),
the functional-derivative (Sobolev) loss, the closed-form refit of the functional's head and the
VAE's kinetic-norm reconstruction loss.

The schedules are checked against their closed forms, the EMA against the definition of an
exponential average, the derivative loss against the exact functional on exact ground states
(where it must vanish), the kinetic-norm error against the continuum kinetic energy of known
perturbations and against the identity ``E_V[n_hat] - e = <dpsi| H - e |dpsi>``, the head
refit against a target that is exactly linear in the features and against the optimality
conditions of ridge regression, and every recipe against the one property a long CPU run depends
on: a killed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_train import Crash, assert_same_run, history, load_pt

import vaedft.train as train_mod
from vaedft.data.generate import generate_dataset
from vaedft.data.store import read_arrays
from vaedft.models import functional_preset, kinetic_error, vae_preset
from vaedft.physics import ExactKineticFunctional, get_testbed
from vaedft.physics.hamiltonian import KineticOperator
from vaedft.runs import load_run
from vaedft.train import RECIPE_FIELDS, TrainConfig, derivative_loss, train

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_F = functional_preset("gaussian1d").replace(channels=(6,) * 5, kernel=5)
SMALL_V = vae_preset("gaussian1d", 4).replace(channels=(6,) * 5, kernel=5, dense=(16, 8))
RECIPE = TrainConfig(epochs=6, lr=2e-3, batch_size=50, seed=5, n_limit=120, schedule="cosine", lr_min=1e-5,
                     warmup_epochs=2, ema_decay=0.9)
SOBOLEV = TrainConfig.from_dict({**RECIPE.to_dict(), "derivative_weight": 1e-3})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    return generate_dataset(get_testbed("gaussian1d"), root / "g.h5", n=150, seed=4, progress=False)


def run(kind, data, out, cfg, **kw):
    model = SMALL_V if kind == "vae" else SMALL_F
    return train(kind, data, out, model_config=model, config=cfg, device="cpu", progress=False, **kw)


# ----------------------------------------------------------------------------- schedules


def test_cosine_with_warmup_follows_its_closed_form(data, tmp_path):
    run("functional", data, tmp_path / "r", RECIPE)
    lr = history(tmp_path / "r")["lr"].to_numpy()
    w, E, hi, lo = RECIPE.warmup_epochs, RECIPE.epochs, RECIPE.lr, RECIPE.lr_min
    warm = [hi * (0.1 + 0.9 * e / w) for e in range(w)]
    cos = [lo + (hi - lo) * (1 + math.cos(math.pi * e / (E - w - 1))) / 2 for e in range(E - w)]
    np.testing.assert_allclose(lr, warm + cos, rtol=1e-12)
    assert lr[-1] == pytest.approx(lo)


def test_constant_schedule_is_the_paper(data, tmp_path):
    cfg = TrainConfig(epochs=3, lr=1e-3, batch_size=50, n_limit=80)
    run("functional", data, tmp_path / "r", cfg)
    h = history(tmp_path / "r")
    assert list(h["lr"]) == [1e-3] * 3
    assert np.all(np.diff(h["wall_time_s"]) > 0)


def test_default_recipe_keeps_the_config_identity():
    """Runs and cached artifacts made before the recipe existed keep their config (and hash)."""
    old_keys = {"epochs", "lr", "batch_size", "val_fraction", "seed", "dtype", "beta", "patience", "n_limit"}
    assert set(TrainConfig().to_dict()) == old_keys
    assert set(RECIPE.to_dict()) - old_keys == {"schedule", "lr_min", "warmup_epochs", "ema_decay"}
    assert TrainConfig.from_dict(SOBOLEV.to_dict()) == SOBOLEV
    assert set(RECIPE_FIELDS) <= {f for f in TrainConfig.__dataclass_fields__}


@pytest.mark.parametrize(
    "bad",
    [{"schedule": "step"}, {"lr_min": -1.0}, {"lr_min": 1.0}, {"warmup_epochs": -1}, {"warmup_epochs": 6},
     {"warmup_epochs": 1.5}, {"ema_decay": 1.0}, {"ema_decay": 0.0}, {"ema_decay": True},
     {"derivative_weight": -1.0}, {"derivative_weight": float("nan")}, {"head_ridge": -1e-6},
     {"head_ridge": float("inf")}, {"head_ridge": True}, {"head_ridge": "1e-6"}, {"kinetic_weight": -1.0},
     {"kinetic_weight": float("inf")}, {"kinetic_weight": True}],
    ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()),
)
def test_bad_recipe_raises(bad):
    with pytest.raises(ValueError):
        TrainConfig(**{"epochs": 6, "lr": 1e-3, **bad})


def test_derivative_loss_is_refused_for_the_vae(data, tmp_path):
    with pytest.raises(ValueError, match="functional only"):
        run("vae", data, tmp_path / "v", SOBOLEV)


# ----------------------------------------------------------------------------- EMA


def test_ema_checkpoints_serve_the_average(data, tmp_path):
    out = tmp_path / "r"
    run("functional", data, out, RECIPE)
    last = load_pt(out / "last.pt")
    served, raw = last["model"], last["train_model"]
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert served.keys() == raw.keys() == ema.keys()
    for k in served:
        assert torch.equal(served[k], ema[k])
    assert any(not torch.equal(served[k], raw[k]) for k in served)
    model, _ = load_run(out, which="last")
    for k, v in model.state_dict().items():
        assert torch.equal(v, served[k])


def test_ema_is_the_exponential_average_of_the_weights(data, tmp_path):
    """One epoch of two steps: the average is ((w0 d + w1 (1-d)) d + w2 (1-d)) with w0 the initial weights."""
    d = 0.7
    cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=50, n_limit=125, seed=1, ema_decay=d)  # 100 train: 2 steps
    weights = []
    real = train_mod.train_step

    def spy(kind, model, *a, **kw):
        if not weights:
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
        real(kind, model, *a, **kw)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})

    mp = pytest.MonkeyPatch()
    mp.setattr(train_mod, "train_step", spy)
    try:
        run("functional", data, tmp_path / "r", cfg)
    finally:
        mp.undo()
    assert len(weights) == 3
    served = load_pt(tmp_path / "r" / "last.pt")["model"]
    w0, w1, w2 = weights
    for k in served:
        if served[k].is_floating_point():
            # AveragedModel copies the first update's weights, then averages: w1 d + w2 (1-d)
            expect = w1[k] * d + w2[k] * (1 - d)
            torch.testing.assert_close(served[k], expect, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- Sobolev loss


@pytest.mark.parametrize("testbed", ["gaussian1d", "speckle1d"])
def test_derivative_loss_vanishes_for_the_exact_functional(testbed, tmp_path):
    """dF/dn = e - V on a ground state: the exact functional's loss is ~0, and not for a wrong V."""
    tb = get_testbed(testbed)
    path = generate_dataset(tb, tmp_path / "d.h5", n=6, seed=0, progress=False)
    a = read_arrays(path, ("density", "potential"))
    n, V = torch.from_numpy(a["density"]), torch.from_numpy(a["potential"])
    exact = ExactKineticFunctional(tb.grid).double()
    _, loss = derivative_loss(exact, n, V, create_graph=False)
    _, wrong = derivative_loss(exact, n, V.roll(1, dims=0), create_graph=False)
    assert float(wrong) > 1e-3
    assert float(loss) < 1e-8 * float(wrong)


def test_derivative_training_records_both_losses_and_learns_the_derivative(data, tmp_path):
    cfg = TrainConfig.from_dict({**SOBOLEV.to_dict(), "epochs": 15, "ema_decay": None, "derivative_weight": 1.0,
                                  "n_limit": None, "batch_size": 25, "warmup_epochs": 0})
    run("functional", data, tmp_path / "r", cfg)
    h = history(tmp_path / "r")
    assert {"train_f", "train_deriv", "val_f", "val_deriv"} <= set(h.columns)
    np.testing.assert_array_equal(h["val_loss"], h["val_f"])  # best.pt is chosen on the F loss alone
    assert h["val_deriv"].iloc[-1] < 0.8 * h["val_deriv"].iloc[0]


# ----------------------------------------------------------------------------- kinetic-norm VAE loss

KINETIC = TrainConfig.from_dict({**RECIPE.to_dict(), "beta": 1e-2, "kinetic_weight": 1.0})


WEIGHTED_EPOCHS = 12


def kinetic_op(testbed):
    return KineticOperator(get_testbed(testbed).grid, "cpu", torch.float64)


@pytest.mark.parametrize("k", [1, 3])
def test_kinetic_error_of_a_plane_wave_is_its_continuum_kinetic_energy(k):
    """Periodic box: dpsi = a cos(2 pi k x / L) has <dpsi|T|dpsi> = a^2 L / 2 * (2 pi k / L)^2 / 2."""
    grid = get_testbed("speckle1d").grid
    L, a = grid.box_length, 0.05
    psi = torch.full((1, grid.n), 1.0 / math.sqrt(L), dtype=torch.float64)
    wave = a * torch.cos(2 * math.pi * k * torch.from_numpy(grid.points) / L)
    got = kinetic_error((psi + wave).square(), psi.square(), kinetic_op("speckle1d"))
    assert float(got) == pytest.approx(a**2 * L / 2 * (2 * math.pi * k / L) ** 2 / 2, rel=1e-8)


def test_kinetic_error_of_a_rescaled_box_ground_state():
    """Hard walls: psi = sqrt(2/L) sin(pi x/L), psi_hat = (1 + a) psi: the error is a^2 (pi/L)^2 / 2."""
    grid = get_testbed("gaussian1d").grid
    L, a = grid.box_length, 0.1
    psi = math.sqrt(2 / L) * torch.sin(math.pi * torch.from_numpy(grid.points) / L)[None]
    got = kinetic_error(((1 + a) * psi).square(), psi.square(), kinetic_op("gaussian1d"))
    assert float(got) == pytest.approx(a**2 * (math.pi / L) ** 2 / 2, rel=1e-8)
    assert float(kinetic_error(psi.square(), psi.square(), kinetic_op("gaussian1d"))) == 0.0


@pytest.mark.parametrize("testbed", ["gaussian1d", "speckle1d"])
def test_kinetic_error_is_the_kinetic_part_of_the_energy_excess(testbed, tmp_path):
    """For a ground state n (energy e) and a normalised n_hat: E_V[n_hat] - e = <dpsi|T|dpsi> + <dpsi|V - e|dpsi>,
    with E_V the exact one-particle energy (von Weizsaecker kinetic + potential)."""
    tb = get_testbed(testbed)
    path = generate_dataset(tb, tmp_path / "d.h5", n=4, seed=1, progress=False)
    a = read_arrays(path, ("density", "potential", "energy"))
    n, V, e = (torch.from_numpy(a[k]) for k in ("density", "potential", "energy"))
    cell = tb.grid.cell_volume
    n_hat = 0.7 * n + 0.3 * n.roll(1, dims=0)  # another instance's density mixed in: normalised, positive
    excess = ExactKineticFunctional(tb.grid).double()(n_hat) + cell * (V * n_hat).sum(1) - e
    dpsi = n_hat.sqrt() - n.sqrt()
    potential_part = cell * ((V - e[:, None]) * dpsi.square()).sum(1)
    per_instance = [float(kinetic_error(n_hat[i : i + 1], n[i : i + 1], kinetic_op(testbed))) for i in range(4)]
    assert float(excess.min()) > 1e-4  # a real excess, not a round-off
    np.testing.assert_allclose(np.array(per_instance) + potential_part.numpy(), excess.numpy(), rtol=1e-6)


def test_kinetic_weight_is_refused_for_the_functional(data, tmp_path):
    with pytest.raises(ValueError, match="VAE only"):
        run("functional", data, tmp_path / "f", TrainConfig.from_dict({**RECIPE.to_dict(), "kinetic_weight": 1.0}))


def test_kinetic_training_records_the_term_and_lowers_it(tmp_path):
    """speckle1d: the history gains train_kin/val_kin, the validation loss is rec + beta kl + w kin,
    and the kinetic-norm error of the reconstructions ends lower than in the same run without it."""
    tb = get_testbed("speckle1d")
    data = generate_dataset(tb, tmp_path / "s.h5", n=150, seed=4, progress=False)
    model = vae_preset("speckle1d", 4, input_scale=14.0).replace(channels=(6,) * 5, kernel=5, dense=(16, 8))
    cfg = TrainConfig.from_dict({**KINETIC.to_dict(), "epochs": WEIGHTED_EPOCHS, "ema_decay": None,
                                  "warmup_epochs": 0, "n_limit": None, "batch_size": 25})
    plain = TrainConfig.from_dict({**cfg.to_dict(), "kinetic_weight": 0.0})
    for name, c in (("k", cfg), ("p", plain)):
        train("vae", data, tmp_path / name, model_config=model, config=c, device="cpu", progress=False)
    h, hp = history(tmp_path / "k"), history(tmp_path / "p")
    assert {"train_kin", "val_kin"} <= set(h.columns) and "val_kin" not in hp.columns
    np.testing.assert_allclose(h["val_loss"], h["val_rec"] + cfg.beta * h["val_kl"] + h["val_kin"], rtol=1e-6)
    dens = torch.from_numpy(read_arrays(data, ("density",))["density"])

    def kin_of(run_dir):
        vae, _ = load_run(run_dir, dtype="float64")
        with torch.no_grad():
            mu, _ = vae.encode(dens)
            return float(kinetic_error(vae.decode(mu), dens, kinetic_op("speckle1d")))

    assert kin_of(tmp_path / "k") < 0.7 * kin_of(tmp_path / "p")


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("kind,cfg", [("functional", RECIPE), ("functional", SOBOLEV), ("vae", RECIPE),
                                      ("vae", KINETIC)],
                         ids=["functional-cosine-ema", "functional-sobolev", "vae-cosine-ema", "vae-kinetic"])
def test_recipe_resumes_bit_identically(data, tmp_path, kind, cfg):
    full, parts = tmp_path / "full", tmp_path / "parts"
    if kind == "vae":
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "beta": 1e-2})
    run(kind, data, full, cfg)
    for _ in range(3):
        run(kind, data, parts, cfg, max_epochs_this_call=1)
    run(kind, data, parts, cfg)
    assert_same_run(full, parts)


def run_killed_at_last_pt(data, out, cfg, monkeypatch, when) -> None:
    """Run a functional training that dies when it is about to write a ``last.pt`` for which ``when(obj)``."""
    real = train_mod._atomic_torch

    def write(path, obj):
        if path.name == "last.pt" and when(obj):
            raise Crash
        return real(path, obj)

    monkeypatch.setattr(train_mod, "_atomic_torch", write)
    with pytest.raises(Crash):
        run("functional", data, out, cfg)
    monkeypatch.undo()


def test_recipe_killed_before_last_pt_resumes(data, tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    run("functional", data, full, SOBOLEV)
    run_killed_at_last_pt(data, killed, SOBOLEV, monkeypatch, lambda obj: obj["epoch"] == 3)  # mid-cosine
    run("functional", data, killed, SOBOLEV)
    assert_same_run(full, killed)


# ----------------------------------------------------------------------------- head refit

RIDGE = TrainConfig.from_dict({**RECIPE.to_dict(), "head_ridge": 1e-6})


def small_functional(seed=0):
    torch.manual_seed(seed)
    from vaedft.models import Functional

    return Functional(SMALL_F).double().eval()


def densities(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, SMALL_F.grid_n, generator=g, dtype=torch.float64) + 0.1
    return x / (x.sum(1, keepdim=True) * SMALL_F.dx)


def test_refit_head_recovers_a_target_linear_in_the_features():
    model = small_functional()
    model.set_target_scaling(3.0, 0.5)  # the refit must undo the output scaling too
    x = densities(200, 1)
    with torch.no_grad():
        z = model.features(x).flatten(1)
        g = torch.Generator().manual_seed(2)
        w, c = torch.randn(z.shape[1], generator=g, dtype=torch.float64), 0.7
        target = z @ w + c
    info = model.refit_head(x, target, 0.0)
    with torch.no_grad():
        pred = model(x, validate=False)
        fresh = densities(50, 3)
        fresh_target = model.features(fresh).flatten(1) @ w + c
        fresh_pred = model(fresh, validate=False)
    assert info["train_mse"] < 1e-16 * float(target.var()) < info["train_mse_before"]
    torch.testing.assert_close(pred, target, rtol=0, atol=1e-8 * float(target.abs().max()))
    # the features span the target exactly: the same head serves densities it was not fitted on
    torch.testing.assert_close(fresh_pred, fresh_target, rtol=0, atol=1e-6 * float(fresh_target.abs().max()))


def test_refit_head_solves_the_ridge_normal_equations():
    """At the solution, the gradient of (1/B)|Z w + c - F|^2 + ridge |w|^2 in the standardised
    features Z vanishes; a large penalty shrinks the head to the mean of F."""
    model = small_functional(1)
    x = densities(150, 4)
    target = torch.linspace(-1.0, 2.0, 150, dtype=torch.float64) ** 2
    ridge = 1e-3
    model.refit_head(x, target, ridge)
    with torch.no_grad():
        z = model.features(x).flatten(1)
        mu, sd = z.mean(0), z.std(0)
        zs = (z - mu) / sd
        resid = model(x, validate=False) - target
        w_std = model.head.weight[0] * model.target_scale * sd  # the head in standardised units
        grad = 2 * zs.T @ resid / len(x) + 2 * ridge * w_std
    assert float(resid.mean().abs()) < 1e-10
    assert float(grad.abs().max()) < 1e-8 * float(target.abs().max())
    fresh = small_functional(1)  # its untrained head fits worse than the mean of F
    assert fresh.refit_head(x, target, 1e8)["accepted"]
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, validate=False), target.mean().expand(150), rtol=0, atol=1e-6)


def test_refit_head_keeps_the_old_head_when_the_new_one_fits_worse():
    model = small_functional(2)
    x = densities(120, 5)
    with torch.no_grad():
        target = model.features(x).flatten(1).sum(1)  # exactly linear: ridge 0 fits it
    assert model.refit_head(x, target, 0.0)["accepted"]
    head = [p.detach().clone() for p in (model.head.weight, model.head.bias)]
    info = model.refit_head(x, target, 1e8)  # a head shrunk to the mean fits worse
    assert not info["accepted"] and info["train_mse"] == info["train_mse_before"]
    assert torch.equal(model.head.weight, head[0]) and torch.equal(model.head.bias, head[1])


def test_refit_head_gives_dead_features_no_weight(monkeypatch):
    """A network that has not learned: its features are constant but for float32 rounding. Fitting
    that noise would give weights of 1e8 whose float32 sums are garbage; the refit uses none of them."""
    model = small_functional(3).float()
    g = torch.Generator().manual_seed(6)
    dead = (0.5 + 1e-8 * torch.randn(200, 48, generator=g, dtype=torch.float64)).float()
    assert float(dead.double().std(0).max()) > 0
    monkeypatch.setattr(model, "features", lambda n: dead[: n.shape[0]].reshape(n.shape[0], 6, 8))
    target = torch.linspace(0.0, 1.0, 200)
    info = model.refit_head(densities(200, 7).float(), target, 1e-6)
    assert info["features_used"] == 0 and info["accepted"]
    assert float(model.head.weight.detach().abs().max()) == 0.0
    with torch.no_grad():
        torch.testing.assert_close(model(densities(200, 7).float(), validate=False), target.mean().expand(200))


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_refit_head_refuses_a_bad_penalty(bad):
    with pytest.raises(ValueError, match="ridge"):
        small_functional().refit_head(densities(10, 1), torch.ones(10, dtype=torch.float64), bad)


def test_head_ridge_run_serves_the_refit_head(data, tmp_path):
    plain, refit = tmp_path / "plain", tmp_path / "refit"
    run("functional", data, plain, RECIPE)
    state = run("functional", data, refit, RIDGE)
    info = state["head_refit"]
    assert info["ridge"] == 1e-6 and info["accepted"] and info["train_mse"] < info["train_mse_before"]
    # the convolutions are those of the plain run; only the head (and nothing else) changed
    a, b = load_pt(plain / "last.pt")["model"], load_pt(refit / "last.pt")["model"]
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == {"head.weight", "head.bias"}
    best, last = load_pt(refit / "best.pt")["model"], load_pt(refit / "last.pt")["model"]
    assert all(torch.equal(best[k], last[k]) for k in best)
    assert history(plain).drop(columns="wall_time_s").equals(history(refit).drop(columns="wall_time_s"))
    # the recorded validation loss is that of the served network
    model, cfg = load_run(refit)
    arrays = read_arrays(data, ("density", "F"))
    val = train_mod._split(RIDGE.n_limit, RIDGE.val_fraction, RIDGE.seed)[1]
    with torch.no_grad():
        pred = model(torch.as_tensor(arrays["density"][val], dtype=torch.float32), validate=False).double()
    mse = float((pred - torch.as_tensor(arrays["F"][val])).square().mean())
    assert mse == pytest.approx(info["val_loss"], rel=1e-5)


def test_a_rejected_refit_leaves_the_checkpoints_as_they_were(data, tmp_path, monkeypatch):
    from vaedft.models import Functional

    def reject(self, n, target, ridge, *, batch_size=500):
        return {"ridge": ridge, "accepted": False, "features_used": 0, "train_mse_before": 1.0, "train_mse": 1.0}

    plain, refit = tmp_path / "plain", tmp_path / "refit"
    run("functional", data, plain, RECIPE)
    monkeypatch.setattr(Functional, "refit_head", reject)
    state = run("functional", data, refit, RIDGE)
    assert state["head_refit"]["accepted"] is False
    assert load_pt(refit / "last.pt")["state"]["head_refit"]["accepted"] is False
    for name in ("last.pt", "best.pt"):
        a, b = load_pt(plain / name)["model"], load_pt(refit / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_head_ridge_is_refused_for_the_vae(data, tmp_path):
    with pytest.raises(ValueError, match="functional only"):
        run("vae", data, tmp_path / "v", RIDGE)


def test_run_killed_before_the_refit_is_saved_refits_on_the_rerun(data, tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    run("functional", data, full, RIDGE)
    run_killed_at_last_pt(data, killed, RIDGE, monkeypatch, lambda obj: "head_refit" in obj["state"])
    assert "head_refit" not in load_pt(killed / "last.pt")["state"]
    state = run("functional", data, killed, RIDGE)
    assert "head_refit" in state
    assert_same_run(full, killed)
    assert run("functional", data, killed, RIDGE) == state  # a finished, refitted run is left alone
