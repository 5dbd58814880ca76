"""The only module that imports Ray: it turns the pipeline's pure stages into actors and tasks.

Topology of one item (see DESIGN.md, "Ray topology"):
- video: the driver indexes packets and plans keyframe-aligned segments; analysis actors
  (each holding a face analyser, made once) decode+analyse segments in parallel; the driver
  merges the analyses and plans identities and references; restore actors (each holding the
  restorer; ``num_gpus`` from the caller) decode, restore, paste and encode one segment each into
  a deterministic segment file; one task joins the segments and remuxes the source's audio.
- album: analysis actors analyse images in parallel, the driver clusters, restore actors restore
  and write the images.
Only paths, segment bounds, face records and reference crops cross the object store; frames never
do. Actors restart (``max_restarts``) and replay lost calls (``max_task_retries``): every output
is a deterministic file name written atomically, so a replay just writes it again.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import ray

from worker import storage
from worker.config import Config
from worker.errors import MediaError
from worker.input_cache import InputCache
from worker.records import Face, ItemError
from worker.segments import (
    Segment,
    SegmentAnalysis,
    SegmentRestored,
    analyse_segment,
    restore_segment,
)

RESTARTS = 3  # a killed actor comes back this many times; its in-flight calls are replayed
CLOSE_TIMEOUT_S = 60  # how long shutdown waits for the actors to remove their input copies


@dataclasses.dataclass(frozen=True)
class _Failed:
    """A MediaError travelling back as a value (its two-argument constructor does not survive
    Ray's exception pickling, and a bad input is an answer, not a crash)."""

    file: str
    reason: str


def _carry_errors(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except MediaError as e:
            return _Failed(e.file, e.reason)

    return wrapper


def _unwrap(value: object) -> object:
    if isinstance(value, _Failed):
        raise MediaError(value.file, value.reason)
    return value


def _put(tmp: Path, uri: str) -> None:
    """Publish a finished local file at ``uri`` (atomic locally and on S3)."""
    if storage.is_s3(uri):
        storage.upload_file(tmp, uri)
    else:
        dst = storage.local_path(uri)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp, dst)


class _Metrics:
    def __init__(self) -> None:
        from ray.util.metrics import Counter, Histogram

        self.frames = Counter("refstar_frames_decoded", "video frames decoded by the actors",
                              tag_keys=("stage",))
        self.faces = Counter("refstar_faces_restored", "faces restored and pasted")
        self.latency = Histogram("refstar_stage_seconds", "seconds per actor call",
                                 boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 300], tag_keys=("stage",))


def _thresholds(analyzer) -> tuple[float, float, int]:
    """What planning needs from the face backend: its identity and track distance thresholds
    and its embedding length."""
    return analyzer.identity_max_dist, analyzer.track_max_embed_dist, analyzer.embed_dim


class AnalysisWorker:
    """Holds face analysers (one per detect config, normally just the job's); decodes+analyses
    video segments and album images. Calls take the item's calibrated config."""

    def __init__(self, cfg: Config):
        self._analyzers: dict = {}
        self._analyzer(cfg)  # load the models now, not inside the first item
        self.cache = InputCache()
        self.metrics = _Metrics()

    def _analyzer(self, cfg: Config):
        from worker.faces.base import make_analyzer

        if cfg.detect not in self._analyzers:
            self._analyzers[cfg.detect] = make_analyzer(cfg.detect)
        return self._analyzers[cfg.detect]

    def thresholds(self, cfg: Config) -> tuple[float, float, int]:
        return _thresholds(self._analyzer(cfg))

    def close(self) -> None:
        """Remove this actor's input copies (``Pools.shutdown`` calls it: ``ray.kill`` skips
        the process's exit handlers)."""
        self.cache.close()

    @_carry_errors
    def analyse_segment(self, cfg: Config, src: str, uri: str, info, seg: Segment) -> SegmentAnalysis:
        t = time.monotonic()
        out = analyse_segment(self.cache.path(src, uri), info, seg, self._analyzer(cfg), cfg)
        self.metrics.frames.inc(out.analysis.n_frames, tags={"stage": "analyse"})
        self.metrics.latency.observe(time.monotonic() - t, tags={"stage": "analyse_segment"})
        return out

    @_carry_errors
    def analyse_image(self, cfg: Config, src: str, uri: str) -> list[Face]:
        """Faces of one album image, measured as ``album_item`` measures them."""
        from worker.album_item import analyse_image

        return analyse_image(Path(self.cache.path(src, uri)), self._analyzer(cfg), cfg)


