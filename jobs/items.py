"""The Ray executor of the item lifecycle (``worker.item.lifecycle``): ``start_item`` stages an item
and analyses and plans it on the pools' actors; ``worker.item.lifecycle.finish_item`` runs the restore
pass it returns and publishes it. The archive job runs them back to back, or, when it links
identities across the archive, starts every item before finishing any.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

from worker import storage
from worker.collection import archive
from worker.config import Config
from worker.errors import MediaError
from worker.item.analysis_cache import reuse
from worker.item.layout import Layout
from worker.item.lifecycle import Started
from worker.models import restorer_info
from worker.outputs.report import WHOLE, ReportSamples
from worker.records import ItemResult


def plan_video(pools, cfg: Config, iid: str, src: Path, uri: str, out_dir: str, work: str,
               result: ItemResult, on_restore: Callable[[], None] | None = None, cache=None):
    """A video as ``worker.item.video_item.restore_video`` does it, in keyframe-aligned segments:
    analysed and planned now; returns its identities, faces and the restore pass to run later."""
    from worker.cluster.ray_pools import fan_out
    from worker.faces.base import make_analyzer
    from worker.item.segments import merge_analyses
    from worker.media.segments import packet_index, plan_segments
    from worker.media.video import check_encodable, probe_video
    from worker.progress import Progress
    from worker.stages.analyse import look_again
    from worker.stages.plan import plan_video_item

    timings, per = result.timings, pools.opts.in_flight_per_actor
    t = time.monotonic()
    info = probe_video(src, cfg.limits)
    check_encodable(src, info, cfg.output, cfg.limits.max_video_pixels)  # before the analysis is paid for
    segs = plan_segments(packet_index(src), pools.opts.segment_frames)
    analysis = reuse(cache, result, iid, cfg)
    if analysis is None:
        progress = Progress(f"{iid} analyse", len(segs), unit="segments", enabled=cfg.progress, interval=0)
        parts = fan_out(pools.analysis, "analyse_segment", [(cfg, str(src), uri, info, s) for s in segs],
                        per, on_result=lambda k, r: progress.update(1))
        progress.done()
        analysis = merge_analyses(parts, cfg)
        del parts
        if cache is not None and cache.save:
            cache.store(analysis)
    timings["analyse"] = time.monotonic() - t

    # the few frames whose reference candidates are measured again are decoded here, beside the
    # staged input, by a detector loaded only if there are some
    again = look_again(str(src), info, functools.partial(make_analyzer, cfg.detect), cfg)
    identities, _, by_frame = plan_video_item(analysis, cfg, result, again)
    return identities, analysis.faces, functools.partial(
        _restore_video, pools, cfg, iid, src, uri, out_dir, work, result, on_restore, info, segs,
        analysis, identities, by_frame)


def _restore_video(pools, cfg, iid, src, uri, out_dir, work, result, on_restore, info, segs, analysis,
                   identities, by_frame):
    from worker.cluster.ray_adapter import join
    from worker.cluster.ray_pools import fan_out
    from worker.item.pipeline import media_dict, video_counts
    from worker.item.video_item import adaptation_crops
    from worker.progress import Progress
    from worker.stages.plan import assign_references

    timings, per = result.timings, pools.opts.in_flight_per_actor
    refs = assign_references(analysis.faces, identities, cfg)  # linking may have changed them
    adapted = _adapt(pools, cfg, adaptation_crops(analysis), result, identities)
    t = time.monotonic()
    samples = ReportSamples.choose(analysis.faces, cfg.output.report_faces)
    suffix = src.suffix.lower()
    shared_refs = pools.share(refs)
    calls = []
    for s in segs:
        faces = [f for i in range(s.start, s.end) for f in by_frame.get(i, [])]
        want = {(f.frame, k) for i in range(s.start, s.end) for k, f in enumerate(by_frame.get(i, []))
                if id(f) in samples.wanted}
        want |= {(i, WHOLE) for i, _ in samples.wanted_frames if s.start <= i < s.end}
        seg_uri = storage.join(work, f"{iid}-{s.index:05d}{suffix}")
        calls.append((cfg, iid, str(src), uri, info, s, faces, shared_refs, seg_uri, want, adapted))
    if on_restore is not None:
        on_restore()
    progress = Progress(f"{iid} restore", len(segs), unit="segments", enabled=cfg.progress, interval=0)
    done = fan_out(pools.restore, "restore_segment", calls, per, on_result=lambda k, r: progress.update(1))
    progress.done()
    for part in done:
        for frame, k, ref, prior in part.restored:
            face = by_frame[frame][k]
            face.restored, face.prior = True, prior
            face.reference = ref  # the restore stage's choice (nearest look)
        for frame, k, before, after in part.samples:
            if k == WHOLE:
                samples.keep_frame(frame, "", before, after)
                continue
            face = by_frame[frame][k]
            samples.pairs.setdefault(face.identity, []).append((face, before, after))
    dst = storage.join(out_dir, "restored" + suffix)
    written = join(str(src), uri, info, [p.path for p in done], dst)
    for p in done:
        storage.delete(p.path)
    if written != analysis.n_frames:
        raise MediaError(str(src), f"joined {written} frames, the analysis decoded {analysis.n_frames}")
    timings["restore"] = time.monotonic() - t

    result.counts.update(**video_counts(analysis, identities), segments=len(segs))
    media = media_dict(info)
    media["output"] = Path(dst).name
    return media, [], samples


def plan_album(pools, cfg: Config, embed_dim: int, iid: str, src: Path, uri: str, out_dir: str,
               result: ItemResult, refused: dict[str, str], cache=None):
    """An album as ``worker.item.album_item.restore_album`` does it, its images spread over the
    analysis actors: analysed and planned now; returns its identities, faces and the restore
    pass (restore actors) to run later."""
    from worker.cluster.ray_pools import fan_out
    from worker.item.album_item import AlbumBook, album_files
    from worker.media.image import is_image_name
    from worker.progress import Progress

    root, names, refused = album_files(src, refused)

    def uri_of(name: str) -> str:
        return storage.join(uri, name) if src.is_dir() else uri

    book = AlbumBook(root, names, result, refused)
    t = time.monotonic()
    found = reuse(cache, result, iid, cfg)
    if found is None:
        images = [n for n in book.usable if is_image_name(n)]
        progress = Progress(f"{iid} analyse", len(images), unit="images", enabled=cfg.progress)
        outs = fan_out(pools.analysis, "analyse_image", [(cfg, str(root / n), uri_of(n)) for n in images],
                       pools.opts.in_flight_per_actor, on_result=lambda k, r: progress.update(1),
                       tolerate=(MediaError,)) if images else []
        progress.done()
        found = {n: o.reason if isinstance(o, MediaError) else o for n, o in zip(images, outs, strict=True)}
        if cache is not None and cache.save:
            cache.store_album(found)
    book.add_all(found)
    result.timings["analyse"] = time.monotonic() - t

    t = time.monotonic()
    identities, _ = book.plan(cfg, embed_dim)  # the driver holds the local copy
    result.timings["plan"] = time.monotonic() - t
    return identities, book.faces, functools.partial(_restore_album, pools, cfg, iid, root, book.usable,
                                                     uri_of, out_dir, result, book, identities)


def _restore_album(pools, cfg, iid, root, names, uri_of, out_dir, result, book, identities):
    from worker.cluster.ray_pools import fan_out
    from worker.progress import Progress
    from worker.stages.plan import assign_references

    refs = assign_references(book.faces, identities, cfg)  # linking may have changed them
    adapted = _adapt(pools, cfg, book.adapt_crops, result, identities)
    t = time.monotonic()
    samples = ReportSamples.choose(book.faces, cfg.output.report_faces)
    rows = []
    for name in names:
        faces = book.to_restore(name, cfg)
        if faces is None:
            storage.upload_file(root / name, storage.join(out_dir, "restored", name))  # byte-identical
            book.status.setdefault(name, "unchanged")
            continue
        rows.append((name, faces))
    shared_refs = pools.share(refs)
    calls = [(cfg, iid, str(root / name), uri_of(name), faces, shared_refs,
              storage.join(out_dir, "restored", name),
              {k for k, f in enumerate(faces) if id(f) in samples.wanted}
              | ({WHOLE} if (0, name) in samples.wanted_frames else set()), adapted)
             for name, faces in rows]
    progress = Progress(f"{iid} restore", len(rows), unit="images", enabled=cfg.progress)
    outs = fan_out(pools.restore, "restore_image", calls, pools.opts.in_flight_per_actor,
                   on_result=lambda k, r: progress.update(1), tolerate=(MediaError,)) if rows else []
    progress.done()
    for (name, _), out in zip(rows, outs, strict=True):
        if isinstance(out, MediaError):
            book.fail(name, out.reason, "write")
            storage.upload_file(root / name, storage.join(out_dir, "restored", name))
            continue
        restored, pairs = out
        for k, ref, prior in restored:
            face = book.by_file[name][k]
            face.restored, face.reference, face.prior = True, ref, prior
        for k, before, after in pairs:
            if k == WHOLE:
                samples.keep_frame(0, name, before, after)
                continue
            face = book.by_file[name][k]
            samples.pairs.setdefault(face.identity, []).append((face, before, after))
        book.status[name] = "restored"
    result.timings["restore"] = time.monotonic() - t
    files, media = book.finish(identities)
    return media, files, samples


def _adapt(pools, cfg: Config, crops: dict, result: ItemResult, identities):
    """With ``restorer=refstar`` and ``restore.adapt``: the item's adapted ``(net or None,
    info)`` in the object store, once for every restore call (None otherwise); ``crops`` the
    item's own, joined by what its ``identities`` were lent (``adaptation_set``)."""
    from worker.item.pipeline import adaptation_set

    if not cfg.restore.adapts:
        return None
    t = time.monotonic()
    crops, counts = adaptation_set(crops, identities, cfg.restore)
    net, result.restorer = pools.adapt(crops, cfg)
    result.restorer.update(counts)
    if net is not None:
        result.timings["adapt"] = time.monotonic() - t
    return pools.share((net, result.restorer))


