"""The training loop (:mod:`vaedft.train`): learning, resumption, run directories, refusals.

Small generated datasets (a few hundred 1D instances, 40 in 3D) keep the module fast.  Every
run is on the CPU with one torch thread: the results do not depend on other processes
competing for the cores (a 2-thread torch on a shared 2-core machine slows down many times),
and "bit-identical" is a statement about one fixed configuration.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import vaedft.train as train_mod
from vaedft.data.generate import generate_dataset
from vaedft.data.store import read_arrays, read_attrs
from vaedft.metrics import functional_errors, reconstruction_error
from vaedft.models import (
    VAE,
    Functional,
    from_testbed,
    functional_from_testbed,
    functional_loss,
    functional_preset,
    vae_loss,
    vae_preset,
)
from vaedft.physics import get_testbed
from vaedft.runs import CheckpointError, check_run_fits_data, file_sha256, load_run
from vaedft.train import TrainConfig, train

#: Short trainings that learn something on 300 gaussian1d instances (measured: the VAE loss
#: drops about 15x, the functional's MAE on held-out data is about 10x below the mean predictor's).
VAE_SHORT = TrainConfig(epochs=15, lr=1e-3, batch_size=50, seed=0)
FUNCTIONAL_SHORT = TrainConfig(epochs=20, lr=3e-4, batch_size=25, seed=0)
SHORT = {"vae": VAE_SHORT, "functional": FUNCTIONAL_SHORT}
SHORT_LATENT = {"vae": 8, "functional": None}
#: A few epochs on 100 instances (80 train: batches of 50 and 30, so a partial last batch).
TINY = TrainConfig(epochs=5, lr=1e-3, batch_size=50, seed=3, n_limit=100)
KINDS = ("vae", "functional")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_data")
    g1, sp = get_testbed("gaussian1d"), get_testbed("speckle1d")
    return {
        "train": generate_dataset(g1, root / "g_train.h5", n=300, seed=1, progress=False),
        "test": generate_dataset(g1, root / "g_test.h5", n=100, seed=2, progress=False),
        "speckle": generate_dataset(sp, root / "s.h5", n=40, seed=3, progress=False),
    }


def run(kind, data_path, out, cfg, **kwargs) -> dict:
    return train(kind, data_path, out, config=cfg, device="cpu", progress=False, **kwargs)


def history(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")


def state(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


def load_pt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_tree_equal(a, b, where="") -> None:
    """Exact equality of nested dicts / lists of tensors and numbers (tensors: torch.equal, same dtype)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"tensors differ at {where}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"keys differ at {where}"
        for k in a:
            if k != "wall_time_s":  # the only thing a resumed run may not reproduce
                assert_tree_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"lengths differ at {where}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_tree_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{a!r} != {b!r} at {where}"


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical results: history.csv text, last.pt and best.pt, state.json but the wall time."""
    def text(run_dir):
        return history(run_dir).drop(columns="wall_time_s").to_csv(index=False, float_format="%.17g")

    assert text(a) == text(b)
    for name in ("last.pt", "best.pt"):
        assert_tree_equal(load_pt(a / name), load_pt(b / name), name)
    sa, sb = state(a), state(b)
    sa.pop("wall_time_s"), sb.pop("wall_time_s")
    assert sa == sb


@pytest.fixture(scope="module")
def short_runs(data, tmp_path_factory) -> dict[str, Path]:
    """One short training per kind on 300 gaussian1d instances (VAE with l_d = 8)."""
    root = tmp_path_factory.mktemp("short_runs")
    out = {}
    for kind in KINDS:
        out[kind] = root / kind
        final = run(kind, data["train"], out[kind], SHORT[kind], latent_dim=SHORT_LATENT[kind])
        assert final["finished"] and final["epoch"] == SHORT[kind].epochs
    return out


def val_split(data_path: Path, cfg: TrainConfig):
    """The validation instances of a run, as the training loop chooses them."""
    n = int(read_attrs(data_path)["n_instances"])
    n = min(n, cfg.n_limit) if cfg.n_limit else n
    _, val_idx = train_mod._split(n, cfg.val_fraction, cfg.seed)
    arrays = read_arrays(data_path, ("density", "F"), sl=slice(0, n))
    return arrays["density"][val_idx], arrays["F"][val_idx]


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("kind", KINDS)
def test_short_training_lowers_losses(short_runs, kind):
    h = history(short_runs[kind])
    assert list(h["epoch"]) == list(range(1, SHORT[kind].epochs + 1))
    assert np.isfinite(h.drop(columns="epoch").to_numpy()).all()
    assert h["train_loss"].iloc[-1] < 0.2 * h["train_loss"].iloc[0]
    assert h["val_loss"].min() < 0.2 * h["val_loss"].iloc[0]
    if kind == "vae":
        assert h["train_rec"].iloc[-1] < 0.2 * h["train_rec"].iloc[0]
        np.testing.assert_allclose(h["train_loss"], h["train_rec"] + SHORT[kind].beta * h["train_kl"], rtol=1e-6)
        np.testing.assert_allclose(h["val_loss"], h["val_rec"] + SHORT[kind].beta * h["val_kl"], rtol=1e-6)


def test_functional_beats_the_mean_on_held_out_data(short_runs, data):
    model, _ = load_run(short_runs["functional"])
    test = read_arrays(data["test"], ("density", "F"))
    err = functional_errors(model, test["density"], test["F"])
    n_train_mean = float(read_arrays(data["train"], ("F",))["F"].mean())
    baseline = float(np.abs(test["F"] - n_train_mean).mean())
    assert err["mae"] < 0.5 * baseline, (err["mae"], baseline)
    assert err["mae_kcal_per_mol"] == pytest.approx(err["mae"] / 1.5936e-3)


def test_vae_reconstructs_held_out_data_better_than_untrained(short_runs, data):
    model, run_cfg = load_run(short_runs["vae"])
    assert model.config.latent_dim == 8 and not model.training
    dens = read_arrays(data["test"], ("density",))["density"]
    trained = reconstruction_error(model, dens)
    torch.manual_seed(0)
    untrained = reconstruction_error(VAE(from_testbed(read_attrs(data["train"]), 8)), dens)
    assert trained["mean"] < 0.5 * untrained["mean"], (trained["mean"], untrained["mean"])


# ----------------------------------------------------------------------------- run directory


@pytest.mark.parametrize("kind", KINDS)
def test_run_directory_contents(short_runs, data, kind):
    out, cfg = short_runs[kind], SHORT[kind]
    assert {"config.json", "last.pt", "best.pt", "state.json", "history.csv"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.tmp")), "temporary files left behind"

    run_cfg = json.loads((out / "config.json").read_text())
    attrs = read_attrs(data["train"])
    expected_model = from_testbed(attrs, 8) if kind == "vae" else functional_from_testbed(attrs)
    assert run_cfg["kind"] == kind
    assert run_cfg["model"] == expected_model.to_dict()
    assert run_cfg["train"] == cfg.to_dict() and run_cfg["train"]["seed"] == cfg.seed
    assert run_cfg["data"]["path"] == str(Path(data["train"]).resolve())
    assert run_cfg["data"]["sha256"] == file_sha256(data["train"])
    assert run_cfg["data"]["testbed"] == "gaussian1d" and run_cfg["data"]["n_instances"] == 300

    h, st = history(out), state(out)
    assert st["epoch"] == cfg.epochs and st["finished"] and not st["stopped_early"]
    assert len(h) == cfg.epochs
    best = int(h["val_loss"].idxmin())
    assert st["best_epoch"] == int(h["epoch"][best])
    assert st["best_val_loss"] == h["val_loss"][best]  # same float, through JSON and CSV

    last, best_ckpt = load_pt(out / "last.pt"), load_pt(out / "best.pt")  # weights_only=True
    assert int(last["epoch"]) == cfg.epochs
    assert int(best_ckpt["epoch"]) == st["best_epoch"]
    assert {"model", "optimizer", "epoch"} <= set(last)
    assert all(isinstance(v, torch.Tensor) for v in last["model"].values())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["best", "last"])
def test_checkpoint_reproduces_recorded_val_loss(short_runs, data, kind, which):
    """best.pt / last.pt hold the weights whose validation loss the history records."""
    out, cfg = short_runs[kind], SHORT[kind]
    model, _ = load_run(out, which=which)
    epoch = state(out)["best_epoch"] if which == "best" else cfg.epochs
    x, y = val_split(data["train"], cfg)
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    with torch.no_grad():
        if kind == "vae":
            n_hat, mu, logvar = model(x)
            loss = vae_loss(n_hat, x, mu, logvar, cfg.beta)[0]
        else:
            loss = functional_loss(model(x), y)
    recorded = history(out)["val_loss"][epoch - 1]
    assert float(loss) == pytest.approx(recorded, rel=1e-5)


def test_rerun_of_finished_run_changes_nothing(short_runs, data, tmp_path):
    out = short_runs["functional"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    moved = tmp_path / "moved.h5"  # same content elsewhere: the hash, not the path, identifies the data
    shutil.copyfile(data["train"], moved)
    for path in (data["train"], moved):
        final = run("functional", path, out, FUNCTIONAL_SHORT)
        assert final == json.loads(before["state.json"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ----------------------------------------------------------------------------- resumption


@pytest.mark.parametrize("kind", KINDS)
def test_resume_equals_uninterrupted(data, tmp_path, kind):
    full, parts = tmp_path / "full", tmp_path / "parts"
    run(kind, data["train"], full, TINY)
    st = run(kind, data["train"], parts, TINY, max_epochs_this_call=2)
    assert st["epoch"] == 2 and not st["finished"]
    assert len(history(parts)) == 2 and int(load_pt(parts / "last.pt")["epoch"]) == 2
    # a "crash" between calls: nothing deleted or altered; the rerun continues at state.json's epoch
    st = run(kind, data["train"], parts, TINY, max_epochs_this_call=1)
    assert st["epoch"] == 3 and list(history(parts)["epoch"]) == [1, 2, 3]
    st = run(kind, data["train"], parts, TINY)
    assert st["epoch"] == TINY.epochs and st["finished"]
    assert_same_run(full, parts)


class Crash(Exception):
    """Stands for a kill at a chosen point of the loop."""


def _crash_mid_epoch(monkeypatch, epoch):
    real, calls = train_mod._losses, {"n": 0}
    per_epoch = 3  # TINY: two training batches and one validation batch per epoch

    def losses(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == per_epoch * (epoch - 1) + 2:  # the second training batch of `epoch`
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_losses", losses)


def _crash_before_write(monkeypatch, name, epoch):
    fn = "_atomic_json" if name == "state.json" else "_atomic_torch"
    real = getattr(train_mod, fn)

    def write(path, obj):
        if Path(path).name == name and obj["epoch"] == epoch:
            raise Crash
        return real(path, obj)

    monkeypatch.setattr(train_mod, fn, write)


CRASHES = {
    "mid_epoch_3": lambda mp: _crash_mid_epoch(mp, 3),
    "before_last_pt_epoch_3": lambda mp: _crash_before_write(mp, "last.pt", 3),
    "before_state_json_epoch_3": lambda mp: _crash_before_write(mp, "state.json", 3),
    "before_state_json_epoch_1": lambda mp: _crash_before_write(mp, "state.json", 1),
}


@pytest.mark.parametrize(
    "crash",
    [
        "mid_epoch_3",
        "before_last_pt_epoch_3",
        "before_state_json_epoch_3",
        "before_state_json_epoch_1",
    ],
)
def test_killed_run_resumes_to_the_uninterrupted_result(data, tmp_path, monkeypatch, crash):
    full, killed = tmp_path / "full", tmp_path / "killed"
    run("functional", data["train"], full, TINY)
    CRASHES[crash](monkeypatch)
    with pytest.raises(Crash):
        run("functional", data["train"], killed, TINY)
    monkeypatch.undo()
    run("functional", data["train"], killed, TINY)
    assert_same_run(full, killed)


# ----------------------------------------------------------------------------- determinism, dtype, early stop


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_run_other_seed_differs(data, tmp_path, kind):
    cfg = TINY.from_dict({**TINY.to_dict(), "epochs": 2})
    run(kind, data["train"], tmp_path / "a", cfg)
    run(kind, data["train"], tmp_path / "b", cfg)
    assert_same_run(tmp_path / "a", tmp_path / "b")
    other = TrainConfig.from_dict({**cfg.to_dict(), "seed": cfg.seed + 1})
    run(kind, data["train"], tmp_path / "c", other)
    ha, hc = history(tmp_path / "a"), history(tmp_path / "c")
    assert not np.array_equal(ha["train_loss"], hc["train_loss"])
    assert not np.array_equal(ha["val_loss"], hc["val_loss"])
    wa, wc = load_pt(tmp_path / "a" / "last.pt")["model"], load_pt(tmp_path / "c" / "last.pt")["model"]
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())


@pytest.mark.parametrize("kind", KINDS)
def test_float64_training(data, tmp_path, kind):
    cfg = TrainConfig.from_dict({**TINY.to_dict(), "epochs": 2, "dtype": "float64"})
    st = run(kind, data["train"], tmp_path / "r", cfg)
    assert st["finished"] and np.isfinite(st["best_val_loss"])
    assert np.isfinite(history(tmp_path / "r").drop(columns="epoch").to_numpy()).all()
    stored = load_pt(tmp_path / "r" / "last.pt")["model"]
    assert all(v.dtype == torch.float64 for v in stored.values() if v.is_floating_point())
    for dtype in (None, "float64"):
        model, _ = load_run(tmp_path / "r", dtype=dtype)
        assert all(p.dtype == torch.float64 for p in model.parameters())
    model32, _ = load_run(tmp_path / "r", dtype="float32")
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    dens = read_arrays(data["test"], ("density",), sl=slice(0, 10))["density"]
    if kind == "vae":
        assert np.isfinite(reconstruction_error(model, dens)["per_instance"]).all()
    else:
        assert torch.isfinite(model(torch.as_tensor(dens))).all()


def test_float32_run_loads_as_float64(short_runs, data):
    model, run_cfg = load_run(short_runs["functional"], dtype="float64")
    assert run_cfg["train"]["dtype"] == "float32"
    assert all(p.dtype == torch.float64 for p in model.parameters())
    dens = torch.as_tensor(read_arrays(data["test"], ("density",), sl=slice(0, 10))["density"])
    model32, _ = load_run(short_runs["functional"])
    with torch.no_grad():
        f64, f32 = model(dens).numpy(), model32(dens.float()).double().numpy()
    np.testing.assert_allclose(f64, f32, rtol=1e-5, atol=1e-6)


def test_early_stopping_really_stops(data, tmp_path):
    """lr = 1e-30 leaves every float32 weight unchanged: the validation loss never improves after epoch 1."""
    cfg = TrainConfig(epochs=10, lr=1e-30, batch_size=50, n_limit=100, patience=2)
    out = tmp_path / "stop"
    st = run("functional", data["train"], out, cfg)
    assert st["stopped_early"] and st["finished"]
    assert st["epoch"] == 3 < cfg.epochs and st["best_epoch"] == 1
    h = history(out)
    assert list(h["epoch"]) == [1, 2, 3] and (h["val_loss"] == h["val_loss"][0]).all()
    assert int(load_pt(out / "best.pt")["epoch"]) == 1 and int(load_pt(out / "last.pt")["epoch"]) == 3
    again = run("functional", data["train"], out, cfg)  # a finished run is not continued
    assert again == st and len(history(out)) == 3


def test_patience_not_reached_runs_all_epochs(data, tmp_path):
    cfg = TrainConfig(epochs=3, lr=1e-30, batch_size=50, n_limit=100, patience=5)
    st = run("functional", data["train"], tmp_path / "r", cfg)
    assert st["epoch"] == 3 and st["finished"] and not st["stopped_early"]


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "change",
    [
        {"beta": 2.0},
        {"lr": 2e-3},
        {"seed": 1},
        {"dtype": "float64"},
        {"batch_size": 40},
        {"latent_dim": 4},
        {"data": "test"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_rerun_with_other_settings_is_refused(short_runs, data, change):
    out = short_runs["vae"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    settings = VAE_SHORT.to_dict()
    latent, path = SHORT_LATENT["vae"], data["train"]
    if "latent_dim" in change:
        latent = change["latent_dim"]
    elif "data" in change:
        path = data[change["data"]]
    else:
        settings.update(change)
    with pytest.raises(CheckpointError):
        run("vae", path, out, TrainConfig.from_dict(settings), latent_dim=latent)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_load_run_refuses_weights_of_another_architecture(short_runs, data, tmp_path):
    small = tmp_path / "latent4"
    cfg = TrainConfig(epochs=1, batch_size=50, n_limit=60)
    run("vae", data["train"], small, cfg, latent_dim=4)
    load_run(small)  # fits
    shutil.copyfile(short_runs["vae"] / "best.pt", small / "best.pt")  # weights of the l_d = 8 run
    with pytest.raises(CheckpointError, match="does not match"):
        load_run(small)
    shutil.copyfile(short_runs["functional"] / "last.pt", small / "last.pt")
    with pytest.raises(CheckpointError):
        load_run(small, which="last")


def test_load_run_refuses_incomplete_directories(short_runs, tmp_path):
    with pytest.raises(CheckpointError):
        load_run(tmp_path)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copyfile(short_runs["vae"] / "config.json", partial / "config.json")
    with pytest.raises(CheckpointError):
        load_run(partial)
    with pytest.raises(ValueError):
        load_run(short_runs["vae"], which="middle")


def test_check_run_fits_data(short_runs, data, tmp_path):
    _, run_cfg = load_run(short_runs["vae"])
    check_run_fits_data(run_cfg, data["test"])  # same testbed and grid
    with pytest.raises(CheckpointError, match="speckle1d"):
        check_run_fits_data(run_cfg, data["speckle"])
    coarse = generate_dataset(
        get_testbed("gaussian1d").replace(n_grid=128), tmp_path / "g128.h5", n=4, seed=5, progress=False
    )
    with pytest.raises(CheckpointError, match="grid_n"):
        check_run_fits_data(run_cfg, coarse)


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"epochs": 2.5},
        {"batch_size": 0},
        {"lr": -1.0},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"val_fraction": 1.0},
        {"val_fraction": 0.0},
        {"dtype": "float16"},
        {"seed": -1},
        {"seed": True},
        {"patience": 0},
        {"n_limit": 0},
        {"beta": -1.0},
        {"beta": float("inf")},
    ],
    ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()),
)
def test_bad_train_config_raises(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_train_config_round_trip():
    cfg = TrainConfig(epochs=3, lr=2e-4, patience=4, n_limit=10, dtype="float64")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({**cfg.to_dict(), "momentum": 0.9})


def test_unknown_kind_raises(data, tmp_path):
    with pytest.raises(ValueError, match="kind"):
        run("gan", data["train"], tmp_path / "r", TINY)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "kind, model_config",
    [
        ("vae", vae_preset("speckle1d", 16)),  # same 256 points, other dx and boundary
        ("vae", vae_preset("gaussian3d")),
        ("functional", functional_preset("speckle1d")),
        ("functional", functional_preset("gaussian3d")),
    ],
    ids=["vae-speckle1d", "vae-gaussian3d", "functional-speckle1d", "functional-gaussian3d"],
)
def test_model_config_for_another_grid_is_refused(data, tmp_path, kind, model_config):
    with pytest.raises(ValueError):  # CheckpointError is a ValueError
        run(kind, data["train"], tmp_path / "r", TINY, model_config=model_config)
    assert not (tmp_path / "r" / "config.json").exists()


def test_model_config_of_the_other_kind_is_refused(data, tmp_path):
    attrs = read_attrs(data["train"])
    with pytest.raises(ValueError, match="VAEConfig"):
        run("vae", data["train"], tmp_path / "a", TINY, model_config=functional_from_testbed(attrs))
    with pytest.raises(ValueError, match="FunctionalConfig"):
        run("functional", data["train"], tmp_path / "b", TINY, model_config=from_testbed(attrs, 4))


def test_latent_dim_with_model_config_raises(data, tmp_path):
    with pytest.raises(ValueError, match="latent_dim"):
        run(
            "vae",
            data["train"],
            tmp_path / "r",
            TINY,
            model_config=from_testbed(read_attrs(data["train"]), 4),
            latent_dim=4,
        )
    assert not (tmp_path / "r" / "config.json").exists()


def test_latent_dim_for_a_functional_raises(data, tmp_path):
    with pytest.raises(ValueError, match="latent"):
        run("functional", data["train"], tmp_path / "r", TINY, latent_dim=4, max_epochs_this_call=0)


def test_custom_model_config_is_recorded(data, tmp_path):
    cfg = from_testbed(read_attrs(data["train"]), 2).replace(channels=(4,) * 5, kernel=5, dense=(8,))
    st = run("vae", data["train"], tmp_path / "r", TrainConfig(epochs=1, batch_size=50, n_limit=60), model_config=cfg)
    assert st["finished"]
    model, run_cfg = load_run(tmp_path / "r")
    assert model.config == cfg and run_cfg["model"] == cfg.to_dict()


# ----------------------------------------------------------------------------- 3D


@pytest.fixture(scope="module")
def gaussian3d_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("g3d")
    return generate_dataset(get_testbed("gaussian3d"), root / "g3.h5", n=40, seed=7, progress=False)


@pytest.mark.parametrize("kind", KINDS)
def test_gaussian3d_smoke(gaussian3d_data, tmp_path, kind):
    """Two epochs of the paper's 3D architecture on 20 instances, reload, evaluate."""
    path = gaussian3d_data
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=10, n_limit=20)
    out = tmp_path / kind
    st = run(kind, path, out, cfg)
    assert st["finished"] and st["epoch"] == 2 and np.isfinite(st["best_val_loss"])
    model, run_cfg = load_run(out)
    assert isinstance(model, VAE if kind == "vae" else Functional) and run_cfg["data"]["testbed"] == "gaussian3d"
    assert model.config.grid_shape == (18, 18, 18)
    check_run_fits_data(run_cfg, path)
    test = read_arrays(path, ("density", "F"), sl=slice(20, 26))  # not in the n_limit = 20 used for training
    if kind == "vae":
        err = reconstruction_error(model, test["density"])
        assert err["per_instance"].shape == (6,) and 0 <= err["max"] <= 2
    else:
        assert np.isfinite(functional_errors(model, test["density"], test["F"])["per_instance"]).all()
