"""The markdown report of a benchmark run, rendered from ``results.json`` alone.

``render_report(results)`` gives ``report.md``: a header (date, commit, versions, device, total
time), the profile's goals with PASS/FAIL (if it has a goals file), a summary table of the
paper-vs-ours verdicts, then one section per experiment with what
the paper claims, our tables (tabulate), the error budget of its minimizations (one table per
testbed, built from its ``budget_*`` metrics by :func:`budget_tables`), figures, the paper-vs-ours
comparison with PASS/FAIL, and the chemical-accuracy verdict.  ``update_index`` keeps the generated list of reports in
``reports/README.md`` between two marker comments, leaving the hand-written rest alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from tabulate import tabulate

__all__ = ["render_report", "update_index", "INDEX_START", "INDEX_END", "verdict_counts", "budget_tables"]

INDEX_START = "<!-- vaedft-bench index: start (generated) -->"
INDEX_END = "<!-- vaedft-bench index: end -->"


def _table(rows, headers) -> str:
    """A GitHub markdown table; ``|`` inside a cell is escaped so it cannot split the cell."""
    def esc(x):
        return x.replace("|", "\\|") if isinstance(x, str) else x

    return tabulate([[esc(c) for c in r] for r in rows], headers=[esc(h) for h in headers], tablefmt="github")


def verdict_counts(entry: Mapping) -> dict[str, int]:
    """``{"PASS": k, "FAIL": m, "n/a": j}`` over an experiment's comparisons."""
    counts = {"PASS": 0, "FAIL": 0, "n/a": 0}
    for c in entry.get("comparisons", []):
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    return counts


def _minutes(seconds) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _header(results: Mapping) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items())
    lines = [
        f"# vaedft benchmark report: `{results['profile']}` profile",
        "",
        f"- Date: {results.get('created', '-')}",
        f"- Git commit: `{results.get('git_commit', 'unknown')}`",
        f"- Device: {results.get('device', '-')} ({results.get('device_name', '-')})",
        f"- Versions: {versions}",
        f"- Seed: {results.get('seed', '-')}",
        f"- Total time of the last run: {_minutes(results.get('total_time_s'))} "
        f"(experiments {', '.join(results.get('last_run_experiments', [])) or '-'})",
        f"- Command: `{str(results.get('command', 'vaedft-bench')).strip()}`",
        "",
    ]
    if results.get("profile_description"):
        lines += [results["profile_description"].strip(), ""]
    return lines


def _summary(results: Mapping) -> list[str]:
    rows = []
    for eid, e in results["experiments"].items():
        c = verdict_counts(e)
        rows.append([eid, e.get("title", ""), e.get("figure", ""), c["PASS"], c["FAIL"], c["n/a"],
                     _minutes(e.get("wall_time_s")), e.get("git_commit", "")[:10]])
    return ["## Summary", "",
            _table(rows, ["experiment", "title", "figure", "PASS", "FAIL", "n/a", "time", "commit"]), ""]


_GOAL_VERDICT = {"pass": "PASS", "fail": "**FAIL**", "not run": "not run"}


def _goals(results: Mapping) -> list[str]:
    """The profile's goals with PASS/FAIL (``results["goals"]``, see :func:`vaedft.bench.runner.goal_findings`)."""
    from ..metrics import KCAL_PER_MOL

    goals = results.get("goals")
    if not goals:
        return []
    rows = []
    for g in goals:
        ours = g.get("ours")
        if ours is None:
            shown = "-"
        elif "energy_error" in g["metric"]:
            shown = f"{ours:.4g} E0 = {ours / KCAL_PER_MOL:.3g} kcal/mol"
        else:
            shown = f"{ours:.4g}"
        rows.append([g["experiment"], g.get("source") or "", g["metric"], shown, g["expected"],
                     _GOAL_VERDICT.get(g["status"], f"**{g['status'].upper()}**")])
    n_pass = sum(g["status"] == "pass" for g in goals)
    return [f"## Goals ({n_pass} of {len(goals)} PASS)", "",
            f"From `{results.get('goals_file', '-')}`; `vaedft-bench check` applies the same file. A goal out of "
            "reach is reported, never loosened.", "",
            _table(rows, ["experiment", "goal", "metric", "ours", "expected", "verdict"]), ""]


