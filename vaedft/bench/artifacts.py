"""The artifact cache of the benchmark: datasets, trained runs and minimization results.

An :class:`Artifact` is a kind plus a JSON *spec* that fully determines what is built: a
dataset spec names the testbed (and any changed generator parameter), the number of
instances and the seed; a model spec holds its dataset spec, the architecture and the
training settings; a minimization spec holds the specs of the models and of the test set and
the :class:`~vaedft.minimize.MinimizeConfig`.  The cache key is the sha256 of the canonical
JSON of ``(kind, spec, ARTIFACT_VERSION)``, so anything that changes the artifact changes
its key, and an artifact shared by several experiments (the same VAE in E1, E3 and E4) is
built once.

Layout: ``CACHE/<kind>/<key>/`` holds ``spec.json`` (written first), the artifact itself
(``data.h5``, ``run/``, ``result.h5``) and ``done.json`` (written last, atomically, with the
build time and the device).  Only a directory with ``done.json`` counts as built.  Every
builder is resumable: dataset generation continues from its part files and training from
``last.pt``; a minimization is written atomically.  So an interrupted benchmark, rerun with
the same command, continues where it stopped.

The cache heals: ``done.json`` records the size and sha256 of every file of the artifact, and
:meth:`ArtifactStore.is_built` verifies them before the artifact is used -- the size always,
the hash of files up to :data:`HASH_LIMIT` bytes, and an open check of larger HDF5 files.  A
damaged artifact (truncated, deleted or altered file) is removed with a
:class:`DamagedArtifactWarning` that names it, and the run rebuilds it from its spec (every
builder is deterministic, so it ends at the same numbers).

Builders are top-level functions of ``(artifact, root, device, progress)``, picklable, so an
executor (:mod:`vaedft.bench.executor`) may run them on a Dask worker that shares the cache
directory.  A spec's ``threads`` (set by the profile) is the torch thread count the build runs
with, wherever it runs: float32 training sums depend on it, so a worker and the main process
give bit-identical artifacts only with the same count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__

__all__ = ["ARTIFACT_VERSION", "Artifact", "ArtifactStore", "DamagedArtifactWarning", "canonical_json", "spec_hash",
           "build_artifact", "file_manifest", "stage_seconds"]

#: Bumped when a builder changes what it produces for the same spec (invalidates the cache).
ARTIFACT_VERSION = {"dataset": 1, "vae": 1, "functional": 1, "minimization": 1}
KINDS = tuple(ARTIFACT_VERSION)
_FILES = {"dataset": "data.h5", "vae": "run", "functional": "run", "minimization": "result.h5"}
#: Files up to this size are hashed each time an artifact is verified; larger ones get their size and
#: (HDF5) an open check, their hash only when built.
HASH_LIMIT = 64 * 2**20


class DamagedArtifactWarning(UserWarning):
    """A cached artifact failed verification and is rebuilt."""


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal specs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_hash(obj: Any, length: int = 16) -> str:
    """Hex sha256 (first ``length`` characters) of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Artifact:
    """One cached product: ``kind`` in :data:`KINDS` and its spec (canonical JSON text).

    Build with :meth:`make` from a dict; ``spec`` (property ``data``) is immutable so that
    artifacts hash and compare by content.
    """

    kind: str
    spec: str
    label: str = field(default="", compare=False)

    @classmethod
    def make(cls, kind: str, spec: Mapping[str, Any], label: str = "") -> Artifact:
        if kind not in KINDS:
            raise ValueError(f"artifact kind must be one of {KINDS}, got {kind!r}")
        return cls(kind, canonical_json(dict(spec)), label or default_label(kind, spec))

    @property
    def data(self) -> dict[str, Any]:
        """The spec as a dict (a fresh copy)."""
        return json.loads(self.spec)

    @property
    def key(self) -> str:
        """Cache key: hash of kind, spec and the builder version."""
        return spec_hash({"kind": self.kind, "spec": self.data, "version": ARTIFACT_VERSION[self.kind]})

    def dependencies(self) -> list[Artifact]:
        """The artifacts this one is built from (datasets of a model; models and sets of a minimization)."""
        d = self.data
        if self.kind in ("vae", "functional"):
            return [Artifact.make("dataset", d["dataset"])]
        if self.kind == "minimization":
            deps = [Artifact.make("functional", d["functional"]), Artifact.make("dataset", d["test"])]
            if d.get("vae") is not None:
                deps.append(Artifact.make("vae", d["vae"]))
            return deps
        return []


