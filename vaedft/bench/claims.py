"""Checks of the paper's qualitative claims on our numbers (the ``[[claims]]`` of an experiment file).

Two kinds, both plain data in the experiment's TOML:

* comparison -- ``{text, metric, op, value}`` or ``{text, metric, op, other}``: ``metric op value`` or
  ``metric op other_metric`` with ``op`` in ``<, <=, >, >=``.  A non-finite metric (a diverged run,
  counted as infinite error) compares as infinity, so "latent < density-GD" holds when density GD
  blew up;
* trend -- ``{text, trend, direction, min_rho}``: the metrics matching the glob ``trend`` (one per
  ``beta...`` path segment) rise (``direction = "up"``) or fall with beta, measured by the Spearman
  rank correlation against log beta (pass when ``rho >= min_rho``, default 0.6, for ``up``;
  ``rho <= -min_rho`` for ``down``).

A claim whose metrics were not produced (an experiment run with fewer cases) is reported ``n/a``.
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["evaluate_claims", "beta_of", "ClaimError"]

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_BETA = re.compile(r"(?:^|/)beta([0-9.eE+-]+)(?:/|$)")


class ClaimError(ValueError):
    """A malformed claim table."""


def beta_of(metric: str) -> float | None:
    """The beta encoded in a metric name (``.../beta1e-05/...``), or None."""
    m = _BETA.search(metric)
    return float(m.group(1)) if m else None


def _num(x) -> float:
    if x is None:
        return math.nan
    return float(x)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _comparison(claim: Mapping, metrics: Mapping[str, float]) -> dict:
    name, op = claim["metric"], claim.get("op")
    if op not in _OPS:
        raise ClaimError(f"claim {claim.get('text')!r}: op must be one of {sorted(_OPS)}, got {op!r}")
    if ("value" in claim) == ("other" in claim):
        raise ClaimError(f"claim {claim.get('text')!r}: give exactly one of value or other")
    if name not in metrics or ("other" in claim and claim["other"] not in metrics):
        return {"verdict": "n/a", "ours": "not measured", "expected": f"{op} ..."}
    ours = _num(metrics[name])
    ours = math.inf if math.isnan(ours) else ours
    if "value" in claim:
        ref, expected = float(claim["value"]), f"{op} {_fmt(float(claim['value']))}"
    else:
        ref = _num(metrics[claim["other"]])
        ref = math.inf if math.isnan(ref) else ref
        expected = f"{op} {_fmt(ref)} ({claim['other']})"
    ok = _OPS[op](ours, ref)
    return {"verdict": "PASS" if ok else "FAIL", "ours": f"{_fmt(ours)} ({name})", "expected": expected}


def _trend(claim: Mapping, metrics: Mapping[str, float]) -> dict:
    from scipy.stats import spearmanr

    pattern, direction = claim["trend"], claim.get("direction", "up")
    if direction not in ("up", "down"):
        raise ClaimError(f"claim {claim.get('text')!r}: direction must be 'up' or 'down', got {direction!r}")
    min_rho = float(claim.get("min_rho", 0.6))
    pts = sorted((beta_of(k), _num(v)) for k, v in metrics.items()
                 if fnmatch.fnmatchcase(k, pattern) and beta_of(k) is not None)
    pts = [(b, v) for b, v in pts if math.isfinite(v)]
    expected = f"Spearman rho {'>=' if direction == 'up' else '<='} {'' if direction == 'up' else '-'}{min_rho:g}"
    if len(pts) < 3:
        return {"verdict": "n/a", "ours": f"{len(pts)} points (need 3)", "expected": expected}
    x, y = np.log10([p[0] for p in pts]), [p[1] for p in pts]
    rho = float(spearmanr(x, y).statistic)
    ok = rho >= min_rho if direction == "up" else rho <= -min_rho
    return {"verdict": "PASS" if ok else "FAIL", "ours": f"rho = {rho:.2f} over {len(pts)} betas",
            "expected": expected}


def evaluate_claims(claims: Sequence[Mapping], metrics: Mapping[str, float]) -> list[dict]:
    """Evaluate every claim on an experiment's metrics.

    Returns:
        One dict per claim: ``{"claim", "ours", "expected", "verdict"}`` with verdict ``PASS``,
        ``FAIL`` or ``n/a``.
    """
    out = []
    for claim in claims:
        if "text" not in claim:
            raise ClaimError(f"every claim needs a text: {dict(claim)}")
        if "trend" in claim:
            res = _trend(claim, metrics)
        elif "metric" in claim:
            res = _comparison(claim, metrics)
        else:
            raise ClaimError(f"claim {claim['text']!r} needs either metric (comparison) or trend")
        out.append({"claim": claim["text"], **res})
    return out
