"""One item end to end on one machine: the reference behaviour that the Ray job distributes.

An item is a video file, an image, or a folder of images (an album). Its outputs go to
``<out>/<item-id>/`` (see README); ``_DONE`` is written last, so an item without it is
incomplete and is redone by the next run.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from worker import storage
from worker.config import Config, with_backend_defaults
from worker.errors import ModelError
from worker.item.analysis_cache import cache_for
from worker.item.layout import input_name, layout_for
from worker.item.lifecycle import Started, finish_item
from worker.item.litter import sweep_partials, work_dir
from worker.item.publish import staging_uri, sweep_staging
from worker.item.staging import is_folder, item_id, item_kind, stage_input
from worker.models import restorer_checkpoint, restorer_info, shared_restorer
from worker.records import Face, Identity, ItemError, ItemResult

log = logging.getLogger(__name__)


class Engine:
    """The models of a run (face analyser, restorer), loaded once and shared by its items.

    With ``restorer=refstar`` and ``restore.adapt`` on, the restorer is made per item by
    :meth:`item_restorer`, adapted to that item's own faces."""

    def __init__(self, cfg: Config):
        from worker.faces.base import make_analyzer
        from worker.memory import pin_mmap_threshold

        pin_mmap_threshold()
        self.analyzer = make_analyzer(cfg.detect)
        self.cfg = with_backend_defaults(cfg, self.analyzer.identity_max_dist,
                                         self.analyzer.track_max_embed_dist)
        r = cfg.restore
        self.adapting = r.adapts
        if self.adapting:
            checkpoint = restorer_checkpoint(r)  # an s3:// one is fetched once
            if checkpoint and not Path(checkpoint).expanduser().exists():
                raise ModelError(f"RefSTAR checkpoint not found: {r.checkpoint}")
        self.restorer = None if self.adapting else shared_restorer(r)  # reads its checkpoint itself
        from worker.collection.library import library_for

        library_for(self.cfg)  # read (and checked) once, before the first item
        # seconds restoring a frame per second analysing one, as the last video of this run
        # measured: the item ETA on the next one's analysis line (None until a video finished)
        self.restore_per_analyse: float | None = None

    def item_restorer(self, crops_by_identity: dict[int, list[np.ndarray]], result: ItemResult,
                      identities: list[Identity] = ()):
        """The restorer for one item: the shared one, or RefSTAR adapted on the item's crops and
        on the references the library or linked items lent its ``identities`` (falling back to
        the checkpoint, or to ``guided``, when no person has two crops)."""
        r = self.cfg.restore
        if not self.adapting:
            result.restorer = restorer_info(r)
            return self.restorer
        t = time.monotonic()
        crops, counts = adaptation_set(crops_by_identity, identities, r)
        net, result.restorer = adapt_net(crops, self.cfg)
        result.restorer.update(counts)
        if net is not None:
            result.timings["adapt"] = time.monotonic() - t
        return item_restorer_from(net, result.restorer, r)


def median_side(crops_by_identity: dict[int, list[np.ndarray]], default: int) -> int:
    """The median side (px) of an item's square crops; ``default`` when it has none."""
    sides = [c.shape[0] for crops in crops_by_identity.values() for c in crops]
    return int(np.median(sides)) if sides else default


# a person's faces here count as soft throughout when what was lent is this many times sharper
# than their best reference here (tests/test_library.py's soft clip: 21x under the sharp clip
# linked to it, 300x under the library photo)
SOFT_OWN = 3.0


def adaptation_set(crops_by_identity: dict[int, list[np.ndarray]], identities, r
                   ) -> tuple[dict[int, list[np.ndarray]], dict[str, int]]:
    """What RefSTAR adapts on (``r``: RestoreConfig): the item's own crops per person plus the
    references lent from outside the item (library photos, linked items' faces), shrunk to the
    median side of the item's own crops (``adapt_size`` when it has none), and the counts for the
    manifest. A person's own crops are left out when what was lent is ``SOFT_OWN`` times sharper
    than their best reference here: faces soft throughout the item, taken as the sharp target,
    teach the net to keep faces soft. (When linking left them no reference of their own, the
    lent ones were only a little sharper than theirs, and theirs stay.)"""
    from refstar.align import resize_square
    from worker.stages.references import sharpness_of

    side = median_side(crops_by_identity, r.adapt_size)
    out = {k: list(v) for k, v in crops_by_identity.items()}
    counts = {"lent_crops": 0, "own_crops_left_out": 0}
    for ident in identities:
        lent = [x for x in ident.references if x.origin]
        if not lent:
            continue
        own = [sharpness_of(x) for x in ident.references if not x.origin]
        if own and max(map(sharpness_of, lent)) >= SOFT_OWN * max(own):
            counts["own_crops_left_out"] += len(out.pop(ident.id, []))
        out.setdefault(ident.id, []).extend(resize_square(x.crop, side) for x in lent)
        counts["lent_crops"] += len(lent)
    return out, counts


