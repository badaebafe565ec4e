"""The recipe study keeps the results of earlier calls (``benchmark/recipe_study.py``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("recipe_study", ROOT / "benchmark" / "recipe_study.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("recipe_study", mod)  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_nothing_to_keep(study, tmp_path):
    assert study.kept_results(tmp_path / "results.json") == {"runs": {}, "models": {}, "min": {},
                                                             "roughness_location": {}}


def test_kept_runs_get_the_earlier_reports_commit(study, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"header": {"commit": "abc1234"},
                                "runs": {"f_g1d": {"epochs": 3}, "f_sp": {"epochs": 2, "commit": "def5678"}},
                                "models": {"f_g1d": {"mae_kcal": 2.0}}, "min": {}}))
    kept = study.kept_results(path)
    assert kept["runs"]["f_g1d"]["commit"] == "abc1234"
    assert kept["runs"]["f_sp"]["commit"] == "def5678"
    assert kept["models"] == {"f_g1d": {"mae_kcal": 2.0}}
    assert kept["roughness_location"] == {}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", json.dumps({"runs": {"f_g1d": {}}})])
def test_a_foreign_results_file_is_refused(study, tmp_path, text):
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(SystemExit, match="not a results file of this study"):
        study.kept_results(path)


def test_the_report_points_to_the_curves_it_cannot_draw(study):
    train = {"lr": 1e-3, "schedule": "cosine", "lr_min": 1e-5, "batch_size": 32}
    runs = {"f_g1d": {"epochs": 3, "wall_time_min": 1.0, "train": train, "model": {}},
            "f_sp": {"epochs": 2, "wall_time_min": 1.0, "train": train, "model": {},
                     "curve": {"minutes": [0.5, 1.0], "value": [3.0, 2.0]}}}
    header = {"command": "recipe_study.py", "commit": "abc1234", "machine": "m", "date": "d"}
    text = study.render(header, {"runs": runs, "models": {}, "min": {}})
    assert "are not in this figure" in text and "(f_g1d)" in text


def test_a_finished_run_keeps_the_commit_it_was_trained_at(study, tmp_path, monkeypatch):
    """Recording a run again (e.g. to re-evaluate it) must not stamp it with the current commit; a run that
    trains in this call gets the current one, and a head refit is the last point of its curve."""
    out = tmp_path / "f_g1d_5min_ridge"
    out.mkdir()
    (out / "history.csv").write_text("epoch,val_loss,wall_time_s\n1,4e-5,60\n2,1e-5,120\n")
    state = {"epoch": 2, "finished": True, "wall_time_s": 130.0, "head_refit": {"val_loss": 1e-6}}
    monkeypatch.setattr(study, "model_config", lambda run, path: None)
    monkeypatch.setattr(study, "train", lambda *a, **k: state)
    monkeypatch.setattr(study, "_commit", lambda: "new0000")
    data = {"g1d_train": tmp_path / "g.h5"}
    (out / "state.json").write_text(json.dumps(state))
    kept = study.train_run("f_g1d_5min_ridge", tmp_path, data, {"commit": "old1111"})
    assert kept["commit"] == "old1111"
    assert kept["curve"]["minutes"][-1] == pytest.approx(130.0 / 60, abs=1e-3)
    assert kept["curve"]["value"][-1] == pytest.approx(1e-3 / study.KCAL)
    (out / "state.json").write_text(json.dumps({**state, "finished": False}))  # trained now
    assert study.train_run("f_g1d_5min_ridge", tmp_path, data, {"commit": "old1111"})["commit"] == "new0000"
