"""Tests of the benchmark regression check (``vaedft.bench.check``)."""

from __future__ import annotations

import copy
import io
import json
import math

import pytest

from vaedft.bench.check import (
    Finding,
    MetricSpec,
    ReferenceError,
    ResultsError,
    check,
    format_findings,
    load_reference,
    load_results,
    run_check,
    write_reference,
)

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RECON = "gaussian1d/ld8/beta1e-06/reconstruction_error"
SPECKLE = "speckle1d/ld16/beta1e-06/reconstruction_error"
ENERGY = "gaussian1d/ld4/beta1e-05/mean_abs_energy_error"
FRAC = "gaussian1d/ld4/beta1e-05/frac_within_ca"

REFERENCE_TOML = f"""\
profile = "quick"
description = "test reference"

[E1]
"{RECON}" = {{ value = 0.0125, rtol = 0.25 }}
"{SPECKLE}" = {{ value = 0.02, rtol = 0.5, atol = 1e-4 }}

[E3]
"{ENERGY}" = {{ max = 1e-3, source = "paper Sec. III C" }}
"{FRAC}" = {{ min = 0.95 }}
"""


def make_results(**overrides) -> dict:
    results = {
        "schema": "vaedft-bench-results/1",
        "profile": "quick",
        "created": "2026-11-23T22:00:00",
        "git_commit": "abc123",
        "device": "cpu",
        "seed": 0,
        "versions": {"vaedft": "0.1.0", "torch": "2.13.0"},
        "total_time_s": 12.5,
        "experiments": {
            "E1": {
                "title": "Reconstruction error vs beta",
                "config_hash": "3f2a",
                "wall_time_s": 4.0,
                "metrics": {RECON: 0.013, SPECKLE: 0.021, "unreferenced/metric": 123.0},
            },
            "E3": {
                "title": "Energy errors",
                "config_hash": "9b1c",
                "wall_time_s": 3.0,
                "metrics": {ENERGY: 0.0009, FRAC: 0.97},
            },
        },
    }
    results.update(overrides)
    return results


def write_json(path, obj) -> str:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


@pytest.fixture
def reference_path(tmp_path):
    path = tmp_path / "quick.toml"
    path.write_text(REFERENCE_TOML, encoding="utf-8")
    return str(path)


def statuses(findings) -> dict[tuple[str, str], str]:
    return {(f.experiment, f.metric): f.status for f in findings}


# ------------------------------------------------------------------------------------------------ end to end


def test_matching_results_pass(tmp_path, reference_path):
    out = io.StringIO()
    code = run_check(write_json(tmp_path / "r.json", make_results()), reference_path, stream=out)
    text = out.getvalue()
    assert code == 0, text
    assert "all 4 metrics within tolerance" in text
    assert "warning" not in text


def test_doctored_metric_fails_and_is_named(tmp_path, reference_path):
    results = make_results()
    results["experiments"]["E1"]["metrics"][RECON] = 0.02  # reference 0.0125 ± 25% allows up to 0.015625
    out = io.StringIO()
    code = run_check(write_json(tmp_path / "r.json", results), reference_path, stream=out)
    text = out.getvalue()
    assert code == 1
    assert RECON in text
    assert "fail" in text
    assert SPECKLE not in text  # passing metrics are not listed without verbose
    assert "1 of 4 metrics outside tolerance" in text
    assert "0.02" in text and "0.0125 ± 25%" in text

    out = io.StringIO()
    assert run_check(tmp_path / "r.json", reference_path, stream=out, verbose=True) == 1
    verbose_text = out.getvalue()
    assert SPECKLE in verbose_text and FRAC in verbose_text
    assert verbose_text.index(RECON) < verbose_text.index(SPECKLE)  # failures first


def test_missing_metric_fails(tmp_path, reference_path):
    results = make_results()
    del results["experiments"]["E3"]["metrics"][FRAC]
    out = io.StringIO()
    assert run_check(write_json(tmp_path / "r.json", results), reference_path, stream=out) == 1
    text = out.getvalue()
    assert FRAC in text and "missing" in text
    assert "1 of 4 metrics outside tolerance (1 missing)" in text


