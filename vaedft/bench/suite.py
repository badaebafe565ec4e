"""The benchmark suite as data: profiles and experiment definitions (TOML under ``benchmark/``).

* ``benchmark/profiles/<name>.toml`` -- a **profile** fixes the sizes shared by every experiment:
  training/test set sizes per testbed (``[data.<testbed>]``), network sizes (``[architecture.<testbed>]``,
  absent = the paper's Tables I/II), training settings (``[train]``, per-testbed ``[train.<testbed>]``, per
  kind ``[train.vae]`` and ``[train.functional]``, per VAE ``[[train.<testbed>.vae.cases]]`` with
  ``latent_dim`` and ``beta``),
  the minimizer (``[minimize]``, per-testbed ``[minimize.<testbed>]``; baselines in ``[baselines]``), the
  default seed and device, and ``threads``: the torch thread count of every training and minimization
  (recorded in their artifact specs and applied by every executor, so that an in-process run and a Dask
  cluster give the same float32 sums; unset: whatever the process has).  ``params_profile`` names the
  profile section read from each experiment file (default: the profile's own name; a test profile may
  borrow ``"quick"``).  ``goals`` names a reference TOML (relative to the suite directory, e.g.
  ``"reference/cpu.toml"``) whose bounds are the profile's goals: the report prints them with
  PASS/FAIL at the top, and ``vaedft-bench check`` applies the same file.
* ``benchmark/experiments/eNN_*.toml`` -- an **experiment**: ``id`` (``E1`` ...), ``title``, ``figure``
  (the paper's figure or section), ``function`` (a name in :data:`vaedft.bench.experiments.EXPERIMENTS`),
  ``claim`` (what the paper says), ``[params]`` (the paper's settings), ``[<profile>]`` (changes for that
  profile, merged over ``params``), and ``[[claims]]`` (checks of the claim on our numbers, see
  :mod:`vaedft.bench.claims`).
* ``benchmark/reference/<profile>.toml`` -- values and tolerances for ``vaedft-bench check``.

Everything is validated on load: unknown keys and wrong types raise :class:`SuiteError` naming the
file and the key.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SuiteError", "Profile", "Experiment", "default_suite_dir", "load_profile", "load_experiments",
           "TESTBED_NAMES"]

TESTBED_NAMES = ("gaussian1d", "speckle1d", "gaussian3d")
_PROFILE_KEYS = {"name", "description", "seed", "device", "threads", "gpu_recommended", "expected_minutes",
                 "params_profile", "goals", "data", "architecture", "train", "minimize", "baselines"}
_DATA_KEYS = {"n_train", "n_test", "test_set"}
_EXPERIMENT_KEYS = {"id", "title", "figure", "function", "claim", "params", "claims"}


class SuiteError(ValueError):
    """A profile or experiment file that cannot be used (the message names file and key)."""


def default_suite_dir() -> Path:
    """``$VAEDFT_BENCHMARK_DIR``, else ``./benchmark`` if present, else the source checkout's ``benchmark/``."""
    env = os.environ.get("VAEDFT_BENCHMARK_DIR")
    if env:
        return Path(env)
    here = Path("benchmark")
    if (here / "profiles").is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "benchmark"


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise SuiteError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML ({exc})") from None


def _need(cond: bool, path: Path, msg: str) -> None:
    if not cond:
        raise SuiteError(f"{path}: {msg}")


def _positive_int(value, path: Path, key: str) -> int:
    _need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, path,
          f"{key} must be a positive integer, got {value!r}")
    return int(value)


