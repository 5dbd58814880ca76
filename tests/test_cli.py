"""Command-line behaviour a user relies on: clear errors, exit codes, faces left alone."""

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import pytest

from tests.mediagen import FaceScene, write_video
from tests.outputs import item_dirs
from worker.cli import main


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "portrait.png"
    cv2.imwrite(str(path), FaceScene(persons=("t1_2",), size=(320, 256), face_px=110).render(0))
    return path


def test_missing_insightface_pack_is_a_clear_error(photo, tmp_path, capsys):
    code = main(["restore", str(photo), "-o", str(tmp_path), "-q", "--set", "backend=insightface",
                 "--set", f"detect.insightface_root={tmp_path / 'packs'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "packs" / "models" / "buffalo_l") in err


def test_faces_under_the_size_floor_are_counted_and_untouched(photo, tmp_path):
    assert main(["restore", str(photo), "-o", str(tmp_path), "-q",
                 "--set", "restore.min_face_px=400", "--set", "restore.crop_size=256"]) == 0
    (item,) = item_dirs(tmp_path)
    m = json.loads((item / "manifest.json").read_text())
    assert m["counts"]["faces"] == 1 and m["counts"]["faces_too_small"] == 1
    assert m["counts"]["faces_restored"] == 0 and m["faces"][0]["skipped"] == "too_small"
    assert (item / "restored" / "portrait.png").read_bytes() == photo.read_bytes()


def test_unknown_restorer_and_backend(photo, tmp_path, capsys):
    assert main(["restore", str(photo), "-o", str(tmp_path), "-q", "--set", "restorer=magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["restore", str(photo), "-o", str(tmp_path), "-q", "--set", "restorer=refstar",
                 "--set", f"restore.checkpoint={tmp_path / 'missing'}"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_quiet_or_not_an_item_is_done_once(photo, tmp_path, capsys):
    """Progress lines are presentation: a run with -q finds the item a run without it finished."""
    assert main(["restore", str(photo), "-o", str(tmp_path), "--set", "restore.crop_size=256"]) == 0
    capsys.readouterr()
    assert main(["restore", str(photo), "-o", str(tmp_path), "-q", "--set", "restore.crop_size=256"]) == 0
    assert "already done" in capsys.readouterr().out
    assert len(item_dirs(tmp_path)) == 1
    index = (tmp_path / "index.html").read_text()  # the batch page, rewritten by each run
    assert "<h1>1 item</h1>" in index and "portrait.png" in index and index.count("class=item>") == 1


def test_an_output_that_is_a_file_is_one_clear_line(photo, tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    assert main(["restore", str(photo), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"refstar: output {out} is a file, not a folder\n"


def _restore_until_it_writes(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path, list[str]]:
    """``refstar restore`` of a 72-frame clip in a child process (its temp folder ``tmp``), stopped
    reading at the moment its restore pass begins writing the video (its first progress line; with
    24 frames the pass once finished before the signal arrived)."""
    clip, tmp = tmp_path / "clip.mp4", tmp_path / "tmp"
    tmp.mkdir()
    write_video(FaceScene(persons=("t1_2",), size=(320, 256), face_px=110), clip, 72)
    env = {**os.environ, "TMPDIR": str(tmp)}
    # a test run started in the background of a non-interactive shell ignores SIGINT, and a child
    # inherits that (it would then restore to the end): the child gets the default back
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "restore", str(clip), "-o", str(tmp_path / "out"),
                             "--set", "restore.crop_size=256"], env=env, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in proc.stderr:  # progress lines: stop once the restore pass runs
        lines.append(line)
        if line.startswith("restore clip.mp4"):
            break
    return proc, clip, tmp, lines


@pytest.mark.slow
@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_stopped_restore_exits_cleanly_and_leaves_nothing_partial(tmp_path, sig, status, word):
    """Ctrl-C (or SIGTERM) mid-video: one line, exit 130 (143), no traceback, no partial file in
    the output and no work folder in the temp directory."""
    proc, _, tmp, lines = _restore_until_it_writes(tmp_path)
    proc.send_signal(sig)
    rest = proc.stderr.read()
    assert proc.wait(60) == status, "".join(lines) + rest
    assert rest.strip().splitlines()[-1].startswith(f"refstar: {word}; partial files were removed")
    assert "Traceback" not in rest
    left = [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".") or p.name == "_DONE"]
    assert not left and not list(tmp.iterdir()), (left, list(tmp.iterdir()))


@pytest.mark.slow
def test_the_next_run_sweeps_what_a_killed_one_left(tmp_path, monkeypatch):
    """kill -9 mid-video leaves a partial video beside the outputs and a work folder in the temp
    directory; the next run of that item removes both, and its own outputs are complete."""
    proc, clip, tmp, _ = _restore_until_it_writes(tmp_path)
    proc.kill()
    proc.wait(60)
    partial = [p for p in (tmp_path / "out").rglob(".*") if ".partial-" in p.name]
    assert partial and [p for p in tmp.iterdir() if p.name.startswith("refstar-item-")]  # the litter
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert main(["restore", str(clip), "-o", str(tmp_path / "out"), "--set", "restore.crop_size=256"]) == 0
    assert not [p for p in (tmp_path / "out").rglob(".*")]
    assert not list(tmp.iterdir())
    (item,) = item_dirs(tmp_path / "out")
    assert (item / "_DONE").is_file()


@pytest.mark.parametrize("cmd", ["restore", "run", "trigger", "submit", "train", "status", "demo", "eval"])
def test_help_shows_defaults_and_no_markup(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "``" not in out and "(default: None)" not in out
    expect = {"run": "(default: 250)", "trigger": "(default: 20)", "train": "(default: small)",
              "demo": "(default: refstar-demo)"}.get(cmd)
    assert expect is None or expect in out, out


def test_inputs_and_outputs_are_spelt_alike_everywhere(photo, tmp_path):
    from jobs.restore import parse_args as run_args
    from jobs.s3_trigger import parse_args as trigger_args
    from jobs.train import add_train_arguments

    assert main(["restore", "-i", str(photo), "-o", str(tmp_path / "a"), "-q"]) == 0
    assert [p.name for p in (tmp_path / "a").iterdir() if p.is_dir()] == [
        p.name for p in (tmp_path / "a").iterdir() if p.name.startswith("portrait-")]
    r = run_args(["-i", "in", "-o", "out"])
    assert (r.input, r.output) == ("in", "out")
    t = trigger_args(["--queue", "q", "-i", "s3://b/in/", "-o", "s3://b/out/"])
    assert (t.input, t.output) == ("s3://b/in/", "s3://b/out/")
    import argparse

    new = add_train_arguments(argparse.ArgumentParser()).parse_args(["-i", "d", "-o", "r"])
    old = add_train_arguments(argparse.ArgumentParser()).parse_args(["--data", "d", "--out", "r"])
    assert (new.data, new.out) == (old.data, old.out) == ("d", "r")


def test_restore_without_an_input_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["restore", "-o", str(tmp_path)])
    assert e.value.code == 2 and "give at least one INPUT" in capsys.readouterr().err


def test_status_shows_settings_and_flags_siblings(photo, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["restore", str(photo), "-o", out, "-q"]) == 0
    assert main(["restore", str(photo), "-o", out]) == 0  # progress on: the same item, nothing redone
    assert main(["restore", str(photo), "-o", out, "-q", "--fidelity", "0.5"]) == 0
    capsys.readouterr()
    assert main(["status", "-o", out, "--json"]) == 0
    items = {i["item_id"]: i for i in json.loads(capsys.readouterr().out)["items"]}
    assert len(items) == 2 and all(i["state"] == "done" and i["restorer"] == "guided" for i in items.values())
    plain, half = sorted(items.values(), key=lambda i: i["settings"].get("restore.fidelity", 1.0), reverse=True)
    assert plain["settings"] == {"restore.fidelity": 1.0} and half["settings"] == {"restore.fidelity": 0.5}
    assert plain["siblings"] == [half["item_id"]] and half["siblings"] == [plain["item_id"]]
    assert main(["status", "-o", out]) == 0
    text = capsys.readouterr().out
    assert "fidelity=0.5" in text and "RESTORER" in text
    assert f"has 2 items made with different settings: {', '.join(sorted(items))}" in text


def test_json_logs_and_presentation_options_redo_nothing(photo, tmp_path):
    """--log-format json: every stderr line is a JSON object (progress and warnings); -q,
    --log-level and --log-format never change the item id, so a finished item is not redone."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "worker.cli", "restore", str(photo), "-o", str(out)]
    first = subprocess.run([*cmd, "-q", "--persons", "99"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*cmd, "--persons", "99", "--log-format", "json", "--log-level", "info", "--force"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    recs = [json.loads(line) for line in again.stderr.splitlines() if line.strip()]
    assert any(r["level"] == "warning" and "no person '99'" in r["msg"] for r in recs), recs
    assert any(r["logger"] == "worker.progress" or "analyse" in r["msg"] for r in recs), recs
    assert all({"t", "level", "logger", "msg"} <= set(r) for r in recs)
    assert len([p for p in out.iterdir() if p.is_dir() and not p.name.startswith("_")]) == 1
    skip = subprocess.run([*cmd, "--persons", "99", "--log-format", "json"], capture_output=True, text=True, timeout=300)
    assert "already done" in skip.stdout + skip.stderr
