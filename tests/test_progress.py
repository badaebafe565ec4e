"""Progress bars: tqdm frames on a terminal, plain periodic lines in a log."""

from __future__ import annotations

import io

from vaedft.data.generate import generate_dataset
from vaedft.physics import get_testbed
from vaedft.progress import LOG_INTERVAL_S, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_bar_writes_few_whole_lines():
    log = io.StringIO()
    with progress_bar(total=5000, desc="work", file=log) as bar:
        for _ in range(5000):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3, lines  # the first frame, the final one (a fast loop never waits LOG_INTERVAL_S)
    assert "work" in lines[-1] and "5000/5000" in lines[-1]
    assert LOG_INTERVAL_S >= 10


def test_off_a_terminal_the_interval_may_be_given():
    log = io.StringIO()
    with progress_bar(total=3, file=log, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert [line.split("|")[-1].split()[0] for line in log.getvalue().splitlines()][-1] == "3/3"
    assert len(log.getvalue().splitlines()) >= 4  # every update is a line now


def test_on_a_terminal_it_is_an_ordinary_bar():
    tty = _Terminal()
    with progress_bar(total=3, file=tty, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert "\r" in tty.getvalue()


def test_disabled_bar_writes_nothing():
    log = io.StringIO()
    with progress_bar(total=3, file=log, disable=True) as bar:
        bar.update(3)
    assert log.getvalue() == ""


def test_generation_with_progress_keeps_a_log_readable(tmp_path, capsys):
    generate_dataset(get_testbed("gaussian1d"), tmp_path / "d.h5", n=4, seed=0, progress=True)
    err = capsys.readouterr().err
    assert err and "\r" not in err


def test_forced_refreshes_and_nested_bars_stay_plain_and_sparse():
    """set_postfix forces a refresh on a terminal; in a log it waits for the interval like any update,
    and an inner bar's cursor movements do not reach the log."""
    log = io.StringIO()
    with progress_bar(total=3, desc="outer", file=log) as outer:
        for _ in range(3):
            with progress_bar(total=200, desc="inner", file=log) as inner:
                for i in range(200):
                    inner.update(1)
                    inner.set_postfix(loss=f"{1 / (i + 1):.3g}")
            outer.update(1)
    text = log.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert len(text.splitlines()) <= 12, text  # per bar its first and final line, not 200 frames
    assert sum("inner" in line and "200/200" in line for line in text.splitlines()) == 3
