"""The accuracy-per-CPU-minute frontier of every testbed with a cpu goal, for the cpu report's goals section.

The cases are the goals' own: every ``<testbed>/ld<l>/beta<b>/mean_abs_energy_error`` bound of
``benchmark/reference/cpu.toml`` (gaussian1d l_d = 4, beta = 1e-3; speckle1d l_d = 16, beta = 1e-5;
gaussian3d l_d = 32, beta = 1e-6).  For each, it gathers every measured (CPU minutes, accuracy) point:

* the recipe study (``reports/recipe_study/results.json``, each run at its recorded torch threads; it has
  gaussian1d on the 100 Snyder 2012 instances and speckle1d on 100 random instances of its own seed), and
* a harness run of the cpu profile (``reports/cpu/results.json``, the goal's case; the build times come
  from the artifact cache's ``done.json`` files, or, without the cache, from the run's E10 timing table),

for two quantities: the functional's MAE on the exact densities (against its training minutes) and
the mean |e_min - e_gs| after latent minimization (against the minutes of the whole pair: VAE +
functional + minimization).  CPU minutes are wall minutes times torch threads.  The frontier is the
best accuracy reached within each budget (the lower envelope of the points).

For each testbed whose goal failed it also reads, from the run's minimization result files in the cache,
what limits it: the share of the test instances within chemical accuracy by each term of the error budget
(the reported error, the manifold gap that a perfect functional would leave, the exact energy of the found
density, the learned functional on the exact ground states), at the goal's l_d for every beta of the sweep.

Writes ``frontier.json`` (the points and those shares, each with its testbed, the goals, the command, the
date) and ``figures/frontier.png`` (a row per testbed) next to the cpu results; ``vaedft-bench`` shows them
in the report's goals section when a goal fails.  Every number comes from the results files, the goals
file (and the cache); nothing is typed in.

Usage::

    python benchmark/frontier.py --results reports/cpu/results.json --study reports/recipe_study/results.json
    vaedft-bench report reports/cpu/results.json     # re-render report.md with the frontier
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vaedft.bench.artifacts import stage_seconds
from vaedft.bench.check import ReferenceError, load_reference
from vaedft.bench.context import beta_tag
from vaedft.bench.runner import default_cache_dir
from vaedft.report.figures import KCAL_PER_MOL, plot_sweep
from vaedft.report.markdown import costliest_off_envelope, frontier_envelope
from vaedft.results import ResultError, read_result

GOALS = Path(__file__).resolve().parent / "reference" / "cpu.toml"
#: the recipe study's test sets (benchmark/recipe_study.py) and their testbeds
STUDY_TESTS = {"g1d_test": "gaussian1d", "sp_test": "speckle1d"}
_CASE = re.compile(r"(?P<testbed>[a-z0-9]+)/ld(?P<ld>[0-9]+)/beta(?P<beta>[0-9.e+-]+)")


def goal_cases(goals: Mapping) -> dict[str, dict]:
    """testbed -> {experiment, case, ld, beta, goal_kcal} from the mean-abs bounds of a loaded goals file."""
    cases = {}
    for exp, metrics in goals["experiments"].items():
        for name, spec in metrics.items():
            m = _CASE.fullmatch(name.removesuffix("/mean_abs_energy_error"))
            if name.endswith("/mean_abs_energy_error") and m and spec.max is not None:
                cases[m["testbed"]] = {"experiment": exp, "case": m.group(0), "ld": m["ld"], "beta": float(m["beta"]),
                                       "goal_kcal": spec.max / KCAL_PER_MOL}
    return cases


def study_points(study: Mapping) -> list[dict]:
    """Points of the recipe study on its test sets (each part at its recorded torch threads, else one)."""
    runs, models = study["runs"], study["models"]

    def cpu_min(name: str) -> float:
        return runs[name]["wall_time_min"] * runs[name].get("threads", 1)

    points = []
    for name, m in models.items():
        if "mae_kcal" in m and m.get("test") in STUDY_TESTS:
            points.append({"testbed": STUDY_TESTS[m["test"]], "source": "recipe study", "label": name,
                           "kind": "functional", "cpu_minutes": cpu_min(name), "mean_abs_kcal": m["mae_kcal"]})
    for name, m in study["min"].items():
        if m.get("energy") is None or m.get("test") not in STUDY_TESTS:
            continue
        minutes = cpu_min(m["vae"]) + cpu_min(m["functional"]) + m["minimize_s"] / 60 * m.get("threads", 1)
        points.append({"testbed": STUDY_TESTS[m["test"]], "source": "recipe study", "label": name,
                       "kind": "minimization", "cpu_minutes": minutes,
                       "mean_abs_kcal": m["energy"]["mean_abs_error_kcal_per_mol"],
                       "within_ca": m["energy"]["fraction_within_ca"]})
    return points


def _short(beta: float) -> str:
    """``1e-3`` as the paper writes it (not ``1e-03``)."""
    mantissa, _, exp = beta_tag(beta).partition("e")
    return f"{mantissa}e{int(exp)}"


def _threads(results: Mapping) -> int:
    name = str(results.get("device_name", ""))
    tail = name.rsplit("torch threads", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].strip().isdigit() else 1


def _times_from_cache(exp: Mapping, testbed: str, case: Mapping, cache: Path) -> dict[str, float] | None:
    """Build seconds of the case's VAE, functional and minimization from ``done.json``."""
    arts = exp.get("artifacts", {})
    pair = f"l_d={case['ld']} beta={beta_tag(case['beta'])}"  # as the artifact labels write it
    want = {"vae": f"VAE {testbed} {pair}", "functional": f"functional {testbed}"}
    out = {}
    for what, label in want.items():
        if label not in arts:
            return None
        out[what] = cache / what / arts[label] / "done.json"
    mins = [lbl for lbl in arts if lbl.startswith("latent-") and f"{pair} " in lbl and f" {testbed} " in lbl]
    if len(mins) != 1:
        return None
    out["minimize"] = cache / "minimization" / arts[mins[0]] / "done.json"
    times = {}
    for what, path in out.items():
        if not path.is_file():
            return None
        times[what] = stage_seconds(json.loads(path.read_text()))
    return times


