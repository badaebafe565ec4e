"""Dataset generation and the HDF5 schema: completeness, physics, determinism, resumption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from vaedft.data import (
    DatasetError,
    generate_dataset,
    load_snyder2012,
    read_attrs,
    store,
    validate_dataset,
)
from vaedft.data import generate as gen
from vaedft.data.snyder import SNYDER2012_SHA256
from vaedft.data.store import REQUIRED_ATTRS
from vaedft.physics import Gaussian1D, get_testbed

SMALL = {"gaussian1d": 24, "speckle1d": 24, "gaussian3d": 6}
TESTBED_ATTRS = {"gaussian1d": ("sign", "n_gauss"), "speckle1d": ("V0",), "gaussian3d": ("n_gauss", "sigma")}


def _load(path):
    with h5py.File(path, "r") as f:
        out = {k: f[k][...] for k in ("potential", "density", "energy", "F", "residual")}
        out["params"] = {k: f["params"][k][...] for k in f["params"]}
        out["attrs"] = dict(f.attrs)
    return out


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    paths = {}
    for name, n in SMALL.items():
        paths[name] = generate_dataset(get_testbed(name), root / f"{name}.h5", n=n, seed=11, progress=False)
    return paths


@pytest.mark.parametrize("name", sorted(SMALL))
def test_schema_complete_and_consistent(small_sets, name):
    path = small_sets[name]
    attrs = validate_dataset(path)
    tb = get_testbed(name)
    grid = tb.grid
    for key in REQUIRED_ATTRS + TESTBED_ATTRS[name]:
        assert key in attrs, key
    assert attrs["testbed"] == name
    assert tuple(attrs["grid_shape"]) == grid.shape
    assert attrs["dx"] == pytest.approx(grid.dx, rel=1e-15)
    assert attrs["boundary"] == {"gaussian1d": "hard_wall"}.get(name, "periodic")
    assert attrs["stencil_points"] == {"gaussian1d": 9}.get(name, 11)
    assert attrs["seed"] == 11 and attrs["n_instances"] == SMALL[name]
    assert store.testbed_from_attrs(attrs) == tb
    d = _load(path)
    n = SMALL[name]
    assert d["potential"].shape == d["density"].shape == (n, *grid.shape)
    assert d["potential"].dtype == d["density"].dtype == d["energy"].dtype == d["F"].dtype == np.float64
    # normalisation, positivity, and F + int V n = e, recomputed here from the stored arrays
    assert np.all(d["density"] >= 0)
    np.testing.assert_allclose(grid.cell_volume * d["density"].reshape(n, -1).sum(1), 1.0, atol=1e-12)
    vint = grid.cell_volume * (d["potential"] * d["density"]).reshape(n, -1).sum(1)
    np.testing.assert_allclose(d["F"] + vint, d["energy"], rtol=0, atol=1e-12)
    # parameters reproduce the stored potentials bit for bit (eq. 15 / speckle / eq. 18)
    for key, (shape, _) in tb.param_shapes().items():
        assert d["params"][key].shape == (n, *shape)
    np.testing.assert_array_equal(tb.potential(d["params"]), d["potential"])


def test_gaussian1d_params_match_seeded_draws(small_sets):
    d = _load(small_sets["gaussian1d"])
    direct = get_testbed("gaussian1d").sample_params(11, range(SMALL["gaussian1d"]))
    for k in "abc":
        np.testing.assert_array_equal(d["params"][k], direct[k])


def test_gaussian3d_eq18_params_in_file(small_sets):
    d = _load(small_sets["gaussian3d"])
    assert d["params"]["centers"].shape == (SMALL["gaussian3d"], 10, 3)
    assert d["params"]["amplitudes"].shape == (SMALL["gaussian3d"], 10)
    assert np.all((d["params"]["centers"] >= 0) & (d["params"]["centers"] < 1))
    assert np.all((d["params"]["amplitudes"] >= 0) & (d["params"]["amplitudes"] <= 2))


def test_same_result_for_any_chunk_size(tmp_path, small_sets):
    ref = _load(small_sets["gaussian1d"])
    for chunk in (1, 5, 7):
        path = generate_dataset(
            get_testbed("gaussian1d"), tmp_path / f"c{chunk}.h5", n=SMALL["gaussian1d"], seed=11,
            chunk=chunk, progress=False,
        )
        d = _load(path)
        np.testing.assert_array_equal(d["potential"], ref["potential"])
        for k in "abc":
            np.testing.assert_array_equal(d["params"][k], ref["params"][k])
        for k in ("energy", "F", "density"):
            np.testing.assert_allclose(d[k], ref[k], rtol=0, atol=1e-12)


def test_other_seed_gives_other_data(tmp_path, small_sets):
    d = _load(generate_dataset(get_testbed("gaussian1d"), tmp_path / "s.h5", n=4, seed=12, progress=False))
    assert not np.array_equal(d["potential"], _load(small_sets["gaussian1d"])["potential"][:4])


def test_resume_after_interruption_equals_uninterrupted(tmp_path, small_sets, monkeypatch):
    tb, n = get_testbed("speckle1d"), SMALL["speckle1d"]
    out = tmp_path / "r.h5"
    real_write = gen._write_part
    calls = []

    def flaky_write(parts, lo, hi, arrays):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append((lo, hi))
        real_write(parts, lo, hi, arrays)

    monkeypatch.setattr(gen, "_write_part", flaky_write)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tb, out, n=n, seed=11, chunk=5, progress=False)
    assert not out.exists(), "only a complete file may carry the final name"
    parts = sorted(p.name for p in out.with_name(out.name + ".parts").glob("part-*.h5"))
    assert parts == ["part-000000000-000000005.h5", "part-000000005-000000010.h5"]
    monkeypatch.setattr(gen, "_write_part", real_write)
    # resume with another chunk size: only the missing range is solved
    solved = []
    real_solve = gen._solve_part
    monkeypatch.setattr(gen, "_solve_part", lambda tb_, src, lo, hi, **kw: solved.append((lo, hi)) or real_solve(
        tb_, src, lo, hi, **kw))
    generate_dataset(tb, out, n=n, seed=11, chunk=8, progress=False)
    assert solved == [(10, 18), (18, 24)]
    assert not out.with_name(out.name + ".parts").exists()
    got, ref = _load(out), _load(small_sets["speckle1d"])
    np.testing.assert_array_equal(got["potential"], ref["potential"])
    np.testing.assert_array_equal(got["params"]["modes"], ref["params"]["modes"])
    for k in ("energy", "F", "density"):
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12)


def test_resume_after_kill_9(tmp_path, small_sets):
    """A real process killed with SIGKILL mid-run resumes to the uninterrupted result."""
    out = tmp_path / "k.h5"
    parts = out.with_name(out.name + ".parts")
    n = 600
    cmd = [sys.executable, "-m", "vaedft.cli", "generate", "gaussian1d", "--n", str(n), "--seed", "11",
           "--chunk", "4", "--out", str(out), "--no-progress", "--backend", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if parts.exists() and len(list(parts.glob("part-*.h5"))) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"generator exited early: {proc.stderr.read().decode()}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():
        pytest.skip("the run finished before it could be killed (machine too fast for this size)")
    n_parts = len(list(parts.glob("part-*.h5")))
    assert 3 <= n_parts < n // 4
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = _load(out)
    ref = _load(generate_dataset(get_testbed("gaussian1d"), tmp_path / "ref.h5", n=n, seed=11, progress=False))
    np.testing.assert_array_equal(got["potential"], ref["potential"])
    for k in ("energy", "F", "density"):
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12)


def test_rerun_of_complete_file_is_a_no_op_and_conflicts_are_refused(tmp_path, small_sets, capsys):
    path = small_sets["gaussian1d"]
    before = path.stat().st_mtime_ns
    generate_dataset(get_testbed("gaussian1d"), path, n=SMALL["gaussian1d"], seed=11, progress=False)
    assert path.stat().st_mtime_ns == before
    assert "already complete" in capsys.readouterr().err
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_dataset(get_testbed("gaussian1d"), path, n=SMALL["gaussian1d"], seed=99, progress=False)
    # a stale partial run with other settings is not silently mixed in
    out = tmp_path / "x.h5"
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    (parts / "manifest.json").write_text("{}")
    with pytest.raises(FileExistsError, match="partial run"):
        generate_dataset(get_testbed("gaussian1d"), out, n=3, seed=1, progress=False)
    generate_dataset(get_testbed("gaussian1d"), out, n=3, seed=1, progress=False, overwrite=True)
    assert validate_dataset(out)["n_instances"] == 3


def test_float32_fields(tmp_path):
    path = generate_dataset(get_testbed("gaussian1d"), tmp_path / "f.h5", n=3, seed=1, field_dtype="float32",
                            progress=False)
    d = _load(path)
    assert d["density"].dtype == np.float32 and d["energy"].dtype == np.float64
    validate_dataset(path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0, "seed": 1}, "n must be a positive integer"),
        ({"n": 2.5, "seed": 1}, "n must be a positive integer"),
        ({"n": 3, "seed": -1}, "seed must be a non-negative integer"),
        ({"n": 3}, "need both n"),
        ({"seed": 3}, "need both n"),
        ({"n": 3, "seed": 1, "chunk": 0}, "chunk must be a positive integer"),
        ({"n": 3, "seed": 1, "field_dtype": "float16"}, "field_dtype"),
        ({"n": 3, "seed": 1, "backend": "tpu"}, "unknown backend"),
        ({"test_set": "snyder2012", "n": 3}, "fixes its instances"),
        ({"test_set": "nope"}, "unknown test set"),
    ],
)
def test_bad_generation_requests(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_dataset(get_testbed("gaussian1d"), tmp_path / "bad.h5", progress=False, **kwargs)
    assert not (tmp_path / "bad.h5").exists()


def test_snyder_test_set_only_for_gaussian1d(tmp_path):
    with pytest.raises(ValueError, match="gaussian1d"):
        generate_dataset(get_testbed("speckle1d"), tmp_path / "s.h5", test_set="snyder2012", progress=False)


# --- Snyder 2012 test potentials -------------------------------------------------------------


def test_snyder_table_assigned_by_value_range():
    p = load_snyder2012()
    assert all(p[k].shape == (100, 3) for k in "abc")
    assert 1.0 <= p["a"].min() and p["a"].max() <= 10.0
    assert 0.4 <= p["b"].min() and p["b"].max() <= 0.6, "b are the centres"
    assert 0.03 <= p["c"].min() and p["c"].max() <= 0.1, "c are the widths"
    # first row, read straight off the published file: a1, then the column headed b (a width)
    # and the column headed c (a centre)
    assert p["a"][0, 0] == 1.180270056381577
    assert p["c"][0, 0] == 0.07195101071267996
    assert p["b"][0, 0] == 0.5299345325943254


def test_shipped_table_is_the_reference_file():
    import hashlib

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "snyder2012_test_potentials.txt"
    if not shared.exists():
        pytest.skip("shared/ reference data not beside this checkout")
    assert hashlib.sha256(shared.read_bytes()).hexdigest() == SNYDER2012_SHA256


def _write_table(path, rows):
    lines = ["j αj a1 b1 c1 a2 b2 c2 a3 b3 c3"]
    lines += [" ".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_snyder_loader_accepts_header_order_and_refuses_out_of_range(tmp_path):
    good = [[1, 0.5, 2.0, 0.45, 0.05, 3.0, 0.5, 0.04, 9.0, 0.55, 0.09]]
    _write_table(tmp_path / "ok.txt", good)
    p = load_snyder2012(tmp_path / "ok.txt")
    np.testing.assert_array_equal(p["b"], [[0.45, 0.5, 0.55]])
    np.testing.assert_array_equal(p["c"], [[0.05, 0.04, 0.09]])
    bad_width = [[1, 0.5, 2.0, 0.45, 0.2, 3.0, 0.5, 0.04, 9.0, 0.55, 0.09]]
    _write_table(tmp_path / "bad.txt", bad_width)
    with pytest.raises(ValueError, match="cannot assign"):
        load_snyder2012(tmp_path / "bad.txt")
    bad_amp = [[1, 0.5, 12.0, 0.45, 0.05, 3.0, 0.5, 0.04, 9.0, 0.55, 0.09]]
    _write_table(tmp_path / "amp.txt", bad_amp)
    with pytest.raises(ValueError, match="amplitudes"):
        load_snyder2012(tmp_path / "amp.txt")
    (tmp_path / "short.txt").write_text("j a\n1 2 3\n")
    with pytest.raises(ValueError, match="11 columns"):
        load_snyder2012(tmp_path / "short.txt")


def test_snyder_dataset(tmp_path):
    path = generate_dataset(Gaussian1D(), tmp_path / "snyder.h5", test_set="snyder2012", progress=False)
    attrs = validate_dataset(path)
    assert attrs["test_set"] == "snyder2012" and attrs["seed"] == -1 and attrs["n_instances"] == 100
    assert attrs["sign"] == 1
    d = _load(path)
    table = load_snyder2012()
    for k in "abc":
        np.testing.assert_array_equal(d["params"][k], table[k])
    # barriers raise every energy above the free hard-wall value pi^2/2
    assert np.all(d["energy"] > np.pi**2 / 2)


# --- validation catches broken files ----------------------------------------------------------


def _doctored(src, dst, edit):
    dst.write_bytes(Path(src).read_bytes())
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda f: f["density"].__setitem__((0, 0), -1.0), "negative density"),
        (lambda f: f["density"].__setitem__((0, 5), f["density"][0, 5] * 2), "normalisation"),
        (lambda f: f["energy"].__setitem__(1, f["energy"][1] + 1e-3), "F \\+ int V n"),
        (lambda f: f["potential"].__setitem__((0, 3), np.nan), "NaN"),
        (lambda f: f.attrs.__delitem__("units"), "missing attributes"),
        (lambda f: f.__delitem__("F"), "missing dataset 'F'"),
        (lambda f: f.attrs.__setitem__("testbed", "nope"), "unknown testbed"),
        (lambda f: f.attrs.__setitem__("grid_shape", np.array([128])), "grid_shape"),
    ],
)
def test_validation_catches_doctored_files(tmp_path, small_sets, edit, match):
    bad = _doctored(small_sets["gaussian1d"], tmp_path / "bad.h5", edit)
    with pytest.raises((DatasetError, ValueError), match=match):
        validate_dataset(bad)


def test_validation_refuses_non_hdf5(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        validate_dataset(junk)
    with pytest.raises(DatasetError, match="no such file"):
        validate_dataset(tmp_path / "absent.h5")


def test_attrs_roundtrip(small_sets):
    attrs = read_attrs(small_sets["speckle1d"])
    assert attrs["V0"] == 0.25 and attrs["n_modes"] == 14 and attrs["box_length"] == 14.0
    assert "E0" in attrs["units"]
