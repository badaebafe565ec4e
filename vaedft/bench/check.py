"""Regression check of benchmark results against a committed reference (``vaedft-bench check``).

Results file (JSON, written by the harness, read with :func:`json.loads` only)::

    {"schema": "vaedft-bench-results/1", "profile": "quick", ...,
     "experiments": {"E1": {"title": ..., "metrics": {"gaussian1d/ld8/beta1e-06/reconstruction_error": 0.0123}}}}

Metric values are numbers or ``null``; ``NaN``/``Infinity`` (as Python's :mod:`json` writes them) are accepted
on reading and reported as "not finite" by the check.

Reference file (TOML, ``benchmark/reference/<profile>.toml``)::

    profile = "quick"        # optional; a mismatch with the results' profile is a warning, not a failure
    description = "..."      # optional

    [E1]
    "gaussian1d/ld8/beta1e-06/reconstruction_error" = { value = 0.0123, rtol = 0.3 }
    "speckle1d/ld16/beta1e-06/reconstruction_error" = { value = 0.02, rtol = 0.3, atol = 1e-4 }

    [E6]
    "gaussian3d/ld32/beta1e-06/mean_abs_energy_error" = { max = 4e-4, source = "paper Sec. III C" }
    "gaussian3d/ld32/beta1e-06/frac_within_ca" = { min = 0.99 }

A reference may also list experiments whose ``[[claims]]`` count as goals (``claims = ["E3", "E8"]``, a
top-level key): each claim verdict stored in the results becomes one finding (PASS: "pass", FAIL: "fail",
not measured or experiment absent: "missing").

A metric spec has either ``value`` (with ``rtol`` and/or ``atol``, both default 0; the metric passes iff
``|ours - value| <= atol + rtol * |value|``) or the inclusive bounds ``min`` and/or ``max``; ``source`` is an
optional note shown in the report. Every reference metric of the selected experiments yields one
:class:`Finding`; a metric absent from the results (or an experiment absent altogether) is a failure with
status "missing", a NaN/inf/null value is a failure with status "not finite". Metrics present in the results but
not in the reference are ignored.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tabulate import tabulate

__all__ = [
    "RESULTS_SCHEMA",
    "STATUSES",
    "Finding",
    "MetricSpec",
    "ReferenceError",
    "ResultsError",
    "check",
    "format_findings",
    "load_reference",
    "load_results",
    "profile_warning",
    "run_check",
    "write_reference",
]

RESULTS_SCHEMA = "vaedft-bench-results/1"
"""The ``schema`` string a results file must carry."""

STATUSES = ("pass", "fail", "missing", "not finite", "not run")
"""Possible :attr:`Finding.status` values; only "pass" is ok."""

_SPEC_KEYS = frozenset({"value", "rtol", "atol", "min", "max", "source"})
_REFERENCE_META_KEYS = ("profile", "description")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class ReferenceError(ValueError):
    """A reference TOML file is missing, unreadable or does not follow the schema."""


class ResultsError(ValueError):
    """A results JSON file is missing, unreadable or does not follow the schema."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fmt(x: float | None) -> str:
    """A number with 4 significant digits ("-" for None)."""
    if x is None:
        return "-"
    return f"{x:.4g}"


