"""``vaedft-bench``: the paper's experiment suite (not yet implemented; see the harness issue)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "vaedft-bench: not yet implemented (the experiment suite lands with the benchmark-harness issue). "
        "Available now: `vaedft generate` for exact datasets.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
