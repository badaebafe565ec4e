"""Progress bars that stay readable in logs.

On a terminal :func:`progress_bar` is an ordinary tqdm bar.  When the stream is not a
terminal (CI, ``nohup ... > log``, a pipe), a bar would write a carriage-return frame at
every refresh -- hundreds of kilobytes of ``\\r`` frames in one log.  There it instead writes
one plain line at most every :data:`LOG_INTERVAL_S` seconds (and one when it closes): a
periodic summary ``train vae:  40%|####      | 4/10 [01:02<01:33, 15.5s/epoch]``.  Refreshes
that tqdm forces (``set_postfix``) obey the same interval, and the cursor movements of nested
bars are dropped.  In a Jupyter notebook (where tqdm.auto draws widgets) bars are left as they are.
"""

from __future__ import annotations

import math
import re
import sys
from typing import IO, Any

from tqdm import std
from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL_S", "progress_bar"]

#: Seconds between two summary lines of a bar whose stream is not a terminal.
LOG_INTERVAL_S = 30.0


_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _LineWriter:
    """A stream wrapper that turns tqdm's carriage-return frames into whole lines."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        line = _CURSOR_MOVES.sub("", text).replace("\r", "").rstrip("\n")
        if line.strip():
            self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


class _LogBar(std.tqdm):
    """A tqdm bar for logs: every refresh, forced ones too, at most once per ``mininterval``.

    The final line (written by ``close``) always appears.
    """

    _last_line = -math.inf

    def refresh(self, nolock: bool = False, lock_args=None):
        now = self._time()
        if now - self._last_line < self.mininterval:
            return None
        self._last_line = now
        return super().refresh(nolock=nolock, lock_args=lock_args)


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
    if disable or _is_terminal(stream) or "notebook" in tqdm.__module__:  # a terminal, or Jupyter's widgets
        return tqdm(iterable, file=stream, disable=disable, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    kwargs.setdefault("ascii", True)
    kwargs.setdefault("ncols", 100)
    return _LogBar(iterable, file=_LineWriter(stream), **kwargs)
