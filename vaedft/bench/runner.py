"""Run a profile of the benchmark suite: every selected experiment, then ``results.json`` and ``report.md``.

``run_suite("quick")`` is what ``vaedft-bench`` does with no arguments.  Artifacts go to the
cache (:mod:`vaedft.bench.artifacts`), so a rerun recomputes only what changed and an
interrupted run continues.  ``OUT/<profile>/results.json`` is rewritten after every experiment
(an interruption loses at most the experiment in progress) and merges with the file already
there: a run of ``--experiments E6`` replaces E6 and keeps the other experiments' entries, so
several short runs (e.g. 10-minute GPU sessions) add up to one report.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from .. import __version__
from ..progress import progress_bar
from .artifacts import ArtifactStore, spec_hash
from .check import RESULTS_SCHEMA, MetricSpec, check, load_reference
from .claims import evaluate_claims
from .context import Context, Output, PlanComplete
from .suite import Experiment, Profile, SuiteError, default_suite_dir, load_experiments, load_profile

__all__ = ["run_suite", "plan_builds", "default_cache_dir", "environment", "goal_findings", "report_name"]


def default_cache_dir() -> Path:
    """``$VAEDFT_CACHE``, else ``bench/`` in the user's cache directory (pooch's ``os_cache("vaedft")``:
    ``~/.cache/vaedft`` on Linux, ``$XDG_CACHE_HOME/vaedft`` when set), outside any work tree, so a
    long run survives a fresh checkout and ``git clean``."""
    env = os.environ.get("VAEDFT_CACHE")
    if env:
        return Path(env)
    import pooch

    return Path(pooch.os_cache("vaedft")) / "bench"


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        # reports/ is where this harness writes: its own output does not make the code "dirty"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports"],
                               cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: str, threads: int | None = None) -> dict:
    """Versions, device name and commit for the report header (``threads``: the profile's build threads)."""
    import numpy
    import scipy
    import torch

    versions = {"python": platform.python_version(), "vaedft": __version__, "torch": torch.__version__,
                "numpy": numpy.__version__, "scipy": scipy.__version__}
    for mod in ("cupy", "dask"):
        if mod in sys.modules or _importable(mod):
            try:
                versions[mod] = __import__(mod).__version__
            except Exception:  # noqa: BLE001 - a broken optional install must not stop the report
                pass
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        versions["cuda"] = str(torch.version.cuda)
    else:
        name = f"{_cpu_model()}, {os.cpu_count()} cores, torch threads {threads or torch.get_num_threads()}"
    return {"versions": versions, "device_name": name, "git_commit": _git_commit(), "platform": platform.platform()}


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _importable(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _paper_comparisons(suite_dir: Path, eid: str, metrics: dict) -> list[dict]:
    """The paper's values (``reference/paper.toml``) for this experiment's metrics, PASS/FAIL/n/a."""
    path = suite_dir / "reference" / "paper.toml"
    if not path.is_file():
        return []
    ref = load_reference(path)["experiments"].get(eid, {})
    out = []
    for name, spec in ref.items():
        spec: MetricSpec
        if name not in metrics:
            continue  # another profile's case (e.g. l_d the quick profile does not train)
        ours = metrics[name]
        ok = spec.passes(ours)
        out.append({"claim": spec.source or name, "ours": f"{ours:.4g} ({name})", "expected": spec.describe(),
                    "verdict": "PASS" if ok else "FAIL", "kind": "paper"})
    return out


def goal_findings(goals_path: Path, results: dict) -> list[dict]:
    """The profile's goals (a reference TOML of bounds, plus the claims it lists) checked on ``results``.

    One dict per goal: ``{"experiment", "metric", "ours", "expected", "status", "source"}``, status as
    :func:`vaedft.bench.check.check` gives it, except "not run" for an experiment absent from the results.
    """
    ran = results.get("experiments", {})
    out = []
    for f in check(results, load_reference(goals_path)):
        d = asdict(f)
        if f.experiment not in ran:
            d["status"] = "not run"
        out.append(d)
    return out


def report_name(profile: str, data: str = "generated") -> str:
    """The report directory of a run under OUT: the profile's name, plus ``_zenodo`` on the authors' data."""
    return profile if data == "generated" else f"{profile}_{data}"


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (reports name files portably)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=True))
    os.replace(tmp, path)


