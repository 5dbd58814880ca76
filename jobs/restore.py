"""Archive job: restore every item of a folder, an S3 prefix or a JSONL manifest on Ray.

    python -m jobs.restore --input s3://bucket/archive/ --output s3://bucket/restored/
    ray job submit --address http://head:8265 -- python -m jobs.restore --input ... --output ...

Items whose ``_DONE`` exists are skipped, so a rerun resumes; a failing item is reported in its
manifest and the job summary and never stops the others; the exit status is 1 if any item failed.
Each item is computed like ``worker.pipeline.restore_item`` (same stages, same outputs), with its
segments / images spread over the actors of ``worker.ray_adapter``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from worker import archive, storage
from worker.config import Config, ConfigError, load_config
from worker.errors import MediaError
from worker.records import ItemResult
from worker.report import ReportSamples


def restore_video(pools, cfg: Config, iid: str, src: Path, uri: str, out_dir: str, work: str,
                  result: ItemResult, on_restore: Callable[[], None] | None = None):
    """A video as ``worker.video_item.restore_video`` does it, in keyframe-aligned segments."""
    from worker.media.video import probe_video
    from worker.pipeline import count_faces, media_dict
    from worker.plan import plan_video_item
    from worker.progress import Progress
    from worker.ray_adapter import fan_out, join
    from worker.segments import merge_analyses, packet_index, plan_segments

    timings, per = result.timings, pools.opts.in_flight_per_actor
    t = time.monotonic()
    info = probe_video(src, cfg.limits)
    segs = plan_segments(packet_index(src), pools.opts.segment_frames)
    progress = Progress(f"{iid} analyse", len(segs), unit="segments", enabled=cfg.progress, interval=0)
    parts = fan_out(pools.analysis, "analyse_segment", [(cfg, str(src), uri, info, s) for s in segs],
                    per, on_result=lambda k, r: progress.update(1))
    progress.done()
    analysis = merge_analyses(parts, cfg)
    del parts
    timings["analyse"] = time.monotonic() - t

    identities, refs, by_frame = plan_video_item(analysis, cfg, timings)

    t = time.monotonic()
    samples = ReportSamples.choose(analysis.faces, cfg.output.report_faces)
    suffix = src.suffix.lower()
    shared_refs = pools.share(refs)
    calls = []
    for s in segs:
        faces = [f for i in range(s.start, s.end) for f in by_frame.get(i, [])]
        want = {(f.frame, k) for i in range(s.start, s.end) for k, f in enumerate(by_frame.get(i, []))
                if id(f) in samples.wanted}
        seg_uri = storage.join(work, f"{iid}-{s.index:05d}{suffix}")
        calls.append((cfg, iid, str(src), uri, info, s, faces, shared_refs, seg_uri, want))
    if on_restore is not None:
        on_restore()
    progress = Progress(f"{iid} restore", len(segs), unit="segments", enabled=cfg.progress, interval=0)
    done = fan_out(pools.restore, "restore_segment", calls, per, on_result=lambda k, r: progress.update(1))
    progress.done()
    for part in done:
        for frame, k in part.restored:
            by_frame[frame][k].restored = True
        for frame, k, before, after in part.samples:
            face = by_frame[frame][k]
            samples.pairs.setdefault(face.identity, []).append((face, before, after))
    dst = storage.join(out_dir, "restored" + suffix)
    written = join(str(src), uri, info, [p.path for p in done], dst)
    for p in done:
        storage.delete(p.path)
    if written != analysis.n_frames:
        raise MediaError(str(src), f"joined {written} frames, the analysis decoded {analysis.n_frames}")
    timings["restore"] = time.monotonic() - t

    result.counts.update(frames=analysis.n_frames, detector_frames=analysis.detector_frames,
                         tracks=len(analysis.tracks), shot_cuts=len(analysis.cuts),
                         segments=len(segs), **count_faces(analysis.faces, identities))
    media = media_dict(info)
    media["output"] = Path(dst).name
    return identities, analysis.faces, media, samples


def restore_album(pools, cfg: Config, embed_dim: int, iid: str, src: Path, uri: str, out_dir: str,
                  result: ItemResult):
    """An album as ``worker.album_item.restore_album`` does it, its images streamed through Ray
    Data pipelines (analysis actors, then restore actors)."""
    from worker.album_item import AlbumBook, album_files
    from worker.media.image import is_image_name
    from worker.progress import Progress
    from worker.ray_adapter import album_analyse, album_restore

    root, names = album_files(src)

    def uri_of(name: str) -> str:
        return storage.join(uri, name) if src.is_dir() else uri

    book = AlbumBook(root, names, result)
    t = time.monotonic()
    images = [n for n in names if is_image_name(n)]
    progress = Progress(f"{iid} analyse", len(images), unit="images", enabled=cfg.progress)
    found = album_analyse(cfg, [{"name": n, "src": str(root / n), "uri": uri_of(n)} for n in images],
                          pools.opts, progress=lambda: progress.update(1)) if images else {}
    progress.done()
    for name in names:
        book.add(name, found.get(name))
    result.timings["analyse"] = time.monotonic() - t

    t = time.monotonic()
    identities, refs = book.plan(cfg, embed_dim)  # the driver holds the local copy
    result.timings["plan"] = time.monotonic() - t

    t = time.monotonic()
    samples = ReportSamples.choose(book.faces, cfg.output.report_faces)
    rows = []
    for name in names:
        faces = book.to_restore(name, cfg.restore.restorer)
        if faces is None:
            storage.upload_file(root / name, storage.join(out_dir, "restored", name))  # byte-identical
            book.status.setdefault(name, "unchanged")
            continue
        rows.append({"name": name, "src": str(root / name), "uri": uri_of(name), "faces": faces,
                     "dst": storage.join(out_dir, "restored", name),
                     "want": [k for k, f in enumerate(faces) if id(f) in samples.wanted]})
    progress = Progress(f"{iid} restore", len(rows), unit="images", enabled=cfg.progress)
    outs = album_restore(cfg, iid, rows, refs, pools.opts, progress=lambda: progress.update(1)) if rows else {}
    progress.done()
    for row in rows:
        name, out = row["name"], outs[row["name"]]
        if isinstance(out, MediaError):
            book.fail(name, out.reason, "write")
            storage.upload_file(root / name, storage.join(out_dir, "restored", name))
            continue
        restored, pairs = out
        for k in restored:
            book.by_file[name][k].restored = True
        for k, before, after in pairs:
            face = book.by_file[name][k]
            samples.pairs.setdefault(face.identity, []).append((face, before, after))
        book.status[name] = "restored"
    result.timings["restore"] = time.monotonic() - t
    files, media = book.finish(identities)
    return identities, book.faces, media, files, samples


def restore_archive_item(pools, item: archive.ArchiveItem, cfg: Config, out_root: str, work: str,
                         tmp: Path, on_restore: Callable[[], None] | None = None) -> ItemResult:
    """One item, like ``worker.pipeline.restore_item``: never raises for bad input; outputs
    (refs, manifest, report) go through the same ``_publish``, ``_DONE`` last."""
    from worker.config import to_dict
    from worker.pipeline import _publish
    from worker.ray_adapter import error_of
    from worker.staging import stage_input

    iid = archive.item_id(item, cfg)
    out_dir = storage.join(out_root, iid)  # actors write the restored media straight here
    staged = str(tmp / "out" / iid)  # refs, manifest, report: uploaded by _publish, then _DONE
    result = ItemResult(item_id=iid, source=item.uri, kind=item.kind, output=out_dir)
    result.restorer = {"name": cfg.restore.restorer}  # per-item adaptation is single-machine only
    identities, faces, media, files, samples = [], [], {}, [], ReportSamples()
    t0 = time.monotonic()
    try:
        cfg, embed_dim = pools.calibrate(cfg)
        storage.remove_tree_marker(out_dir)
        local = stage_input(item.uri, tmp / "in", cfg)
        if item.kind == "video":
            identities, faces, media, samples = restore_video(pools, cfg, iid, local, item.uri, out_dir,
                                                              work, result, on_restore)
        else:
            identities, faces, media, files, samples = restore_album(pools, cfg, embed_dim, iid, local,
                                                                     item.uri, out_dir, result)
    except Exception as e:  # one bad item never sinks the job; the manifest keeps the evidence
        result.status = "failed"
        result.errors.append(error_of(e, item.uri))
    result.timings["total"] = time.monotonic() - t0
    if result.status == "ok" and result.errors:
        result.status = "partial"
    try:
        _publish(staged, result, identities, faces, media, files, samples, to_dict(cfg), final_dir=out_dir)
    except Exception as e:  # noqa: BLE001 - storage outage while publishing: the item failed
        result.status = "failed"
        result.errors.append(error_of(e, item.uri))
    return result


def run_job(items: list[archive.ArchiveItem], out_root: str, config_file: str | None, sets: list[str],
            opts, work: str | None = None, force: bool = False,
            on_restore: Callable[[], None] | None = None, pools=None, job_name: str | None = None) -> dict:
    """Restore ``items`` into ``out_root``; returns the job summary, also written to
    ``_jobs/<job_name>.json`` there (``_job_summary.json`` without a name)."""
    from worker.ray_adapter import Pools

    t0 = time.monotonic()
    base = load_config(config_file, sets)
    tmp_root = Path(tempfile.mkdtemp(prefix="refstar-job-"))
    work = work or str(tmp_root / "segments")
    storage.makedirs(work)
    own_pools = pools is None
    rows: list[tuple[archive.ArchiveItem, ItemResult]] = []
    try:
        for n, item in enumerate(items, 1):
            try:
                cfg = archive.item_config(config_file, sets, item)
                iid = archive.item_id(item, cfg)  # stats the input: it may have gone
            except (ConfigError, storage.StorageError, FileNotFoundError) as e:
                from worker.records import ItemError

                stage = "config" if isinstance(e, ConfigError) else "read"
                rows.append((item, ItemResult("", item.uri, item.kind, "failed",
                                              errors=[ItemError(item.uri, str(e), stage)])))
                print(f"[{n}/{len(items)}] {item.uri}: failed: {e}", file=sys.stderr, flush=True)
                continue
            if not force and archive.is_done(out_root, iid):
                rows.append((item, ItemResult(iid, item.uri, item.kind, "skipped",
                                              output=storage.join(out_root, iid))))
                print(f"[{n}/{len(items)}] {iid}: skipped (done)", file=sys.stderr, flush=True)
                continue
            if pools is None:  # no actors for a rerun that has nothing to do
                pools = Pools(base, opts)
            tmp = tmp_root / f"item-{n}"
            tmp.mkdir()
            res = restore_archive_item(pools, item, cfg, out_root, work, tmp, on_restore)
            shutil.rmtree(tmp, ignore_errors=True)
            rows.append((item, res))
            print(f"[{n}/{len(items)}] {iid}: {res.status} in {res.timings.get('total', 0):.1f} s "
                  f"{json.dumps(res.counts)}" + "".join(f"\n  error: {e}" for e in res.errors),
                  file=sys.stderr, flush=True)
    finally:
        if own_pools and pools is not None:
            pools.shutdown()
        shutil.rmtree(tmp_root, ignore_errors=True)
    summary = archive.summarise(rows, time.monotonic() - t0)
    summary["job"] = job_name
    where = storage.join(out_root, "_jobs", f"{job_name}.json") if job_name else storage.join(out_root, "_job_summary.json")
    storage.write_atomic(where, json.dumps(summary, indent=1) + "\n")
    return summary


def parse_args(argv: list[str] | None = None, prog: str = "python -m jobs.restore") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--input", help="archive: local folder or s3:// prefix")
    p.add_argument("--manifest", help="JSONL manifest (local path or s3:// URI) instead of --input")
    p.add_argument("--item", action="append", default=[], metavar="URI",
                   help="one item instead of --input: a video, an image or an album folder (repeatable)")
    p.add_argument("--output", required=True, help="output folder or s3:// prefix")
    p.add_argument("--address", help="Ray cluster address (default: the job's cluster, else a local one)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--analysis-actors", type=int, default=2)
    p.add_argument("--restore-actors", type=int, default=1)
    p.add_argument("--analysis-cpus", type=float, default=1.0, help="CPUs reserved per analysis actor")
    p.add_argument("--restore-cpus", type=float, default=1.0, help="CPUs reserved per restore actor")
    p.add_argument("--restore-gpus", type=float, default=0.0, help="GPUs per restore actor")
    p.add_argument("--segment-frames", type=int, default=250, help="minimum frames per video segment")
    p.add_argument("--album-batch", type=int, default=8, help="images per Ray Data batch in album pipelines")
    p.add_argument("--work", help="folder/prefix for segment files (a shared one on multi-node clusters)")
    p.add_argument("--force", action="store_true", help="redo items that are already done")
    p.add_argument("--job-name", metavar="NAME", help="write the summary to <output>/_jobs/NAME.json "
                   "(default: <output>/_job_summary.json); the S3 trigger passes its submission id")
    args = p.parse_args(argv)
    if sum(map(bool, (args.input, args.manifest, args.item))) != 1:
        p.error("give exactly one of --input, --manifest and --item")
    if args.job_name and not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", args.job_name):
        p.error("--job-name: letters, digits, '.', '_' and '-' only")
    return args


def main(argv: list[str] | None = None, prog: str = "python -m jobs.restore") -> int:
    import ray

    from worker.ray_adapter import PoolOptions

    args = parse_args(argv, prog)
    try:
        load_config(args.config, args.sets)  # a bad config fails the job before any work
        if args.manifest:
            items = archive.read_manifest(storage.read_bytes(args.manifest).decode())
        elif args.item:
            items = archive.items_from_uris(args.item)
        else:
            items = archive.list_prefix(args.input)
    except (ConfigError, storage.StorageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opts = PoolOptions(args.analysis_actors, args.restore_actors, args.analysis_cpus, args.restore_cpus,
                       args.restore_gpus, args.segment_frames, album_batch=args.album_batch)
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address)
    try:
        summary = run_job(items, args.output, args.config, args.sets, opts, args.work, args.force,
                          job_name=args.job_name)
    finally:
        if started:
            ray.shutdown()
    print(json.dumps(summary, indent=1))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