@dataclass(frozen=True)
class MetricSpec:
    """Tolerance of one reference metric: ``value`` with ``rtol``/``atol``, or inclusive ``min``/``max`` bounds."""

    value: float | None = None
    rtol: float = 0.0
    atol: float = 0.0
    min: float | None = None
    max: float | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        has_value = self.value is not None
        has_bounds = self.min is not None or self.max is not None
        if not has_value and not has_bounds:
            raise ValueError("needs either 'value' (with rtol/atol) or bounds 'min'/'max'")
        if has_value and has_bounds:
            raise ValueError("give either 'value' (with rtol/atol) or bounds 'min'/'max', not both")
        for name in ("value", "rtol", "atol", "min", "max"):
            x = getattr(self, name)
            if x is not None and not _is_number(x):
                raise ValueError(f"{name!r} must be a number, got {x!r}")
        for name in ("rtol", "atol"):
            x = getattr(self, name)
            if not math.isfinite(x) or x < 0:
                raise ValueError(f"{name!r} must be a finite number >= 0, got {x!r}")
        if not has_value and (self.rtol or self.atol):
            raise ValueError("'rtol'/'atol' only apply together with 'value'")
        if has_value and not math.isfinite(self.value):
            raise ValueError(f"'value' must be finite, got {self.value!r}")
        for name in ("min", "max"):
            x = getattr(self, name)
            if x is not None and math.isnan(x):
                raise ValueError(f"{name!r} must not be NaN")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min!r}) is larger than 'max' ({self.max!r})")
        if self.source is not None and not isinstance(self.source, str):
            raise ValueError(f"'source' must be a string, got {self.source!r}")

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> MetricSpec:
        """Build a spec from a TOML table; raises ValueError on unknown keys or invalid values."""
        if not isinstance(spec, Mapping):
            raise ValueError(f"must be a table such as {{ value = 1.0, rtol = 0.1 }}, got {spec!r}")
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            allowed = ", ".join(sorted(_SPEC_KEYS))
            raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {allowed})")
        kwargs: dict[str, Any] = dict(spec)
        for name in ("value", "rtol", "atol", "min", "max"):
            if name in kwargs:
                x = kwargs[name]
                if not _is_number(x):
                    raise ValueError(f"{name!r} must be a number, got {x!r}")
                kwargs[name] = float(x)
        return cls(**kwargs)

    def passes(self, x: float | None) -> bool:
        """Whether ``x`` is within tolerance (never for None, NaN or inf)."""
        if x is None or not _is_number(x) or not math.isfinite(x):
            return False
        if self.value is not None:
            return abs(x - self.value) <= self.atol + self.rtol * abs(self.value)
        if self.min is not None and x < self.min:
            return False
        return not (self.max is not None and x > self.max)

    def describe(self) -> str:
        """Human-readable expectation, e.g. ``"0.0123 ± 30%"``, ``"<= 0.0004"`` or ``"in [0.9, 1]"``."""
        if self.value is not None:
            v = _fmt(self.value)
            pct = f"{self.rtol * 100:.4g}%"
            if self.rtol and self.atol:
                return f"{v} ± ({pct} + {_fmt(self.atol)})"
            if self.rtol:
                return f"{v} ± {pct}"
            if self.atol:
                return f"{v} ± {_fmt(self.atol)}"
            return f"== {v}"
        if self.min is not None and self.max is not None:
            return f"in [{_fmt(self.min)}, {_fmt(self.max)}]"
        if self.min is not None:
            return f">= {_fmt(self.min)}"
        return f"<= {_fmt(self.max)}"


@dataclass(frozen=True)
class Finding:
    """Outcome of checking one reference metric."""

    experiment: str
    metric: str
    ours: float | None
    expected: str
    status: str
    source: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r} (expected one of {STATUSES})")

    @property
    def ok(self) -> bool:
        """True iff the metric passed."""
        return self.status == "pass"


# ----------------------------------------------------------------------------------------------------------- loading


def _validate_results(results: Any, where: str) -> dict:
    if not isinstance(results, dict):
        raise ResultsError(f"{where}: top level must be a JSON object, got {type(results).__name__}")
    schema = results.get("schema")
    if schema is None:
        raise ResultsError(f"{where}: no 'schema' field (expected {RESULTS_SCHEMA!r})")
    if schema != RESULTS_SCHEMA:
        raise ResultsError(f"{where}: unsupported schema {schema!r} (expected {RESULTS_SCHEMA!r})")
    profile = results.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise ResultsError(f"{where}: 'profile' must be a string, got {profile!r}")
    experiments = results.get("experiments")
    if experiments is None:
        raise ResultsError(f"{where}: no 'experiments' field")
    if not isinstance(experiments, dict):
        raise ResultsError(f"{where}: 'experiments' must be an object, got {type(experiments).__name__}")
    for exp_id, exp in experiments.items():
        if not isinstance(exp, dict):
            raise ResultsError(f"{where}: experiment {exp_id!r} must be an object, got {type(exp).__name__}")
        metrics = exp.get("metrics")
        if not isinstance(metrics, dict):
            raise ResultsError(f"{where}: experiment {exp_id!r}: 'metrics' must be an object, got {metrics!r:.80}")
        for name, x in metrics.items():
            if x is not None and not _is_number(x):
                raise ResultsError(
                    f"{where}: experiment {exp_id!r}: metric {name!r} must be a number or null, got {x!r}"
                )
    return results


