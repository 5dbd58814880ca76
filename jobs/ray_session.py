"""A Ray connection for a command that may have to start Ray itself, and must then leave no
process behind: not after it returns, not after Ctrl-C, not after SIGTERM.

``ray.shutdown()`` runs only when Python unwinds, and a process killed by SIGTERM's default
action never does: the local raylet, GCS, dashboard and agents it started outlive it (the agents
even ignore SIGTERM). So SIGTERM is turned into ``Terminated`` (``worker.signals``: the same
unwinding as Ctrl-C), and after ``ray.shutdown()`` whatever the session started and is still
alive is killed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from worker.signals import sigterm_unwinds

__all__ = ["RaySession", "ray_session", "sigterm_unwinds"]

log = logging.getLogger(__name__)

KILL_GRACE_S = 5.0  # after ray.shutdown(), how long its processes get before SIGKILL


def _children() -> list:
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _reap(procs: list) -> None:
    """Terminate, then kill, those of ``procs`` still alive (``psutil`` checks each is still the
    process it was, so a reused PID is never hit)."""
    import psutil

    alive = [p for p in procs if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=KILL_GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=KILL_GRACE_S)
    if alive:
        log.info("killed %d Ray process(es) that outlived ray.shutdown()", len(alive))


class RaySession:
    """Ray for one command: the one this process already uses, or one it connects to or starts
    (``start``), torn down by ``stop`` with every process that a new local Ray left behind."""

    def __init__(self) -> None:
        self.owned = False
        self._before: set[int] = set()

    def start(self, address: str | None = None, **init_kwargs):
        """Use the Ray this process is connected to, or connect to ``address`` (None: the cluster
        of the job this runs in, else a new local one); returns ``ray.init``'s context or None."""
        import ray

        if ray.is_initialized():
            return None
        self._before = {p.pid for p in _children()}
        handler = signal.getsignal(signal.SIGTERM)
        ctx = ray.init(address=address, **init_kwargs)
        self.owned = True
        if callable(handler) and threading.current_thread() is threading.main_thread():
            # ray.init installs a C++ handler that aborts the process on SIGTERM: put ours back
            signal.signal(signal.SIGTERM, handler)
        return ctx

    def stop(self) -> None:
        import ray

        if not self.owned:
            return
        self.owned = False
        # Ray's own processes, grabbed before shutdown orphans them
        started = [p for p in _children() if p.pid not in self._before]
        ray.shutdown()
        _reap(started)


@contextlib.contextmanager
def ray_session(address: str | None = None, **init_kwargs) -> Iterator[RaySession]:
    """``RaySession`` started on entry and stopped on the way out, however it is left."""
    session = RaySession()
    session.start(address, **init_kwargs)
    try:
        yield session
    finally:
        session.stop()
