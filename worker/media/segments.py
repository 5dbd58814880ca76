"""Keyframe-aligned segments of a video file (PyAV): index its packets, plan segments, decode
one segment or a few chosen frames, join independently encoded segments with the source's audio.

A segment is the presentation-order frame range ``[start, end)`` whose first frame is a
keyframe; decoding it means seeking to that keyframe and keeping frames whose pts fall in
``[start_pts, end_pts)``. Because the decoder emits presentation order, the first frame at or
past ``end_pts`` proves that every earlier one was emitted (also for open GOPs).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from worker.errors import MediaError
from worker.media.video import VideoInfo, frame_image, open_input
from worker.records import Frame


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


# a wanted frame further ahead than this is reached by seeking, a nearer one by decoding on
SEEK_AHEAD_S = 2.0


def frames_at(path: str | os.PathLike, info: VideoInfo,
              wanted: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """The frames whose pts are in ``wanted``, in pts order, as ``(pts, image)`` with the image
    ``iter_frames`` gives for that frame; seeks to the keyframe before each one that is more than
    ``SEEK_AHEAD_S`` ahead. A pts no frame has is passed over."""
    path, todo = str(path), sorted(set(wanted))
    ahead = SEEK_AHEAD_S / float(info.time_base) if info.time_base else 0
    k = 0
    with open_input(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        while k < len(todo):
            start = k
            container.seek(todo[k], stream=stream, backward=True, any_frame=False)
            try:
                for vf in container.decode(stream):
                    if vf.pts is None:
                        continue
                    while k < len(todo) and todo[k] < vf.pts:
                        k += 1
                    if k == len(todo):
                        break
                    if vf.pts == todo[k]:
                        yield todo[k], frame_image(vf, info)
                        k += 1
                        if k < len(todo) and todo[k] - vf.pts > ahead:
                            break
                else:
                    k = len(todo)  # the stream ended
            except av.FFmpegError as e:
                raise MediaError(path, f"decoding failed near pts {todo[min(k, len(todo) - 1)]}: {e}") from e
            k = max(k, start + 1)  # a seek that found nothing must not repeat


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
