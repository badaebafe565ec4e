"""The command-line entry points: `vaedft` and `vaedft-bench`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vaedft.bench.cli import main as bench_main
from vaedft.cli import main
from vaedft.data import validate_dataset


def test_generate_and_validate(tmp_path, capsys):
    out = tmp_path / "g.h5"
    assert main(["generate", "gaussian1d", "--n", "5", "--seed", "3", "--out", str(out), "--no-progress",
                 "--chunk", "2"]) == 0
    assert validate_dataset(out)["n_instances"] == 5
    assert main(["validate", str(out)]) == 0
    assert "OK" in capsys.readouterr().out


def test_generate_wells_records_sign(tmp_path):
    out = tmp_path / "w.h5"
    assert main(["generate", "gaussian1d", "--n", "2", "--seed", "0", "--sign", "-1", "--out", str(out),
                 "--no-progress"]) == 0
    assert validate_dataset(out)["sign"] == -1


def test_generate_test_set(tmp_path):
    out = tmp_path / "t.h5"
    assert main(["generate", "gaussian1d", "--test-set", "snyder2012", "--out", str(out), "--no-progress"]) == 0
    assert validate_dataset(out)["n_instances"] == 100


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "gaussian1d", "--out", "x.h5"], "give --n and --seed"),
        (["generate", "speckle1d", "--n", "2", "--seed", "1", "--sign", "-1", "--out", "x.h5"], "gaussian1d only"),
        (["generate", "gaussian1d", "--n", "2", "--seed", "1", "--backend", "quantum", "--out", "x.h5"],
         "unknown backend"),
        (["generate", "gaussian1d", "--test-set", "snyder2012", "--n", "4", "--out", "x.h5"], "fixes its instances"),
        (["validate", "missing.h5"], "no such file"),
    ],
)
def test_errors_are_clear_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["generate", "nope", "--out", "x"], ["generate", "gaussian1d", "--n", "0",
                                                                         "--seed", "1", "--out", "x"]])
def test_argument_errors(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_bench_entry_point_lists_the_suite(capsys):
    assert bench_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "E1" in out and "E10" in out and "quick" in out and "paper" in out


def test_module_runs_as_script():
    res = subprocess.run([sys.executable, "-m", "vaedft.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "generate" in res.stdout


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "g.h5"
    assert main(["generate", "gaussian1d", "--n", "120", "--seed", "5", "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_commands_write_run_dirs(tiny_data, tmp_path, capsys):
    vae_dir, f_dir = tmp_path / "vae", tmp_path / "f"
    assert main(["train-vae", "--data", str(tiny_data), "--latent", "4", "--beta", "1e-3", "--epochs", "2",
                 "--lr", "1e-3", "--batch", "40", "--out", str(vae_dir), "--no-progress"]) == 0
    assert main(["train-functional", "--data", str(tiny_data), "--epochs", "2", "--batch", "40",
                 "--out", str(f_dir), "--no-progress"]) == 0
    for d in (vae_dir, f_dir):
        assert {"config.json", "last.pt", "best.pt", "state.json", "history.csv"} <= {p.name for p in d.iterdir()}
    assert '"finished": true' in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "speckle1d"], "does not fit the gaussian1d data"),
        (["--beta", "-1"], "beta must be >= 0"),
        (["--val-fraction", "1.5"], "val_fraction"),
        (["--device", "tpu"], "unknown backend"),
    ],
)
def test_train_errors_exit_2(tiny_data, tmp_path, capsys, extra, message):
    argv = ["train-vae", "--data", str(tiny_data), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_train_refuses_another_run_in_the_same_dir(tiny_data, tmp_path, capsys):
    argv = ["train-vae", "--data", str(tiny_data), "--epochs", "1", "--batch", "60", "--out", str(tmp_path / "r"),
            "--no-progress"]
    assert main(argv + ["--latent", "4"]) == 0
    assert main(argv + ["--latent", "8"]) == 2
    assert "different run" in capsys.readouterr().err


def test_train_recipe_flags_reach_the_run(tiny_data, tmp_path):
    import json

    vae_dir, f_dir = tmp_path / "vae", tmp_path / "f"
    assert main(["train-vae", "--data", str(tiny_data), "--latent", "4", "--epochs", "3", "--batch", "40",
                 "--lr", "1e-3", "--schedule", "cosine", "--lr-min", "1e-5", "--warmup", "1", "--ema", "0.9",
                 "--decoder", "smooth", "--input-scale", "volume", "--kinetic-weight", "0.5", "--out", str(vae_dir),
                 "--no-progress"]) == 0
    run = json.loads((vae_dir / "config.json").read_text())
    recipe = {"schedule": "cosine", "lr_min": 1e-5, "warmup_epochs": 1, "ema_decay": 0.9, "kinetic_weight": 0.5}
    assert run["train"] | recipe == run["train"]
    assert run["model"]["decoder"] == "smooth" and run["model"]["latent_dim"] == 4
    assert "input_scale" not in run["model"]  # L = 1 for gaussian1d: 'volume' is the default 1.0
    assert main(["train-functional", "--data", str(tiny_data), "--epochs", "2", "--batch", "40",
                 "--derivative-weight", "1e-4", "--input-scale", "2.5", "--out", str(f_dir), "--no-progress"]) == 0
    run = json.loads((f_dir / "config.json").read_text())
    assert run["train"]["derivative_weight"] == 1e-4 and run["model"]["input_scale"] == 2.5


@pytest.mark.parametrize(
    "argv",
    [["--schedule", "step"], ["--lr-min", "-1"], ["--input-scale", "area"], ["--input-scale", "0"],
     ["--decoder", "fancy"], ["--kinetic-weight", "-1"]],
)
def test_train_recipe_flag_errors(tiny_data, tmp_path, argv):
    with pytest.raises(SystemExit) as info:
        main(["train-vae", "--data", str(tiny_data), "--out", str(tmp_path / "r"), *argv])
    assert info.value.code == 2


def test_train_ema_out_of_range_exits_2(tiny_data, tmp_path, capsys):
    argv = ["train-functional", "--data", str(tiny_data), "--epochs", "1", "--out", str(tmp_path / "r"),
            "--ema", "1.5", "--no-progress"]
    assert main(argv) == 2
    assert "ema_decay" in capsys.readouterr().err
