"""Local copies of inputs that an actor's node cannot see (multi-node clusters).

An actor fetches the item it works on; a long job's actor must not keep every file it ever
fetched, and a killed actor's copies must not outlive the job. So the cache keeps the last
``keep`` inputs, makes its folder only when it first downloads (a single-node job never does),
and ``close`` removes the folder (also run when the cache is garbage-collected or the process
exits normally). A process that died without either (a crashed actor, before Ray restarts it)
leaves its folder; the folder's name carries its host name and PID, so the next cache made
on that host removes it (``worker.item.litter``).
"""

from __future__ import annotations

import os
import shutil
import uuid
import weakref
from collections import OrderedDict
from pathlib import Path

from worker import storage
from worker.item.litter import sweep_work_dirs, work_dir


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
        sweep_work_dirs(prefix)

    def path(self, local: str, uri: str) -> str:
        if os.path.exists(local):
            return local
        key = uuid.uuid5(uuid.NAMESPACE_URL, uri).hex
        if key in self._held:
            self._held.move_to_end(key)
            return str(self._held[key] / Path(local).name)
        if self.dir is None:
            self.dir = work_dir(self.prefix)
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
