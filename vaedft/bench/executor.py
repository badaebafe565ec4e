"""Where the independent runs of a sweep execute: in this process, or on a Dask cluster.

A benchmark experiment often consists of independent jobs (one VAE per beta of a sweep, one
functional per training-set size, ...).  The harness hands them to an :class:`Executor`::

    with get_executor(spec) as ex:                       # spec: None, "inprocess", "dask", "dask:ADDRESS"
        results = ex.map(train_one, configs, labels=[f"beta={c.beta:g}" for c in configs])

``map`` returns the results in input order whatever order the jobs finish in.  ``fn`` must be a
picklable top-level function of one item (a Dask worker in another process imports it by name).

Executors
---------
* :class:`InProcessExecutor` (the default): sequential, in this process; a tqdm bar shows the job
  being run.
* :class:`DaskExecutor`: every job is submitted to a Dask cluster, either a ``distributed.LocalCluster``
  started (and closed) by the executor, or an existing cluster reached by its scheduler address
  (``tcp://host:8786``) or its scheduler file (``/path/scheduler.json``).  Dask is an optional
  dependency: ``pip install 'vaedft[dist]'``.  This module imports without it.

Failures
--------
An exception in a job is re-raised as :class:`JobError`, whose message names the job's label and
whose ``__cause__`` is the original exception.  On Dask, the first failure cancels the jobs still
pending or running.

Determinism
-----------
Results must not depend on the executor: each job seeds itself from its own configuration (never
from global state, the order of execution or the worker it lands on), so a sweep gives the same
numbers in-process and on any cluster.  Executors only decide *where* a job runs.

Shared filesystem
-----------------
Jobs write their artifacts (datasets, training runs, results) to the harness's cache directory and
return small summaries.  On a local cluster every worker sees the same disk; on a remote cluster the
cache directory (and the output directory) must be on a filesystem that every worker mounts at the
same path (NFS, Lustre, ...), and the workers need the same vaedft version installed.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..progress import progress_bar

__all__ = [
    "DIST_INSTALL_HINT",
    "DaskExecutor",
    "Executor",
    "InProcessExecutor",
    "JobError",
    "get_executor",
]

DIST_INSTALL_HINT = "pip install 'vaedft[dist]'"

_ACCEPTED_SPECS = (
    "None or 'inprocess' (sequential, in this process), "
    "'dask' (a local Dask cluster), "
    "'dask:tcp://HOST:PORT' (an existing Dask scheduler) or "
    "'dask:/path/to/scheduler.json' (an existing Dask cluster's scheduler file)"
)


class JobError(RuntimeError):
    """A job of :meth:`Executor.map` failed; ``label`` names it, ``__cause__`` is the original exception."""

    def __init__(self, label: str, exc: BaseException):
        self.label = label
        self.exc = exc
        super().__init__(f"job {label!r} failed: {type(exc).__name__}: {exc}")

    def __reduce__(self):
        return (type(self), (self.label, self.exc))


def _import_distributed():
    """``distributed``, or an ImportError that says how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            f"the Dask executor needs dask[distributed], which is not installed: {DIST_INSTALL_HINT}"
        ) from exc
    return distributed


