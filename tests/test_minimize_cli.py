"""`vaedft minimize` end to end, and the result file of :mod:`vaedft.results`.

A tiny pair (a VAE with l_d = 4 and a functional, each trained 2 epochs on 120 gaussian1d
instances) minimises 6 test instances with every method through :func:`vaedft.cli.main`; the
result file must pass :func:`read_result` and its metrics must equal those recomputed from the
stored arrays with :mod:`vaedft.metrics`.  Mismatched inputs (another testbed or grid, models
from different testbeds, a latent method without a VAE, training data that is not the run's,
missing run directories) must exit with status 2 and say why.  Every result carries the error budget
(:func:`vaedft.metrics.error_budget`), printed as a table; ``--no-gap`` leaves out the manifold gap,
and a file without a budget (written before budgets existed) still reads.  The quality of the minimum is
not tested here (the models are barely trained); see ``tests/test_minimize.py`` for the engine.

Everything runs on the CPU with one torch thread (see ``tests/test_train.py`` for why).
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from vaedft.cli import main
from vaedft.data.generate import generate_dataset
from vaedft.data.store import read_arrays
from vaedft.metrics import BUDGET_TERMS, KCAL_PER_MOL, VAE_TERMS, budget_summary, density_errors, energy_errors
from vaedft.minimize import LATENT_METHODS, METHODS, MinimizeConfig
from vaedft.physics import get_testbed
from vaedft.pipeline import result_budget
from vaedft.results import METRIC_ATTRS, ResultError, read_result
from vaedft.train import TrainConfig, file_sha256, train

N_TEST = 6
STEPS = 25
HISTORY = 5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Datasets and runs: gaussian1d train/test, a gaussian1d test set on another grid, speckle1d data and a
    speckle1d functional, a gaussian1d VAE and functional, and a functional whose output is NaN."""
    root = tmp_path_factory.mktemp("minimize_cli")
    g1 = get_testbed("gaussian1d")
    sp = get_testbed("speckle1d")
    out = {
        "root": root,
        "train": generate_dataset(g1, root / "train.h5", n=120, seed=5, progress=False),
        "test": generate_dataset(g1, root / "test.h5", n=N_TEST, seed=6, progress=False),
        "test_grid128": generate_dataset(g1.replace(n_grid=128), root / "test128.h5", n=3, seed=6, progress=False),
        "speckle_train": generate_dataset(sp, root / "speckle_train.h5", n=20, seed=1, progress=False),
        "speckle_test": generate_dataset(sp, root / "speckle_test.h5", n=3, seed=2, progress=False),
    }
    quick = {"device": "cpu", "progress": False}
    two_epochs = TrainConfig(epochs=2, lr=1e-3, batch_size=40)
    train("vae", out["train"], root / "vae", latent_dim=4, config=two_epochs, **quick)
    train("functional", out["train"], root / "functional", config=two_epochs, **quick)
    train("functional", out["speckle_train"], root / "speckle_functional",
          config=TrainConfig(epochs=1, lr=1e-3, batch_size=20), **quick)
    out.update(vae=root / "vae", functional=root / "functional", speckle_functional=root / "speckle_functional")
    # a functional that returns NaN for every density: every instance must be reported diverged
    nan_dir = root / "nan_functional"
    shutil.copytree(out["functional"], nan_dir)
    ckpt = torch.load(nan_dir / "best.pt", weights_only=True)
    ckpt["model"]["head.bias"] = torch.full_like(ckpt["model"]["head.bias"], float("nan"))
    torch.save(ckpt, nan_dir / "best.pt")
    out["nan_functional"] = nan_dir
    # a VAE run whose recorded training file is no longer where it was
    moved = root / "vae_moved_data"
    shutil.copytree(out["vae"], moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["data"]["path"] = str(root / "gone" / "train.h5")
    (moved / "config.json").write_text(json.dumps(cfg))
    out["vae_moved_data"] = moved
    return out


def argv(files, out, method="latent-gd", *extra, vae="vae", functional="functional", data="test") -> list[str]:
    args = ["minimize", "--functional", str(files[functional]), "--data", str(files[data]), "--out", str(out),
            "--method", method, "--steps", str(STEPS), "--history-every", str(HISTORY), "--no-progress"]
    if vae is not None:
        args += ["--vae", str(files[vae])]
    return args + list(extra)


def assert_metrics_recomputed(res: dict) -> None:
    """The stored metrics equal energy_errors / density_errors of the stored arrays."""
    m = res["metrics"]
    energy = energy_errors(res["e_min"], res["e_gs"])
    n_min = np.where(res["diverged"][:, None], np.nan, res["n_min"])
    density = density_errors(n_min, read_arrays(res["attrs"]["test_data_path"], names=("density",))["density"],
                             res["attrs"]["cell_volume"])
    for key, value in energy.items():
        if np.ndim(value) == 0 and key != "n":
            np.testing.assert_allclose(m[key], value, rtol=1e-12, atol=0, equal_nan=True, err_msg=key)
    np.testing.assert_array_equal(m["violation_indices"], energy["violation_indices"])
    np.testing.assert_array_equal(m["signed_error"], energy["signed_error"])
    np.testing.assert_array_equal(m["density_error"], density["per_instance"])
    for key in ("mean", "std", "max"):
        np.testing.assert_allclose(m[f"density_error_{key}"], density[key], rtol=1e-12, atol=0, equal_nan=True)
    assert m["n_density_nonfinite"] == density["n_nonfinite"]
    assert m["n_converged"] == int(res["converged"].sum()) and m["n_diverged"] == int(res["diverged"].sum())
    assert m["n_instances"] == len(res["e_min"])
    assert m["n_violations"] == len(m["violation_indices"])
    assert set(METRIC_ATTRS) <= set(m)


def assert_budget(res: dict, gap: bool = True) -> None:
    """The stored budget has the terms of its method, per-instance arrays (E0) consistent with the stored
    minimization, and a summary (kcal/mol) equal to budget_summary of those arrays."""
    b = res["budget"]
    latent = res["config"].is_latent
    want = [t for t in BUDGET_TERMS if (latent or t not in VAE_TERMS) and (gap or t != "manifold_gap")]
    assert list(b["terms"]) == want
    for values in b["terms"].values():
        assert values.shape == (N_TEST,) and values.dtype == np.float64
    ok = ~res["diverged"]
    # total is e_min - e_gs, recomputed in float64 from z_min (or n_min)
    np.testing.assert_allclose(b["terms"]["total"][ok], (res["e_min"] - res["e_gs"])[ok], rtol=0, atol=1e-9)
    assert np.isnan(b["terms"]["total"][~ok]).all()
    assert (b["terms"]["exact_energy_at_min"][ok] >= -1e-8).all()  # variational upper bound
    np.testing.assert_allclose(b["terms"]["total"], b["terms"]["functional_error_at_min"]
                               + b["terms"]["exact_energy_at_min"], atol=1e-12)
    summary = budget_summary(b["terms"])
    assert set(summary) <= set(b["summary"])
    for key, value in summary.items():
        np.testing.assert_allclose(b["summary"][key], value, rtol=1e-12, equal_nan=True, err_msg=key)
    if latent and gap:
        assert (b["terms"]["manifold_gap"] >= -1e-8).all()
        assert b["gap_config"]["method"] == "latent-lbfgs" and b["gap_config"]["steps"] == min(200, STEPS)
        assert b["gap_steps"].shape == (N_TEST,) and b["gap_converged"].dtype == np.bool_
    else:
        assert b["gap_config"] is None and b["gap_steps"] is None


# ----------------------------------------------------------------------------- every method end to end


@pytest.mark.parametrize("method", METHODS)
def test_each_method_writes_a_valid_result(files, tmp_path, capsys, method):
    out = tmp_path / "result.h5"
    extra = ["--n-components", "4"] if method == "pca-gd" else []
    assert main(argv(files, out, method, *extra)) == 0
    captured = capsys.readouterr()
    for text in ("mean |e_min - e_gs| (E0)", "(kcal/mol)", "within chemical accuracy", "variational violations",
                 "density error", "converged", "diverged", method, "error budget", "mean (kcal/mol)",
                 "functional_error", "exact_energy_at_min", "E_exact[n_min] - e_gs"):
        assert text in captured.out
    assert ("not computed" in captured.out) == (method not in LATENT_METHODS)
    if method not in LATENT_METHODS:
        assert "--vae is not used" in captured.err
    assert not (tmp_path / "result.h5.tmp").exists()

    res = read_result(out)
    test = read_arrays(files["test"], names=("energy", "density"))
    np.testing.assert_array_equal(res["e_gs"], test["energy"])
    assert res["n_min"].shape == (N_TEST, 256)
    assert (res["z_min"] is not None) == (method in LATENT_METHODS)
    if method in LATENT_METHODS:
        assert res["z_min"].shape == (N_TEST, 4)
    assert res["energy_history"].shape == (N_TEST, STEPS // HISTORY + 1)
    np.testing.assert_array_equal(res["history_steps"], np.arange(0, STEPS + 1, HISTORY))
    finite = ~res["diverged"]
    np.testing.assert_array_equal(res["e_min"][finite], res["e_last"][finite])
    np.testing.assert_array_equal(res["energy_history"][finite, -1], res["e_min"][finite])
    assert_metrics_recomputed(res)
    assert_budget(res)

    # provenance
    attrs, cfg = res["attrs"], res["config"]
    assert cfg == MinimizeConfig(method=method, steps=STEPS, history_every=HISTORY,
                                 **({"n_components": 4} if method == "pca-gd" else {}))
    assert attrs["testbed"] == "gaussian1d" and attrs["method"] == method and attrs["vaedft_version"]
    assert attrs["test_data_sha256"] == file_sha256(files["test"])
    assert attrs["functional_checkpoint_sha256"] == file_sha256(files["functional"] / "best.pt")
    assert res["functional_run"] == json.loads((files["functional"] / "config.json").read_text())
    assert attrs["train_data_sha256"] == file_sha256(files["train"])  # init "mean" needs the training densities
    if method in LATENT_METHODS:
        assert attrs["vae_checkpoint_sha256"] == file_sha256(files["vae"] / "best.pt")
        assert res["vae_run"] == json.loads((files["vae"] / "config.json").read_text())
    else:
        assert res["vae_run"] is None and attrs["vae_checkpoint_sha256"] == ""


def test_prior_starts_need_no_training_data_and_record_none(files, tmp_path):
    out = tmp_path / "r.h5"
    assert main(argv(files, out, "latent-adam", "--init", "prior", "--starts", "2", "--seed", "3",
                     vae="vae_moved_data")) == 0
    res = read_result(out)
    assert res["attrs"]["train_data_path"] == "" and res["e_starts"].shape == (N_TEST, 2)
    assert res["config"].seed == 3 and res["config"].init == "prior"


def test_a_copy_of_the_training_file_is_accepted(files, tmp_path):
    copy = tmp_path / "elsewhere.h5"
    shutil.copy(files["train"], copy)
    out = tmp_path / "r.h5"
    assert main(argv(files, out, "latent-gd", "--train-data", str(copy), vae="vae_moved_data")) == 0
    assert read_result(out)["attrs"]["train_data_path"] == str(copy.resolve())


def test_divergence_is_reported_not_hidden(files, tmp_path, capsys):
    out = tmp_path / "r.h5"
    assert main(argv(files, out, "latent-gd", functional="nan_functional")) == 0
    assert f"{N_TEST} / {N_TEST}" in capsys.readouterr().out
    res = read_result(out)
    assert res["diverged"].all() and np.isnan(res["e_min"]).all() and not res["converged"].any()
    m = res["metrics"]
    assert m["n_diverged"] == N_TEST and m["n_nonfinite"] == N_TEST and m["n_density_nonfinite"] == N_TEST
    assert m["fraction_within_ca"] == 0.0 and m["n_violations"] == 0 and np.isnan(m["mean_abs_error"])
    assert_metrics_recomputed(res)
    b = res["budget"]
    for name in ("functional_error", "representation", "total", "functional_error_at_min", "exact_energy_at_min"):
        assert np.isnan(b["terms"][name]).all() and b["summary"][f"{name}_n_finite"] == 0
    assert np.isfinite(b["terms"]["roughness"]).all() and np.isfinite(b["terms"]["manifold_gap"]).all()


def test_no_gap_skips_the_manifold_gap(files, tmp_path, capsys):
    out = tmp_path / "r.h5"
    assert main(argv(files, out, "latent-gd", "--no-gap")) == 0
    text = capsys.readouterr().out
    assert "manifold_gap" in text and "not computed" in text
    res = read_result(out)
    assert_budget(res, gap=False)
    assert "manifold_gap_mean_kcal_per_mol" not in res["budget"]["summary"]


def test_gap_steps_and_the_budget_of_an_existing_file(files, tmp_path):
    out = tmp_path / "r.h5"
    assert main(argv(files, out, "latent-lbfgs", "--gap-steps", "7")) == 0
    res = read_result(out)
    assert res["budget"]["gap_config"]["steps"] == 7 and (res["budget"]["gap_steps"] <= 7).all()
    again = result_budget(out, gap_steps=7)  # from the runs and the test file the result records
    for name, values in res["budget"]["terms"].items():
        np.testing.assert_allclose(again[name], values, rtol=0, atol=1e-12, equal_nan=True, err_msg=name)
    summary = res["budget"]["summary"]
    assert summary["total_mean_kcal_per_mol"] == pytest.approx(
        np.nanmean(res["budget"]["terms"]["total"]) / KCAL_PER_MOL, rel=1e-12)


def test_a_result_without_budget_still_reads(files, tmp_path):
    """Files written before the error budget existed have no budget group: read_result gives budget None."""
    out = tmp_path / "r.h5"
    assert main(argv(files, out, "latent-gd", "--no-gap")) == 0
    with h5py.File(out, "a") as f:
        del f["budget"]
    res = read_result(out)
    assert res["budget"] is None
    assert_metrics_recomputed(res)


def test_overwrite(files, tmp_path, capsys):
    out = tmp_path / "r.h5"
    assert main(argv(files, out, "density-gd", vae=None)) == 0
    assert main(argv(files, out, "density-gd", vae=None)) == 2
    assert "exists" in capsys.readouterr().err
    assert main(argv(files, out, "density-gd", "--lr", "0.5", "--overwrite", vae=None)) == 0
    assert read_result(out)["config"].lr == 0.5


# ----------------------------------------------------------------------------- refusals


REFUSALS = {
    "speckle test set, gaussian1d models": (dict(data="speckle_test"), "is speckle1d data; the model was trained on "
                                            "gaussian1d"),
    "test set on another grid": (dict(data="test_grid128"), "grid_n 256 vs 128"),
    "VAE and functional from different testbeds": (dict(functional="speckle_functional"), "different testbeds"),
    "latent method without --vae": (dict(vae=None), "give the VAE run with --vae"),
    "training file of another hash": (dict(extra=("--train-data", "test")), "is not the file the --vae run"),
    "recorded training file moved": (dict(vae="vae_moved_data"), "give its current location with --train-data"),
    "missing VAE run dir": (dict(vae="missing"), "no such run directory"),
    "missing functional run dir": (dict(functional="missing"), "no such run directory"),
    "functional run given as --vae": (dict(vae="functional"), "holds a functional run"),
    "missing test file": (dict(data="missing"), "no such file"),
    "density method with prior init": (dict(method="density-gd", extra=("--init", "prior")), "init 'prior'"),
    "pca with too many components": (dict(method="pca-gd", extra=("--n-components", "500")), "n_components = 500"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_mismatched_inputs_exit_2_with_a_clear_message(files, tmp_path, capsys, case):
    kw, message = REFUSALS[case]
    paths = {**files, "missing": tmp_path / "nowhere"}
    extra = [str(paths[e]) if e in paths else e for e in kw.get("extra", ())]
    out = tmp_path / "r.h5"
    call = {k: v for k, v in kw.items() if k in ("vae", "functional", "data")}
    assert main(argv(paths, out, kw.get("method", "latent-gd"), *extra, **call)) == 2
    err = capsys.readouterr().err
    assert "vaedft minimize: error:" in err and message in err, err
    assert not out.exists() and not (tmp_path / "r.h5.tmp").exists()


def test_unknown_method_is_an_argument_error(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv(files, tmp_path / "r.h5", "newton"))
    assert exc.value.code == 2 and "invalid choice: 'newton'" in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["minimize", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--vae", "--functional", "--method", "--init", "--starts", "--train-data", "--n-components",
                "--tol-energy", "--tol-grad", "--device"):
        assert opt in text


# ----------------------------------------------------------------------------- read_result


@pytest.fixture(scope="module")
def good_result(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "r.h5"
    assert main(argv(files, out, "latent-lbfgs")) == 0
    return out


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda f: f.__delitem__("steps"), "missing datasets ['steps']"),
        (lambda f: f.__delitem__("z_min"), "missing datasets ['z_min']"),
        (lambda f: f.attrs.__delitem__("test_data_sha256"), "missing attributes ['test_data_sha256']"),
        (lambda f: f["metrics"].attrs.__delitem__("n_violations"), "metrics group lacks"),
        (lambda f: f.attrs.__setitem__("format", "something"), "not a vaedft minimization result"),
        (lambda f: (f.__delitem__("n_min"), f.create_dataset("n_min", data=np.zeros((N_TEST, 10)))),
         "'n_min' has shape"),
        (lambda f: f.attrs.__setitem__("minimize_config", "{not json"), "unreadable config"),
        (lambda f: f["budget"].__delitem__("total"), "budget group lacks the dataset of its term 'total'"),
        (lambda f: f["budget"].attrs.__setitem__("terms", '["wiggles"]'), "unknown terms ['wiggles']"),
        (lambda f: f["budget"].attrs.__delitem__("gap_config"), "budget group lacks attributes ['gap_config']"),
        (lambda f: (f["budget"].__delitem__("roughness"), f["budget"].create_dataset("roughness", data=np.zeros(2))),
         "budget/roughness has shape"),
    ],
)
def test_read_result_refuses_broken_files(good_result, tmp_path, breakage, message):
    path = tmp_path / "broken.h5"
    shutil.copy(good_result, path)
    with h5py.File(path, "a") as f:
        breakage(f)
    with pytest.raises(ResultError) as exc:
        read_result(path)
    assert message in str(exc.value)


def test_read_result_refuses_other_files(files, tmp_path):
    with pytest.raises(ResultError, match="no such file"):
        read_result(tmp_path / "none.h5")
    with pytest.raises(ResultError, match="not a vaedft minimization result"):
        read_result(files["test"])
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ResultError, match="not a readable HDF5 file"):
        read_result(tmp_path / "text.h5")
