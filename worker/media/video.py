"""Video probe, streaming decode and re-encode with PyAV.

Nothing here holds a whole video: frames are decoded one at a time and the rewriter encodes each
frame as it arrives while copying the source's audio packets alongside (a second demuxer on the
source file), so memory stays flat whatever the length.

Conventions:
- ``VideoInfo.rotation`` is the *clockwise* rotation in degrees (0/90/180/270) that makes stored
  frames upright, like the legacy MP4 ``rotate`` tag (a phone portrait clip reads 90). PyAV's
  ``VideoFrame.rotation`` is the counter-clockwise angle, so ``rotation = -frame.rotation % 360``.
  Mirroring in a display matrix is not supported (never seen from cameras) and is ignored.
- ``pts`` stay in the source stream's ``time_base``; the rewriter writes exactly those pts, so
  variable frame rate survives a round trip.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from worker.config import LimitsConfig, OutputConfig
from worker.errors import MediaError
from worker.item.litter import partial_name
from worker.records import Frame

# decoder name -> encoders of the same family, best first ("auto" codec choice)
SAME_FAMILY_ENCODERS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264",),
    "hevc": ("libx265",),
    "mpeg4": ("mpeg4",),
    "vp9": ("libvpx-vp9",),
    "vp8": ("libvpx",),
    "av1": ("libsvtav1", "libaom-av1"),
    "prores": ("prores_ks",),
    "mjpeg": ("mjpeg",),
    "mpeg2video": ("mpeg2video",),
    "mpeg1video": ("mpeg1video",),
    "wmv2": ("wmv2",),
    "wmv1": ("wmv1",),
}
# chroma subsampling (x, y) of pixel formats that need sizes divisible by it
_SUBSAMPLING = {"yuv420": (2, 2), "yuva420": (2, 2), "nv12": (2, 2), "nv21": (2, 2), "yuv422": (2, 1),
                "yuv411": (4, 1), "yuv410": (4, 4)}
DEFAULT_ENCODER = "libx264"
# swscale only knows these YUV matrices; others are mapped to their equivalent
_SWS_COLORSPACES = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_JPEG_RANGE = 2  # AVCOL_RANGE_JPEG (full range)
# swscale flags for every YUV <-> BGR conversion. Without accurate rounding and full chroma
# interpolation swscale's fast paths are biased: decoding came out ~1.1 levels dark and encoding
# took ~0.5 more, so one decode/encode round trip darkened a clip by ~2 levels (41.7 dB on a
# real clip; 55.3 dB with these flags, bias < 0.01). They cost ~12 ms a 1080p frame each way.
_SWS = (av.video.reformatter.Interpolation.BILINEAR | av.video.reformatter.Interpolation.ACCURATE_RND
        | av.video.reformatter.Interpolation.FULL_CHR_H_INT)
_EDIT_LIST_SLACK = 2  # frames
_MPEG4_MAX_TB_DEN = 65535  # the MPEG-4 part 2 bitstream cannot code finer time bases


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as needed to decode and rewrite it."""

    path: str
    width: int  # upright width, px (after rotation)
    height: int  # upright height, px
    stored_width: int  # width of the coded frames, px
    stored_height: int
    rotation: int  # clockwise degrees (0/90/180/270) that make stored frames upright
    time_base: Fraction  # seconds per pts unit of the video stream
    avg_fps: float  # frames per second (average; the stream may be variable rate)
    frames: int  # frame count from the header, 0 when unknown
    duration_s: float  # seconds, 0.0 when unknown
    codec: str  # codec (family) name, e.g. "h264", "av1" (whichever decoder reads it)
    pix_fmt: str  # e.g. "yuv420p"
    color: dict[str, int] = field(default_factory=dict)  # color_range/colorspace/primaries/trc
    has_audio: bool = False
    audio_codec: str | None = None
    format_name: str = ""  # demuxer name(s), e.g. "mov,mp4,m4a,3gp,3g2,mj2"


def open_input(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, mode="r")
    except FileNotFoundError as e:
        raise MediaError(path, "file not found") from e
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise MediaError(path, f"not a media file or corrupt header ({e})") from e


