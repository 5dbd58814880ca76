"""A video item: analyse (decode 1), plan, restore + encode (decode 2). The film is streamed
both times; only face records and a few crops per track stay in memory."""

from __future__ import annotations

import functools
import time
from pathlib import Path

from worker import storage
from worker.config import Config
from worker.errors import MediaError
from worker.item.analysis_cache import reuse
from worker.media.video import VideoRewriter, check_encodable, iter_frames, probe_video
from worker.outputs.report import ReportSamples
from worker.progress import Progress
from worker.records import ItemResult
from worker.stages.analyse import Analysis, analyse_video, look_again
from worker.stages.plan import assign_references, plan_video_item
from worker.stages.restore import FaceRestoreStage, restore_stream


def adaptation_crops(analysis: Analysis) -> dict[int, list]:
    """Per identity, the sharp small crops kept for adapting the restorer to this video."""
    if analysis.adapt_pool is None:
        return {}
    out: dict[int, list] = {}
    for cand in analysis.adapt_pool.candidates():
        if cand.face.identity >= 0:
            out.setdefault(cand.face.identity, []).append(cand.crop)
    return out


def start_video(path: str, out_dir: str, cfg: Config, engine, result: ItemResult, cache=None):
    """Analyse (decode 1, or ``cache``'s stored analysis: ``worker.item.analysis_cache``) and
    plan: the item's identities, faces and its restore pass (decode 2,
    ``() -> (media, [], samples)``), run later, after any linking."""
    t = time.monotonic()
    info = probe_video(path, cfg.limits)
    check_encodable(path, info, cfg.output, cfg.limits.max_video_pixels)  # before the analysis is paid for
    analysis = reuse(cache, result, Path(path).name, cfg)
    if analysis is None:
        analysis = analyse_video(path, info, engine.analyzer, cfg, then=engine.restore_per_analyse)
        if cache is not None and cache.save:
            cache.store(analysis)
    result.timings["analyse"] = time.monotonic() - t
    again = look_again(path, info, lambda: engine.analyzer, cfg)
    identities, _, by_frame = plan_video_item(analysis, cfg, result, again)
    return identities, analysis.faces, functools.partial(
        _restore_video, path, out_dir, cfg, engine, result, info, analysis, identities, by_frame)


def _restore_video(path: str, out_dir: str, cfg: Config, engine, result: ItemResult, info,
                   analysis: Analysis, identities, by_frame):
    from worker.item.pipeline import media_dict, video_counts

    refs = assign_references(analysis.faces, identities, cfg)  # linking may have changed them
    t = time.monotonic()
    samples = ReportSamples.choose(analysis.faces, cfg.output.report_faces)
    stage = FaceRestoreStage(cfg, engine.item_restorer(adaptation_crops(analysis), result, identities))
    dst = storage.local_path(storage.join(out_dir, "restored" + Path(path).suffix.lower()))
    dst.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(f"restore {Path(path).name}", analysis.n_frames, enabled=cfg.progress)
    with VideoRewriter(path, str(dst), info, cfg.output) as writer:
        written = restore_stream(iter_frames(path, info), by_frame, refs, stage, writer.write,
                                 samples, progress.update,
                                 lambda i, before, after: samples.keep_frame(i, "", before, after))
        if written != analysis.n_frames:
            raise MediaError(path, f"second decode gave {written} frames, first gave {analysis.n_frames}")
    progress.done()
    result.timings["restore"] = time.monotonic() - t
    if result.timings.get("analyse") and not result.counts.get("analysis_reused"):
        engine.restore_per_analyse = result.timings["restore"] / result.timings["analyse"]
    result.counts.update(**video_counts(analysis, identities))
    media = media_dict(info)
    media["output"] = dst.name
    return media, [], samples
