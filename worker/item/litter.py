"""Work folders and partial files named by their owner, so that the next run cleans up after a
killed one.

A process killed with ``kill -9`` (or by the OOM killer, or a crashed actor) runs no cleanup:
its work folder in the temp directory (an S3 item's whole downloaded input) and its
half-written ``.restored.partial-*`` file beside the outputs would stay for good. Their names
carry this host's name and the owner's PID; whoever runs next on this host removes those whose
process no longer runs. The host name keeps containers that share a temp folder (or an output
folder) but not a PID namespace from judging each other's processes.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import tempfile
import uuid
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())


def owner() -> str:
    """``<host>-<pid>``: this process, as the names of what it leaves behind spell it."""
    return f"{_host()}-{os.getpid()}"


def dead_owner(who: str) -> bool:
    """Whether ``who`` (an :func:`owner` string) is a process of this host that no longer runs."""
    host, _, pid = who.rpartition("-")
    return host == _host() and pid.isdigit() and not alive(int(pid))


def _local_owner(name: str, mark: str) -> int | None:
    """The PID in ``name`` (``...<mark><host>-<pid>-...``) when this host made it, else None."""
    m = re.search(rf"{re.escape(mark)}{re.escape(_host())}-(\d+)-", name)
    return int(m.group(1)) if m else None


def owned_by_the_dead(name: str, mark: str) -> bool:
    """Whether ``name`` was made by a process of this host that no longer runs."""
    pid = _local_owner(name, mark)
    return pid is not None and not alive(pid)


def owned_here(name: str, mark: str) -> bool:
    """Whether ``name`` was made by a process of this host (whose PID then tells if it lives)."""
    return _local_owner(name, mark) is not None


_swept: set[tuple[str, str]] = set()  # (temp dir, prefix) this process has swept


def work_dir(prefix: str) -> Path:
    """A fresh folder in the temp directory, ``<prefix><host>-<pid>-<random>``. The first one a
    process makes with a prefix removes this host's folders of that prefix whose process died
    (a dead process's folders only appear before the process that replaces it starts)."""
    key = (tempfile.gettempdir(), prefix)
    if key not in _swept:
        sweep_work_dirs(prefix)
        _swept.add(key)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner()}-"))


def sweep_work_dirs(prefix: str) -> int:
    """Remove this host's ``prefix`` folders in the temp directory whose process no longer runs;
    returns how many. A reused PID keeps its folder until that process ends too."""
    gone = 0
    for p in Path(tempfile.gettempdir()).glob(f"{glob.escape(prefix)}*"):
        if p.is_dir() and owned_by_the_dead(p.name, prefix):
            shutil.rmtree(p, ignore_errors=True)
            gone += 1
    return gone


def partial_name(dst: Path) -> Path:
    """The temporary name ``dst`` is written under before its rename: hidden, beside it, owned."""
    return dst.with_name(f".{dst.stem}.partial-{owner()}-{uuid.uuid4().hex[:8]}{dst.suffix}")


def sweep_partials(folder: Path) -> int:
    """Remove the partial files under ``folder`` (recursively) left by dead processes of this
    host; returns how many."""
    if not folder.is_dir():
        return 0
    gone = 0
    for p in folder.rglob(".*.partial-*"):
        if p.is_file() and owned_by_the_dead(p.name, ".partial-"):
            p.unlink(missing_ok=True)
            gone += 1
    return gone
