"""The pipeline's pure stages as Ray actors and tasks (``worker.cluster.ray_pools`` places and sizes
the actors and spreads calls over them; nothing else in ``worker/`` imports Ray).

Topology of one item (see DESIGN.md, "Ray topology"):
- video: the driver indexes packets and plans keyframe-aligned segments; analysis actors
  (each holding a face analyser, made once) decode+analyse segments in parallel; the driver
  merges the analyses and plans identities and references; restore actors (each holding the
  restorer; ``num_gpus`` from the caller) decode, restore, paste and encode one segment each into
  a deterministic segment file; one task joins the segments and remuxes the source's audio.
- album: analysis actors analyse images in parallel, the driver clusters, restore actors restore
  and write the images.
- adaptation (``restorer=refstar``): a restore actor fine-tunes the item's net on its device; the
  net travels to the other restore actors through the object store.
Only paths, segment bounds, face records and reference crops cross the object store; frames never
do. Actors restart (``max_restarts``) and replay lost calls (``max_task_retries``): every output
is a deterministic file name written atomically, so a replay just writes it again.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import ray

from worker import storage
from worker.config import Config
from worker.errors import MediaError
from worker.item.input_cache import InputCache
from worker.item.litter import work_dir
from worker.item.segments import SegmentAnalysis, SegmentRestored, analyse_segment, restore_segment
from worker.media.segments import Segment
from worker.records import Face


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


def unwrap(value: object) -> object:
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


CONCURRENCY_GROUPS = {"control": 1}  # actor option: a thread of its own for ``close``


class _Actor:
    cache: InputCache

    def ready(self) -> bool:
        """Answers once the actor is placed and its constructor has run (models loaded)."""
        return True

    @ray.method(concurrency_group="control")
    def close(self) -> None:
        """Remove this actor's input copies, on a thread of its own so that it is answered even
        while a call runs (``ray.kill``, which follows, skips the process's exit handlers)."""
        self.cache.close()


class AnalysisWorker(_Actor):
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
        from worker.item.album_item import analyse_image

        return analyse_image(Path(self.cache.path(src, uri)), self._analyzer(cfg), cfg)


class RestoreWorker(_Actor):
    """Holds the restorer; restores+pastes+encodes segments and restores album images."""

    def __init__(self, cfg: Config):
        self._restorers: dict = {}
        if not cfg.restore.adapts:  # an adapted restorer arrives with each item's calls
            self._restorer(cfg)
        self._stage: tuple[tuple, object] | None = None
        self._past_stats: dict[str, int] = {}  # counters of the stages replaced so far
        self.cache = InputCache()
        self.metrics = _Metrics()

    def _restorer(self, cfg: Config):
        from worker.models import shared_restorer

        r = cfg.restore
        key = (r.restorer, r.device, r.checkpoint, r.strength, r.blind)
        if key not in self._restorers:
            self._restorers[key] = shared_restorer(r)
        return self._restorers[key]

    def _stage_for(self, item: str, cfg: Config, adapted: tuple | None = None):
        """``adapted``: ``adapt_item``'s ``(net, info)`` for this item, None without adaptation."""
        # reference features are computed once per reference and item (ref ids repeat across items)
        from worker.item.pipeline import item_restorer_from
        from worker.stages.restore import FaceRestoreStage

        if self._stage is None or self._stage[0] != (item, cfg):
            restorer = self._restorer(cfg) if adapted is None else item_restorer_from(*adapted, cfg.restore)
            self._past_stats = self.stats()
            self._stage = ((item, cfg), FaceRestoreStage(cfg, restorer))
        return self._stage[1]

    def pid(self) -> int:
        return os.getpid()

    @_carry_errors
    def adapt(self, crops_by_identity: dict, cfg: Config) -> tuple:
        """RefSTAR adapted on one item's faces here, on this actor's device: ``(net or None,
        manifest info)`` (see ``worker.item.pipeline.adapt_net``), the net moved to the CPU for
        the trip through the object store."""
        from worker.item.pipeline import adapt_net

        net, info = adapt_net(crops_by_identity, cfg)
        return (net.cpu() if net is not None else None), info

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
        tmp = Path(work_dir("refstar-seg-"))
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
                      dst_uri: str, want: set, adapted: tuple | None = None) -> tuple[list[tuple[int, str | None, float]], list]:
        """Restore one album image into ``dst_uri``; returns the positions of restored faces
        with the reference each was restored with and the share of the face prior's detail it
        was given, and the report samples ``(position, before, after)`` (position ``WHOLE``: the image).
        MediaError on unreadable/unwritable."""
        from worker.item.album_item import restore_image
        from worker.outputs.report import WHOLE, frame_views, thumbnails

        samples = []

        def sink(face, before, after):
            k = next(i for i, f in enumerate(faces) if f is face)
            if k in want:
                samples.append((k, *thumbnails(before, after)))

        def whole(before, after):
            if WHOLE in want:
                samples.append((WHOLE, *frame_views(before, after)))

        tmp = Path(work_dir("refstar-img-"))
        try:
            local = tmp / Path(dst_uri).name
            restore_image(Path(self.cache.path(src, uri)), local, faces, refs,
                          self._stage_for(item, cfg, adapted), cfg, sink, whole)
            _put(local, dst_uri)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.metrics.faces.inc(sum(f.restored for f in faces))
        return [(k, f.reference, f.prior) for k, f in enumerate(faces) if f.restored], samples


class CombinedWorker(AnalysisWorker, RestoreWorker):
    """Both roles in one actor, for pools whose restore actors would reserve what the analysis
    actors do (CPUs only): one pool serves an item's analysis and its restoration, so nothing
    is released and started again between them."""

    def __init__(self, cfg: Config):
        AnalysisWorker.__init__(self, cfg)
        RestoreWorker.__init__(self, cfg)  # the same input cache and metrics: one process


@ray.remote(num_cpus=0)
def backend_thresholds(cfg: Config) -> tuple[float, float, int]:
    """``_thresholds`` of the face backend of ``cfg`` (a zero-CPU task: it needs no free core)."""
    from worker.faces.base import make_analyzer

    return _thresholds(make_analyzer(cfg.detect))


@ray.remote(num_cpus=0, max_retries=3)
@_carry_errors
def _join(src: str, uri: str, info, parts: list[str], dst_uri: str) -> int:
    from worker.media.segments import join_segments

    tmp = Path(work_dir("refstar-join-"))
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


def join(src: str, uri: str, info, parts: list[str], dst_uri: str) -> int:
    """Join the segment files into ``dst_uri`` in one task (see ``segments.join_segments``)."""
    from worker.cluster.ray_pools import unwrap_call

    return unwrap_call(_join.remote(src, uri, info, parts, dst_uri))
