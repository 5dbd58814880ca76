"""Progress lines: no rate before there is one to measure, redrawn in place on a terminal."""

from __future__ import annotations

import io
import re
import time

from worker.progress import BatchProgress, Progress


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


def test_the_batch_eta_scales_the_time_worked_by_the_bytes_left(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    b = BatchProgress([400, 100, 100, 400], stream=out)
    clock[0] += 5  # deciding that the first item was done already: no work, no rate yet
    b.finished(0, worked=False)
    assert out.getvalue() == "batch: 1/4 items (40% of the bytes) in 0:00:05\n"
    clock[0] += 15  # 100 bytes worked in 20 s of batch time: 500 bytes left take 100 s
    b.finished(1)
    assert out.getvalue().splitlines()[1] == "batch: 2/4 items (50% of the bytes) in 0:00:20, ETA 0:01:40"
    b.finished(2)
    b.finished(3)  # the last item: the summary line says the rest
    assert len(out.getvalue().splitlines()) == 3


def test_a_batch_of_several_inputs_prints_its_eta(tmp_path, capsys):
    import cv2

    from tests.mediagen import FaceScene
    from worker.cli import main

    for k in range(2):
        cv2.imwrite(str(tmp_path / f"p{k}.png"), FaceScene(persons=("t1_2",), size=(256, 192), face_px=90).render(k))
    assert main(["restore", str(tmp_path / "p0.png"), str(tmp_path / "p1.png"), "-o", str(tmp_path / "out"),
                 "--set", "restore.crop_size=256"]) == 0
    err = capsys.readouterr().err
    assert "[1/2]" in err and "[2/2]" in err
    assert re.search(r"^batch: 1/2 items \(\d+% of the bytes\) in 0:\d\d:\d\d, ETA 0:\d\d:\d\d$", err, re.M), err


def test_the_item_eta_adds_the_later_stages_measured_on_an_earlier_item(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    p = Progress("analyse x", 100, stream=out, interval=0, then=2.0)  # restoring takes twice as long
    clock[0] = 10.0
    p.update(50)  # 5 frames/s: 10 s of analysis left, then 20 s x 2 of restoring
    assert out.getvalue() == "analyse x: 50/100 frames (50%) 5.0/s ETA 0:00:10, item ETA 0:00:50\n"