def cpu_points(results: Mapping, cache: Path, cases: Mapping[str, Mapping]) -> list[dict]:
    """The cpu profile run's goal cases, at their build times."""
    exps = results.get("experiments", {})
    threads = _threads(results)
    source = f"{results.get('profile', 'cpu')} profile"
    pts = []
    for testbed, case in cases.items():
        exp, name = exps.get(case["experiment"]), case["case"]
        if not exp or f"{name}/mean_abs_energy_error" not in exp.get("metrics", {}):
            continue
        m = exp["metrics"]
        times = _times_from_cache(exp, testbed, case, cache)
        timing = "times from the artifact cache"
        if times is None:
            t = exps.get("E10", {}).get("metrics", {})
            if f"{testbed}/time/train_vae_s" not in t:
                continue
            times = {"vae": t[f"{testbed}/time/train_vae_s"], "functional": t[f"{testbed}/time/train_functional_s"],
                     "minimize": t[f"{testbed}/time/minimize_s"]}
            timing = f"times of E10's {testbed} pair"
        functional = m.get(f"{name}/budget_functional_error_mean_abs_kcal_per_mol")
        if functional is not None:
            pts.append({"testbed": testbed, "source": source, "label": f"functional ({timing})",
                        "kind": "functional", "cpu_minutes": times["functional"] / 60 * threads,
                        "mean_abs_kcal": functional})
        pts.append({"testbed": testbed, "source": source,
                    "label": f"l_d = {case['ld']}, beta = {_short(case['beta'])} ({timing})",
                    "kind": "minimization", "cpu_minutes": sum(times.values()) / 60 * threads,
                    "mean_abs_kcal": m[f"{name}/mean_abs_energy_error"] / KCAL_PER_MOL,
                    "within_ca": m.get(f"{name}/frac_within_ca")})
    return pts


_BETA = re.compile(r"beta=(?P<beta>[0-9.e+-]+) ")


def _share_within(x, ca: float, *, absolute: bool = False) -> float:
    """Share of the entries (E0) at most ``ca`` (of ``|x|`` with ``absolute``); NaN/inf count as out, as in
    :func:`vaedft.metrics.energy_errors`' ``fraction_within_ca``."""
    x = np.asarray(x, dtype=float)
    x = np.abs(x) if absolute else x
    return float((np.isfinite(x) & (x <= ca)).mean())


def case_limits(results: Mapping, cache: Path, cases: Mapping[str, Mapping]) -> list[dict]:
    """What limits each testbed whose goal failed: shares within CA of the error budget's terms, per instance.

    For every latent minimization of the goal's experiment at the goal's l_d on that testbed (the goal's beta
    and the others of the sweep), read from the run's result file in the artifact cache
    (:func:`vaedft.results.read_result`, which checks the schema): the shares of the instances within chemical
    accuracy by the reported error ``|e_min - e_gs|``, by the manifold gap (what a perfect functional leaves),
    by the exact energy of the found density, and by the learned functional on the exact ground states.
    A case whose result file is absent, damaged or without a budget is left out (no cache: no rows).
    """
    # the testbed a failed goal or claim names first ("speckle1d/ld16/...", "speckle1d l_d = 16: ...")
    failing = {m.group(0) for g in results.get("goals") or [] if g.get("status") == "fail"
               for m in [re.match(r"[a-z0-9]+", str(g.get("metric", "")))] if m}
    exps = results.get("experiments", {})
    rows = []
    for testbed, case in cases.items():
        if testbed not in failing:
            continue
        arts = exps.get(case["experiment"], {}).get("artifacts", {})
        for label, key in arts.items():
            m = _BETA.search(label)
            if not (label.startswith("latent-") and f" l_d={case['ld']} " in f" {label} " and f" {testbed} " in label
                    and m):
                continue
            try:
                res = read_result(cache / "minimization" / key / "result.h5")
            except ResultError:
                continue
            budget = (res.get("budget") or {}).get("terms", {})
            if not all(t in budget for t in ("manifold_gap", "exact_energy_at_min", "functional_error")):
                continue
            beta, ca = float(m["beta"]), float(res["metrics"]["chemical_accuracy"])
            rows.append({"testbed": testbed, "ld": int(case["ld"]), "beta": beta,
                         "goal_case": beta == case["beta"], "n": int(len(res["e_gs"])),
                         "within_ca": float(res["metrics"]["fraction_within_ca"]),  # the file's own metric
                         "manifold_within_ca": _share_within(budget["manifold_gap"], ca),
                         "found_density_within_ca": _share_within(budget["exact_energy_at_min"], ca),
                         "functional_within_ca": _share_within(budget["functional_error"], ca, absolute=True)})
    order = {tb: i for i, tb in enumerate(cases)}
    return sorted(rows, key=lambda r: (order[r["testbed"]], not r["goal_case"], r["beta"]))