def load_results(path: str | os.PathLike[str]) -> dict:
    """Read and validate a results JSON file (see the module docstring); raises :class:`ResultsError`."""
    p = Path(path)
    if not p.is_file():
        raise ResultsError(f"results file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{p}: cannot read results file: {exc}") from exc
    try:
        results = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{p}: not valid JSON: {exc}") from exc
    return _validate_results(results, str(p))


def load_reference(path: str | os.PathLike[str]) -> dict:
    """Read and validate a reference TOML file; raises :class:`ReferenceError`.

    Returns ``{"profile": str | None, "description": str | None, "experiments": {exp_id: {metric: MetricSpec}}}``
    with experiments and metrics in file order.
    """
    p = Path(path)
    if not p.is_file():
        raise ReferenceError(f"reference file not found: {p}")
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ReferenceError(f"{p}: not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReferenceError(f"{p}: cannot read reference file: {exc}") from exc

    claims = data.get("claims", [])
    if not (isinstance(claims, list) and all(isinstance(c, str) and re.fullmatch(r"E[0-9]+", c) for c in claims)):
        raise ReferenceError(f"{p}: 'claims' must be a list of experiment ids such as [\"E3\", \"E8\"], got {claims!r}")
    meta: dict[str, str | None] = {}
    for key in _REFERENCE_META_KEYS:
        x = data.get(key)
        if x is not None and not isinstance(x, str):
            raise ReferenceError(f"{p}: {key!r} must be a string, got {x!r}")
        meta[key] = x

    experiments: dict[str, dict[str, MetricSpec]] = {}
    for exp_id, table in data.items():
        if exp_id in _REFERENCE_META_KEYS or exp_id == "claims":
            continue
        if not isinstance(table, dict):
            raise ReferenceError(
                f"{p}: top-level entry {exp_id!r} must be an experiment table such as [{exp_id}] "
                f"(only 'profile' and 'description' may be plain values), got {table!r}"
            )
        specs: dict[str, MetricSpec] = {}
        for metric, spec in table.items():
            try:
                specs[metric] = MetricSpec.from_mapping(spec)
            except (TypeError, ValueError) as exc:
                raise ReferenceError(f"{p}: experiment {exp_id!r}, metric {metric!r}: {exc}") from exc
        experiments[exp_id] = specs
    if not any(experiments.values()) and not claims:
        raise ReferenceError(f"{p}: defines no metrics (expected tables such as [E1] with metric specs)")
    return {"profile": meta["profile"], "description": meta["description"], "experiments": experiments,
            "claims": list(dict.fromkeys(claims))}


# ----------------------------------------------------------------------------------------------------------- checking


def _select(experiments: Iterable[str] | None, available: Iterable[str], what: str) -> list[str]:
    available = list(available)
    if experiments is None:
        return available
    if isinstance(experiments, str):
        experiments = [experiments]
    selected = list(dict.fromkeys(experiments))
    unknown = [e for e in selected if e not in available]
    if unknown:
        raise ValueError(
            f"unknown experiment(s) {', '.join(map(repr, unknown))}: not in the {what} "
            f"(available: {', '.join(available) or 'none'})"
        )
    return selected


def check(results: Mapping[str, Any], reference: Mapping[str, Any], experiments: Iterable[str] | None = None,
          ) -> list[Finding]:
    """Compare ``results`` (from :func:`load_results`) with ``reference`` (from :func:`load_reference`).

    Returns one :class:`Finding` per reference metric of the selected ``experiments`` (default: all experiments
    of the reference), in reference order. An id in ``experiments`` absent from the reference raises ValueError.
    """
    ref_exps: Mapping[str, Mapping[str, MetricSpec]] = reference["experiments"]
    res_exps: Mapping[str, Any] = results.get("experiments") or {}
    claim_exps = reference.get("claims", [])
    findings: list[Finding] = []
    selected = _select(experiments, list(dict.fromkeys([*ref_exps, *claim_exps])), "reference")
    for exp_id in [e for e in selected if e in ref_exps]:
        exp = res_exps.get(exp_id)
        metrics: Mapping[str, Any] = (exp.get("metrics") or {}) if isinstance(exp, Mapping) else {}
        for metric, spec in ref_exps[exp_id].items():
            expected = spec.describe()
            if metric not in metrics:
                findings.append(Finding(exp_id, metric, None, expected, "missing", spec.source))
                continue
            x = metrics[metric]
            ours = None if x is None else float(x)
            if ours is None or not math.isfinite(ours):
                status = "not finite"
            elif spec.passes(ours):
                status = "pass"
            else:
                status = "fail"
            findings.append(Finding(exp_id, metric, ours, expected, status, spec.source))
    for exp_id in [e for e in selected if e in claim_exps]:
        findings += _claim_findings(exp_id, res_exps.get(exp_id))
    return findings


_CLAIM_STATUS = {"PASS": "pass", "FAIL": "fail"}


def _claim_findings(exp_id: str, entry: Any) -> list[Finding]:
    """One finding per claim verdict stored in an experiment's results entry (its ``comparisons``
    of kind ``"claim"``; entries written before kinds existed: every comparison)."""
    comps = entry.get("comparisons") if isinstance(entry, Mapping) else None
    if not comps:
        return [Finding(exp_id, "claims", None, "every claim PASS", "missing", "claims of the experiment")]
    return [Finding(exp_id, str(c.get("claim", "")), None, f"{c.get('expected', '')} (ours: {c.get('ours', '')})",
                    _CLAIM_STATUS.get(c.get("verdict"), "missing"), "claim")
            for c in comps if isinstance(c, Mapping) and c.get("kind", "claim") == "claim"]


def _table(findings: list[Finding]) -> str:
    with_source = any(f.source for f in findings)
    headers = ["experiment", "metric", "ours", "expected", "status"] + (["source"] if with_source else [])
    rows = []
    for f in findings:
        row = [f.experiment, f.metric, _fmt(f.ours), f.expected, f.status]
        if with_source:
            row.append(f.source or "")
        rows.append(row)
    return tabulate(rows, headers=headers, disable_numparse=True)


def format_findings(findings: Iterable[Finding], *, verbose: bool = False) -> str:
    """Readable report: the failures as a table, then (``verbose``) the passing metrics, then a summary line."""
    findings = list(findings)
    if not findings:
        return "no metrics checked"
    bad = [f for f in findings if not f.ok]
    good = [f for f in findings if f.ok]
    parts: list[str] = []
    if bad:
        parts.append("Metrics outside tolerance:\n" + _table(bad))
    if verbose and good:
        parts.append("Metrics within tolerance:\n" + _table(good))
    if bad:
        counts = {s: sum(f.status == s for f in bad) for s in STATUSES if s not in ("pass", "fail")}
        detail = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        summary = f"{len(bad)} of {len(findings)} metrics outside tolerance" + (f" ({detail})" if detail else "")
    else:
        summary = f"all {len(findings)} metrics within tolerance"
    parts.append(summary)
    return "\n\n".join(parts)


def profile_warning(results: Mapping[str, Any], reference: Mapping[str, Any]) -> str | None:
    """A warning line when the reference names a profile different from the results' one, else None."""
    ref_profile = reference.get("profile")
    if ref_profile is None:
        return None
    ours = results.get("profile")
    if ours == ref_profile:
        return None
    return f"warning: results are from profile {ours!r} but the reference is for profile {ref_profile!r}"


def run_check(results_path: str | os.PathLike[str], reference_path: str | os.PathLike[str], *,
              experiments: Iterable[str] | None = None, verbose: bool = False, stream: TextIO | None = None) -> int:
    """Load both files, print the report to ``stream`` (default stdout) and return 0 if every metric passed, else 1.

    :class:`ResultsError` and :class:`ReferenceError` propagate (the CLI maps them to exit status 2).
    """
    out = sys.stdout if stream is None else stream
    results = load_results(results_path)
    reference = load_reference(reference_path)
    findings = check(results, reference, experiments)
    warning = profile_warning(results, reference)
    if warning:
        print(warning, file=out)
    print(format_findings(findings, verbose=verbose), file=out)
    return 0 if all(f.ok for f in findings) else 1


# ----------------------------------------------------------------------------------------------------------- writing


def _toml_str(s: str) -> str:
    """A TOML basic string (JSON escaping is valid TOML once DEL is escaped too)."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(s: str) -> str:
    return s if _BARE_KEY.match(s) else _toml_str(s)


def _toml_float(x: float) -> str:
    return repr(float(x))  # e.g. 1e-06, 0.0123, 3.0: all valid TOML floats that round-trip exactly


def write_reference(results: Mapping[str, Any], path: str | os.PathLike[str], *, rtol: float,
                    atol_by_suffix: Mapping[str, float] | None = None, experiments: Iterable[str] | None = None,
                    header: str = "") -> None:
    """Write a reference TOML from a results dict so that a committed run becomes the regression reference.

    Every finite metric of the selected ``experiments`` (default: all) gets ``value`` (the result) and ``rtol``,
    plus ``atol`` when its name ends with a suffix of ``atol_by_suffix`` (the longest matching suffix wins).
    Non-finite metrics are skipped with a comment line. ``header`` is written as leading ``#`` comments.
    The file is written atomically (temporary file + :func:`os.replace`).
    """
    results = _validate_results(results, "results")
    if not _is_number(rtol) or not math.isfinite(rtol) or rtol < 0:
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")
    suffixes = dict(atol_by_suffix or {})
    for suffix, atol in suffixes.items():
        if not _is_number(atol) or not math.isfinite(atol) or atol < 0:
            raise ValueError(f"atol for suffix {suffix!r} must be a finite number >= 0, got {atol!r}")
    by_length = sorted(suffixes, key=len, reverse=True)

    lines: list[str] = [f"# {line}".rstrip() for line in header.splitlines()]
    profile = results.get("profile")
    if profile is not None:
        lines.append(f"profile = {_toml_str(profile)}")
    origin = ", ".join(f"{k} {results[k]}" for k in ("git_commit", "device", "created") if results.get(k) is not None)
    lines.append(f"description = {_toml_str('Generated from benchmark results' + (f' ({origin})' if origin else ''))}")

    n_written = 0
    res_exps = results["experiments"]
    for exp_id in _select(experiments, res_exps, "results"):
        lines.append("")
        title = res_exps[exp_id].get("title")
        if isinstance(title, str) and title:
            lines.append(f"# {' '.join(title.split())}")
        lines.append(f"[{_toml_key(exp_id)}]")
        for metric, x in res_exps[exp_id]["metrics"].items():
            try:
                value = None if x is None else float(x)
            except OverflowError:
                value = math.inf
            if value is None or not math.isfinite(value):
                lines.append(f"# {_toml_str(metric)}: not finite in the results ({x!r}); not written")
                continue
            fields = [f"value = {_toml_float(value)}", f"rtol = {_toml_float(rtol)}"]
            suffix = next((s for s in by_length if metric.endswith(s)), None)
            if suffix is not None:
                fields.append(f"atol = {_toml_float(suffixes[suffix])}")
            lines.append(f"{_toml_str(metric)} = {{ {', '.join(fields)} }}")
            n_written += 1
    if n_written == 0:
        raise ValueError("no finite metrics to write: the reference would check nothing")

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a reference file is meant to be committed and shared
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