def _load_previous(path: Path, profile: Profile, data: str = "generated") -> dict:
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except ValueError:
        warnings.warn(f"{path} is not valid JSON; starting a new results file", stacklevel=3)
        return {}
    if (old.get("schema") != RESULTS_SCHEMA or old.get("profile") != profile.name
            or old.get("data_source", "generated") != data):
        return {}
    return old.get("experiments", {})


def plan_builds(profile: Profile, experiments: Sequence[Experiment], store: ArtifactStore, report_dir: Path, *,
                device: str, seed: int, data: str = "generated") -> set:
    """The artifacts a run will build (what is not cached yet), without building anything.

    Each experiment function runs in planning mode up to its first request for artifacts (most ask
    for their whole sweep at once), so this also resolves and validates every spec of the profile.
    """
    from .experiments import EXPERIMENTS

    plan: set = set()
    for exp in experiments:
        ctx = Context(profile, store, None, report_dir, device=device, seed=seed, progress=False,
                      experiment=exp.id, plan=plan, data=data)
        try:
            EXPERIMENTS[exp.function](ctx, exp.params)
        except PlanComplete:
            pass
        except SuiteError:
            raise  # a bad profile or experiment file stops the run before anything is built
        except Exception:  # noqa: BLE001 - the run itself reports it, as a failed experiment
            pass
    return plan


