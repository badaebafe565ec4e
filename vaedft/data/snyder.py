"""The 100 test potentials of the 1D three-Gaussian model (Snyder et al. 2012, via Meyer et al. 2020).

The table ships with the package (``resources/snyder2012_test_potentials.txt``, MIT
licence, copyright 2020 Manuel Weichselbaum; from weichseltree/quantumflow,
``experiments/snyder_2012/paper_potentials.txt``).  Its header reads
``j alpha_j a1 b1 c1 a2 b2 c2 a3 b3 c3`` but the columns headed ``b`` and ``c`` are
swapped relative to eq. (15) of the paper: the one headed ``b`` holds widths and the
one headed ``c`` holds centres.  The loader therefore assigns columns by value
range and refuses the file if any column falls outside its expected range.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["SNYDER2012_SHA256", "load_snyder2012"]

SNYDER2012_SHA256 = "3ee8cd089e85af8a4172c126604b7b12a8b8c657b27bfd4b112df93bf5095d3d"
_FILENAME = "snyder2012_test_potentials.txt"
# expected ranges (eq. 15): amplitudes a, centres b, widths c
_RANGES = {"a": (1.0, 10.0), "b": (0.4, 0.6), "c": (0.03, 0.1)}


def _within(values: np.ndarray, key: str) -> bool:
    lo, hi = _RANGES[key]
    return bool(np.all((values >= lo) & (values <= hi)))


def load_snyder2012(path: str | Path | None = None, *, check_hash: bool = True) -> dict[str, np.ndarray]:
    """Read the Snyder 2012 test potentials as eq. (15) parameters.

    Args:
        path: the table; default the copy shipped with vaedft.
        check_hash: verify the shipped file's sha256 (only for the default path).

    Returns:
        ``{"a": (100, 3), "b": (100, 3), "c": (100, 3)}`` float64: amplitudes (E0),
        centres (a0) and widths (a0).

    Raises:
        ValueError: malformed table, or a column outside its physical range.
    """
    if path is None:
        raw = resources.files("vaedft.data").joinpath("resources", _FILENAME).read_bytes()
        if check_hash and hashlib.sha256(raw).hexdigest() != SNYDER2012_SHA256:
            raise ValueError(f"shipped {_FILENAME} does not match its sha256; reinstall vaedft")
        text, source = raw.decode("utf-8"), _FILENAME
    else:
        source = str(path)
        text = Path(path).read_text(encoding="utf-8")
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0][0] != "j":
        raise ValueError(f"{source}: expected a header line starting with 'j'")
    rows = lines[1:]
    if any(len(r) != 11 for r in rows):
        bad = next(i for i, r in enumerate(rows, 2) if len(r) != 11)
        raise ValueError(f"{source}: line {bad} does not have 11 columns (j, alpha, 3 x (a, b, c))")
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{source}: non-numeric entry ({exc})") from None
    if table.shape[0] == 0:
        raise ValueError(f"{source}: no data rows")
    triples = table[:, 2:].reshape(-1, 3, 3)  # (rows, gaussian, column-in-triple)
    a, col2, col3 = triples[:, :, 0], triples[:, :, 1], triples[:, :, 2]
    if not _within(a, "a"):
        raise ValueError(f"{source}: amplitudes outside {_RANGES['a']}: [{a.min():.4g}, {a.max():.4g}]")
    if _within(col2, "c") and _within(col3, "b"):
        b, c = col3, col2  # the published file: headed b = widths, headed c = centres
    elif _within(col2, "b") and _within(col3, "c"):
        b, c = col2, col3  # a corrected file, in the header's order
    else:
        raise ValueError(
            f"{source}: cannot assign centre/width columns by range: second column in "
            f"[{col2.min():.4g}, {col2.max():.4g}], third in [{col3.min():.4g}, {col3.max():.4g}]; "
            f"expected centres in {_RANGES['b']} and widths in {_RANGES['c']}"
        )
    return {"a": np.ascontiguousarray(a), "b": np.ascontiguousarray(b), "c": np.ascontiguousarray(c)}
