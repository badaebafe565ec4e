"""Shared state of the benchmark suite and the speedup table printed at the end of the run.

The benchmark tests put their per-instance timings into :func:`speedup_results`; the
terminal summary then prints ``baseline time / our time`` per testbed, both timings
taken in the same process on the same potentials.  It only reports: no speed
threshold is asserted anywhere (timings depend on the machine and its load).
"""

from __future__ import annotations

import os

import pytest

_RESULTS = pytest.StashKey[dict]()

#: Speedup targets of the issue, by (device, testbed); ``None``: no target stated.
TARGETS = {
    ("cpu", "gaussian3d"): (30.0, "3D >= 30x on a 2-core CPU"),
    ("cuda", "gaussian1d"): (10.0, ">= 10x on a GPU"),
    ("cuda", "speckle1d"): (10.0, ">= 10x on a GPU"),
    ("cuda", "gaussian3d"): (10.0, ">= 10x on a GPU"),
}


@pytest.fixture(scope="session")
def speedup_results(request: pytest.FixtureRequest) -> dict:
    """``{(device, testbed): {"n_instances": int, "times": {role: {"median": s, "min": s}}}}``,
    times per instance in seconds; roles ``"ours"``, ``"ours_1thread"``, ``"eigsh"``, ``"eigsh_v0_ones"``."""
    return request.config.stash.setdefault(_RESULTS, {})


def _ratio(times: dict, baseline: str, stat: str, ours: str = "ours") -> str:
    if baseline not in times or ours not in times:
        return "-"
    return f"{times[baseline][stat] / times[ours][stat]:.1f}x"


def _ms(times: dict, role: str) -> str:
    return f"{times[role]['median'] * 1e3:.3f}" if role in times else "-"


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, None)
    if not results:
        return
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        threads = "?"
    header = (
        "device",
        "testbed",
        "n",
        "ours ms/inst",
        "eigsh ms/inst",
        "speedup (median)",
        "speedup (min)",
        "ours 1 thread",
        "vs eigsh v0=1",
        "target (issue)",
    )
    rows = []
    for (device, testbed), rec in results.items():
        times = rec["times"]
        target = TARGETS.get((device, testbed))
        if target is None:
            verdict = "-"
        elif "ours" in times and "eigsh" in times:
            ratio = times["eigsh"]["median"] / times["ours"]["median"]
            verdict = f"{target[1]}: {'met' if ratio >= target[0] else 'NOT met'}"
        else:
            verdict = target[1]
        rows.append(
            (
                device,
                testbed,
                str(rec["n_instances"]),
                _ms(times, "ours"),
                _ms(times, "eigsh"),
                _ratio(times, "eigsh", "median"),
                _ratio(times, "eigsh", "min"),
                _ratio(times, "eigsh", "median", ours="ours_1thread"),
                _ratio(times, "eigsh_v0_ones", "median"),
                verdict,
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    tr = terminalreporter
    tr.write_sep("-", "vaedft eigensolver speedup: eigsh-loop time per instance / batched ground_state")
    tr.write_line("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        tr.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    tr.write_line(
        f"(same process, same potentials, equal accuracy; {os.cpu_count()} CPU core(s), torch threads: {threads}, "
        f"load average now: {os.getloadavg()[0]:.2f}; speedups are ratios of medians except the min column; "
        "reported only, no threshold is asserted)"
    )
