"""Progress lines: no rate before there is one to measure, redrawn in place on a terminal."""

from __future__ import annotations

import io
import time

from worker.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_first_line_waits_for_a_rate_worth_printing():
    out = io.StringIO()
    p = Progress("analyse x", 100, stream=out, interval=0.2)
    p.update(5)  # 1 ms in: a rate would read 5000/s
    assert out.getvalue() == ""
    time.sleep(0.25)
    p.update(5)
    line = out.getvalue()
    assert line.startswith("analyse x: 10/100 frames (10%)") and line.endswith("\n")
    rate = float(line.split(")")[1].split("/s")[0])
    assert 10 <= rate <= 60  # 10 frames in about 0.25 s


def test_a_terminal_gets_one_line_redrawn_and_a_pipe_gets_lines():
    tty = Tty()
    p = Progress("restore x", 3, stream=tty, interval=0)
    for _ in range(3):
        p.update()
    p.done()
    text = tty.getvalue()
    assert text.count("\r") == 4 and text.count("\n") == 1 and text.endswith("\n")
    assert "\x1b[K" in text
    pipe = io.StringIO()
    q = Progress("restore x", 3, stream=pipe, interval=0)
    for _ in range(3):
        q.update()
    q.done()
    assert pipe.getvalue().count("\n") == 4 and "\r" not in pipe.getvalue()
