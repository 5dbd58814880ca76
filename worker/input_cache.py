"""Local copies of inputs that an actor's node cannot see (multi-node clusters).

An actor fetches the item it works on; a long job's actor must not keep every file it ever
fetched, and a killed actor's copies must not outlive the job. So the cache keeps the last
``keep`` inputs, makes its folder only when it first downloads (a single-node job never does),
and ``close`` removes the folder (also run when the cache is garbage-collected or the process
exits normally). A process that died without either (a crashed actor, before Ray restarts it)
leaves its folder; the folder's name carries its host name and PID, so the next cache made
on that host removes it (the host name keeps containers that share a temp folder but not a
PID namespace from judging each other's processes).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import tempfile
import uuid
import weakref
from collections import OrderedDict
from pathlib import Path

from worker import storage


class InputCache:
    """``path(local, uri)``: ``local`` when this node sees it, else a local copy of ``uri``.

    ``keep``: inputs kept at once (an actor works on one item at a time; two let the next item's
    first call arrive while the last one's retries may still come)."""

    def __init__(self, keep: int = 2, prefix: str = "refstar-in-"):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.keep, self.prefix = keep, prefix
        self.dir: Path | None = None
        self._held: OrderedDict[str, Path] = OrderedDict()  # key -> its folder, oldest first
        self._finalizer: weakref.finalize | None = None
        sweep_dead(prefix)

    def path(self, local: str, uri: str) -> str:
        if os.path.exists(local):
            return local
        key = uuid.uuid5(uuid.NAMESPACE_URL, uri).hex
        if key in self._held:
            self._held.move_to_end(key)
            return str(self._held[key] / Path(local).name)
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"{_owner(self.prefix)}{os.getpid()}-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.dir), True)
        folder = self.dir / key
        dst = storage.download(uri, folder / Path(local).name)
        self._held[key] = folder
        while len(self._held) > self.keep:
            _, old = self._held.popitem(last=False)
            shutil.rmtree(old, ignore_errors=True)
        return str(dst)

    def close(self) -> None:
        """Remove every copy and the folder; the cache can be used again afterwards."""
        if self._finalizer is not None:
            self._finalizer()
        self.dir, self._finalizer = None, None
        self._held.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _owner(prefix: str) -> str:
    """``prefix`` plus this host's name: folders this host may judge by PID."""
    return f"{prefix}{re.sub(r'[^A-Za-z0-9.]', '_', socket.gethostname())}-"


def sweep_dead(prefix: str = "refstar-in-") -> int:
    """Remove this host's cache folders (in the temp folder) whose process no longer runs;
    returns how many. A reused PID keeps its folder until that process ends too."""
    owner = _owner(prefix)
    pattern = re.compile(rf"{re.escape(owner)}(\d+)-[^/]+")
    gone = 0
    for p in Path(tempfile.gettempdir()).glob(f"{glob.escape(owner)}*"):
        m = pattern.fullmatch(p.name)
        if m and p.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            gone += 1
    return gone