def _labels(items: Sequence, labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        out = []
        for i, item in enumerate(items):
            text = str(item)
            out.append(text if len(text) <= 60 else f"item {i}")
        return out
    labels = [str(label) for label in labels]
    if len(labels) != len(items):
        raise ValueError(f"got {len(labels)} labels for {len(items)} items")
    return labels


class Executor:
    """Runs independent jobs; see the module docstring.  Use as a context manager to close it."""

    name: str = "executor"

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence,
        *,
        labels: Sequence[str] | None = None,
        progress: bool = True,
    ) -> list:
        """``[fn(item) for item in items]``, in input order; a failure raises :class:`JobError`."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the executor's resources (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class InProcessExecutor(Executor):
    """Runs the jobs one after the other in this process."""

    name = "inprocess"

    def map(self, fn, items, *, labels=None, progress=True):
        items = list(items)
        labels = _labels(items, labels)
        results = []
        # A single job usually shows its own progress (training epochs, ...): no outer bar for it.
        with progress_bar(total=len(items), desc="jobs", unit="job", disable=not progress or len(items) <= 1) as bar:
            for item, label in zip(items, labels, strict=True):
                bar.set_postfix_str(label, refresh=True)
                try:
                    results.append(fn(item))
                except Exception as exc:
                    raise JobError(label, exc) from exc
                bar.update(1)
        return results


def _key_part(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+]+", "_", label)[:60] or "job"


class DaskExecutor(Executor):
    """Runs the jobs on a Dask cluster.

    ``address`` None or ``"local"`` starts a ``distributed.LocalCluster`` of ``n_workers`` workers with
    ``threads_per_worker`` threads each (worker processes unless ``processes=False``; further keyword
    arguments go to ``LocalCluster``); the executor owns it and closes it on :meth:`close`.  A scheduler
    address (``"tcp://host:8786"``) or a scheduler file (a path ending in ``.json``) connects to an
    existing cluster instead; :meth:`close` then closes only the client, never the cluster.

    Workers of a remote cluster need the cache directory on a shared filesystem (module docstring).
    """

    name = "dask"

    def __init__(
        self,
        address: str | None = None,
        *,
        n_workers: int = 2,
        threads_per_worker: int = 1,
        processes: bool = True,
        **cluster_kwargs: Any,
    ):
        distributed = _import_distributed()
        self._cluster = None
        self._client = None
        if address is None or address == "local":
            self.address = "local"
            self._cluster = distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=threads_per_worker, processes=processes, **cluster_kwargs
            )
            try:
                self._client = distributed.Client(self._cluster)
            except BaseException:
                self._cluster.close()
                raise
        else:
            if cluster_kwargs:
                raise TypeError(f"cluster options {sorted(cluster_kwargs)} apply only to a local cluster")
            self.address = str(address)
            if self.address.endswith(".json"):
                self._client = distributed.Client(scheduler_file=self.address)
            elif "://" in self.address:
                self._client = distributed.Client(self.address)
            else:
                raise ValueError(
                    f"Dask address must be 'local', a scheduler address like 'tcp://host:8786' "
                    f"or a scheduler file ending in .json; got {address!r}"
                )

    @property
    def client(self):
        """The ``distributed.Client``."""
        return self._client

    @property
    def cluster(self):
        """The ``LocalCluster`` this executor started, or None when connected to an existing cluster."""
        return self._cluster

    def map(self, fn, items, *, labels=None, progress=True):
        if self._client is None:
            raise RuntimeError("this DaskExecutor is closed")
        distributed = _import_distributed()
        items = list(items)
        labels = _labels(items, labels)
        if not items:
            return []
        token = uuid.uuid4().hex[:12]
        futures = [
            self._client.submit(fn, item, key=f"vaedft-{_key_part(label)}-{token}-{i}", pure=False)
            for i, (item, label) in enumerate(zip(items, labels, strict=True))
        ]
        index = {future.key: i for i, future in enumerate(futures)}
        results: list = [None] * len(items)
        try:
            with progress_bar(
                total=len(items), desc="jobs (dask)", unit="job", disable=not progress or len(items) <= 1
            ) as bar:
                for future in distributed.as_completed(futures):
                    i = index[future.key]
                    try:
                        results[i] = future.result()
                    except (Exception, asyncio.CancelledError) as exc:  # a job cancelled elsewhere fails too
                        raise JobError(labels[i], exc) from exc
                    bar.set_postfix_str(labels[i], refresh=False)
                    bar.update(1)
        finally:
            pending = [future for future in futures if not future.done()]
            if pending:
                self._client.cancel(pending)
        return results

    def close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    def __repr__(self) -> str:
        state = "closed" if self._client is None else "open"
        return f"DaskExecutor({self.address!r}, {state})"


def get_executor(spec: str | None, *, threads: int | None = None) -> Executor:
    """The executor named by ``spec``: None or ``"inprocess"``, ``"dask"``, ``"dask:ADDRESS"``.

    ``threads``: the torch threads each job will use (the profile's ``threads``).  A local cluster
    then gets ``max(1, cpu_count // threads)`` workers instead of 2, so that workers times torch
    threads does not exceed the cores: oversubscribed OpenMP threads spin against each other
    (measured: 2 workers x 2 threads on 2 cores trained the quick VAEs about 10x slower).
    """
    if spec is None:
        return InProcessExecutor()
    if not isinstance(spec, str):
        raise TypeError(f"executor spec must be a string or None, got {type(spec).__name__}")
    text = spec.strip()
    if text in ("", "inprocess"):
        return InProcessExecutor()
    local = {} if threads is None else {"n_workers": max(1, (os.cpu_count() or 1) // int(threads))}
    if text == "dask":
        return DaskExecutor(**local)
    if text.startswith("dask:"):
        address = text[len("dask:") :].strip()
        if address == "local":
            return DaskExecutor(address, **local)
        if address and ("://" in address or address.endswith(".json")):
            return DaskExecutor(address)
    raise ValueError(f"unknown executor {spec!r}; accepted: {_ACCEPTED_SPECS}")