class RestoreWorker:
    """Holds the restorer; restores+pastes+encodes segments and restores album images."""

    def __init__(self, cfg: Config):
        self._restorers: dict = {}
        if not _adapting(cfg):  # an adapted restorer arrives with each item's calls
            self._restorer(cfg)
        self._stage: tuple[tuple, object] | None = None
        self._past_stats: dict[str, int] = {}  # counters of the stages replaced so far
        self.cache = InputCache()
        self.metrics = _Metrics()

    def _restorer(self, cfg: Config):
        from refstar.restorer import make_restorer
        from worker.models import local_checkpoint

        r = cfg.restore
        key = (r.restorer, r.device, r.checkpoint, r.strength)
        if key not in self._restorers:
            self._restorers[key] = make_restorer(r.restorer, device=r.device,
                                                 checkpoint=local_checkpoint(r.checkpoint),
                                                 strength=r.strength)
        return self._restorers[key]

    def _stage_for(self, item: str, cfg: Config, adapted: tuple | None = None):
        """``adapted``: ``adapt_item``'s ``(net, info)`` for this item, None without adaptation."""
        # reference features are computed once per reference and item (ref ids repeat across items)
        from worker.pipeline import item_restorer_from
        from worker.restore import FaceRestoreStage

        if self._stage is None or self._stage[0] != (item, cfg):
            restorer = self._restorer(cfg) if adapted is None else item_restorer_from(*adapted, cfg.restore)
            self._past_stats = self.stats()
            self._stage = ((item, cfg), FaceRestoreStage(cfg, restorer))
        return self._stage[1]

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        """Remove this actor's input copies (``Pools.shutdown`` calls it: ``ray.kill`` skips
        the process's exit handlers)."""
        self.cache.close()

    def stats(self) -> dict[str, int]:
        """Restorer batch counters (``FaceRestoreStage.stats``) summed over this actor process's
        stages; a restarted actor starts again from zero."""
        out = dict(self._past_stats)
        if self._stage is not None:
            for k, v in self._stage[1].stats().items():
                out[k] = out.get(k, 0) + v
        return out

    @_carry_errors
    def restore_segment(self, cfg: Config, item: str, src: str, uri: str, info, seg: Segment,
                        faces: list[Face], refs: dict, dst_uri: str, want: set,
                        adapted: tuple | None = None) -> SegmentRestored:
        t = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix="refstar-seg-"))
        try:
            local = tmp / Path(dst_uri).name
            out = restore_segment(self.cache.path(src, uri), info, seg, faces, refs,
                                  self._stage_for(item, cfg, adapted), str(local), cfg.output, want)
            _put(local, dst_uri)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out.path = dst_uri
        self.metrics.frames.inc(seg.frames, tags={"stage": "restore"})
        self.metrics.faces.inc(len(out.restored))
        self.metrics.latency.observe(time.monotonic() - t, tags={"stage": "restore_segment"})
        return out

    @_carry_errors
    def restore_image(self, cfg: Config, item: str, src: str, uri: str, faces: list[Face], refs: dict,
                      dst_uri: str, want: set, adapted: tuple | None = None) -> tuple[list[int], list]:
        """Restore one album image into ``dst_uri``; returns the positions of restored faces
        and the report samples ``(position, before, after)``. MediaError on unreadable/unwritable."""
        from worker.album_item import restore_image
        from worker.report import thumbnails

        samples = []

        def sink(face, before, after):
            k = next(i for i, f in enumerate(faces) if f is face)
            if k in want:
                samples.append((k, *thumbnails(before, after)))

        tmp = Path(tempfile.mkdtemp(prefix="refstar-img-"))
        try:
            local = tmp / Path(dst_uri).name
            restore_image(Path(self.cache.path(src, uri)), local, faces, refs,
                          self._stage_for(item, cfg, adapted), cfg, sink)
            _put(local, dst_uri)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.metrics.faces.inc(sum(f.restored for f in faces))
        return [k for k, f in enumerate(faces) if f.restored], samples