def test_missing_experiment_fails(tmp_path, reference_path):
    results = make_results()
    del results["experiments"]["E3"]
    findings = check(results, load_reference(reference_path))
    assert statuses(findings) == {
        ("E1", RECON): "pass",
        ("E1", SPECKLE): "pass",
        ("E3", ENERGY): "missing",
        ("E3", FRAC): "missing",
    }
    assert all(f.ours is None for f in findings if f.experiment == "E3")
    out = io.StringIO()
    assert run_check(write_json(tmp_path / "r.json", results), reference_path, stream=out) == 1
    assert "2 of 4 metrics outside tolerance (2 missing)" in out.getvalue()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_non_finite_fails(tmp_path, reference_path, bad):
    results = make_results()
    results["experiments"]["E3"]["metrics"][ENERGY] = bad
    path = write_json(tmp_path / "r.json", results)  # json writes NaN / Infinity / null
    assert statuses(check(load_results(path), load_reference(reference_path)))[("E3", ENERGY)] == "not finite"
    out = io.StringIO()
    assert run_check(path, reference_path, stream=out) == 1
    assert "not finite" in out.getvalue() and ENERGY in out.getvalue()


def test_profile_mismatch_is_only_a_warning(tmp_path, reference_path):
    out = io.StringIO()
    assert run_check(write_json(tmp_path / "r.json", make_results(profile="full")), reference_path, stream=out) == 0
    assert "warning" in out.getvalue() and "'full'" in out.getvalue()


def test_source_note_is_shown(tmp_path, reference_path):
    results = make_results()
    results["experiments"]["E3"]["metrics"][ENERGY] = 0.002
    out = io.StringIO()
    assert run_check(write_json(tmp_path / "r.json", results), reference_path, stream=out) == 1
    assert "paper Sec. III C" in out.getvalue()
    assert "<= 0.001" in out.getvalue()


# ------------------------------------------------------------------------------------------------ semantics


def test_bounds_are_inclusive():
    lo = MetricSpec(min=0.5)
    assert lo.passes(0.5) and lo.passes(10.0) and not lo.passes(0.49999)
    hi = MetricSpec(max=0.25)
    assert hi.passes(0.25) and hi.passes(-3.0) and not hi.passes(0.25000001)
    both = MetricSpec(min=-1.0, max=2.0)
    assert both.passes(-1.0) and both.passes(2.0) and both.passes(0.0)
    assert not both.passes(-1.0001) and not both.passes(2.0001)
    for spec in (lo, hi, both):
        assert not spec.passes(math.nan) and not spec.passes(None)
    assert not hi.passes(-math.inf)  # not finite is never a pass, even below a max
    assert lo.describe() == ">= 0.5" and hi.describe() == "<= 0.25" and both.describe() == "in [-1, 2]"


def test_rtol_atol_semantics():
    # all numbers exactly representable so the inclusive edge is exact
    rel = MetricSpec(value=2.0, rtol=0.25)  # allowed |d| <= 0.5
    assert rel.passes(2.5) and rel.passes(1.5) and rel.passes(2.0)
    assert not rel.passes(2.5000001) and not rel.passes(1.4999999)
    absolute = MetricSpec(value=2.0, atol=0.125)
    assert absolute.passes(2.125) and absolute.passes(1.875) and not absolute.passes(2.2)
    both = MetricSpec(value=-2.0, rtol=0.25, atol=0.25)  # allowed |d| <= 0.25 + 0.25 * 2 = 0.75
    assert both.passes(-2.75) and both.passes(-1.25) and not both.passes(-2.8) and not both.passes(-1.2)
    exact = MetricSpec(value=0.0)  # rtol and atol default to 0
    assert exact.passes(0.0) and not exact.passes(1e-300)
    zero_rel = MetricSpec(value=0.0, rtol=0.5)  # rtol scales with |value| only
    assert not zero_rel.passes(1e-9)
    assert rel.describe() == "2 ± 25%"
    assert absolute.describe() == "2 ± 0.125"
    assert exact.describe() == "== 0"


def test_check_statuses_and_ignores_unreferenced(reference_path):
    results = make_results()
    m1, m3 = results["experiments"]["E1"]["metrics"], results["experiments"]["E3"]["metrics"]
    m1[SPECKLE] = 0.0302  # 0.02 ± (50% + 1e-4) allows up to 0.0301
    m3[FRAC] = 0.95  # inclusive min
    findings = check(results, load_reference(reference_path))
    order = [(f.experiment, f.metric) for f in findings]
    assert order == [("E1", RECON), ("E1", SPECKLE), ("E3", ENERGY), ("E3", FRAC)]
    assert statuses(findings) == {
        ("E1", RECON): "pass",
        ("E1", SPECKLE): "fail",
        ("E3", ENERGY): "pass",
        ("E3", FRAC): "pass",
    }
    assert not any(f.metric == "unreferenced/metric" for f in findings)
    speckle = findings[1]
    assert speckle.ours == 0.0302 and not speckle.ok and findings[0].ok