def adapt_net(crops_by_identity: dict[int, list[np.ndarray]], cfg: Config):
    """RefSTAR adapted on one item's sharp faces (``restore.adapt_*`` budget), and what the
    manifest says about it; ``(None, info)`` when no person has two usable crops, ``info["name"]``
    then naming the fallback restorer (the checkpoint as is, or ``guided``)."""
    from refstar.adapt import adapt_report
    from refstar.degradations import rescale_ranges
    from refstar.training.dataset import ADAPT_RANGES
    from worker.memory import heap_allocations

    r = cfg.restore
    # the net sees crop_size crops shrunk to adapt_size (or to the item's median face side), so
    # it must learn the degradations the item's faces have at that scale, not the recipe's at
    # full scale
    side = median_side(crops_by_identity, r.adapt_size) if r.native else r.adapt_size
    ranges = rescale_ranges(ADAPT_RANGES, side / r.crop_size)
    pre = None
    if r.guide:  # the net learns to refine what guided makes of each degraded face
        from refstar.guided import GuidedRestorer

        pre = GuidedRestorer(strength=r.strength).restore_bgr
    try:
        with heap_allocations():  # a pinned mmap threshold slows every training step
            net, rep = adapt_report(
                crops_by_identity, preset=r.adapt_preset, steps=r.adapt_steps,
                time_budget_s=r.adapt_time_s, init=restorer_checkpoint(r) or None,
                size=r.adapt_size, native_size=side if r.native else None, pre=pre,
                clean=r.adapt_clean, device=r.device, ranges=ranges,
                log=(lambda line: print(f"adapt: {line}", file=sys.stderr, flush=True)) if cfg.progress else None)
    except ValueError as e:  # no person with two usable crops
        fallback = "refstar" if r.checkpoint and not r.guide else "guided"
        return None, {**restorer_info(r, fallback), "adapted": False, "why": str(e)}
    why = adapt_stop_line(rep.steps, rep.max_steps, rep.stopped, rep.seconds, r.adapt_time_s)
    if rep.stopped == "time":
        log.warning("adaptation %s", why)
    if cfg.progress:
        then = ", refining guided's result" if r.guide else ""
        print(f"adapt: {why}; restoring at {rep.work_size} px{then}", file=sys.stderr, flush=True)
    return net, {"name": "refstar", "adapted": True, "init": r.checkpoint or None,
                 "work_size": rep.work_size, "guide": r.guide, "clean": r.adapt_clean,
                 "steps": rep.steps, "max_steps": rep.max_steps, "stopped": rep.stopped,
                 "stop_reason": why, "seconds": round(rep.seconds, 1),
                 "identities": rep.identities, "crops": rep.crops,
                 "people": list(rep.people),
                 "losses": {k: round(float(v), 5) for k, v in rep.losses.items()}}


def adapt_stop_line(steps: int, max_steps: int, stopped: str, seconds: float,
                    cap_s: float | None) -> str:
    """When and why adaptation stopped, for the progress line and the manifest."""
    if stopped == "time":
        return (f"stopped at step {steps} of {max_steps} after {seconds:.0f} s: the time cap "
                f"restore.adapt_time_s={cap_s:g} came first (raise it, or drop it, for the full budget)")
    return f"done: {steps} of {max_steps} steps (restore.adapt_steps) in {seconds:.0f} s"


def item_restorer_from(net, info: dict, r):
    """The ``Restorer`` for an item from :func:`adapt_net`'s answer (``r``: RestoreConfig)."""
    if net is None:
        return shared_restorer(replace(r, restorer=info["name"]))
    from refstar.refstar_restorer import GuidedThenNet, RefSTARRestorer

    restorer = RefSTARRestorer(net, work_size=info.get("work_size") or net.cfg.size, device=r.device)
    if info.get("guide"):
        from refstar.guided import GuidedRestorer

        return GuidedThenNet(GuidedRestorer(strength=r.strength), restorer, info.get("people"))
    return restorer