def _adapting(cfg: Config) -> bool:
    return cfg.restore.restorer == "refstar" and cfg.restore.adapt


@ray.remote(max_retries=1)
def _adapt(crops_by_identity: dict, cfg: Config) -> tuple:
    from worker.pipeline import adapt_net

    net, info = adapt_net(crops_by_identity, cfg)
    return (net.cpu() if net is not None else None), info  # the driver may have no GPU


def adapt_item(crops_by_identity: dict, cfg: Config, opts: PoolOptions) -> tuple:
    """RefSTAR adapted on one item's faces in a task with a restore actor's resources (its GPU
    when there is one): ``(net or None, manifest info)``, see ``worker.pipeline.adapt_net``."""
    task = _adapt.options(num_cpus=opts.restore_cpus, num_gpus=opts.restore_gpus)
    return ray.get(task.remote(crops_by_identity, cfg))


class _AlbumAnalyse:
    """Ray Data UDF: rows ``{name, src, uri}`` -> ``+ {faces, error_file, error}``."""

    def __init__(self, cfg: Config):
        self.cfg, self.worker = cfg, AnalysisWorker(cfg)

    def __call__(self, batch: dict) -> dict:
        n = len(batch["name"])
        faces, err_file, err = np.empty(n, dtype=object), [""] * n, [""] * n
        for k in range(n):
            out = self.worker.analyse_image(self.cfg, str(batch["src"][k]), str(batch["uri"][k]))
            if isinstance(out, _Failed):
                err_file[k], err[k] = out.file, out.reason
            faces[k] = [] if isinstance(out, _Failed) else out
        return {"name": batch["name"], "faces": faces, "error_file": np.array(err_file),
                "error": np.array(err)}


class _AlbumRestore:
    """Ray Data UDF: rows ``{name, src, uri, faces, dst, want}`` -> ``{name, restored, samples,
    error_file, error}``; the restorer and the item's reference features live in the actor."""

    def __init__(self, cfg: Config, item: str, refs: dict, adapted: tuple | None):
        self.cfg, self.item, self.refs, self.worker = cfg, item, refs, RestoreWorker(cfg)
        self.adapted = adapted

    def __call__(self, batch: dict) -> dict:
        n = len(batch["name"])
        restored, samples = np.empty(n, dtype=object), np.empty(n, dtype=object)
        err_file, err = [""] * n, [""] * n
        for k in range(n):
            out = self.worker.restore_image(self.cfg, self.item, str(batch["src"][k]), str(batch["uri"][k]),
                                            list(batch["faces"][k]), self.refs, str(batch["dst"][k]),
                                            set(batch["want"][k]), self.adapted)
            if isinstance(out, _Failed):
                err_file[k], err[k] = out.file, out.reason
                out = ([], [])
            restored[k], samples[k] = out
        return {"name": batch["name"], "restored": restored, "samples": samples,
                "error_file": np.array(err_file), "error": np.array(err)}


def _rows(ds, progress: Callable[[], None] | None) -> dict[str, dict]:
    out = {}
    for row in ds.iter_rows():
        out[str(row["name"])] = row
        if progress is not None:
            progress()
    return out


def album_analyse(cfg: Config, rows: list[dict], opts: PoolOptions,
                  progress: Callable[[], None] | None = None) -> dict[str, list[Face] | MediaError]:
    """Faces of every album image (``rows``: name, src, uri) through a Ray Data pipeline on a
    pool of analysis actors; an unreadable image gives its MediaError."""
    from ray.data import ActorPoolStrategy, from_items

    _quiet_data(cfg)
    ds = from_items(rows).map_batches(
        _AlbumAnalyse, fn_constructor_args=(cfg,), batch_size=opts.album_batch, batch_format="numpy",
        compute=ActorPoolStrategy(min_size=1, max_size=max(1, opts.analysis_actors)),
        num_cpus=opts.analysis_cpus)
    return {name: MediaError(r["error_file"], r["error"]) if r["error"] else list(r["faces"])
            for name, r in _rows(ds, progress).items()}


