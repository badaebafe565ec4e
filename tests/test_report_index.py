"""The generated index of reports/README.md (``vaedft.report.markdown.update_index``)."""

from __future__ import annotations

import json

from vaedft.report.markdown import update_index


def test_the_index_lists_only_harness_reports(tmp_path):
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "results.json").write_text(json.dumps(
        {"created": "2026-12-02", "git_commit": "abc1234", "device_name": "cpu", "experiments": {}}))
    (tmp_path / "recipe_study").mkdir()
    (tmp_path / "recipe_study" / "results.json").write_text(json.dumps({"header": {}, "runs": {}}))
    text = update_index(tmp_path).read_text()
    assert "[quick](quick/report.md)" in text
    assert "recipe_study" not in text