def merge(base: Mapping, override: Mapping) -> dict:
    """Recursive merge of two TOML tables (``override`` wins; sub-tables merge, lists replace)."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class Profile:
    """A validated profile (see the module docstring).

    Attributes:
        name, description, path: identity.
        seed: default seed of every draw (``--seed`` overrides).
        device: default device (``--device`` overrides).
        threads: torch threads of every training and minimization build (None: the process's own).
        gpu_recommended: warn when it runs on a CPU.
        params_profile: which ``[<profile>]`` section of the experiment files applies.
        data: ``{testbed: {"n_train", "n_test", "test_set"}}``.
        architecture: ``{testbed: {"vae": {...}, "functional": {...}}}`` changes to the paper's nets.
        train, minimize, baselines: settings tables (per-testbed sub-tables allowed).
        expected_minutes: the budget the profile is designed for (shown in the report).
        goals: path of the goals file (a reference TOML with bounds), or None.
    """

    name: str
    path: Path
    description: str = ""
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    gpu_recommended: bool = False
    params_profile: str = ""
    expected_minutes: float | None = None
    goals: Path | None = None
    data: dict = field(default_factory=dict)
    architecture: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    minimize: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)

    def data_for(self, testbed: str) -> dict:
        if testbed not in self.data:
            raise SuiteError(f"{self.path}: profile {self.name!r} has no [data.{testbed}] table")
        return dict(self.data[testbed])

    def settings(self, table: str, testbed: str) -> dict:
        """``[table]`` with its ``[table.<testbed>]`` sub-table merged in (other testbeds' sub-tables dropped)."""
        base = getattr(self, table)
        flat = {k: v for k, v in base.items() if k not in TESTBED_NAMES}
        return merge(flat, base.get(testbed, {}))

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "seed": self.seed, "device": self.device,
                "threads": self.threads, "params_profile": self.params_profile, "data": self.data,
                "architecture": self.architecture, "train": self.train, "minimize": self.minimize,
                "baselines": self.baselines}


def load_profile(name_or_path: str | Path, suite_dir: str | Path | None = None) -> Profile:
    """A profile by name (``benchmark/profiles/<name>.toml``) or by path to a TOML file."""
    suite_dir = Path(suite_dir) if suite_dir is not None else default_suite_dir()
    p = Path(name_or_path)
    path = p if p.suffix == ".toml" else suite_dir / "profiles" / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(q.stem for q in (suite_dir / "profiles").glob("*.toml"))
        raise SuiteError(f"no profile {name_or_path!r} ({path} not found); known profiles: {known}")
    raw = _read_toml(path)
    unknown = sorted(set(raw) - _PROFILE_KEYS)
    _need(not unknown, path, f"unknown keys {unknown}; allowed: {sorted(_PROFILE_KEYS)}")
    name = raw.get("name", path.stem)
    _need(isinstance(name, str) and name.isidentifier(), path, f"name must be a simple identifier, got {name!r}")
    seed = raw.get("seed", 0)
    _need(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, path, f"seed must be >= 0, got {seed!r}")
    threads = raw.get("threads")
    _need(threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1), path,
          f"threads must be a positive integer, got {threads!r}")
    data = raw.get("data", {})
    _need(isinstance(data, dict), path, "[data] must be a table")
    for tb, d in data.items():
        _need(tb in TESTBED_NAMES, path, f"[data.{tb}]: unknown testbed; known: {TESTBED_NAMES}")
        _need(isinstance(d, dict), path, f"[data.{tb}] must be a table")
        bad = sorted(set(d) - _DATA_KEYS)
        _need(not bad, path, f"[data.{tb}]: unknown keys {bad}; allowed: {sorted(_DATA_KEYS)}")
        _positive_int(d.get("n_train"), path, f"data.{tb}.n_train")
        if "test_set" in d:
            _need(d["test_set"] == "snyder2012" and tb == "gaussian1d", path,
                  f"data.{tb}.test_set: only gaussian1d has a fixed test set ('snyder2012')")
        else:
            _positive_int(d.get("n_test"), path, f"data.{tb}.n_test")
    for table in ("architecture", "train", "minimize", "baselines"):
        _need(isinstance(raw.get(table, {}), dict), path, f"[{table}] must be a table")
    expected = raw.get("expected_minutes")
    _need(expected is None or (isinstance(expected, (int, float)) and expected > 0), path,
          "expected_minutes must be a positive number")
    goals = raw.get("goals")
    _need(goals is None or (isinstance(goals, str) and goals.strip()), path,
          f"goals must be the path of a reference TOML relative to {suite_dir}, got {goals!r}")
    if goals is not None:
        goals = suite_dir / goals
        _need(goals.is_file(), path, f"goals: {goals} not found")
    return Profile(
        name=name, path=path, goals=goals, description=str(raw.get("description", "")), seed=seed,
        device=str(raw.get("device", "auto")), threads=threads, gpu_recommended=bool(raw.get("gpu_recommended", False)),
        params_profile=str(raw.get("params_profile", name)), expected_minutes=expected, data=data,
        architecture=raw.get("architecture", {}), train=raw.get("train", {}), minimize=raw.get("minimize", {}),
        baselines=raw.get("baselines", {}),
    )


