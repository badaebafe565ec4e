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
