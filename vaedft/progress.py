"""Progress bars that stay readable in logs.

On a terminal :func:`progress_bar` is an ordinary tqdm bar.  When the stream is not a
terminal (CI, ``nohup ... > log``, a pipe), a bar would write a carriage-return frame at
every refresh -- hundreds of kilobytes of ``\\r`` frames in one log.  There it instead writes
one plain line at most every :data:`LOG_INTERVAL_S` seconds (and one when it closes): a
periodic summary ``train vae:  40%|####      | 4/10 [01:02<01:33, 15.5s/epoch]``.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL_S", "progress_bar"]

#: Seconds between two summary lines of a bar whose stream is not a terminal.
LOG_INTERVAL_S = 30.0


class _LineWriter:
    """A stream wrapper that turns tqdm's carriage-return frames into whole lines."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip("\n")
        if line.strip():
            self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable=None, *, disable: bool = False, file: IO[str] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (arguments as :class:`tqdm.tqdm`) that writes plain periodic lines off a terminal.

    Args:
        iterable: what to iterate over, if anything (else call ``update``).
        disable: no output at all.
        file: the stream (default ``sys.stderr``, looked up at call time).
        **kwargs: passed to tqdm; off a terminal ``mininterval`` defaults to :data:`LOG_INTERVAL_S`.
    """
    stream = sys.stderr if file is None else file
    if not disable and not _is_terminal(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("ncols", 100)
        stream = _LineWriter(stream)
    return tqdm(iterable, file=stream, disable=disable, **kwargs)
