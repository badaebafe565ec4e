"""Repository-wide pytest configuration: the ``--benchmark`` switch.

* ``pytest`` runs the unit tests; every benchmark is skipped, so the run stays fast.
* ``pytest --benchmark`` runs only the benchmarks; the unit tests are deselected.

A test counts as a benchmark when it carries the ``benchmark`` marker or uses the
``benchmark`` fixture of pytest-benchmark.  The marker name is the one pytest-benchmark
already reads for per-test settings (``@pytest.mark.benchmark(group=...)``), so one
marker serves both.  pytest-benchmark's own options (``--benchmark-json``,
``--benchmark-compare``, ...) work alongside; ``--benchmark-only`` also switches the
suite on, since otherwise it would skip every test.
"""

from __future__ import annotations

import pytest

BENCHMARK_MARKER = "benchmark"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        dest="vaedft_run_benchmarks",
        help="run only the performance benchmarks (benchmark/); without it they are skipped",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{BENCHMARK_MARKER}: performance benchmark; runs only with `pytest --benchmark` "
        "(keyword arguments are pytest-benchmark settings, e.g. group=...)",
    )
    if _benchmarks_enabled(config) and not config.pluginmanager.hasplugin("benchmark"):
        raise pytest.UsageError(
            "--benchmark needs the pytest-benchmark plugin: pip install -e '.[test]' (or pip install pytest-benchmark)"
        )


def _benchmarks_enabled(config: pytest.Config) -> bool:
    if config.getoption("--benchmark"):
        return True
    # pytest-benchmark's own switch; absent when the plugin is not installed
    return bool(config.getoption("benchmark_only", default=False))


def _is_benchmark(item: pytest.Item) -> bool:
    return item.get_closest_marker(BENCHMARK_MARKER) is not None or "benchmark" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _benchmarks_enabled(config):
        selected = [item for item in items if _is_benchmark(item)]
        deselected = [item for item in items if not _is_benchmark(item)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest --benchmark`")
    for item in items:
        if _is_benchmark(item):
            item.add_marker(skip)