@dataclass(frozen=True)
class Experiment:
    """One experiment with the params of the chosen profile merged in.

    Attributes:
        id: ``"E1"`` ...; ``number``: its integer (for ordering).
        title, figure, claim: text for the report (``figure``: the paper's figure or section).
        function: name of the experiment function.
        params: the merged parameters.
        claims: list of claim checks (tables).
        path: the TOML file.
    """

    id: str
    title: str
    figure: str
    function: str
    claim: str
    params: dict
    claims: list
    path: Path

    @property
    def number(self) -> int:
        return int(self.id[1:])


def _load_experiment(path: Path, profile: Profile) -> Experiment:
    raw = _read_toml(path)
    sections = {k for k, v in raw.items() if isinstance(v, dict) and k not in ("params",)}
    unknown = sorted(set(raw) - _EXPERIMENT_KEYS - sections)
    _need(not unknown, path, f"unknown keys {unknown}; allowed: {sorted(_EXPERIMENT_KEYS)} and profile sections")
    for key in ("id", "title", "function", "claim"):
        _need(isinstance(raw.get(key), str) and raw[key].strip(), path, f"{key} must be a non-empty string")
    eid = raw["id"]
    _need(eid[:1] == "E" and eid[1:].isdigit(), path, f"id must look like E1, E2, ..., got {eid!r}")
    params = raw.get("params", {})
    _need(isinstance(params, dict), path, "[params] must be a table")
    override = raw.get(profile.params_profile, {})
    unknown_params = sorted(set(override) - set(params))
    _need(not unknown_params, path,
          f"[{profile.params_profile}] sets {unknown_params}, which [params] does not define")
    claims = raw.get("claims", [])
    _need(isinstance(claims, list) and all(isinstance(c, dict) for c in claims), path,
          "claims must be an array of tables ([[claims]])")
    return Experiment(id=eid, title=raw["title"], figure=str(raw.get("figure", "")), function=raw["function"],
                      claim=raw["claim"].strip(), params=merge(params, override), claims=claims, path=path)


def load_experiments(profile: Profile, suite_dir: str | Path | None = None,
                     ids: Sequence[str] | None = None, functions: Collection[str] | None = None) -> list[Experiment]:
    """Every experiment of ``suite_dir/experiments`` (or those in ``ids``), ordered by number.

    ``functions``: the experiment functions that exist (the keys of
    :data:`vaedft.bench.experiments.EXPERIMENTS`, passed in by the runner, so that this module
    of plain data does not import the experiments' code); a file naming another is refused.
    """
    suite_dir = Path(suite_dir) if suite_dir is not None else default_suite_dir()
    files = sorted((suite_dir / "experiments").glob("*.toml"))
    if not files:
        raise SuiteError(f"no experiment files in {suite_dir / 'experiments'}")
    exps = [_load_experiment(p, profile) for p in files]
    seen: dict[str, Path] = {}
    for e in exps:
        if e.id in seen:
            raise SuiteError(f"experiment {e.id} defined twice: {seen[e.id]} and {e.path}")
        seen[e.id] = e.path
        if functions is not None and e.function not in functions:
            raise SuiteError(f"{e.path}: function {e.function!r} is not one of {sorted(functions)}")
    exps.sort(key=lambda e: e.number)
    if ids is not None:
        wanted = [i.strip().upper() for i in ids if i.strip()]
        missing = sorted(set(wanted) - set(seen))
        if missing:
            raise SuiteError(f"unknown experiments {missing}; known: {[e.id for e in exps]}")
        exps = [e for e in exps if e.id in wanted]
    return exps
