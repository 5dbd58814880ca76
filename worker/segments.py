"""Keyframe-aligned video segments: plan them, decode one, merge their analyses, join their encodes.

Pure functions (PyAV + the pipeline's stages, no Ray), so that a segment of a film can be
analysed or restored anywhere and the pieces put back together into exactly the item the
single-machine path (``worker.video_item``) would have produced.

A segment is the presentation-order frame range ``[start, end)`` whose first frame is a
keyframe; decoding it means seeking to that keyframe and keeping frames whose pts fall in
``[start_pts, end_pts)``. Because the decoder emits presentation order, the first frame at or
past ``end_pts`` proves that every earlier one was emitted (also for open GOPs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import cv2
import numpy as np

from worker.analyse import Analysis, analyse_video
from worker.config import Config, OutputConfig
from worker.errors import MediaError
from worker.media.video import VideoInfo, VideoRewriter, frame_image, open_input
from worker.records import Face, Frame, Reference
from worker.references import CandidatePool
from worker.report import thumbnails
from worker.restore import FaceRestoreStage, restore_stream
from worker.track import ShotCutDetector, TrackSummary, iou


@dataclass(frozen=True)
class PacketIndex:
    """Presentation-order pts of every video frame and which of them are keyframes."""

    pts: tuple[int, ...]  # sorted presentation timestamps (stream time base)
    keyframes: tuple[int, ...]  # positions in ``pts`` of keyframes, ascending


@dataclass(frozen=True)
class Segment:
    index: int  # segment number within the item, 0-based
    start: int  # first frame (global presentation index); a keyframe
    end: int  # one past the last frame
    start_pts: int
    end_pts: int | None  # pts of frame ``end``; None for the last segment

    @property
    def frames(self) -> int:
        return self.end - self.start


def packet_index(path: str | os.PathLike) -> PacketIndex:
    """Demux (no decoding) the first video stream: pts and keyframe flags of every packet.

    Packets an edit list discards are left out, as the decoder drops them too."""
    path = str(path)
    pts: list[int] = []
    keys: set[int] = set()
    with open_input(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        for packet in container.demux(container.streams.video[0]):
            if packet.dts is None and packet.pts is None:  # the demuxer's flush packet
                continue
            if packet.is_discard or packet.pts is None:
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.add(packet.pts)
    order = sorted(pts)
    return PacketIndex(tuple(order), tuple(i for i, p in enumerate(order) if p in keys))


def plan_segments(index: PacketIndex, min_frames: int) -> list[Segment]:
    """Cover all frames with consecutive keyframe-aligned segments of at least ``min_frames``
    frames (GOPs are grouped; the last segment absorbs a short tail)."""
    n = len(index.pts)
    if n == 0:
        return []
    starts = [k for k in index.keyframes if k > 0]
    cuts = [0]
    for k in starts:
        if k - cuts[-1] >= min_frames:
            cuts.append(k)
    if len(cuts) > 1 and n - cuts[-1] < min_frames // 2:
        cuts.pop()  # a tiny tail costs a whole actor call; fold it into the previous segment
    bounds = cuts + [n]
    return [Segment(i, a, b, index.pts[a], index.pts[b] if b < n else None)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]


def iter_segment(path: str | os.PathLike, info: VideoInfo, seg: Segment) -> Iterator[Frame]:
    """Decode the frames of ``seg`` exactly as ``iter_frames`` decodes them in a full pass
    (same pts, same pixels, global ``Frame.index``)."""
    path = str(path)
    with open_input(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if seg.start > 0:  # the first segment decodes from the top, exactly like iter_frames
            container.seek(seg.start_pts, stream=stream, backward=True, any_frame=False)
        index = seg.start
        try:
            for vf in container.decode(stream):
                if vf.pts is None or vf.pts < seg.start_pts:
                    continue  # open-GOP leading frames belong to the previous segment
                if seg.end_pts is not None and vf.pts >= seg.end_pts:
                    break
                yield Frame(index=index, image=frame_image(vf, info), pts=vf.pts, time_base=info.time_base)
                index += 1
        except av.FFmpegError as e:
            raise MediaError(path, f"decoding failed at frame {index}: {e}") from e
    if index != seg.end:
        raise MediaError(path, f"segment {seg.index} gave {index - seg.start} frames, "
                               f"the packet index says {seg.frames}")


# -- analysis -------------------------------------------------------------------------------------
@dataclass
class SegmentAnalysis:
    """One segment's ``Analysis`` plus what the merge needs to see across its borders."""

    segment: Segment
    analysis: Analysis
    first_small: np.ndarray | None = None  # first/last frame at shot-cut-detector size
    last_small: np.ndarray | None = None


def _small(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (96, 54), interpolation=cv2.INTER_AREA)