def album_restore(cfg: Config, item: str, rows: list[dict], refs: dict, opts: PoolOptions,
                  adapted: tuple | None = None, progress: Callable[[], None] | None = None
                  ) -> dict[str, tuple[list[int], list] | MediaError]:
    """Restore and write album images (``rows``: name, src, uri, faces, dst, want) on a pool of
    restore actors (``num_gpus`` per actor from ``opts``); per image the restored face positions
    and report samples, or the MediaError that stopped it."""
    from ray.data import ActorPoolStrategy, from_items

    _quiet_data(cfg)
    ds = from_items(rows).map_batches(
        _AlbumRestore, fn_constructor_args=(cfg, item, refs, adapted), batch_size=opts.album_batch,
        batch_format="numpy", compute=ActorPoolStrategy(min_size=1, max_size=max(1, opts.restore_actors)),
        num_cpus=opts.restore_cpus, num_gpus=opts.restore_gpus or None)
    return {name: MediaError(r["error_file"], r["error"]) if r["error"]
            else ([int(k) for k in r["restored"]], list(r["samples"]))
            for name, r in _rows(ds, progress).items()}


def _quiet_data(cfg: Config) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = bool(cfg.progress)


@ray.remote(num_cpus=0, max_retries=3)
@_carry_errors
def _join(src: str, uri: str, info, parts: list[str], dst_uri: str) -> int:
    from worker.segments import join_segments

    tmp = Path(tempfile.mkdtemp(prefix="refstar-join-"))
    cache = InputCache(keep=len(parts) + 1, prefix="refstar-join-in-")
    try:
        local_parts = [cache.path(p, p) if not storage.is_s3(p)
                       else str(storage.download(p, tmp / "parts" / f"{k:05d}{Path(p).suffix}"))
                       for k, p in enumerate(parts)]
        local = tmp / Path(dst_uri).name
        n = join_segments(cache.path(src, uri), info, local_parts, str(local))
        _put(local, dst_uri)
        return n
    finally:
        cache.close()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclasses.dataclass
class PoolOptions:
    analysis_actors: int = 2
    restore_actors: int = 1
    analysis_cpus: float = 1.0  # CPUs reserved per analysis actor
    restore_cpus: float = 1.0
    restore_gpus: float = 0.0  # per restore actor; 0 on CPU machines and in tests
    segment_frames: int = 250  # minimum frames per segment (GOPs are grouped up to it)
    in_flight_per_actor: int = 2  # calls queued per actor: keeps actors busy, memory bounded
    album_batch: int = 8  # images per Ray Data batch in album pipelines


@ray.remote(num_cpus=0)
def _backend_thresholds(cfg: Config) -> tuple[float, float, int]:
    from worker.faces.base import make_analyzer

    return _thresholds(make_analyzer(cfg.detect))


