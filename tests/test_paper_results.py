"""The committed paper-profile results against the paper.

(The quick profile's regression check is CI's smoke slice, ``make smoke``: it recomputes part of the
suite from an empty cache and checks it against ``benchmark/reference/quick.toml``.  Checking
``reports/quick/results.json`` here would make the tests depend on whatever ``make quick`` last wrote.)

* ``reports/cpu/results.json`` (``vaedft-bench --profile cpu``) must meet the cpu goals
  (``benchmark/reference/cpu.toml``), except the misses recorded in ``CPU_GOALS_MISSED`` (a list that may
  only shrink).  Skipped until a cpu run is committed.
* ``reports/cpu_slice/results.json`` (``make accuracy``) must meet its goals (chemical accuracy on gaussian1d)
  with no misses.
* ``reports/paper/results.json`` (produced on a GPU) must meet the paper's values
  (``benchmark/reference/paper.toml``: 3D mean abs <= 0.0004 E0, density error <= 0.005,
  reconstruction <= 0.004; 1D mean abs below chemical accuracy).  Skipped until a GPU run is committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vaedft.bench.check import check, format_findings, load_reference, load_results

ROOT = Path(__file__).resolve().parents[1]


def _check(results: Path, reference: Path, experiments=None) -> None:
    findings = check(load_results(results), load_reference(reference), experiments)
    bad = [f for f in findings if not f.ok]
    assert not bad, format_findings(findings)


def test_committed_paper_results_meet_the_paper():
    results = ROOT / "reports" / "paper" / "results.json"
    if not results.is_file():
        pytest.skip("reports/paper/results.json is produced on a GPU (vaedft-bench --profile paper); none committed")
    ref = load_reference(ROOT / "benchmark" / "reference" / "paper.toml")
    done = [e for e in ref["experiments"] if e in load_results(results)["experiments"]]
    _check(results, ROOT / "benchmark" / "reference" / "paper.toml", done)


def test_paper_reference_states_the_issue_tolerances():
    """The paper reference holds the tolerances the harness issue fixes (a guard against loosening them)."""
    ref = load_reference(ROOT / "benchmark" / "reference" / "paper.toml")["experiments"]
    e6 = {k.rsplit("/", 1)[1]: v for k, v in ref["E6"].items()}
    assert e6["mean_abs_energy_error"].max == 4e-4
    assert e6["density_error"].max == 5e-3
    assert e6["reconstruction_error"].max == 4e-3
    ca = 1.5936e-3
    one_d = [v for k, v in ref["E3"].items() if k.endswith("mean_abs_energy_error")]
    assert one_d and all(v.max == ca for v in one_d)


#: Goals the committed cpu run misses, as (experiment, metric) of ``vaedft-bench check``: reports/cpu/report.md
#: prints them as FAIL with the frontier measured so far.  A ratchet: this set may only shrink.  A goal outside
#: it that fails, or a goal in it that passes (then delete it here), fails the test; the goals file itself
#: (benchmark/reference/cpu.toml) is never loosened.
CPU_GOALS_MISSED: set[tuple[str, str]] = {
    ("E6", "gaussian3d/ld32/beta1e-06/mean_abs_energy_error"),
}


def test_committed_cpu_results_meet_the_cpu_goals():
    """``reports/cpu/results.json`` (``vaedft-bench --profile cpu``) against its goals, when one is committed:
    the verdicts the report prints are the check's, and no goal fails beyond the recorded misses."""
    results = ROOT / "reports" / "cpu" / "results.json"
    if not results.is_file():
        pytest.skip("reports/cpu/results.json is produced by vaedft-bench --profile cpu; none committed yet")
    loaded = load_results(results)
    findings = check(loaded, load_reference(ROOT / "benchmark" / "reference" / "cpu.toml"))
    recorded = {(g["experiment"], g["metric"]): g["status"] for g in loaded.get("goals", [])}
    assert recorded == {(f.experiment, f.metric): f.status for f in findings}, "report verdicts differ from check"
    failed = {(f.experiment, f.metric) for f in findings if not f.ok}
    assert not failed - CPU_GOALS_MISSED, format_findings([f for f in findings if not f.ok])
    assert not CPU_GOALS_MISSED - failed, f"met now, remove from CPU_GOALS_MISSED: {CPU_GOALS_MISSED - failed}"


def test_committed_accuracy_slice_meets_chemical_accuracy():
    """``reports/cpu_slice/results.json`` (``make accuracy``: the cpu profile's gaussian1d case) meets every goal
    of ``benchmark/reference/cpu_slice.toml``, with no recorded misses, and its report printed the same verdicts."""
    results = ROOT / "reports" / "cpu_slice" / "results.json"
    if not results.is_file():
        pytest.skip("reports/cpu_slice/results.json is produced by make accuracy; none committed yet")
    loaded = load_results(results)
    findings = check(loaded, load_reference(ROOT / "benchmark" / "reference" / "cpu_slice.toml"))
    assert len(findings) == 3
    assert {(g["experiment"], g["metric"]): g["status"] for g in loaded.get("goals", [])} == {
        (f.experiment, f.metric): f.status for f in findings}
    assert all(f.ok for f in findings), format_findings(findings)


def test_cpu_goals_state_the_issue_goals():
    """The cpu goals are the issue's table (a guard against loosening them)."""
    ref = load_reference(ROOT / "benchmark" / "reference" / "cpu.toml")
    goals = {k: v for table in ref["experiments"].values() for k, v in table.items()}
    ca = 1.5936e-3
    g1d = "gaussian1d/ld4/beta1e-03/"
    assert goals[g1d + "mean_abs_energy_error"].max == pytest.approx(0.5 * ca, rel=1e-3)
    assert goals[g1d + "frac_within_ca"].min == 0.95
    assert goals[g1d + "n_violations"].max == 0
    assert goals["speckle1d/ld16/beta1e-05/mean_abs_energy_error"].max == ca
    assert goals["speckle1d/ld16/beta1e-05/frac_within_ca"].min == 0.90
    assert goals["gaussian3d/ld32/beta1e-06/mean_abs_energy_error"].max == ca
    assert ref["claims"] == ["E3", "E8"]