def analyse_segment(path: str, info: VideoInfo, seg: Segment, analyzer, cfg: Config) -> SegmentAnalysis:
    """Pass 1 on one segment; ``cfg`` must carry the backend-calibrated thresholds."""
    out = SegmentAnalysis(seg, Analysis())

    def frames() -> Iterator[Frame]:
        for frame in iter_segment(path, info, seg):
            if out.first_small is None:
                out.first_small = _small(frame.image)
            out.last_small = frame.image
            yield frame
        if out.last_small is not None:
            out.last_small = _small(out.last_small)

    out.analysis = analyse_video(path, info, analyzer, replace(cfg, progress=False), frames())
    return out


def merge_analyses(parts: list[SegmentAnalysis], cfg: Config) -> Analysis:
    """One ``Analysis`` equal to a full pass: faces in frame order, tracks continued across a
    border where the single-pass tracker would have continued them (same IoU/embedding rules,
    no shot cut at the border), track ids renumbered in order of first appearance, candidate
    pools merged (the best ``k`` of a joined track are among the best ``k`` of its parts)."""
    parts = sorted(parts, key=lambda p: p.segment.index)
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def root(key: tuple[int, int]) -> tuple[int, int]:
        while key in parent:
            key = parent[key]
        return key

    out = Analysis()
    for s, part in enumerate(parts):
        a = part.analysis
        out.n_frames += a.n_frames
        out.detector_frames += a.detector_frames
        out.errors.extend(a.errors)
        cut = s > 0 and _cut_between(parts[s - 1], part, cfg)
        if cut:
            out.cuts.append(part.segment.start)
        out.cuts.extend(a.cuts)
        if s > 0 and not cut:
            for old, new in _continuations(parts[s - 1].analysis, a, cfg, part.segment.start):
                parent[(s, new)] = root((s - 1, old))
    # renumber: a track's id is its rank of first appearance, as Tracker._next_id hands them out
    ids: dict[tuple[int, int], int] = {}
    sums: dict[int, np.ndarray] = {}
    pool = CandidatePool(cfg.references.candidates_per_track)
    adapt = CandidatePool(cfg.restore.adapt_crops_per_track) if parts and parts[0].analysis.adapt_pool else None
    for s, part in enumerate(parts):
        for face in part.analysis.faces:
            if face.track >= 0:
                key = root((s, face.track))
                face.track = ids.setdefault(key, len(ids))
            out.faces.append(face)
        out.confirmed |= {ids[root((s, t))] for t in part.analysis.confirmed if root((s, t)) in ids}
        for tid, tr in part.analysis.tracks.items():
            new = ids.get(root((s, tid)))
            if new is not None and tr.embedding is not None:
                # the tracker keeps an unnormalised sum; n_faces x unit mean is its close stand-in
                sums[new] = sums.get(new, 0) + tr.embedding * tr.n_faces
        if part.analysis.pool is not None:  # faces already carry their new track ids
            for cand in sorted(part.analysis.pool.candidates(), key=lambda c: c.face.frame):
                pool.offer(cand.face.track, cand)
        if adapt is not None and part.analysis.adapt_pool is not None:  # RefSTAR adapts on these
            for cand in sorted(part.analysis.adapt_pool.candidates(), key=lambda c: c.face.frame):
                adapt.offer(cand.face.track, cand)
    out.pool, out.adapt_pool = pool, adapt
    out.tracks = _summaries(out.faces, sums)
    return out


def _cut_between(prev: SegmentAnalysis, nxt: SegmentAnalysis, cfg: Config) -> bool:
    if prev.last_small is None or nxt.first_small is None:
        return False
    detector = ShotCutDetector(cfg.track.cut_threshold)
    detector(prev.last_small)
    return detector(nxt.first_small)


def _continuations(prev: Analysis, nxt: Analysis, cfg: Config, border: int) -> list[tuple[int, int]]:
    """(previous-segment track, next-segment track) pairs the single-pass tracker would link:
    the old track is still alive at the border (``max_gap``) and the new one starts on the
    border frame, with enough box overlap and agreeing embeddings; greedy by IoU like
    ``Tracker._match``."""
    alive = [t for t in prev.tracks.values()
             if t.embedding is not None and border - t.last_frame <= cfg.track.max_gap]
    born = [t for t in nxt.tracks.values() if t.first_frame == border and t.embedding is not None]
    if not alive or not born:
        return []
    last_box = np.stack([prev.faces[t.faces[-1]].bbox for t in alive])
    first_box = np.stack([nxt.faces[t.faces[0]].bbox for t in born])
    overlap = iou(first_box, last_box)
    pairs, used_b, used_a = [], set(), set()
    limit = cfg.track.max_embed_dist
    for bi, ai in zip(*np.unravel_index(np.argsort(-overlap, axis=None), overlap.shape), strict=True):
        if overlap[bi, ai] < cfg.track.iou_min:
            break
        if bi in used_b or ai in used_a:
            continue
        dist = 1 - float(alive[ai].embedding @ born[bi].embedding)
        if limit is not None and dist > limit:
            continue
        pairs.append((alive[ai].id, born[bi].id))
        used_b.add(bi)
        used_a.add(ai)
    return pairs