def plot(points: list[dict], cases: Mapping[str, Mapping], path: Path) -> Path:
    """Accuracy against CPU minutes: a row per testbed with points, the functional left, the pair right."""
    panels = []
    for testbed, case in cases.items():
        mine = [p for p in points if p["testbed"] == testbed]
        for kind, title in (("functional", "functional MAE (exact n)"),
                            ("minimization", f"l_d = {case['ld']}, after minimization")):
            series, drawn = {}, []
            for source in dict.fromkeys(p["source"] for p in mine):
                front = frontier_envelope([p for p in mine if p["kind"] == kind and p["source"] == source])
                drawn += front
                if front:
                    name = f"{source} (frontier)" if len(front) > 1 else source
                    series[name] = ([p["cpu_minutes"] for p in front], [p["mean_abs_kcal"] for p in front])
            last = costliest_off_envelope([p for p in mine if p["kind"] == kind])
            if last is not None and not any(p is last for p in drawn):  # the frontier is flat up to it
                series[f"{last['source']}: {last['label']} (no better)"] = ([last["cpu_minutes"]],
                                                                          [last["mean_abs_kcal"]])
            if series:
                panels.append({"series": series, "title": f"{testbed}: {title}", "xlabel":
                               "CPU minutes (wall x torch threads)", "ylabel": "kcal/mol",
                               "hlines": [(1.0, "chemical accuracy"),
                                          (case["goal_kcal"], "cpu goal (mean abs)")]})
    return plot_sweep(path, panels, ncols=2, suptitle="Accuracy vs CPU minutes (100 test instances, 3D: 50)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("reports/cpu/results.json"), help="a cpu profile run")
    p.add_argument("--study", type=Path, default=Path("reports/recipe_study/results.json"))
    p.add_argument("--goals", type=Path, default=GOALS, help="the goals file (default benchmark/reference/cpu.toml)")
    p.add_argument("--cache", type=Path, default=None, help="the run's artifact cache (default: vaedft-bench's)")
    args = p.parse_args(argv)
    for path in (args.results, args.study):
        if not path.is_file():
            print(f"frontier: {path} not found", file=sys.stderr)
            return 2
    try:
        cases = goal_cases(load_reference(args.goals))
    except ReferenceError as exc:
        print(f"frontier: {exc}", file=sys.stderr)
        return 2
    if not cases:
        print(f"frontier: {args.goals} bounds no <testbed>/ld<l>/beta<b>/mean_abs_energy_error", file=sys.stderr)
        return 2
    try:
        results = json.loads(args.results.read_text())
        points = [p for p in study_points(json.loads(args.study.read_text())) if p["testbed"] in cases]
        cache = args.cache or default_cache_dir()
        points += cpu_points(results, cache, cases)
        limits = case_limits(results, cache, cases)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"frontier: {args.results} or {args.study} is not a results file of the expected form: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if not points:
        print(f"frontier: no measurement of a goal case in {args.results} or {args.study}", file=sys.stderr)
        return 2
    out_dir = args.results.parent
    figure = plot(points, cases, out_dir / "figures" / "frontier.png")
    doc = {"command": " ".join(["frontier.py", *(argv if argv is not None else sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "goals_kcal": {tb: c["goal_kcal"] for tb, c in cases.items()},
           "figure": figure.relative_to(out_dir).as_posix(), "points": points, "limits": limits}
    (out_dir / "frontier.json").write_text(json.dumps(doc, indent=1) + "\n")
    for p_ in sorted(points, key=lambda p: (p["testbed"], p["kind"], p["cpu_minutes"])):
        print(f"{p_['testbed']:11s} {p_['kind']:13s} {p_['cpu_minutes']:8.1f} min  "
              f"{p_['mean_abs_kcal']:9.3f} kcal/mol  {p_['source']}: {p_['label']}")
    for r in limits:
        print(f"{r['testbed']:11s} l_d = {r['ld']}, beta = {r['beta']:.0e}: within CA {r['within_ca']:.0%}, "
              f"manifold gap {r['manifold_within_ca']:.0%}, found density {r['found_density_within_ca']:.0%}, "
              f"functional on n_gs {r['functional_within_ca']:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