def test_experiments_filter(reference_path):
    results = make_results()
    results["experiments"]["E1"]["metrics"][RECON] = 1.0  # E1 fails
    reference = load_reference(reference_path)
    assert {f.experiment for f in check(results, reference, ["E3"])} == {"E3"}
    assert all(f.ok for f in check(results, reference, ["E3"]))
    assert not all(f.ok for f in check(results, reference, ["E1", "E3"]))
    assert len(check(results, reference)) == 4
    with pytest.raises(ValueError, match="E9"):
        check(results, reference, ["E3", "E9"])


def test_run_check_experiments_filter(tmp_path, reference_path):
    results = make_results()
    del results["experiments"]["E1"]
    path = write_json(tmp_path / "r.json", results)
    assert run_check(path, reference_path, experiments=["E3"], stream=io.StringIO()) == 0
    assert run_check(path, reference_path, stream=io.StringIO()) == 1
    with pytest.raises(ValueError, match="E7"):
        run_check(path, reference_path, experiments=["E7"], stream=io.StringIO())


def test_format_findings_numbers_and_summary():
    findings = [
        Finding("E1", "a/metric", 0.123456789, "0.1 ± 10%", "fail"),
        Finding("E1", "b/metric", None, ">= 0.9", "missing"),
        Finding("E2", "c/metric", math.nan, "<= 1", "not finite"),
        Finding("E2", "d/metric", 0.5, "<= 1", "pass"),
    ]
    text = format_findings(findings)
    assert "0.1235" in text and "0.123456789" not in text
    assert "d/metric" not in text
    assert "3 of 4 metrics outside tolerance (1 missing, 1 not finite)" in text
    assert "d/metric" in format_findings(findings, verbose=True)
    with pytest.raises(ValueError):
        Finding("E1", "x", 1.0, "== 1", "great")


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("{ value = 1.0, rtol = 0.1, tolerance = 0.2 }", "tolerance"),
        ('{ source = "somewhere" }', "value"),
        ("{ rtol = 0.1 }", "value"),
        ("{ value = 1.0, rtol = -0.1 }", "rtol"),
        ("{ value = 1.0, atol = -1e-3 }", "atol"),
        ('{ value = "0.5", rtol = 0.1 }', "value"),
        ('{ max = "big" }', "max"),
        ("{ value = true }", "value"),
        ("{ value = nan, rtol = 0.1 }", "value"),
        ("{ min = 2.0, max = 1.0 }", "min"),
        ("{ value = 1.0, max = 2.0 }", "not both"),
        ("0.5", "table"),
    ],
)
def test_bad_reference_raises_naming_metric(tmp_path, spec, needle):
    path = tmp_path / "bad.toml"
    path.write_text(f'[E2]\n"good/metric" = {{ value = 1.0 }}\n"bad/metric" = {spec}\n', encoding="utf-8")
    with pytest.raises(ReferenceError) as info:
        load_reference(path)
    message = str(info.value)
    assert "bad/metric" in message and "E2" in message and "bad.toml" in message
    assert needle in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        'stray = 3\n[E1]\n"m" = { value = 1.0 }\n',
        'profile = 3\n[E1]\n"m" = { value = 1.0 }\n',
        "[E1\n",
        'profile = "quick"\n',
    ],
)
def test_bad_reference_file(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ReferenceError, match="bad.toml"):
        load_reference(path)


def test_missing_files(tmp_path, reference_path):
    with pytest.raises(ReferenceError, match="not found"):
        load_reference(tmp_path / "nope.toml")
    with pytest.raises(ResultsError, match="not found"):
        load_results(tmp_path / "nope.json")
    with pytest.raises(ResultsError, match="not found"):
        run_check(tmp_path / "nope.json", reference_path, stream=io.StringIO())


def _without(key: str) -> dict:
    results = make_results()
    del results[key]
    return results


def _bad_metrics() -> dict:
    results = make_results()
    results["experiments"]["E1"]["metrics"] = [1.0, 2.0]
    return results