def start_item(pools, item: archive.ArchiveItem, cfg: Config, layout: Layout, work: str, tmp: Path,
               on_restore: Callable[[], None] | None = None) -> Started:
    """Stage, analyse and plan one item on the pools' actors for ``layout``
    (``archive.item_layout``; ``tmp``: its local work folder, removed when it finishes); never
    raises for bad input (the failure is recorded). Finish it with
    ``worker.item.lifecycle.finish_item``."""
    from worker.item.analysis_cache import cache_for
    from worker.item.publish import staging_uri, sweep_staging
    from worker.item.staging import stage_input

    iid, out_root = archive.item_id(item, cfg), layout.out_root
    final_dir = layout.final_dir(iid)
    result = ItemResult(item_id=iid, source=item.uri, kind=item.kind, output=final_dir)
    result.restorer = restorer_info(cfg.restore)
    sweep_staging(out_root, iid)
    out_dir = staging_uri(out_root, iid)  # actors write the restored media here (a shared folder or S3)
    st = Started(item.uri, cfg, result, out_dir, final_dir, work=tmp, layout=layout)
    try:
        st.cfg, embed_dim = pools.calibrate(cfg)
        storage.remove_tree_marker(final_dir)
        local, refused = stage_input(item.uri, tmp / "in", st.cfg)
        cache = cache_for(out_root, item.uri, st.cfg)  # what `refstar analyse` kept, if anything
        if item.kind == "video":
            st.identities, st.faces, st.finish = plan_video(pools, st.cfg, iid, local, item.uri, out_dir,
                                                            work, result, on_restore, cache)
        else:
            st.identities, st.faces, st.finish = plan_album(pools, st.cfg, embed_dim, iid, local,
                                                            item.uri, out_dir, result, refused, cache)
    except Exception as e:  # one bad item never sinks the job; the manifest keeps the evidence
        st.fail(e)
    return st