def _summaries(faces: list[Face], sums: dict[int, np.ndarray]) -> dict[int, TrackSummary]:
    out: dict[int, TrackSummary] = {}
    for i, face in enumerate(faces):
        if face.track < 0:
            continue
        tr = out.get(face.track)
        if tr is None:
            s = sums.get(face.track)
            emb = None if s is None else (s / max(np.linalg.norm(s), 1e-12)).astype(np.float32)
            tr = out[face.track] = TrackSummary(face.track, face.frame, face.frame, 0, emb)
        tr.last_frame = face.frame
        tr.n_faces += 1
        tr.faces.append(i)
    return dict(sorted(out.items()))


# -- restoration ----------------------------------------------------------------------------------
@dataclass
class SegmentRestored:
    """What restoring one segment produced (the pixels are in ``path``)."""

    segment: Segment
    path: str
    restored: list[tuple[int, int]] = field(default_factory=list)  # (frame, position in frame)
    samples: list[tuple[int, int, np.ndarray, np.ndarray]] = field(default_factory=list)


def restore_segment(src: str, info: VideoInfo, seg: Segment, faces: list[Face],
                    refs: dict[str, Reference], stage: FaceRestoreStage, dst: str, cfg: OutputConfig,
                    want_samples: set[tuple[int, int]] = frozenset()) -> SegmentRestored:
    """Decode ``seg``, restore and paste its faces (batched as the single-machine path batches
    them), encode it on its own into ``dst`` (video only; audio is added by the join)."""
    by_frame: dict[int, list[Face]] = {}
    for face in faces:
        by_frame.setdefault(face.frame, []).append(face)
    pos = {id(f): (f.frame, k) for fs in by_frame.values() for k, f in enumerate(fs)}
    out = SegmentRestored(seg, dst)

    def sink(face: Face, before: np.ndarray, after: np.ndarray) -> None:
        key = pos[id(face)]
        if key in want_samples:
            out.samples.append((*key, *thumbnails(before, after)))

    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with VideoRewriter(src, dst, replace(info, has_audio=False), cfg) as writer:
        restore_stream(iter_segment(src, info, seg), by_frame, refs, stage, writer.write, sink)
    out.restored = [pos[id(f)] for fs in by_frame.values() for f in fs if f.restored]
    return out


def join_segments(src: str, info: VideoInfo, parts: list[str], dst: str) -> int:
    """Concatenate independently encoded segment files (in order) into ``dst`` and remux the
    source's audio packets unchanged; nothing is re-encoded. Returns the video packets written.

    Segments carry the source's pts, so the joined stream's timestamps are continuous by
    construction; the segments' codec headers must agree (same encoder and settings)."""
    if not parts:
        raise MediaError(src, "no segments to join")
    tmp = str(Path(dst).with_name(f".{Path(dst).name}.joining{Path(dst).suffix}"))
    written = 0
    first = open_input(parts[0])
    audio_in = open_input(src) if info.has_audio else None
    try:
        with av.open(tmp, mode="w") as out:
            v_in = first.streams.video[0]
            v_out = out.add_stream_from_template(v_in)
            if info.rotation:
                v_out.set_display_rotation(-info.rotation)
            audio = audio_in.streams.audio[0] if audio_in else None
            a_out = out.add_stream_from_template(audio) if audio is not None else None
            a_packets = audio_in.demux(audio) if audio is not None else iter(())
            pending: av.Packet | None = None
            for k, part in enumerate(parts):
                container = first if k == 0 else open_input(part)
                try:
                    stream = container.streams.video[0]
                    if bytes(stream.codec_context.extradata or b"") != bytes(v_in.codec_context.extradata or b""):
                        raise MediaError(part, "segment encoded with different codec headers")
                    for packet in container.demux(stream):
                        if packet.dts is None:
                            continue
                        t = packet.pts * packet.time_base if packet.pts is not None else None
                        # interleave: audio up to this video packet's time, so nothing piles up
                        while a_out is not None:
                            ap = pending or next(a_packets, None)
                            pending = None
                            if ap is None:
                                a_out = None
                                break
                            if ap.dts is None:
                                continue
                            if t is not None and ap.pts is not None and ap.pts * ap.time_base > t:
                                pending = ap
                                break
                            ap.stream = a_out
                            out.mux(ap)
                        packet.stream = v_out
                        out.mux(packet)
                        written += 1
                finally:
                    if k:
                        container.close()
            if a_out is not None:  # the audio that outlasts the picture
                for ap in _chain(pending, a_packets):
                    if ap.dts is not None:
                        ap.stream = a_out
                        out.mux(ap)
        os.replace(tmp, dst)
    except av.FFmpegError as e:
        raise MediaError(dst, f"joining segments failed ({e})") from e
    finally:
        first.close()
        if audio_in is not None:
            audio_in.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return written


def _chain(first: av.Packet | None, rest: Iterator[av.Packet]) -> Iterator[av.Packet]:
    if first is not None:
        yield first
    yield from rest
