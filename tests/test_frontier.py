"""The accuracy-vs-CPU-minutes frontier (``benchmark/frontier.py``) and its place in the report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vaedft.bench.check import load_reference
from vaedft.report.markdown import costliest_off_envelope, frontier_envelope, render_report

ROOT = Path(__file__).resolve().parents[1]
KCAL = 1.5936e-3


@pytest.fixture(scope="module")
def frontier():
    spec = importlib.util.spec_from_file_location("frontier", ROOT / "benchmark" / "frontier.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _study():
    train = {"batch_size": 32}
    return {
        "runs": {"f_a": {"wall_time_min": 10.0, "train": train}, "f_b": {"wall_time_min": 40.0, "train": train},
                 "v_a": {"wall_time_min": 20.0, "train": train}, "f_sp": {"wall_time_min": 5.0, "train": train}},
        "models": {"f_a": {"mae_kcal": 2.0, "test": "g1d_test"}, "f_b": {"mae_kcal": 0.4, "test": "g1d_test"},
                   "v_a": {"reconstruction": 0.01}, "f_sp": {"mae_kcal": 0.1, "test": "sp_test"}},
        "min": {"m_a": {"vae": "v_a", "functional": "f_a", "test": "g1d_test", "minimize_s": 600.0,
                        "energy": {"mean_abs_error_kcal_per_mol": 3.0, "fraction_within_ca": 0.5}},
                "budget_only": {"vae": "v_a", "functional": "f_a", "test": "g1d_test", "minimize_s": 0.0,
                                "energy": None}},
    }


def _cpu_results(threads=2):
    case, sp = "gaussian1d/ld4/beta1e-03", "speckle1d/ld16/beta1e-05"
    return {"profile": "cpu", "device_name": f"AMD EPYC, 2 cores, torch threads {threads}", "experiments": {
        "E4": {"artifacts": {}, "metrics": {f"{case}/mean_abs_energy_error": 2 * KCAL,
                                            f"{case}/frac_within_ca": 0.7,
                                            f"{case}/budget_functional_error_mean_abs_kcal_per_mol": 1.5,
                                            f"{sp}/mean_abs_energy_error": 4 * KCAL,  # no budget metric
                                            "speckle1d/ld16/beta1e-03/mean_abs_energy_error": 9 * KCAL}},
        "E10": {"metrics": {"gaussian1d/time/train_vae_s": 600.0, "gaussian1d/time/train_functional_s": 300.0,
                            "gaussian1d/time/minimize_s": 60.0, "speckle1d/time/train_vae_s": 100.0,
                            "speckle1d/time/train_functional_s": 50.0, "speckle1d/time/minimize_s": 30.0}}}}


@pytest.fixture(scope="module")
def cases(frontier):
    return frontier.goal_cases(load_reference(frontier.GOALS))


def test_the_cases_are_the_goals_mean_abs_bounds(cases):
    """benchmark/reference/cpu.toml: gaussian1d <= 0.5 kcal/mol, speckle1d and 3D <= 1 (E0 bounds / 1.5936e-3)."""
    got = {tb: (c["experiment"], c["case"], round(c["goal_kcal"], 3)) for tb, c in cases.items()}
    assert got == {"gaussian1d": ("E4", "gaussian1d/ld4/beta1e-03", 0.5),
                   "speckle1d": ("E4", "speckle1d/ld16/beta1e-05", 1.0),
                   "gaussian3d": ("E6", "gaussian3d/ld32/beta1e-06", 1.0)}


def test_points_come_from_the_results_with_cpu_minutes_as_wall_times_threads(frontier, cases, tmp_path):
    pts = frontier.study_points(_study())
    got = {(p["testbed"], p["kind"], p["label"]): (p["cpu_minutes"], p["mean_abs_kcal"]) for p in pts}
    # each on its testbed, only minimizations with energies; the pair's minutes add up
    assert got == {("gaussian1d", "functional", "f_a"): (10.0, 2.0), ("gaussian1d", "functional", "f_b"): (40.0, 0.4),
                   ("gaussian1d", "minimization", "m_a"): (10.0 + 20.0 + 10.0, 3.0),
                   ("speckle1d", "functional", "f_sp"): (5.0, 0.1)}
    cpu = frontier.cpu_points(_cpu_results(), tmp_path / "no-cache", cases)
    # speckle1d: the goal's beta only, and no functional point without the budget metric
    sp = [p for p in cpu if p["testbed"] == "speckle1d"]
    assert [(p["kind"], p["mean_abs_kcal"]) for p in sp] == [("minimization", pytest.approx(4.0))]
    assert sp[0]["cpu_minutes"] == pytest.approx(180.0 / 60 * 2) and "beta = 1e-5" in sp[0]["label"]
    by_kind = {p["kind"]: p for p in cpu if p["testbed"] == "gaussian1d"}
    assert by_kind["functional"]["cpu_minutes"] == pytest.approx(300.0 / 60 * 2)
    assert by_kind["functional"]["mean_abs_kcal"] == 1.5
    assert by_kind["minimization"]["cpu_minutes"] == pytest.approx(960.0 / 60 * 2)
    assert by_kind["minimization"]["mean_abs_kcal"] == pytest.approx(2.0)
    assert "E10" in by_kind["minimization"]["label"]
    assert frontier.cpu_points({"experiments": {}}, tmp_path, cases) == []


def test_a_malformed_results_file_is_refused_in_one_line(frontier, tmp_path, capsys):
    (tmp_path / "r.json").write_text("{}")
    (tmp_path / "s.json").write_text('{"runs": {}}')
    assert frontier.main(["--results", str(tmp_path / "r.json"), "--study", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a results file" in err
    assert not (tmp_path / "frontier.json").exists()


def test_build_times_come_from_the_cache_when_it_holds_the_goal_case(frontier, cases, tmp_path):
    res = _cpu_results(threads=1)
    arts = {"VAE gaussian1d l_d=4 beta=1e-03": "k1", "functional gaussian1d": "k2",
            "latent-lbfgs l_d=4 beta=1e-03 (300 steps) on gaussian1d test set (snyder2012)": "k3"}
    res["experiments"]["E4"]["artifacts"] = arts
    for kind, key, rec in (("vae", "k1", {"build_time_s": 999, "train_wall_time_s": 120.0}),
                           ("functional", "k2", {"build_time_s": 999, "train_wall_time_s": 60.0}),
                           ("minimization", "k3", {"build_time_s": 999, "minimize_wall_time_s": 30.0})):
        (tmp_path / kind / key).mkdir(parents=True)
        (tmp_path / kind / key / "done.json").write_text(json.dumps(rec))
    by_kind = {p["kind"]: p for p in frontier.cpu_points(res, tmp_path, cases) if p["testbed"] == "gaussian1d"}
    assert by_kind["minimization"]["cpu_minutes"] == pytest.approx(3.5)
    assert "cache" in by_kind["minimization"]["label"]


def test_the_envelope_keeps_only_points_no_cheaper_one_beats():
    pts = [{"cpu_minutes": 50, "mean_abs_kcal": 1.0}, {"cpu_minutes": 10, "mean_abs_kcal": 3.0},
           {"cpu_minutes": 20, "mean_abs_kcal": 5.0}, {"cpu_minutes": 100, "mean_abs_kcal": 0.4}]
    assert [p["cpu_minutes"] for p in frontier_envelope(pts)] == [10, 50, 100]
    assert costliest_off_envelope(pts) is None and costliest_off_envelope([]) is None
    flat = {"cpu_minutes": 200, "mean_abs_kcal": 0.5}  # twice the time, no better: the frontier is flat up to it
    assert costliest_off_envelope([*pts, flat]) is flat


def test_the_script_writes_the_figure_and_the_report_shows_it_under_a_failed_goal(frontier, tmp_path, capsys):
    out = tmp_path / "cpu"
    out.mkdir()
    res = _cpu_results()
    (out / "results.json").write_text(json.dumps(res))
    (tmp_path / "study.json").write_text(json.dumps(_study()))
    assert frontier.main(["--results", str(out / "results.json"), "--study", str(tmp_path / "study.json"),
                          "--cache", str(tmp_path / "none")]) == 0
    assert (out / "figures" / "frontier.png").stat().st_size > 1000
    doc = json.loads((out / "frontier.json").read_text())
    assert doc["figure"] == "figures/frontier.png" and len(doc["points"]) == 7
    assert doc["goals_kcal"]["gaussian1d"] == pytest.approx(0.5)
    base = {**res, "experiments": {}, "goals": [{"experiment": "E4", "metric": "m", "ours": 1.0, "expected": "<= 0.5",
                                                  "status": "pass", "source": "g"}]}
    assert "frontier" not in render_report(base, out)  # every goal met: no frontier
    base["goals"][0]["status"] = "fail"
    text = render_report(base, out)
    assert "### Accuracy vs CPU minutes measured so far" in text
    assert "![accuracy vs CPU minutes](figures/frontier.png)" in text
    assert "f_b" in text and "f_a" in text  # on the functional envelope (10 min, 2.0) then (40 min, 0.4)
    assert "| speckle1d " in text and "f_sp" in text  # every testbed with a goal has its rows
    # gaussian1d's costliest pair (m_a, 40 min, 3.0) is no better than the cpu run's (32 min, 2.0): shown as such
    assert "| m_a (the costliest measurement: no better) " in text
    assert f"(`{doc['command']}`, {doc['date']})" in text  # the command that made it, not a template
    assert "frontier" not in render_report(base)  # no report directory given
    (out / "frontier.json").write_text("{not json")
    assert "frontier" not in render_report(base, out)  # a damaged file is ignored, not fatal


def test_a_goals_file_without_a_mean_abs_bound_is_refused_in_one_line(frontier, tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps(_cpu_results()))
    (tmp_path / "s.json").write_text(json.dumps(_study()))
    (tmp_path / "g.toml").write_text('[E4]\n"gaussian1d/ld4/beta1e-03/frac_within_ca" = { min = 0.95 }\n')
    args = ["--results", str(tmp_path / "r.json"), "--study", str(tmp_path / "s.json")]
    assert frontier.main([*args, "--goals", str(tmp_path / "g.toml")]) == 2
    assert frontier.main([*args, "--goals", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "mean_abs_energy_error" in err[0] and "not found" in err[1]
    assert not (tmp_path / "frontier.json").exists()


def test_a_frontier_file_from_before_the_testbeds_reads_as_gaussian1d(tmp_path):
    (tmp_path / "frontier.json").write_text(json.dumps({"figure": "figures/frontier.png", "points": [
        {"source": "recipe study", "label": "f_old", "kind": "functional", "cpu_minutes": 4.0, "mean_abs_kcal": 0.3}]}))
    res = {**_cpu_results(), "experiments": {}, "goals": [{"experiment": "E4", "metric": "m", "ours": 1.0,
                                                            "expected": "<= 0.5", "status": "fail", "source": "g"}]}
    assert "| gaussian1d | functional | recipe study | f_old " in render_report(res, tmp_path).replace("  ", " ")


def test_what_limits_a_failed_goal_comes_from_the_result_files_in_the_cache(frontier, cases, tiny_pair, tmp_path):
    """Per-instance shares within CA of each budget term, for every beta at the goal's l_d of a failed testbed."""
    import shutil

    import h5py
    import numpy as np

    from vaedft.minimize import MinimizeConfig
    from vaedft.pipeline import minimize_files

    cache = tmp_path / "cache"
    good = cache / "minimization" / "k1" / "result.h5"
    good.parent.mkdir(parents=True)
    minimize_files(functional_dir=tiny_pair["functional"], vae_dir=tiny_pair["vae"], test_data=tiny_pair["test"],
                   out=good, config=MinimizeConfig(method="latent-lbfgs", steps=2), device="cpu", progress=False,
                   gap_steps=2)
    with h5py.File(good, "r+") as f:  # known terms (E0) for the 3 test instances
        f["metrics"].attrs["fraction_within_ca"] = 2 / 3  # as e_min - e_gs = [0.1, -3.0, 0.3] CA would give
        f["budget/manifold_gap"][...] = np.array([0.5, 2.0, np.nan]) * KCAL
        f["budget/exact_energy_at_min"][...] = np.array([0.2, 0.9, 1.5]) * KCAL
        f["budget/functional_error"][...] = np.array([-0.5, -1.5, 1.0]) * KCAL
    for key in ("k2", "k3"):
        (cache / "minimization" / key).mkdir()
        shutil.copy(good, cache / "minimization" / key / "result.h5")
    damaged = cache / "minimization" / "k3" / "result.h5"
    damaged.write_bytes(damaged.read_bytes()[:500])
    arts = {"latent-lbfgs l_d=4 beta=1e-03 (300 steps) on gaussian1d test set (snyder2012)": "k1",
            "latent-lbfgs l_d=4 beta=1e+00 (300 steps) on gaussian1d test set (snyder2012)": "k2",
            "latent-lbfgs l_d=4 beta=1e-05 (300 steps) on gaussian1d test set (snyder2012)": "k3",  # damaged
            "latent-lbfgs l_d=4 beta=1e-02 (300 steps) on gaussian1d test set (snyder2012)": "k4",  # absent
            "latent-lbfgs l_d=8 beta=1e-03 (300 steps) on gaussian1d test set (snyder2012)": "k1",  # other l_d
            "VAE gaussian1d l_d=4 beta=1e-03": "k1"}
    res = _cpu_results()
    res["experiments"]["E4"]["artifacts"] = arts
    assert frontier.case_limits(res, cache, cases) == []  # no failed goal: nothing to explain
    res["goals"] = [{"experiment": "E4", "metric": "gaussian1d/ld4/beta1e-03/frac_within_ca", "status": "fail",
                     "ours": 0.67, "expected": ">= 0.95", "source": "g"}]
    rows = frontier.case_limits(res, cache, cases)
    assert [(r["beta"], r["goal_case"], r["n"]) for r in rows] == [(1e-3, True, 3), (1.0, False, 3)]
    third = pytest.approx(1 / 3)
    assert rows[0]["within_ca"] == pytest.approx(2 / 3) and rows[0]["manifold_within_ca"] == third
    assert rows[0]["found_density_within_ca"] == pytest.approx(2 / 3)
    assert rows[0]["functional_within_ca"] == pytest.approx(2 / 3)
    assert frontier.case_limits(res, tmp_path / "no-cache", cases) == []

    out = tmp_path / "cpu"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(res))
    (tmp_path / "study.json").write_text(json.dumps(_study()))
    assert frontier.main(["--results", str(out / "results.json"), "--study", str(tmp_path / "study.json"),
                          "--cache", str(cache)]) == 0
    text = render_report({**res, "experiments": {}}, out)
    assert "### What limits the missed goals" in text
    assert "| gaussian1d | l_d = 4, beta = 1e-03 (goal) | 67 %" in text
    assert "| 33 %" in text
    doc = json.loads((out / "frontier.json").read_text())
    (out / "frontier.json").write_text(json.dumps({**doc, "limits": [{"testbed": "gaussian1d"}]}))
    text = render_report({**res, "experiments": {}}, out)
    assert "### Accuracy vs CPU minutes" in text and "What limits" not in text  # a malformed table is left out