class Pools:
    """Named analysis and restore actors for one job (visible on the Ray dashboard), made on
    first use: a job of albums only never starts the video actors."""

    def __init__(self, cfg: Config, opts: PoolOptions, job: str | None = None):
        self.opts, self.cfg = opts, cfg
        self.job = job or uuid.uuid4().hex[:8]
        self._analysis: list | None = None
        self._restore: list | None = None
        self._calibrated: dict = {}

    @property
    def analysis(self) -> list:
        if self._analysis is None:
            ana, o = ray.remote(AnalysisWorker), self.opts
            self._analysis = [ana.options(name=f"refstar-{self.job}-analysis-{i}", num_cpus=o.analysis_cpus,
                                          max_restarts=RESTARTS, max_task_retries=RESTARTS).remote(self.cfg)
                              for i in range(max(1, o.analysis_actors))]
        return self._analysis

    @property
    def restore(self) -> list:
        if self._restore is None:
            res, o = ray.remote(RestoreWorker), self.opts
            self._restore = [res.options(name=f"refstar-{self.job}-restore-{i}", num_cpus=o.restore_cpus,
                                         num_gpus=o.restore_gpus, max_restarts=RESTARTS,
                                         max_task_retries=RESTARTS).remote(self.cfg)
                             for i in range(max(1, o.restore_actors))]
        return self._restore

    def calibrate(self, cfg: Config) -> tuple[Config, int]:
        """Planning needs the backend-calibrated thresholds, which only an analyser knows
        (asked once per detect config and job)."""
        from worker.config import with_backend_defaults

        if cfg.detect not in self._calibrated:
            ref = (self._analysis[0].thresholds.remote(cfg) if self._analysis
                   else _backend_thresholds.remote(cfg))
            self._calibrated[cfg.detect] = ray.get(ref)
        ident, track, dim = self._calibrated[cfg.detect]
        return with_backend_defaults(cfg, ident, track), dim

    @staticmethod
    def share(obj: object):
        """Put ``obj`` (e.g. an item's reference crops) in the object store once for many calls."""
        return ray.put(obj)

    def shutdown(self) -> None:
        actors = (self._analysis or []) + (self._restore or [])
        try:
            ray.get([a.close.remote() for a in actors], timeout=CLOSE_TIMEOUT_S)
        except Exception:  # noqa: BLE001, S110 - a dead or stuck actor keeps its copies; kill anyway
            pass
        for actor in actors:
            ray.kill(actor, no_restart=True)


def _owned(value: object) -> object:
    """A copy that owns its arrays. ``ray.get`` hands numpy arrays back as zero-copy views of
    the object store; the driver keeps an item's face records (crops, landmarks) until the item
    ends, and those views would pin every segment's result in the store meanwhile, so the
    store would grow with video length."""
    return copy.deepcopy(value)


def fan_out(actors: list, method: str, calls: Iterable[tuple], per_actor: int = 2,
            on_result: Callable[[int, object], None] | None = None, tolerate: tuple = ()) -> list:
    """Run ``actor.method(*args)`` for every args tuple across ``actors``, at most ``per_actor``
    calls queued on each (``ray.wait`` backpressure); results in call order. A failed call whose
    original exception is one of ``tolerate`` gives that exception as its result; any other
    failure raises its original exception (a ``MediaError`` stays a ``MediaError``)."""
    load = {i: 0 for i in range(len(actors))}
    pending: dict = {}
    results: dict[int, object] = {}
    todo = iter(enumerate(calls))
    more = True
    try:
        while True:
            while more and len(pending) < per_actor * len(actors):
                nxt = next(todo, None)
                if nxt is None:
                    more = False
                    break
                k, args = nxt
                a = min(load, key=load.get)
                load[a] += 1
                pending[getattr(actors[a], method).remote(*args)] = (k, a)
            if not pending:
                break
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            k, a = pending.pop(ref)
            load[a] -= 1
            try:
                results[k] = _owned(_unwrap(ray.get(ref)))
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(e.cause, Exception) else e
                if not isinstance(cause, tolerate):
                    raise cause from None
                results[k] = cause
            except MediaError as e:
                if not isinstance(e, tolerate):
                    raise
                results[k] = e
            if on_result is not None:
                on_result(k, results[k])
    finally:
        for ref in pending:  # one failure fails the item; drop its other queued calls
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001, S110 - best effort; the calls are idempotent anyway
                pass
    return [results[k] for k in range(len(results))]


def join(src: str, uri: str, info, parts: list[str], dst_uri: str) -> int:
    """Join the segment files into ``dst_uri`` in one task (see ``segments.join_segments``)."""
    try:
        return _unwrap(ray.get(_join.remote(src, uri, info, parts, dst_uri)))
    except ray.exceptions.RayTaskError as e:
        raise (e.cause if isinstance(e.cause, Exception) else e) from None


def error_of(e: BaseException, src: str) -> ItemError:
    """An item-level error record for a failure that reached the driver."""
    if isinstance(e, MediaError):
        return ItemError(e.file, e.reason, "item")
    return ItemError(src, f"internal error: {type(e).__name__}: {e}".splitlines()[0], "item")
