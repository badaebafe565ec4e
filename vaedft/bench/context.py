"""What an experiment function gets: the profile's specs of every artifact, and a way to build them.

:class:`Context` turns the profile (sizes, architectures, settings) into artifact specs --
``ctx.vae("gaussian1d", latent_dim=8, beta=1e-5)`` is the VAE every experiment asking for that
case shares -- and :meth:`Context.ensure` builds what is missing through the executor, layer by
layer (datasets, then models, then minimizations), with progress.  :class:`Output` is what an
experiment function returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .artifacts import Artifact, ArtifactStore, build_artifact, default_label, spec_hash
from .suite import Profile, SuiteError, merge

__all__ = ["Context", "Output", "PlanComplete", "metric_name", "beta_tag", "DATA_SOURCES"]

#: Where datasets come from: made by our solver, or converted from the authors' Zenodo records
#: (testbeds with a record; the others are generated).
DATA_SOURCES = ("generated", "zenodo")


def zenodo_records() -> tuple[str, ...]:
    """The testbeds whose data a Zenodo record provides."""
    from ..data.zenodo import RECORDS

    return tuple(RECORDS)


def beta_tag(beta: float) -> str:
    """``1e-05``, ``1e+00``: the beta segment of metric names."""
    return f"{float(beta):.0e}"


def metric_name(testbed: str, latent_dim: int | None, beta: float | None, quantity: str, *extra: str) -> str:
    """``"gaussian1d/ld8/beta1e-05/<extra...>/quantity"`` (parts that are None left out)."""
    parts = [testbed]
    if latent_dim is not None:
        parts.append(f"ld{int(latent_dim)}")
    if beta is not None:
        parts.append(f"beta{beta_tag(beta)}")
    return "/".join([*parts, *extra, quantity])


@dataclass
class Output:
    """What an experiment function returns (everything JSON-ready).

    Attributes:
        metrics: flat ``{name: float}``; names as :func:`metric_name` makes them.
        tables: ``[{"title", "headers", "rows"}]`` (rendered with tabulate).
        figures: ``[{"file", "caption"}]``, files relative to the report directory.
        ca_verdict: the chemical-accuracy sentence, if the experiment measures energies.
        notes: extra sentences for the report.
        artifacts: ``{label: cache key}`` of everything used.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    tables: list[dict] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    ca_verdict: str | None = None
    notes: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)

    def table(self, title: str, headers: list[str], rows: list[list[Any]]) -> None:
        self.tables.append({"title": title, "headers": list(headers), "rows": [list(r) for r in rows]})


