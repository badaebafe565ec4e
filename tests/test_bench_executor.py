"""Executors of the benchmark harness: in-process and Dask (optional dependency)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from vaedft.bench import executor as executor_module
from vaedft.bench.executor import (
    DaskExecutor,
    Executor,
    InProcessExecutor,
    JobError,
    get_executor,
)

ITEMS = [3, 1, 4, 1, 5]


def square_plus(x):
    """A job: top-level, so that a worker in another process could import it."""
    return x * x + 1


def fail_on_four(x):
    if x == 4:
        raise ValueError(f"bad item {x}")
    return x


# -- in process ---------------------------------------------------------------------------------


def test_inprocess_preserves_order():
    with InProcessExecutor() as ex:
        assert isinstance(ex, Executor)
        assert ex.name == "inprocess"
        assert ex.map(square_plus, ITEMS, progress=False) == [square_plus(x) for x in ITEMS]
        assert ex.map(square_plus, [], progress=False) == []


def test_inprocess_progress_bar_with_labels(capsys):
    labels = [f"beta={x}" for x in ITEMS]
    assert InProcessExecutor().map(square_plus, ITEMS, labels=labels, progress=True) == [10, 2, 17, 2, 26]
    assert "beta=5" in capsys.readouterr().err


def test_inprocess_error_names_the_label():
    labels = [f"job-{i}" for i in range(len(ITEMS))]
    with pytest.raises(JobError, match="job-2") as info:
        InProcessExecutor().map(fail_on_four, ITEMS, labels=labels, progress=False)
    err = info.value
    assert err.label == "job-2"
    assert isinstance(err.__cause__, ValueError)
    assert "bad item 4" in str(err.__cause__)
    assert err.exc is err.__cause__
    assert isinstance(err, RuntimeError)


def test_default_labels_are_the_items():
    with pytest.raises(JobError, match="'4'"):
        InProcessExecutor().map(fail_on_four, ITEMS, progress=False)


def test_labels_must_match_items():
    with pytest.raises(ValueError, match="2 labels for 5 items"):
        InProcessExecutor().map(square_plus, ITEMS, labels=["a", "b"], progress=False)


def test_job_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(JobError("beta=1", ValueError("x"))))
    assert err.label == "beta=1" and isinstance(err.exc, ValueError) and "beta=1" in str(err)


# -- get_executor -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, "", "inprocess", " inprocess "])
def test_get_executor_inprocess(spec):
    assert isinstance(get_executor(spec), InProcessExecutor)


@pytest.mark.parametrize("spec", ["threads", "dask:", "dask:localhost", "Dask", "inprocess:2", "dask:scheduler.yaml"])
def test_get_executor_rejects_unknown(spec):
    with pytest.raises(ValueError, match="accepted") as info:
        get_executor(spec)
    for form in ("inprocess", "'dask'", "dask:tcp://", "scheduler.json"):
        assert form in str(info.value)


def test_get_executor_dask_forms(monkeypatch):
    """The Dask forms reach DaskExecutor with the right address (no cluster is started here)."""
    calls = []

    class FakeDask(Executor):
        def __init__(self, address=None, **kwargs):
            calls.append(address)

    monkeypatch.setattr(executor_module, "DaskExecutor", FakeDask)
    for spec in ("dask", "dask:local", "dask:tcp://10.0.0.1:8786", "dask:/shared/scheduler.json"):
        assert isinstance(get_executor(spec), FakeDask)
    assert calls == [None, "local", "tcp://10.0.0.1:8786", "/shared/scheduler.json"]


def test_a_local_cluster_does_not_oversubscribe_the_cores(monkeypatch):
    """With the profile's torch threads, a local cluster gets cores // threads workers (at least 1)."""
    made = []

    class FakeDask(Executor):
        def __init__(self, address=None, **kwargs):
            made.append((address, kwargs))

    monkeypatch.setattr(executor_module, "DaskExecutor", FakeDask)
    monkeypatch.setattr(executor_module.os, "cpu_count", lambda: 8)
    get_executor("dask", threads=2)
    get_executor("dask:local", threads=16)
    get_executor("dask:tcp://10.0.0.1:8786", threads=2)  # a remote cluster is sized by whoever started it
    get_executor("dask")
    assert made == [(None, {"n_workers": 4}), ("local", {"n_workers": 1}), ("tcp://10.0.0.1:8786", {}), (None, {})]


def test_works_without_dask(monkeypatch):
    """With dask hidden, the module still imports and asking for dask says how to install it."""
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "distributed", None)
    # A fresh copy of the module, executed with dask hidden (the imported one stays untouched).
    spec = importlib.util.find_spec("vaedft.bench.executor")
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    assert fresh.get_executor(None).map(square_plus, [2], progress=False) == [5]
    for spec_text in ("dask", "dask:tcp://127.0.0.1:8786"):
        with pytest.raises(ImportError, match=r"vaedft\[dist\]"):
            fresh.get_executor(spec_text)
    with pytest.raises(ImportError, match=r"pip install 'vaedft\[dist\]'"):
        fresh.DaskExecutor()


# -- Dask ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_executor():
    pytest.importorskip("distributed")
    ex = DaskExecutor(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    yield ex
    cluster = ex.cluster
    ex.close()
    assert ex.client is None and cluster.status.name == "closed"


def test_dask_map_matches_inprocess(dask_executor):
    assert dask_executor.name == "dask"
    labels = [f"item-{i}" for i in range(len(ITEMS))]
    expected = InProcessExecutor().map(square_plus, ITEMS, labels=labels, progress=False)
    assert dask_executor.map(square_plus, ITEMS, labels=labels, progress=False) == expected
    # Duplicate labels and items are fine: every submission gets its own key.
    assert dask_executor.map(square_plus, ITEMS, progress=True) == expected
    assert dask_executor.map(square_plus, [], progress=False) == []


def test_dask_error_names_the_label(dask_executor):
    labels = [f"beta={x}" for x in ITEMS]
    with pytest.raises(JobError, match="beta=4") as info:
        dask_executor.map(fail_on_four, ITEMS, labels=labels, progress=False)
    assert info.value.label == "beta=4"
    assert isinstance(info.value.__cause__, ValueError)
    # The executor is still usable after a failure.
    assert dask_executor.map(square_plus, [2, 3], progress=False) == [5, 10]


def test_dask_connects_to_existing_cluster(dask_executor, tmp_path):
    address = dask_executor.cluster.scheduler_address
    with DaskExecutor(address) as ex:
        assert ex.cluster is None
        assert ex.map(square_plus, ITEMS, progress=False) == [square_plus(x) for x in ITEMS]
    # Closing a connected executor leaves the cluster running.
    assert dask_executor.map(square_plus, [1], progress=False) == [2]

    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"address": address}))
    with get_executor(f"dask:{scheduler_file}") as ex:
        assert isinstance(ex, DaskExecutor)
        assert ex.map(square_plus, [7], progress=False) == [50]
    with pytest.raises(RuntimeError, match="closed"):
        ex.map(square_plus, [1], progress=False)