def start_item(src: str | Path, out_root: str, cfg: Config, *, engine: Engine | None = None,
               force: bool = False, rel: str | None = None, analyse_only: bool = False) -> Started | ItemResult:
    """Stage, analyse and plan one item (a local path or an ``s3://`` URI) for ``out_root``; an
    ``ItemResult`` when there is nothing to run (already done, or the input is not there).
    ``rel``: the input's path in its collection, for the mirror layout (default: its name).
    The analysis kept by ``refstar analyse`` in ``out_root`` is reused; ``analyse_only``
    (``refstar analyse``) keeps it there and plans no restore pass (status "analysed").
    Never raises for bad input: a failure is recorded in the ``Started`` (``finish`` None)."""
    src = str(src)
    try:
        iid = item_id(src, cfg)
        layout = layout_for(out_root, rel or input_name(src), cfg.output, is_folder(src))
        final_dir = layout.final_dir(iid)
        layout.check_not_input(src)
    except (storage.StorageError, OSError) as e:
        reason = "no such file or folder" if isinstance(e, FileNotFoundError) else str(e)
        return ItemResult(item_id="", source=src, kind="?", status="failed",
                          errors=[ItemError(src, reason, "read")])
    result = ItemResult(item_id=iid, source=src, kind=item_kind(src), output=final_dir)
    if layout.done_by(iid) and not force:
        result.status = "skipped"
        return result
    storage.remove_tree_marker(final_dir)
    if not storage.is_s3(final_dir):
        sweep_partials(Path(final_dir))  # what a killed run left half-written
    sweep_staging(out_root, iid)
    work = work_dir("refstar-item-")
    # S3 outputs are written locally first (media writers want files), then uploaded
    staged = str(work / "out" / iid) if storage.is_s3(final_dir) else staging_uri(out_root, iid)
    st = Started(src, cfg, result, staged, final_dir, work=work, layout=layout)
    try:
        engine = engine or Engine(cfg)
        st.cfg = engine.cfg
        local, refused = stage_input(src, work / "in", st.cfg)
        cache = cache_for(out_root, src, st.cfg, save=analyse_only)
        if result.kind == "video":
            from worker.item.video_item import start_video

            st.identities, st.faces, st.finish = start_video(str(local), staged, st.cfg, engine, result, cache)
        else:
            from worker.item.album_item import start_album

            st.identities, st.faces, st.finish = start_album(local, staged, st.cfg, engine, result,
                                                             refused, cache)
        if analyse_only and st.finish is not None:
            result.status, st.finish = "analysed", None
            result.counts.update(**count_faces(st.faces, st.identities))
    except Exception as e:  # one bad item never sinks a batch; keep the evidence
        st.fail(e)
    except BaseException:  # Ctrl-C / SIGTERM: leave nothing behind
        shutil.rmtree(work, ignore_errors=True)
        raise
    return st


def restore_item(src: str | Path, out_root: str, cfg: Config, *, engine: Engine | None = None,
                 force: bool = False, rel: str | None = None) -> ItemResult:
    """Restore one item (a local path or an ``s3://`` URI) into ``out_root`` (a folder or an
    ``s3://`` prefix). Never raises for bad input: failures come back in ``result.errors`` with
    ``status == "failed"`` and a manifest explaining them, but no ``_DONE``."""
    st = start_item(src, out_root, cfg, engine=engine, force=force, rel=rel)
    return st if isinstance(st, ItemResult) else finish_item(st)


def count_faces(faces: list[Face], identities: list[Identity]) -> dict[str, int]:
    return {
        "faces": len(faces),
        "faces_restored": sum(f.restored for f in faces),
        "faces_with_reference": sum(f.restored and f.reference is not None for f in faces),
        "faces_prior": sum(f.restored and f.prior > 0 for f in faces),  # restore.blind: the face prior's detail
        "faces_too_small": sum(f.skipped == "too_small" for f in faces),
        "faces_unconfirmed": sum(f.skipped == "unconfirmed" for f in faces),
        "faces_not_faces": sum(f.skipped == "not_a_face" for f in faces),
        "faces_sharp": sum(f.skipped == "sharp" for f in faces),
        "faces_not_selected": sum(f.skipped == "not_selected" for f in faces),  # restore.persons / skip_persons
        "faces_not_largest": sum(f.skipped == "not_largest" for f in faces),  # restore.largest_face_only
        "identities": len(identities),
        "references": sum(len(i.references) for i in identities),
    }


def video_counts(analysis, identities: list[Identity]) -> dict[str, int]:
    """The manifest counts of a video item from its analysis (``worker.stages.analyse.Analysis``)."""
    return {"frames": analysis.n_frames, "detector_frames": analysis.detector_frames,
            "quick_detections": analysis.quick_detections,
            "embeddings": analysis.embedded, "tracks": len(analysis.tracks), "shot_cuts": len(analysis.cuts),
            "tracks_not_faces": len({f.track for f in analysis.faces if f.skipped == "not_a_face"}),
            **count_faces(analysis.faces, identities)}


def media_dict(obj) -> dict:
    """JSON-safe view of a media info dataclass."""
    d = asdict(obj)
    return {k: (str(v) if not isinstance(v, (int, float, str, bool, type(None), dict, list)) else v)
            for k, v in d.items()}
