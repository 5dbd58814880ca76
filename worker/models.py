"""Model files named by URI: a RefSTAR checkpoint on S3 is fetched once into a local cache.

``restore.checkpoint`` may be ``prior`` (the shipped face prior, ``refstar.prior``), a local
path or ``s3://bucket/prefix``: a checkpoint folder
(``meta.json`` + ``model.safetensors`` [+ ``ema.safetensors``]) or a training run folder, whose
highest ``checkpoints/step_*`` is taken, as ``refstar.checkpoint.latest`` does locally. Only the
files inference and fine-tuning read are fetched (never the optimizer state). The cache key is
the URI and the objects' ETags, so a replaced checkpoint is fetched again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from worker import storage
from worker.errors import ModelError

NEEDED = ("meta.json", "model.safetensors", "ema.safetensors")


def cache_root() -> Path:
    base = os.environ.get("REFSTAR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "refstar")
    return Path(base) / "checkpoints"


def _checkpoint_objects(uri: str) -> list[tuple[str, int, str]]:
    """The objects of the checkpoint folder ``uri`` names (itself, or a run's latest step)."""
    objs = list(storage.list(uri))
    names = {storage.relative_to(uri, u): (u, s, t) for u, s, t in objs}
    if "meta.json" in names:
        return [names[n] for n in NEEDED if n in names]
    steps = sorted({m.group(1) for n in names if (m := re.fullmatch(r"checkpoints/(step_\d+)/meta\.json", n))})
    if not steps:
        raise ModelError(f"no RefSTAR checkpoint at {uri} (expected meta.json + model.safetensors, "
                         f"or a training run folder with checkpoints/step_*)")
    return [names[f"checkpoints/{steps[-1]}/{n}"] for n in NEEDED if f"checkpoints/{steps[-1]}/{n}" in names]


def local_checkpoint(path: str) -> str:
    """A local path for ``path``: the shipped face prior for ``prior``, the cached copy for an
    ``s3://`` one, else ``path`` unchanged."""
    from refstar.prior import NAME, require_prior

    if path == NAME:
        return str(require_prior("restore.checkpoint=prior", "give a checkpoint, or '' to train from scratch"))
    if not path or not storage.is_s3(path):
        return path
    try:
        objs = _checkpoint_objects(path.rstrip("/"))
    except storage.StorageError as e:
        raise ModelError(f"cannot read the RefSTAR checkpoint {path}: {e}") from e
    key = hashlib.sha256("\n".join([path, *(f"{u}|{t}" for u, _, t in objs)]).encode()).hexdigest()[:20]
    dst = cache_root() / key
    if (dst / "meta.json").is_file():
        return str(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dst.parent))
    try:
        for uri, _, _ in objs:
            storage.download(uri, tmp / uri.rsplit("/", 1)[1])
        if not (tmp / "model.safetensors").is_file():
            raise ModelError(f"the RefSTAR checkpoint {path} has no model.safetensors")
        try:
            tmp.rename(dst)  # atomic: a reader sees the whole folder or none
        except OSError:  # another process won the race: its copy is the same
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dst)


def restorer_checkpoint(r) -> str:
    """The local checkpoint the restorer of ``r`` (a RestoreConfig) reads: "" when it reads
    none (every restorer but refstar, or refstar training from scratch)."""
    return local_checkpoint(r.checkpoint) if r.restorer == "refstar" else ""


def restorer_info(r, name: str | None = None) -> dict:
    """What the manifest says of the restorer ``name`` (default ``r.restorer``) built from ``r``
    (a RestoreConfig) by :func:`shared_restorer`."""
    name = name or r.restorer
    return {"name": name, "blind": r.blind} if name == "guided" and r.blind == "prior" else {"name": name}


def shared_restorer(r):
    """The restorer ``r`` (a RestoreConfig) names, as every item without adaptation uses it."""
    from refstar.restorer import make_restorer

    return make_restorer(r.restorer, device=r.device, checkpoint=restorer_checkpoint(r),
                         strength=r.strength, blind=r.blind)