def probe_video(path: str | os.PathLike, limits: LimitsConfig) -> VideoInfo:
    """Read the header and the first frame of ``path``; refuse what the limits forbid.

    Decoding the first frame is deliberate: it proves a decoder exists and is the only place
    PyAV exposes the display rotation.
    """
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise MediaError(path, f"cannot read file ({e.strerror or e})") from e
    if size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    if size > limits.max_video_bytes:
        raise MediaError(path, f"file too large: {size} bytes > limit {limits.max_video_bytes}")
    with open_input(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:
            raise MediaError(path, "no decoder for the video codec")
        w, h = ctx.width, ctx.height
        if w * h > limits.max_video_pixels:
            raise MediaError(path, f"frame too large: {w}x{h} > limit {limits.max_video_pixels} px")
        tb = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if stream.duration:
            duration = float(stream.duration * tb)
        else:
            duration = (container.duration or 0) / av.time_base
        frames = int(stream.frames or 0)
        estimated = frames or int(round(duration * fps))
        if estimated > limits.max_video_frames:
            raise MediaError(path, f"too many frames: {estimated} > limit {limits.max_video_frames}")
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as e:
            raise MediaError(path, f"cannot decode the first frame ({e})") from e
        if first is None:
            raise MediaError(path, "video stream has no decodable frames")
        rotation = int(round(-(first.rotation or 0) / 90.0)) * 90 % 360
        color = {
            "color_range": int(first.color_range or ctx.color_range or 0),
            "colorspace": int(first.colorspace or ctx.colorspace or 0),
            "color_primaries": int(first.color_primaries or ctx.color_primaries or 0),
            "color_trc": int(first.color_trc or ctx.color_trc or 0),
        }
        audio = container.streams.audio[0] if container.streams.audio else None
        swap = rotation in (90, 270)
        return VideoInfo(
            path=path,
            width=h if swap else w,
            height=w if swap else h,
            stored_width=w,
            stored_height=h,
            rotation=rotation,
            time_base=Fraction(tb),
            avg_fps=fps,
            frames=frames,
            duration_s=duration,
            codec=ctx.codec.canonical_name or ctx.name,  # av1, not libdav1d
            pix_fmt=ctx.pix_fmt or first.format.name,
            color=color,
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None and audio.codec_context else None,
            format_name=container.format.name,
        )


def _to_upright(stored: np.ndarray, rotation: int) -> np.ndarray:
    # np.rot90 turns counter-clockwise; rotation is clockwise
    return np.ascontiguousarray(np.rot90(stored, -(rotation // 90)) if rotation else stored)


def _to_stored(upright: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(upright, rotation // 90) if rotation else upright)


def _frame_step(info: VideoInfo) -> int:
    """One nominal frame duration in pts units (for frames that come without pts)."""
    return max(1, round(1 / (info.avg_fps * info.time_base))) if info.avg_fps else 1


def frame_image(vf: av.VideoFrame, info: VideoInfo) -> np.ndarray:
    """A decoded frame as an upright BGR uint8 C-contiguous image."""
    # full-range sources must be expanded as such; swscale assumes limited otherwise
    kw = {"src_color_range": _JPEG_RANGE} if vf.color_range == _JPEG_RANGE else {}
    return _to_upright(vf.to_ndarray(format="bgr24", interpolation=_SWS, **kw), info.rotation)


def iter_frames(path: str | os.PathLike, info: VideoInfo | None = None) -> Iterator[Frame]:
    """Decode ``path`` one frame at a time: upright BGR uint8 C-contiguous images with their pts.

    Frames come in presentation order. A frame without pts gets the previous pts plus one frame
    duration. Damage mid-stream raises ``MediaError`` after the good frames were yielded.
    """
    path = str(path)
    if info is None:
        info = probe_video(path, LimitsConfig())
    step = _frame_step(info)
    with open_input(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        index = 0
        last_pts: int | None = None
        while True:
            try:
                vf = next(frames)
            except StopIteration:
                break
            except av.FFmpegError as e:
                raise MediaError(path, f"decoding failed at frame {index}: {e}") from e
            image = frame_image(vf, info)
            pts = vf.pts
            if pts is None:
                pts = 0 if last_pts is None else last_pts + step
            last_pts = pts
            yield Frame(index=index, image=image, pts=pts, time_base=info.time_base)
            index += 1
    # FFmpeg's mp4 demuxer stops quietly at a truncated mdat; the header's count knows better.
    # The slack allows for frames an edit list legitimately hides at the start.
    if info.frames and index < info.frames - _EDIT_LIST_SLACK:
        raise MediaError(path, f"decoding failed at frame {index}: stream ended early "
                               f"(header says {info.frames} frames)")


def pick_encoder(info: VideoInfo, cfg: OutputConfig, format_codecs: set[str] | None = None,
                 container: str | None = None) -> str:
    """Encoder name for ``cfg.video_codec`` ('auto' = the source's family when we have it)."""
    if cfg.video_codec != "auto":
        candidates: tuple[str, ...] = (cfg.video_codec,)
    else:
        candidates = SAME_FAMILY_ENCODERS.get(info.codec, ()) + (DEFAULT_ENCODER, "libvpx-vp9")
        if container == "asf":
            # exact pts beat the codec family: ASF keeps one time per packet, so an encoder with
            # a delay (x264, even without B-frames) shifts every frame; WMV2 has none
            candidates = ("wmv2",) + tuple(c for c in candidates if c != "wmv2")
        if info.time_base.denominator > _MPEG4_MAX_TB_DEN:
            # exact pts beat the codec family: such a source's timestamps cannot be kept in mpeg4
            candidates = tuple(c for c in candidates if c != "mpeg4")
    for name in candidates:
        try:
            codec = av.Codec(name, "w")
        except (av.FFmpegError, ValueError):
            continue
        # the source's own family needs no listing: its container (the output's) already holds it
        # (PyAV lists only a muxer's default codecs for some, e.g. mpeg1video alone for .mpg)
        own = name in SAME_FAMILY_ENCODERS.get(info.codec, ())
        if format_codecs is None or own or codec.name in format_codecs or name in format_codecs:
            return name
    raise MediaError(info.path, f"no usable encoder among {', '.join(candidates)} for this container")


def check_encodable(src: str | os.PathLike, info: VideoInfo, cfg: OutputConfig, max_pixels: int) -> None:
    """Open the encoder and container the restored video will use, on a throwaway file, so that
    a video that cannot be written back (or whose ``output.upscale`` frames would exceed
    ``max_pixels``) fails (MediaError naming ``src``) before its analysis is paid for."""
    import tempfile

    from worker.media.image import check_output_size

    check_output_size(str(src), info.width, info.height, cfg.upscale, max_pixels)

    with tempfile.TemporaryDirectory(prefix="refstar-check-") as tmp:
        writer = VideoRewriter(src, Path(tmp) / f"check{Path(src).suffix.lower()}", info, cfg)
        writer.open()
        writer.abort()


def _codec_time_base(encoder: str, info: VideoInfo) -> Fraction:
    """The encoder's time base: the source's (exact pts), except for MPEG-1/2, whose bitstream
    codes time in frames of one of a few standard rates."""
    if encoder in ("mpeg1video", "mpeg2video") and info.avg_fps:
        return 1 / Fraction(info.avg_fps).limit_denominator(1001)
    return info.time_base


def _encoder_options(ctx: av.video.codeccontext.VideoCodecContext, name: str, crf: int) -> None:
    """Constant-quality settings; ``crf`` follows x264's scale (lower = better, 18 ~ transparent)."""
    if name in ("libx264", "libx265"):
        ctx.options = {"crf": str(crf), **({"x265-params": "log-level=error"} if name == "libx265" else {})}
    elif name in ("libvpx-vp9", "libvpx", "libaom-av1"):
        ctx.options = {"crf": str(min(63, crf + 13)), "b": "0"}  # vpx/aom crf 31 ~ x264 crf 18
    elif name == "libsvtav1":
        ctx.options = {"crf": str(min(63, crf + 13))}
    elif name in ("mpeg4", "mjpeg"):
        # fixed quantiser: x264 crf 18 ~ qscale 2, crf 23 ~ 3, crf 28 ~ 4
        ctx.qscale = True
        ctx.global_quality = max(1, min(31, round((crf - 10) / 4))) * 118  # FF_QP2LAMBDA


def _realtime_threads() -> set[int]:
    """Thread ids of this process under a real-time scheduling policy (Linux; else none)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return set()
    out = set()
    for tid in tids:
        try:
            if os.sched_getscheduler(tid) in (os.SCHED_FIFO, os.SCHED_RR):
                out.add(tid)
        except OSError:  # the thread ended meanwhile
            pass
    return out


@contextlib.contextmanager
def _no_realtime_threads():
    """Put back the normal policy of threads an encoder made real-time. SVT-AV1 (libsvtav1)
    opened as root switches the opening thread and its own ~40 threads to SCHED_FIFO 99, and
    the opening thread stays so after the encoder closes: a worker that wrote one AV1 video
    would then starve every other process on its cores (measured: Ray actors and the other
    test process stalled for minutes)."""
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    before = _realtime_threads()
    try:
        yield
    finally:
        for tid in _realtime_threads() - before:
            try:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass


def enlarged_info(info: VideoInfo, n: int) -> VideoInfo:
    """``info`` with every frame size ``n`` times (``output.upscale``)."""
    if n == 1:
        return info
    return replace(info, width=info.width * n, height=info.height * n,
                   stored_width=info.stored_width * n, stored_height=info.stored_height * n)


class VideoRewriter:
    """Encode upright frames back into a file shaped like the source, copying its audio.

    Use as a context manager; the output appears at ``dst_path`` only when the block ends
    without an exception (it is written to a hidden temporary name in the same folder first).

    The video stream gets the source's time base and exact pts in MP4/MOV. Matroska/WebM force a
    1/1000 time base, so there pts are rounded to milliseconds by the muxer. An mpeg4 source
    whose time base is finer than 1/65535 is re-encoded with libx264 under ``auto`` (mpeg4
    cannot carry those timestamps).
    """

    def __init__(self, src_path: str | os.PathLike, dst_path: str | os.PathLike,
                 info: VideoInfo, cfg: OutputConfig):
        self.src_path = str(src_path)
        self.dst_path = str(dst_path)
        self.info = enlarged_info(info, cfg.upscale)  # what is written: ``output.upscale`` times the source
        self.cfg = cfg
        self.frames_written = 0
        dst = Path(self.dst_path)
        # hidden name keeps album listings clean; same folder so the final rename is atomic
        self._tmp = str(partial_name(dst))
        self._out: av.container.OutputContainer | None = None
        self._audio_in: av.container.InputContainer | None = None
        self._audio_packets: Iterator[av.Packet] | None = None
        self._pending: av.Packet | None = None
        self._last_pts: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> VideoRewriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Create the output and its streams, and open the encoder (so that a video it cannot
        take fails before any work, and so that no encoder opens later, outside
        ``_no_realtime_threads``)."""
        info = self.info
        try:
            self._out = out = av.open(self._tmp, mode="w")
            self.encoder = pick_encoder(info, self.cfg, out.supported_codecs, out.format.name)
            vs = out.add_stream(self.encoder)
            ctx = vs.codec_context
            ctx.width, ctx.height = info.stored_width, info.stored_height
            ctx.pix_fmt = self._pix_fmt()
            # PyAV defaults encoders to SLICE threads, which makes x264 use its slower sliced mode
            ctx.thread_type = "AUTO"
            ctx.time_base = self._codec_tb = _codec_time_base(self.encoder, info)
            vs.time_base = info.time_base
            if info.avg_fps:  # only a rate-control hint: pts decide the timing
                ctx.framerate = Fraction(info.avg_fps).limit_denominator(1001)
            for key, value in info.color.items():
                setattr(ctx, key, value)
            _encoder_options(ctx, self.encoder, self.cfg.crf)
            if info.rotation:
                vs.set_display_rotation(-info.rotation)  # PyAV wants counter-clockwise
            self._video = vs
            with _no_realtime_threads():
                ctx.open()
            if info.has_audio:
                self._open_audio(out)
        except MediaError:
            self.abort()
            raise
        except (av.FFmpegError, OSError, ValueError) as e:
            self.abort()
            raise MediaError(self.src_path, f"cannot open the {getattr(self, 'encoder', 'video')} encoder "
                                            f"for its restored video ({e})") from e

    def _pix_fmt(self) -> str:
        """The source's pixel format when the encoder has it, else 4:2:0; an odd size that the
        subsampled format cannot hold gets an unsubsampled one (H.264 High 4:4:4 for x264)."""
        fmt = self.info.pix_fmt.replace("yuvj", "yuv")  # full range is a tag, not a format
        supported = {f.name for f in av.Codec(self.encoder, "w").video_formats or ()}
        w, h = self.info.stored_width, self.info.stored_height
        for cand in (fmt, "yuv420p", "yuv444p", "gbrp"):
            sx, sy = next((v for k, v in _SUBSAMPLING.items() if cand.startswith(k)), (1, 1))
            known = cand in supported if supported else cand == "yuv420p"
            if known and w % sx == 0 and h % sy == 0:
                return cand
        raise MediaError(self.src_path, f"its {w}x{h} frames cannot be encoded by {self.encoder}, "
                                        "which needs even sizes (choose another output.video_codec)")

    def _open_audio(self, out: av.container.OutputContainer) -> None:
        self._audio_in = src = open_input(self.src_path)
        a_in = src.streams.audio[0]
        if a_in.codec_context.name not in out.supported_codecs:
            raise MediaError(self.src_path, f"container {out.format.name} cannot hold the "
                                            f"source audio ({a_in.codec_context.name}) unchanged")
        self._audio = out.add_stream_from_template(a_in)
        self._audio_packets = src.demux(a_in)

    def close(self) -> None:
        """Flush the encoder, copy the remaining audio, and move the file into place."""
        try:
            for packet in self._video.encode(None):
                self._out.mux(packet)
            self._mux_audio_until(None)
            self._out.close()
            self._out = None
        except av.FFmpegError as e:
            self.abort()
            raise MediaError(self.src_path, f"encoding its restored video failed at close ({e})") from e
        self._close_audio()
        try:
            os.replace(self._tmp, self.dst_path)
        except OSError as e:
            self.abort()
            raise MediaError(self.dst_path, f"cannot move the finished video into place ({e})") from e

    def abort(self) -> None:
        """Drop everything written so far; ``dst_path`` is left untouched."""
        for closer in (self._out, self._audio_in):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001 - already failing; the temp file goes anyway
                    pass
        self._out = self._audio_in = None
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def _close_audio(self) -> None:
        if self._audio_in is not None:
            self._audio_in.close()
            self._audio_in = None

    # -- writing -----------------------------------------------------------------------------
    def write(self, frame: Frame) -> None:
        """Encode one upright BGR frame with its source pts (``frame.pts`` in ``info.time_base``)."""
        info = self.info
        img = frame.image
        if img.shape != (info.height, info.width, 3) or img.dtype != np.uint8:
            raise ValueError(f"expected a ({info.height}, {info.width}, 3) uint8 image, "
                             f"got {img.shape} {img.dtype}")
        vf = av.VideoFrame.from_ndarray(_to_stored(img, info.rotation), format="bgr24")
        cs = _SWS_COLORSPACES.get(info.color.get("colorspace", 0))
        rng = _JPEG_RANGE if info.color.get("color_range") == _JPEG_RANGE else 1
        # the matrix and range must match the ones the decoder used, or colours drift
        vf = vf.reformat(format=self._video.codec_context.pix_fmt, dst_colorspace=cs,
                         dst_color_range=rng, interpolation=_SWS)
        if frame.pts is not None:
            pts = frame.pts
        else:  # the caller lost the timestamps: continue at the nominal frame rate
            pts = 0 if self._last_pts is None else self._last_pts + _frame_step(info)
        self._last_pts = pts
        tb = self._codec_tb
        # half up, not to even: frames half a frame off the grid (an .mpg starting at 0.54 s) must
        # not land two on one tick
        vf.pts = pts if tb == info.time_base else math.floor(pts * info.time_base / tb + Fraction(1, 2))
        vf.time_base = tb
        try:
            for packet in self._video.encode(vf):
                self._out.mux(packet)
        except av.FFmpegError as e:
            raise MediaError(self.src_path, f"encoding its restored video failed at frame {self.frames_written}: {e}") from e
        self.frames_written += 1
        self._mux_audio_until(pts * info.time_base)

    def _mux_audio_until(self, t: Fraction | None) -> None:
        """Copy source audio packets that start at or before ``t`` seconds (all when None)."""
        if self._audio_packets is None:
            return
        while True:
            packet = self._pending
            if packet is None:
                packet = next(self._audio_packets, None)
                if packet is None:
                    self._audio_packets = None
                    return
                if packet.dts is None:  # demuxer's empty flush packet
                    continue
            if t is not None and packet.pts is not None and packet.pts * packet.time_base > t:
                self._pending = packet
                return
            self._pending = None
            packet.stream = self._audio
            self._out.mux(packet)


def audio_packet_digests(path: str | os.PathLike) -> list[tuple[int, str]]:
    """``(pts, sha1 hex of the payload)`` of every packet of the first audio stream, in file order.

    Two files whose lists are equal carry the same audio bit for bit (pts in the stream's
    time base, which MP4 keeps at the sample rate).
    """
    out = []
    with open_input(str(path)) as container:
        if not container.streams.audio:
            return []
        for packet in container.demux(container.streams.audio[0]):
            if packet.dts is None:
                continue
            out.append((packet.pts, hashlib.sha1(bytes(packet)).hexdigest()))
    return out