def _cell(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def budget_tables(metrics: Mapping[str, float]) -> list[str]:
    """Markdown lines: one error-budget table per testbed (mean per term, kcal/mol) from an experiment's metrics.

    Reads the metrics ``<testbed>/<case...>/budget_<term>_mean_kcal_per_mol`` (and, for a single shown
    instance, ``.../instance<i>/budget_<term>_kcal_per_mol``) that
    :func:`vaedft.bench.experiments.budget_metrics` writes; a row per case (the middle of the name), a
    column per term of :data:`vaedft.metrics.BUDGET_TERMS` that any case has.  No budget metrics: no lines.
    """
    from ..metrics import BUDGET_TERMS

    per: dict[str, dict[str, dict[str, float]]] = {}
    for name, value in metrics.items():
        parts = name.split("/")
        if len(parts) < 2 or not parts[-1].startswith("budget_"):
            continue
        for term in BUDGET_TERMS:
            if parts[-1] in (f"budget_{term}_mean_kcal_per_mol", f"budget_{term}_kcal_per_mol"):
                case = "/".join(parts[1:-1]) or "-"
                per.setdefault(parts[0], {}).setdefault(case, {})[term] = value
    lines = []
    for testbed, cases in per.items():
        terms = [t for t in BUDGET_TERMS if any(t in c for c in cases.values())]
        rows = [[case, *(_cell(c.get(t)) for t in terms)] for case, c in cases.items()]
        lines += [f"**Error budget, {testbed}** (mean per term, kcal/mol; README: \"Reading the error budget\")", "",
                  _table(rows, ["case", *terms]), ""]
    return lines


def _section(eid: str, e: Mapping) -> list[str]:
    lines = [f"## {eid}: {e.get('title', '')}" + (f" ({e['figure']})" if e.get("figure") else ""), ""]
    if e.get("error"):
        lines += [f"**This experiment failed:** `{e['error']}` (rerun to retry).", ""]
    if e.get("claim"):
        lines += [f"**The paper:** {e['claim']}", ""]
    for t in e.get("tables", []):
        lines += [f"**{t['title']}**", "", _table(t["rows"], t["headers"]), ""]
    lines += budget_tables(e.get("metrics", {}))
    for f in e.get("figures", []):
        lines += [f"![{f['caption']}]({f['file']})", "", f"*{f['caption']}*", ""]
    comps = e.get("comparisons", [])
    if comps:
        rows = [[c["claim"], c["ours"], c["expected"], f"**{c['verdict']}**" if c["verdict"] == "FAIL"
                 else c["verdict"]] for c in comps]
        lines += ["**Paper vs ours**", "", _table(rows, ["claim", "ours", "expected", "verdict"]), ""]
    if e.get("ca_verdict"):
        lines += [f"**Chemical accuracy (1 kcal/mol = 1.594e-3 E0):** {e['ca_verdict']}", ""]
    for n in e.get("notes", []):
        lines += [f"_{n}_", ""]
    lines += [f"<sub>config hash `{e.get('config_hash', '')}`; run {e.get('run_at', '')} at commit "
              f"`{e.get('git_commit', '')[:10]}`; {_minutes(e.get('wall_time_s'))}</sub>", ""]
    return lines


def render_report(results: Mapping) -> str:
    """The markdown text of ``report.md`` for a results dict (``results.json``)."""
    lines = _header(results) + _goals(results) + _summary(results)
    for eid, e in results["experiments"].items():
        lines += _section(eid, e)
    return "\n".join(lines).rstrip() + "\n"


def update_index(reports_dir: str | Path) -> Path:
    """Rewrite the generated index block of ``reports_dir/README.md`` from every ``*/results.json``."""
    reports_dir = Path(reports_dir)
    rows = []
    for res_path in sorted(reports_dir.glob("*/results.json")):
        try:
            r = json.loads(res_path.read_text())
        except (OSError, ValueError):
            continue
        counts = {"PASS": 0, "FAIL": 0}
        for e in r.get("experiments", {}).values():
            for k, v in verdict_counts(e).items():
                if k in counts:
                    counts[k] += v
        profile = r.get("profile", res_path.parent.name)
        rows.append([f"[{profile}]({res_path.parent.name}/report.md)", r.get("created", "-"),
                     f"`{str(r.get('git_commit', ''))[:10]}`", r.get("device_name", r.get("device", "-")),
                     len(r.get("experiments", {})), f"{counts['PASS']} / {counts['FAIL']}"])
    block = [INDEX_START, "",
             tabulate(rows, headers=["report", "date", "commit", "device", "experiments", "PASS / FAIL"],
                      tablefmt="github") if rows else "No benchmark reports yet.", "", INDEX_END]
    readme = reports_dir / "README.md"
    text = readme.read_text() if readme.exists() else "# Reports\n\n"
    if INDEX_START in text and INDEX_END in text:
        head, rest = text.split(INDEX_START, 1)
        tail = rest.split(INDEX_END, 1)[1]
        text = head + "\n".join(block) + tail
    else:
        text = text.rstrip() + "\n\n## Latest benchmark reports\n\n" + "\n".join(block) + "\n"
    tmp = readme.with_name(readme.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(readme)
    return readme