def _string_metric() -> dict:
    results = make_results()
    results["experiments"]["E1"]["metrics"][RECON] = "0.01"
    return results


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("this is not json {", "JSON"),
        (json.dumps([1, 2, 3]), "object"),
        (json.dumps(make_results(schema="vaedft-bench-results/0")), "schema"),
        (json.dumps(_without("schema")), "schema"),
        (json.dumps(_without("experiments")), "experiments"),
        (json.dumps(make_results(experiments=[])), "experiments"),
        (json.dumps(_bad_metrics()), "metrics"),
        (json.dumps(_string_metric()), RECON),
    ],
)
def test_bad_results_raise(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ResultsError) as info:
        load_results(path)
    assert needle in str(info.value) and "bad.json" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_loaded_reference_structure(reference_path):
    reference = load_reference(reference_path)
    assert reference["profile"] == "quick" and reference["description"] == "test reference"
    assert list(reference["experiments"]) == ["E1", "E3"]
    assert reference["experiments"]["E1"][SPECKLE] == MetricSpec(value=0.02, rtol=0.5, atol=1e-4)
    assert reference["experiments"]["E3"][ENERGY] == MetricSpec(max=1e-3, source="paper Sec. III C")


# ------------------------------------------------------------------------------------------------ write_reference


def test_write_reference_round_trip(tmp_path):
    results = make_results()
    metrics = results["experiments"]["E1"]["metrics"]
    metrics["odd \"quoted\" \\ name/é\ttab"] = 1e-300
    metrics["integer/count"] = 7
    metrics["tiny/value"] = 0.1 + 0.2  # not exactly 0.3: repr must keep every digit
    metrics["bad/nan"] = math.nan
    metrics["bad/null"] = None
    results["experiments"]["E3"]["metrics"]["huge"] = 1.7976931348623157e308
    path = tmp_path / "ref" / "quick.toml"
    write_reference(results, path, rtol=0.3, atol_by_suffix={"energy_error": 1e-4}, header="line one\nline two")

    text = path.read_text(encoding="utf-8")
    assert text.startswith("# line one\n# line two\n")
    assert "bad/nan" in text and "bad/null" in text  # mentioned in comments only
    parsed = tomllib.loads(text)
    assert "bad/nan" not in parsed["E1"] and "bad/null" not in parsed["E1"]
    assert not list(tmp_path.joinpath("ref").glob("*.tmp"))

    reference = load_reference(path)
    assert reference["profile"] == "quick"
    e1, e3 = reference["experiments"]["E1"], reference["experiments"]["E3"]
    assert e1["tiny/value"].value == 0.1 + 0.2
    assert e1["integer/count"].value == 7.0
    assert e1[RECON] == MetricSpec(value=0.013, rtol=0.3)
    assert e3[ENERGY] == MetricSpec(value=0.0009, rtol=0.3, atol=1e-4)
    assert e3[FRAC].atol == 0.0
    assert set(e1) == {RECON, SPECKLE, "unreferenced/metric", "odd \"quoted\" \\ name/é\ttab", "integer/count",
                       "tiny/value"}

    findings = check(results, reference)
    assert findings and all(f.ok for f in findings)
    assert len(findings) == 9  # 6 finite in E1 + 3 in E3
    out = io.StringIO()
    assert run_check(write_json(tmp_path / "r.json", results), path, stream=out) == 0

    # the generated reference catches a regression
    doctored = copy.deepcopy(results)
    doctored["experiments"]["E3"]["metrics"][FRAC] = 0.97 * 1.31
    assert statuses(check(doctored, reference))[("E3", FRAC)] == "fail"


def test_write_reference_experiments_filter_and_errors(tmp_path):
    results = make_results()
    path = tmp_path / "quick.toml"
    write_reference(results, path, rtol=0.1, experiments=["E3"])
    reference = load_reference(path)
    assert list(reference["experiments"]) == ["E3"]
    with pytest.raises(ValueError, match="E5"):
        write_reference(results, tmp_path / "other.toml", rtol=0.1, experiments=["E5"])
    with pytest.raises(ValueError, match="rtol"):
        write_reference(results, tmp_path / "other.toml", rtol=-0.1)
    all_nan = make_results(experiments={"E1": {"metrics": {"a": math.nan}}})
    with pytest.raises(ValueError, match="no finite"):
        write_reference(all_nan, tmp_path / "other.toml", rtol=0.1)
    assert not (tmp_path / "other.toml").exists()
    # overwriting keeps a valid file
    write_reference(results, path, rtol=0.2)
    assert list(load_reference(path)["experiments"]) == ["E1", "E3"]