def default_label(kind: str, spec: Mapping[str, Any]) -> str:
    """A readable name of an artifact from its spec (for progress messages and reports)."""
    if kind == "dataset":
        if spec.get("zenodo"):
            return f"{spec['testbed']} data from Zenodo ({spec['file']}, first {spec['n']} instances)"
        extra = f", {dict(spec['overrides'])}" if spec.get("overrides") else ""
        if spec.get("test_set"):
            return f"{spec['testbed']} test set ({spec['test_set']})"
        return f"{spec['testbed']} data ({spec['n']} instances, seed {spec['seed']}{extra})"
    if kind in ("vae", "functional"):
        model, tb = spec["model"], spec["dataset"]["testbed"]
        if kind == "vae":
            return f"VAE {tb} l_d={model['latent_dim']} beta={spec['train']['beta']:.0e}"
        return f"functional {tb}"
    cfg, vae = spec["config"], spec.get("vae")
    what = f" l_d={vae['model']['latent_dim']} beta={vae['train']['beta']:.0e}" if vae else ""
    return f"{cfg['method']}{what} ({cfg['steps']} steps) on {default_label('dataset', spec['test'])}"


def file_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of a file, or of every file under a directory.

    Keys are relative to ``path``'s parent (``"data.h5"``, ``"run/best.pt"``), in sorted order.
    """
    from ..runs import file_sha256  # imports torch: not at module import

    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path.parent).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in files}


def _open_check(path: Path) -> str | None:
    """Why an HDF5 file cannot be opened (None if it can); other files are not opened."""
    if path.suffix != ".h5":
        return None
    import h5py

    try:
        with h5py.File(path, "r") as f:
            f.visit(lambda name: None)
    except (OSError, ValueError) as exc:
        return f"{path.name} does not open as HDF5 ({exc})"
    return None


def verify_files(directory: Path, manifest: Mapping[str, Mapping[str, Any]], main: Path) -> str | None:
    """Why the artifact files under ``directory`` do not match ``manifest`` (None when they do).

    Every file: present, same size; files up to :data:`HASH_LIMIT` bytes: same sha256; larger HDF5
    files: open.  An empty manifest (a cache written before manifests existed) checks that the main
    path exists and that its HDF5 files open.
    """
    from ..runs import file_sha256
    if not manifest:
        if not main.exists():
            return f"{main.name} is missing"
        for p in [main] if main.is_file() else sorted(main.rglob("*.h5")):
            if (why := _open_check(p)) is not None:
                return why
        return None
    for rel, meta in manifest.items():
        p = directory / rel
        if not p.is_file():
            return f"{rel} is missing"
        size = p.stat().st_size
        if size != meta["size"]:
            return f"{rel} has {size} bytes, {meta['size']} when built"
        if size <= HASH_LIMIT:
            if file_sha256(p) != meta["sha256"]:
                return f"{rel} changed since it was built (sha256 differs)"
        elif (why := _open_check(p)) is not None:
            return why
    return None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ArtifactStore:
    """The cache directory: where each artifact lives and whether it is built.

    Args:
        root: cache directory (created).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._verified: dict[str, float] = {}  # key -> mtime of done.json when it last verified

    def directory(self, artifact: Artifact) -> Path:
        return self.root / artifact.kind / artifact.key

    def path(self, artifact: Artifact) -> Path:
        """The artifact's main file or directory (``data.h5``, ``run/``, ``result.h5``)."""
        return self.directory(artifact) / _FILES[artifact.kind]

    def is_built(self, artifact: Artifact) -> bool:
        """Whether ``artifact`` is built and intact.

        A damaged one (see :func:`verify_files`) is removed, with a :class:`DamagedArtifactWarning`
        that names it, and counts as not built, so that the run rebuilds it.  Each artifact is
        verified once per store object (again only if its ``done.json`` changes).
        """
        done = self.directory(artifact) / "done.json"
        try:
            mtime = done.stat().st_mtime
        except FileNotFoundError:
            return False
        if self._verified.get(artifact.key) == mtime:
            return True
        try:
            manifest = json.loads(done.read_text()).get("files", {})
        except (OSError, ValueError, AttributeError):
            why = "its done.json is unreadable"
        else:
            why = verify_files(self.directory(artifact), manifest, self.path(artifact))
        if why is None:
            self._verified[artifact.key] = mtime
            return True
        warnings.warn(f"cache: {artifact.kind} {artifact.key} ({artifact.label}) is damaged: {why}; rebuilding it",
                      DamagedArtifactWarning, stacklevel=2)
        self.discard(artifact)
        return False

    def discard(self, artifact: Artifact) -> None:
        """Remove an artifact's directory (its ``done.json`` first, so a half-removed one never counts as built)."""
        directory = self.directory(artifact)
        (directory / "done.json").unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        self._verified.pop(artifact.key, None)

    def record(self, artifact: Artifact) -> dict:
        """``done.json`` of a built artifact (build time, device, version)."""
        path = self.directory(artifact) / "done.json"
        if not path.is_file():
            raise FileNotFoundError(f"{artifact.kind} {artifact.key} ({artifact.label}) is not built")
        return json.loads(path.read_text())

    def closure(self, artifacts: Iterable[Artifact]) -> list[list[Artifact]]:
        """Every artifact needed, dependencies included, grouped in build layers (datasets first)."""
        depth: dict[Artifact, int] = {}

        def visit(a: Artifact) -> int:
            if a not in depth:
                depth[a] = 1 + max((visit(d) for d in a.dependencies()), default=-1)
            return depth[a]

        for a in artifacts:
            visit(a)
        layers: list[list[Artifact]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for a, k in depth.items():
            layers[k].append(a)
        return layers

    def missing(self, artifacts: Iterable[Artifact]) -> list[list[Artifact]]:
        """:meth:`closure` without the artifacts already built (empty layers dropped)."""
        layers = [[a for a in layer if not self.is_built(a)] for layer in self.closure(artifacts)]
        return [layer for layer in layers if layer]


# ----------------------------------------------------------------------------- builders


def testbed_of(spec: Mapping[str, Any]):
    """The :class:`~vaedft.physics.testbeds.Testbed` of a dataset spec (name plus changed fields)."""
    from ..physics.testbeds import get_testbed

    testbed = get_testbed(spec["testbed"])
    overrides = dict(spec.get("overrides") or {})
    return testbed.replace(**overrides) if overrides else testbed


def _build_dataset(spec: dict, out: Path, device: str, progress: bool) -> dict:
    from ..data.generate import generate_dataset

    if spec.get("zenodo"):
        return _convert_record(spec, out, progress)
    testbed = testbed_of(spec)
    test_set = spec.get("test_set")
    if test_set:
        generate_dataset(testbed, out, test_set=test_set, backend=device, progress=progress)
    else:
        generate_dataset(testbed, out, n=int(spec["n"]), seed=int(spec["seed"]), backend=device, progress=progress)
    return {}


def _convert_record(spec: dict, out: Path, progress: bool) -> dict:
    """Fetch a record's file (checked against the spec's pinned hash) and convert its first ``n`` instances."""
    from ..data.convert import convert_npz
    from ..data.store import read_attrs
    from ..data.zenodo import FetchError, Record, fetch

    record = Record(spec["testbed"], spec["zenodo"], files={spec["file"]: spec["hash"]})
    try:
        (path,) = fetch(spec["testbed"], files=[spec["file"]], registry={spec["testbed"]: record},
                        progress=progress).values()
    except FetchError as exc:
        raise RuntimeError(str(exc)) from None
    convert_npz(path, spec["testbed"], out, overwrite=True, limit=int(spec["n"]),
                record={"source_doi": spec["zenodo"]})
    attrs = read_attrs(out)
    return {"source_file": spec["file"], "instances": int(attrs["n_instances"]),
            "source_instances": int(attrs["source_instances"]), "energy_unit": attrs["energy_unit"],
            "length_scale": float(attrs["length_scale"])}


def stage_seconds(record: Mapping) -> float:
    """Seconds of an artifact's own work, from its ``done.json`` record.

    The training's or the minimization's wall time when the build recorded one (it leaves out
    loading, checks and writing), else the whole build time (datasets).
    """
    for key in ("train_wall_time_s", "minimize_wall_time_s"):
        if key in record:
            return float(record[key])
    return float(record["build_time_s"])


def _build_model(kind: str, spec: dict, store: ArtifactStore, out: Path, device: str, progress: bool) -> dict:
    from ..models import config_from_dict
    from ..train import TrainConfig, train

    data = store.path(Artifact.make("dataset", spec["dataset"]))
    state = train(kind, data, out, model_config=config_from_dict(spec["model"]),
                  config=TrainConfig.from_dict(spec["train"]), device=device, progress=progress)
    if not state.get("finished"):
        raise RuntimeError(f"training in {out} stopped before finishing: {state}")
    return {"epochs": state["epoch"], "best_epoch": state["best_epoch"], "train_wall_time_s": state["wall_time_s"]}


def _build_minimization(spec: dict, store: ArtifactStore, out: Path, device: str, progress: bool) -> dict:
    from ..minimize import MinimizeConfig
    from ..pipeline import minimize_files

    f_art = Artifact.make("functional", spec["functional"])
    v_art = Artifact.make("vae", spec["vae"]) if spec.get("vae") is not None else None
    train_spec = (spec["vae"] if v_art is not None else spec["functional"])["dataset"]
    res = minimize_files(
        functional_dir=store.path(f_art), vae_dir=None if v_art is None else store.path(v_art),
        test_data=store.path(Artifact.make("dataset", spec["test"])),
        train_data=store.path(Artifact.make("dataset", train_spec)),
        out=out, config=MinimizeConfig.from_dict(spec["config"]), device=device, dtype=spec.get("dtype", "float64"),
        overwrite=True, progress=progress,
    )
    return {"minimize_wall_time_s": float(res["result"].wall_time_s)}


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run the block with ``n`` torch threads (None: unchanged), restoring the count after."""
    if n is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_artifact(artifact: Artifact, root: str | Path, device: str = "cpu", progress: bool = False) -> str:
    """Build one artifact into the cache at ``root`` (its dependencies must be built) and mark it done.

    Returns the artifact's main path (as a string, so the result pickles cheaply). Safe to call
    again after an interruption: it resumes.
    """
    store = ArtifactStore(root)
    if store.is_built(artifact):
        return str(store.path(artifact))
    for dep in artifact.dependencies():
        if not store.is_built(dep):
            raise RuntimeError(f"{artifact.label}: dependency {dep.kind} {dep.key} ({dep.label}) is not built")
    directory = store.directory(artifact)
    directory.mkdir(parents=True, exist_ok=True)
    spec_file = directory / "spec.json"
    if not spec_file.exists():
        _atomic_write(spec_file, json.dumps({"kind": artifact.kind, "spec": artifact.data}, indent=1))
    out = store.path(artifact)
    spec = artifact.data
    t0 = time.perf_counter()
    with _torch_threads(spec.get("threads")):
        if artifact.kind == "dataset":
            extra = _build_dataset(spec, out, device, progress)
        elif artifact.kind in ("vae", "functional"):
            extra = _build_model(artifact.kind, spec, store, out, device, progress)
        else:
            extra = _build_minimization(spec, store, out, device, progress)
    record = {"kind": artifact.kind, "label": artifact.label, "key": artifact.key, "device": device,
              "build_time_s": time.perf_counter() - t0, "vaedft_version": __version__,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra, "files": file_manifest(out)}
    _atomic_write(directory / "done.json", json.dumps(record, indent=1))
    return str(out)


def pending_labels(layers: Sequence[Sequence[Artifact]]) -> list[str]:
    """Human-readable list of what is left to build."""
    return [f"{a.kind}: {a.label}" for layer in layers for a in layer]