def run_suite(
    profile: str | Path = "quick",
    *,
    experiments: Sequence[str] | None = None,
    out: str | Path = "reports",
    cache: str | Path | None = None,
    device: str | None = None,
    seed: int | None = None,
    executor: str | None = None,
    suite_dir: str | Path | None = None,
    progress: bool = True,
    command: str = "",
    keep_going: bool = True,
    data: str = "generated",
) -> dict:
    """Run the experiments of a profile and write ``OUT/<profile>/{results.json, report.md, figures/}``.

    Args:
        profile: profile name (``quick``, ``paper``) or path to a profile TOML.
        experiments: ids to run (default: all).
        out: reports directory (``OUT/README.md`` gets the index).
        cache: artifact cache directory (default :func:`default_cache_dir`).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (default: the profile's).
        seed: seed of every draw (default: the profile's).
        executor: ``None``/``"inprocess"``, ``"dask"``, ``"dask:ADDRESS"`` (see :mod:`vaedft.bench.executor`).
        suite_dir: directory with ``profiles/``, ``experiments/``, ``reference/`` (default ``benchmark/``).
        progress: progress bars and stage messages.
        command: the command line, for the report.
        keep_going: an experiment that raises is recorded (``"error"`` in its entry, no metrics, so
            ``check`` reports them missing) and the run goes on; ``False`` re-raises at once.
        data: ``"generated"`` (our solver) or ``"zenodo"``: the testbeds with an authors' record train
            and test on its converted files (``vaedft.data.zenodo``); the report goes to
            ``OUT/<profile>_zenodo/`` and says which data each testbed used.

    Returns:
        The results dict written to ``results.json``.
    """
    from ..physics.backend import resolve_device
    from ..report.markdown import render_report, update_index
    from .executor import get_executor
    from .experiments import EXPERIMENTS

    suite_dir = Path(suite_dir) if suite_dir is not None else default_suite_dir()
    prof = load_profile(profile, suite_dir)
    exps: list[Experiment] = load_experiments(prof, suite_dir, experiments, functions=EXPERIMENTS)
    dev = str(resolve_device(device or prof.device))
    if dev == "cpu" and prof.gpu_recommended:
        warnings.warn(f"the {prof.name} profile is sized for a GPU; on this CPU it will take very long "
                      "(use --profile quick for the reduced suite)", stacklevel=2)
    run_seed = prof.seed if seed is None else seed
    store = ArtifactStore(cache if cache is not None else default_cache_dir())
    report_dir = Path(out) / report_name(prof.name, data)
    report_dir.mkdir(parents=True, exist_ok=True)
    results_path = report_dir / "results.json"
    env = environment(dev, prof.threads)
    entries = _load_previous(results_path, prof, data)
    results = {"schema": RESULTS_SCHEMA, "profile": prof.name, "profile_description": prof.description,
               "data_source": data,
               "seed": run_seed, "device": dev, **env, "command": command or f"vaedft-bench --profile {prof.name}",
               "last_run_experiments": [e.id for e in exps], "experiments": entries}
    t_start = time.perf_counter()
    plan = plan_builds(prof, exps, store, report_dir, device=dev, seed=run_seed, data=data)
    if progress:
        tqdm.write(f"vaedft-bench {prof.name}: {len(exps)} experiments, {len(plan)} artifacts to build "
                   f"(cache {store.root})")
    builds = progress_bar(total=len(plan), desc="builds", unit="artifact", position=0, disable=not progress or not plan)
    with get_executor(executor, threads=prof.threads) as ex:
        bar = progress_bar(exps, desc=f"vaedft-bench {prof.name}", unit="experiment", disable=not progress)
        for exp in bar:
            bar.set_postfix_str(f"{exp.id} {exp.title}")
            ctx = Context(prof, store, ex, report_dir, device=dev, seed=run_seed, progress=progress,
                          experiment=exp.id, builds_bar=builds, data=data)
            t0 = time.perf_counter()
            error = None
            try:
                output = EXPERIMENTS[exp.function](ctx, exp.params)
            except Exception as exc:  # noqa: BLE001 - one failed experiment must not cost the others
                if not keep_going or isinstance(exc, SuiteError):
                    raise
                error = f"{type(exc).__name__}: {exc}"
                output = Output(notes=[f"FAILED: {error}"])
                tqdm.write(f"[{exp.id}] FAILED: {error}")
            wall = time.perf_counter() - t0
            comparisons = [{**c, "kind": "claim"} for c in evaluate_claims(exp.claims, output.metrics)]
            comparisons += _paper_comparisons(suite_dir, exp.id, output.metrics)
            entries[exp.id] = {
                "title": exp.title, "figure": exp.figure, "claim": exp.claim, "function": exp.function,
                "params": exp.params,
                "config_hash": spec_hash({"experiment": exp.id, "function": exp.function, "params": exp.params,
                                          "profile": prof.to_dict(), "seed": run_seed, "device": ctx.device_kind}),
                "artifacts": dict(sorted(ctx.used.items())), "metrics": output.metrics, "tables": output.tables,
                "figures": output.figures, "comparisons": comparisons, "ca_verdict": output.ca_verdict,
                "notes": output.notes, "wall_time_s": wall, "run_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "git_commit": env["git_commit"], "device": dev, "error": error,
            }
            results["experiments"] = dict(sorted(entries.items(), key=lambda kv: int(kv[0][1:])))
            if prof.goals is not None:
                results["goals_file"] = _display_path(prof.goals)
                results["goals"] = goal_findings(prof.goals, results)
            results["total_time_s"] = time.perf_counter() - t_start
            results["created"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
            _write_json(results_path, results)
            (report_dir / "report.md").write_text(render_report(results, report_dir))
            if progress and error is None:
                c = [x["verdict"] for x in comparisons]
                tqdm.write(f"[{exp.id}] done in {wall:.0f} s: {c.count('PASS')} PASS, {c.count('FAIL')} FAIL")
        bar.close()
    builds.close()
    update_index(Path(out))
    return results
