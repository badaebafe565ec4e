"""The accuracy-per-CPU-minute frontier on gaussian1d, for the cpu report's goals.

Gathers every measured (CPU minutes, accuracy) point on the 100 Snyder 2012 instances:

* the recipe study (``reports/recipe_study/results.json``: one torch thread per run), and
* a harness run of the cpu profile (``reports/cpu/results.json``, its goal case gaussian1d
  l_d = 4, beta = 1e-3; the build times come from the artifact cache's ``done.json`` files, or,
  without the cache, from the run's E10 timing table),

for two quantities: the functional's MAE on the exact densities (against its training minutes) and
the mean |e_min - e_gs| after latent minimization (against the minutes of the whole pair: VAE +
functional + minimization).  CPU minutes are wall minutes times torch threads.  The frontier is the
best accuracy reached within each budget (the lower envelope of the points).

Writes ``frontier.json`` (the points, the command, the date) and ``figures/frontier.png`` next to the
cpu results; ``vaedft-bench`` shows both in the report's goals section when a goal fails.  Every number
comes from the two results files (and the cache); nothing is typed in.

Usage::

    python benchmark/frontier.py --results reports/cpu/results.json --study reports/recipe_study/results.json
    vaedft-bench report reports/cpu/results.json     # re-render report.md with the frontier
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from vaedft.bench.artifacts import stage_seconds
from vaedft.bench.runner import default_cache_dir
from vaedft.report.figures import KCAL_PER_MOL, plot_sweep
from vaedft.report.markdown import frontier_envelope

CASE = "gaussian1d/ld4/beta1e-03"
GOAL_KCAL = 0.5  # the gaussian1d goal of benchmark/reference/cpu.toml (mean abs, kcal/mol)


def study_points(study: Mapping) -> list[dict]:
    """Points of the recipe study on the gaussian1d Snyder set (each part at its recorded torch threads, else one)."""
    runs, models = study["runs"], study["models"]

    def cpu_min(name: str) -> float:
        return runs[name]["wall_time_min"] * runs[name].get("threads", 1)

    points = []
    for name, m in models.items():
        if "mae_kcal" in m and m.get("test") == "g1d_test":
            points.append({"source": "recipe study", "label": name, "kind": "functional",
                           "cpu_minutes": cpu_min(name), "mean_abs_kcal": m["mae_kcal"]})
    for name, m in study["min"].items():
        if m.get("energy") is None or m.get("test") != "g1d_test":
            continue
        minutes = cpu_min(m["vae"]) + cpu_min(m["functional"]) + m["minimize_s"] / 60 * m.get("threads", 1)
        points.append({"source": "recipe study", "label": name, "kind": "minimization", "cpu_minutes": minutes,
                       "mean_abs_kcal": m["energy"]["mean_abs_error_kcal_per_mol"],
                       "within_ca": m["energy"]["fraction_within_ca"]})
    return points


def _threads(results: Mapping) -> int:
    name = str(results.get("device_name", ""))
    tail = name.rsplit("torch threads", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].strip().isdigit() else 1


def _times_from_cache(e4: Mapping, cache: Path) -> dict[str, float] | None:
    """Build seconds of the goal case's VAE, functional and minimization from ``done.json``."""
    arts = e4.get("artifacts", {})
    want = {"vae": "VAE gaussian1d l_d=4 beta=1e-03", "functional": "functional gaussian1d"}
    out = {}
    for what, label in want.items():
        if label not in arts:
            return None
        out[what] = cache / what / arts[label] / "done.json"
    mins = [lbl for lbl in arts if lbl.startswith("latent-") and "l_d=4 beta=1e-03" in lbl
            and "gaussian1d" in lbl]
    if len(mins) != 1:
        return None
    out["minimize"] = cache / "minimization" / arts[mins[0]] / "done.json"
    times = {}
    for what, path in out.items():
        if not path.is_file():
            return None
        times[what] = stage_seconds(json.loads(path.read_text()))
    return times