class Context:
    """The profile, the cache and the executor, as seen by one experiment.

    Args:
        profile: the :class:`~vaedft.bench.suite.Profile`.
        store: the :class:`~vaedft.bench.artifacts.ArtifactStore`.
        executor: runs builds (:mod:`vaedft.bench.executor`).
        report_dir: ``OUT/<profile>``; figures go to ``report_dir/figures``.
        device: resolved device string (``cpu``, ``cuda``, ``cuda:1``).
        seed: the run's seed.
        progress: show progress bars.
        experiment: id of the experiment being run (labels and figure names).
        plan: planning mode: the first :meth:`ensure` adds what it would build to this set and raises
            :class:`PlanComplete` (the runner counts the builds of a run this way, for its ETA).
        builds_bar: a tqdm bar over every build of the run, advanced after each build.
    """

    def __init__(self, profile: Profile, store: ArtifactStore, executor, report_dir: Path, *, device: str,
                 seed: int, progress: bool = True, experiment: str = "", plan: set | None = None,
                 builds_bar=None, data: str = "generated") -> None:
        self.profile = profile
        self.store = store
        self.executor = executor
        self.report_dir = Path(report_dir)
        self.device = device
        self.seed = seed
        self.progress = progress
        self.experiment = experiment
        self.used: dict[str, str] = {}
        self.plan = plan
        self.builds_bar = builds_bar
        if data not in DATA_SOURCES:
            raise SuiteError(f"data must be one of {DATA_SOURCES}, got {data!r}")
        self.data = data

    # ------------------------------------------------------------------ paths
    @property
    def figure_dir(self) -> Path:
        d = self.report_dir / "figures"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def figure_path(self, name: str) -> Path:
        """``figures/<experiment>_<name>.png`` under the report directory."""
        return self.figure_dir / f"{self.experiment}_{name}.png"

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.report_dir).as_posix()

    # ------------------------------------------------------------------ specs
    @property
    def device_kind(self) -> str:
        """``cpu`` or ``cuda``: part of model and minimization specs (results differ across them)."""
        return "cuda" if self.device.startswith("cuda") else "cpu"

    def dataset(self, testbed: str, role: str = "train", overrides: Mapping[str, Any] | None = None) -> Artifact:
        """The training set (``role="train"``) or test set (``"test"``) of a testbed.

        ``overrides`` changes generator parameters (e.g. ``{"V0": 0.5}``) of a test set.  With
        ``data="zenodo"`` a testbed with a record gets the first ``n_train`` (``n_test``) instances of
        the record's training (test) file instead (overridden test sets are still generated).
        """
        d = self.profile.data_for(testbed)
        overrides = {k: overrides[k] for k in sorted(overrides or {})}
        if role not in ("train", "test"):
            raise ValueError(f"role must be 'train' or 'test', got {role!r}")
        if self.data == "zenodo" and not overrides and testbed in zenodo_records():
            return Artifact.make("dataset", self._zenodo_spec(testbed, role, d))
        if role == "train":
            if overrides:
                raise ValueError("training sets follow the profile; overrides apply to test sets")
            spec = {"testbed": testbed, "n": d["n_train"], "seed": self.seed}
        elif d.get("test_set") and not overrides:
            spec = {"testbed": testbed, "test_set": d["test_set"]}
        else:
            n = d.get("n_test", 100)
            # an independent stream: the test seed is a hash of the training seed
            test_seed = int(spec_hash(["test-set", self.seed]), 16) % (2**31)
            spec = {"testbed": testbed, "n": n, "seed": test_seed, "overrides": overrides}
        return Artifact.make("dataset", spec)

    @staticmethod
    def _zenodo_spec(testbed: str, role: str, sizes: Mapping[str, Any]) -> dict:
        """A dataset converted from the authors' record: keyed on the pinned checksum of its file."""
        from ..data.zenodo import default_registry_path, load_registry

        record = load_registry()[testbed]
        name = getattr(record, role)
        if not name:
            raise SuiteError(f"--data zenodo: the registry {default_registry_path()} names no {role} file for "
                             f"{testbed} (a maintainer pins it once the record is reachable); use --data generated")
        n = sizes.get("n_train") if role == "train" else sizes.get("n_test", 100)
        return {"testbed": testbed, "zenodo": record.doi, "file": name, "hash": record.files[name], "n": n}

    def _architecture(self, testbed: str, kind: str) -> dict:
        return dict(self.profile.architecture.get(testbed, {}).get(kind, {}))

    @property
    def _threads(self) -> dict:
        """``{"threads": n}`` for a spec when the profile fixes the thread count (else empty: keys unchanged)."""
        return {} if self.profile.threads is None else {"threads": self.profile.threads}

    def _train_config(self, testbed: str, kind: str, beta: float | None, latent_dim: int | None = None) -> dict:
        """Settings: ``[train]`` < ``[train.<testbed>]`` < ``[train.<kind>]`` + ``[train.<testbed>.<kind>]``
        < the VAE's case.

        A VAE's case: ``[[train.<testbed>.vae.cases]]`` tables hold ``latent_dim`` and ``beta`` and the
        settings of the VAE at exactly that ``(l_d, beta)`` (e.g. a longer training for the one case a
        goal is about); every other VAE of the testbed keeps the settings above.
        """
        from ..train import TrainConfig

        settings = self.profile.settings("train", testbed)
        by_kind = {k: settings.pop(k, {}) for k in ("vae", "functional")}
        settings = merge(settings, by_kind[kind])
        if kind == "vae":
            settings = merge(settings, self._vae_case(testbed, settings.pop("cases", []), latent_dim, beta))
        settings.setdefault("seed", self.seed)
        if beta is not None:
            settings["beta"] = float(beta)
        try:
            return TrainConfig.from_dict(settings).to_dict()
        except (TypeError, ValueError) as exc:
            raise SuiteError(f"{self.profile.path}: [train] for {testbed}: {exc}") from None

    def _vae_case(self, testbed: str, cases: Any, latent_dim: int | None, beta: float | None) -> dict:
        """The settings of the ``[[train.<testbed>.vae.cases]]`` entry matching ``(latent_dim, beta)`` ({} if none)."""
        where = f"{self.profile.path}: [[train.{testbed}.vae.cases]]"
        if not isinstance(cases, list) or not all(isinstance(c, Mapping) for c in cases):
            raise SuiteError(f"{where} must be an array of tables, got {cases!r}")
        found = []
        for case in cases:
            ld, b = case.get("latent_dim"), case.get("beta")
            if isinstance(ld, bool) or not isinstance(ld, int) or ld < 1:
                raise SuiteError(f"{where}: latent_dim must be a positive integer, got {ld!r}")
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not b >= 0:
                raise SuiteError(f"{where}: beta must be a number >= 0, got {b!r}")
            if latent_dim is not None and beta is not None and ld == int(latent_dim) and beta_tag(b) == beta_tag(beta):
                found.append({k: v for k, v in case.items() if k not in ("latent_dim", "beta")})
        if len(found) > 1:
            raise SuiteError(f"{where}: {len(found)} entries for l_d = {latent_dim}, beta = {beta:g}; give one")
        return found[0] if found else {}

    def _model(self, kind: str, testbed: str, latent_dim: int | None, beta: float | None) -> Artifact:
        """A network of ``kind`` with the profile's architecture changes and training settings."""
        from ..models import from_testbed, functional_from_testbed
        from ..physics.testbeds import get_testbed

        tb = get_testbed(testbed)
        cfg = from_testbed(tb, int(latent_dim)) if kind == "vae" else functional_from_testbed(tb)
        arch = self._architecture(testbed, kind)
        try:
            cfg = cfg.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()})
        except (TypeError, ValueError) as exc:
            raise SuiteError(f"{self.profile.path}: [architecture.{testbed}] {kind}: {exc}") from None
        spec = {"dataset": self.dataset(testbed).data, "model": cfg.to_dict(),
                "train": self._train_config(testbed, kind, beta, latent_dim), "device": self.device_kind,
                **self._threads}
        return Artifact.make(kind, spec)

    def vae(self, testbed: str, latent_dim: int, beta: float) -> Artifact:
        """The beta-VAE of a testbed at ``(l_d, beta)`` with the profile's sizes."""
        return self._model("vae", testbed, latent_dim, beta)

    def functional(self, testbed: str) -> Artifact:
        """The DL functional of a testbed with the profile's sizes."""
        return self._model("functional", testbed, None, None)

    def minimize_settings(self, testbed: str, method: str | None = None, beta: float | None = None) -> dict:
        """The profile's ``[minimize]`` (latent methods) or ``[baselines]`` (density methods) for a testbed.

        ``lr_by_beta`` (a table ``"1e-05" = eta``) picks the step size of a beta, as the paper does;
        ``latent_box`` applies to the latent methods only.
        """
        settings = self.profile.settings("minimize", testbed)
        if method is not None and not method.startswith("latent"):
            settings.pop("latent_box", None)
            settings = merge(settings, self.profile.settings("baselines", testbed).get(method, {}))
            settings.pop("lr_by_beta", None)
            settings["method"] = method
        lr_by_beta = settings.pop("lr_by_beta", {})
        if beta is not None and beta_tag(beta) in {beta_tag(float(k)) for k in lr_by_beta}:
            settings["lr"] = float({beta_tag(float(k)): v for k, v in lr_by_beta.items()}[beta_tag(beta)])
        return settings

    def minimization(self, testbed: str, *, latent_dim: int | None = None, beta: float | None = None,
                     method: str | None = None, test: Artifact | None = None, vae: Artifact | None = None,
                     **changes) -> Artifact:
        """Minimise the test set of ``testbed`` (or ``test``) with the profile's minimizer.

        Latent methods use ``vae`` or the VAE at ``(latent_dim, beta)``; density methods
        (``density-gd``, ``pca-gd``) use the functional alone. ``changes`` override MinimizeConfig fields.
        """
        from ..minimize import MinimizeConfig

        settings = self.minimize_settings(testbed, method, beta)
        dtype = settings.pop("dtype", "float64")
        settings.setdefault("seed", self.seed)
        settings.update(changes)
        try:
            cfg = MinimizeConfig.from_dict(settings)
        except (TypeError, ValueError) as exc:
            raise SuiteError(f"{self.profile.path}: [minimize] for {testbed}: {exc}") from None
        bad = sorted(k for k, v in cfg.to_dict().items() if isinstance(v, float) and not math.isfinite(v))
        if bad:  # artifact specs are canonical JSON, which has no inf
            raise SuiteError(f"{self.profile.path}: [minimize] for {testbed}: {bad} must be finite in a profile "
                             "(for 'no gradient test' give a large number such as 1e30)")
        if cfg.is_latent and vae is None:
            if latent_dim is None or beta is None:
                raise ValueError(f"{cfg.method} needs a VAE: give latent_dim and beta, or vae")
            vae = self.vae(testbed, latent_dim, beta)
        test = test if test is not None else self.dataset(testbed, "test")
        spec = {"functional": self.functional(testbed).data, "vae": vae.data if cfg.is_latent else None,
                "test": test.data, "config": cfg.to_dict(), "dtype": dtype, "device": self.device_kind,
                **self._threads}
        return Artifact.make("minimization", spec)

    # ------------------------------------------------------------------ building
    def ensure(self, artifacts: Iterable[Artifact]) -> list[Path]:
        """Build whatever of ``artifacts`` (and their dependencies) is missing; return their paths.

        Independent builds of one layer go to the executor together (a Dask cluster runs them in
        parallel); each build is announced and advances the run's bar of builds (with its ETA).
        """
        artifacts = list(artifacts)
        layers = self.store.missing(artifacts)
        if self.plan is not None:
            self.plan.update(a for layer in layers for a in layer)
            raise PlanComplete
        for layer in layers:
            items = [(a, str(self.store.root), self.device, self.progress) for a in layer]
            # in-process builds go one at a time, so that the bar (and its ETA) moves after each
            batches = [[i] for i in range(len(layer))] if self.executor.name == "inprocess" else [range(len(layer))]
            for batch in batches:
                if self.progress:
                    for i in batch:
                        tqdm.write(f"[{self.experiment}] building {layer[i].kind}: {layer[i].label}")
                self.executor.map(_build_item, [items[i] for i in batch], labels=[layer[i].label for i in batch],
                                  progress=False)
                if self.builds_bar is not None:
                    self.builds_bar.update(len(batch))
        for a in artifacts:
            for layer in self.store.closure([a]):
                for dep in layer:
                    self.used[default_label(dep.kind, dep.data)] = dep.key
        return [self.store.path(a) for a in artifacts]

    def path(self, artifact: Artifact) -> Path:
        """Path of an artifact, building it first if needed."""
        return self.ensure([artifact])[0]


class PlanComplete(Exception):
    """Raised by :meth:`Context.ensure` in planning mode, after recording what it would build."""


def _build_item(item) -> str:
    artifact, root, device, progress = item
    return build_artifact(artifact, root, device, progress)
