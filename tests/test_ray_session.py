"""A command that started its own local Ray leaves no process behind: ``python -m jobs.restore``
with default options, stopped by SIGTERM or Ctrl-C mid-job (Ray's dashboard and agents used to
outlive it as orphans that ignore SIGTERM). No cluster fixture here: the Ray is the job's own."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.mediagen import FaceScene
from tests.test_segments import gop_video

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _actor_running(proc: psutil.Process) -> bool:
    for p in proc.children(recursive=True):
        try:
            if any(f"ray::{c}" in " ".join(p.cmdline()) for c in ACTORS):
                return True
        except psutil.Error:
            continue
    return False


ACTORS = ("AnalysisWorker", "RestoreWorker", "CombinedWorker")


def test_a_terminated_job_leaves_no_process_behind(tmp_path):
    sig, status = signal.SIGTERM, 143
    (tmp_path / "in").mkdir()
    gop_video(FaceScene(persons=("hanks",), size=(320, 256), face_px=110, seed=3), tmp_path / "in" / "clip.mp4",
              240, degrade=range(4, 8))
    log = (tmp_path / "job.log").open("w")
    job = subprocess.Popen([sys.executable, "-m", "jobs.restore", "--input", str(tmp_path / "in"),
                            "--output", str(tmp_path / "out"), "--set", "progress=false"],
                           cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    proc = psutil.Process(job.pid)
    try:
        end = time.monotonic() + 180
        while not _actor_running(proc):  # mid-job: Ray is up and an actor is at work
            assert job.poll() is None and time.monotonic() < end, (tmp_path / "job.log").read_text()[-3000:]
            time.sleep(0.2)
        ray_procs = proc.children(recursive=True)
        names = {p.name() for p in ray_procs}
        assert {"raylet", "gcs_server"} <= names, names
        job.send_signal(sig)
        assert job.wait(60) == status, (tmp_path / "job.log").read_text()[-3000:]
        _, alive = psutil.wait_procs(ray_procs, timeout=15)
        assert not alive, [(p.pid, p.name(), " ".join(p.cmdline())[:120]) for p in alive]
        assert "items without _DONE are redone by the next run" in (tmp_path / "job.log").read_text()
        assert not list((tmp_path / "out").rglob("_DONE"))
    finally:
        if job.poll() is None:
            job.kill()
        log.close()