def cpu_points(results: Mapping, cache: Path) -> list[dict]:
    """The cpu profile run's goal case, at its build times."""
    exps = results.get("experiments", {})
    e4 = exps.get("E4")
    if not e4 or f"{CASE}/mean_abs_energy_error" not in e4.get("metrics", {}):
        return []
    m = e4["metrics"]
    times = _times_from_cache(e4, cache)
    timing = "times from the artifact cache"
    if times is None:
        t = exps.get("E10", {}).get("metrics", {})
        if "gaussian1d/time/train_vae_s" not in t:
            return []
        times = {"vae": t["gaussian1d/time/train_vae_s"], "functional": t["gaussian1d/time/train_functional_s"],
                 "minimize": t["gaussian1d/time/minimize_s"]}
        timing = "times of E10's gaussian1d pair"
    threads = _threads(results)
    label = f"{results.get('profile', 'cpu')} profile"
    pts = [{"source": label, "label": f"functional ({timing})", "kind": "functional",
            "cpu_minutes": times["functional"] / 60 * threads,
            "mean_abs_kcal": m[f"{CASE}/budget_functional_error_mean_abs_kcal_per_mol"]}]
    pts.append({"source": label, "label": f"l_d = 4, beta = 1e-3 ({timing})", "kind": "minimization",
                "cpu_minutes": sum(times.values()) / 60 * threads,
                "mean_abs_kcal": m[f"{CASE}/mean_abs_energy_error"] / KCAL_PER_MOL,
                "within_ca": m[f"{CASE}/frac_within_ca"]})
    return pts


def plot(points: list[dict], path: Path) -> Path:
    panels = []
    for kind, title in (("functional", "DL functional: MAE on exact densities"),
                        ("minimization", "after latent minimization: mean |error|")):
        series = {}
        for source in dict.fromkeys(p["source"] for p in points):
            pts = [p for p in points if p["kind"] == kind and p["source"] == source]
            front = frontier_envelope(pts)
            if front:
                name = f"{source} (frontier)" if len(front) > 1 else source
                series[name] = ([p["cpu_minutes"] for p in front], [p["mean_abs_kcal"] for p in front])
        if series:
            panels.append({"series": series, "title": title, "xlabel":
                           "CPU minutes (wall x torch threads)", "ylabel": "kcal/mol",
                           "hlines": [(1.0, "chemical accuracy"), (GOAL_KCAL, "cpu goal (mean abs)")]})
    return plot_sweep(path, panels, suptitle="Accuracy vs CPU minutes: gaussian1d, 100 Snyder 2012 instances")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("reports/cpu/results.json"), help="a cpu profile run")
    p.add_argument("--study", type=Path, default=Path("reports/recipe_study/results.json"))
    p.add_argument("--cache", type=Path, default=None, help="the run's artifact cache (default: vaedft-bench's)")
    args = p.parse_args(argv)
    for path in (args.results, args.study):
        if not path.is_file():
            print(f"frontier: {path} not found", file=sys.stderr)
            return 2
    try:
        results = json.loads(args.results.read_text())
        points = study_points(json.loads(args.study.read_text()))
        points += cpu_points(results, args.cache or default_cache_dir())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"frontier: {args.results} or {args.study} is not a results file of the expected form: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    out_dir = args.results.parent
    figure = plot(points, out_dir / "figures" / "frontier.png")
    doc = {"command": " ".join(["frontier.py", *(argv if argv is not None else sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "goal_kcal": GOAL_KCAL,
           "figure": figure.relative_to(out_dir).as_posix(), "points": points}
    (out_dir / "frontier.json").write_text(json.dumps(doc, indent=1) + "\n")
    for p_ in sorted(points, key=lambda p: (p["kind"], p["cpu_minutes"])):
        print(f"{p_['kind']:13s} {p_['cpu_minutes']:8.1f} min  {p_['mean_abs_kcal']:9.3f} kcal/mol  "
              f"{p_['source']}: {p_['label']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
