"""Configuration: frozen dataclasses, loaded once from YAML plus ``--set key=value`` overrides.

Every option has a default that works offline on a CPU-only machine.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the key."""


# the overrides that give the per-frame analysis path (detector, landmarks and embedding on every
# face of every frame), the yardstick of the faster defaults (README, Analysis speed)
PER_FRAME = ("detect.stride=1", "detect.thorough_every=1", "track.embed_every=1")


@dataclass(frozen=True)
class DetectConfig:
    backend: str = "dlib"  # "dlib" (offline default) | "insightface"
    dlib_detector: str = "hog"  # "hog" (fast, CPU) | "cnn" (MMOD; needs a GPU to be practical)
    upsample: int = 1  # dlib: upsample the detection image this many times (finds small faces)
    max_side: int = 1280  # detect on a copy downscaled so its longer side is at most this, px
    # videos: run the detector at most every N frames and follow the faces in between; after a
    # detection that found someone new it runs on the next frame, the gap doubling back up to N;
    # 1 with thorough_every=1 and track.embed_every=1 is the per-frame path (PER_FRAME)
    stride: int = 5
    # videos: of every N detections only one looks for faces of every size; the others look only
    # for faces about as large as the smallest tracked one (dlib: no upsampling, a coarser copy;
    # several times cheaper); 1 = every detection looks for every size
    thorough_every: int = 3
    min_score: float = 0.0  # drop detections below this score (0..1)
    # dlib: fit the 68 points again this many times from the box they imply (worker.faces.
    # dlib_backend.box_from_68), so that they depend far less on the box the fit started from
    landmark_refits: int = 2
    # restore a track (video) or face (photo) only when dlib's CNN detector confirms a face on
    # its aligned crop (worker.faces.verify): HOG fires on textured clothing
    verify: bool = True
    insightface_root: str = "~/.insightface"  # folder holding models/<pack>/
    insightface_pack: str = "buffalo_l"
    insightface_ctx: int = -1  # -1 CPU, >=0 GPU index


@dataclass(frozen=True)
class TrackConfig:
    iou_min: float = 0.3  # minimum box IoU to continue a track
    # maximum cosine distance to continue a track; None = the face backend's calibrated value
    # (dlib 0.1: one face across degraded frames 0.04-0.07, background 0.14+; insightface 0.6)
    max_embed_dist: float | None = None
    max_gap: int = 8  # frames a track may go unseen before it ends
    cut_threshold: float = 0.5  # colour-histogram distance (0..1) that marks a shot cut
    smooth_window: int = 5  # frames in the centred landmark smoothing window (odd; 1 = off)
    # videos: embed a tracked face at most every N frames while it keeps looking like itself (the
    # embedding is most of a face's analysis cost); 1 = every face of every frame
    embed_every: int = 10


@dataclass(frozen=True)
class IdentityConfig:
    # average-linkage cosine distance under which faces/tracks may be one person; None = the
    # face backend's calibrated value (dlib 0.075: pairwise precision 1.0 / recall 0.98 on the
    # 22 labelled people of ../shared/data; insightface/ArcFace 0.5)
    max_dist: float | None = None
    min_faces: int = 1  # density rule: faces (album) or tracks (video) needed to start a person
    min_track_frames: int = 3  # video: tracks shorter than this are not clustered alone
    # link the identities of all items of a run (refstar restore with several inputs, --link; the
    # archive job) into archive-wide persons that share their best references: every item is
    # analysed and planned before any is restored
    link_archive: bool = False
    link_max_dist: float | None = None  # cosine distance of identity centroids; None = max_dist


@dataclass(frozen=True)
class ReferenceConfig:
    """References are chosen relative to their person (worker.stages.references): a candidate must be
    ``min_gain`` times sharper than the faces it will serve; the absolute floors below only
    reject crops that cannot help any face."""

    # references kept per identity: each face is restored with the one nearest its own look
    # (worker.stages.restore), so more of them, near-duplicates aside, give closer matches
    top_k: int = 8
    candidates_per_track: int = 8  # best crops kept per track while analysing, as many again from other moments (0.75 MiB each at 512 px)
    min_gain: float = 1.15  # sharpness of a reference over the faces it serves (and a quarter of its person's)
    min_face_px: int = 32  # floor: under this a crop is upsampled >16x to 512 px, no detail left
    max_yaw: float = 60.0  # floor, degrees: beyond, half the face is hidden from frontal targets
    max_pitch: float = 45.0  # floor, degrees
    min_exposure: float = 0.1  # floor on the exposure score, 0..1: nearly black or blown out
    min_quality: float = 0.0  # optional absolute gate on overall quality, 0..1 (0 = none)
    # a reference library: one folder of photos per person name (local or s3://), see worker.collection.library
    library: str = ""
    min_pose_gap: float = 8.0  # degrees of yaw/pitch between two references of one person
    min_crop_dist: float = 0.01  # mean abs difference (0..1) below which crops are duplicates
    # at restore, a restorer that can rank references (guided) compares this many of the
    # person's references nearest the face's look and takes the one it fits best; 1 = the
    # nearest in look (each one compared costs guided an optical flow, about 50 ms on a CPU core)
    compare: int = 4


@dataclass(frozen=True)
class RestoreConfig:
    restorer: str = "guided"  # "guided" | "none" | "refstar" (the learned network)
    crop_size: int = 512  # aligned crop side, px
    batch_size: int = 8  # faces per restorer call
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    min_face_px: int = 24  # faces smaller than this are left untouched and counted
    # leave a face as it is when none of its person's references is references.min_gain times
    # sharper than it (it is among the person's sharpest); false: restore every face
    skip_sharp: bool = True
    # refstar: "prior" (the face prior shipped in the package, refstar/weights/MODEL_CARD.md),
    # a checkpoint or training-run folder, local or s3:// (fetched once, cached), or ""
    # (adaptation trains from scratch)
    checkpoint: str = "prior"
    # refstar: before restoring an item, fine-tune the checkpoint on its own best faces: each
    # person's sharp faces, degraded, restored with another of them (no such faces: the
    # checkpoint restores as it is)
    adapt: bool = True
    adapt_steps: int = 400  # the adaptation budget: a busy machine takes longer, not fewer steps
    # optional cap, s: adaptation stops by then even short of adapt_steps (the manifest and the
    # progress line say so); None = no cap
    adapt_time_s: float | None = None
    adapt_preset: str = "adapt"  # NetConfig preset when training from scratch
    adapt_size: int = 128  # training crop side, px
    # refstar, adapting: keep each face at its own resolution (the crop side where it is neither
    # enlarged nor shrunk, adapt_size..crop_size), learn on adapt_size patches of them and
    # restore whole crops at the item's median face side; false: shrink every face to adapt_size
    native: bool = True
    # refstar, adapting: the net learns to refine the guided restorer's result (guided first
    # transfers the reference's detail at the full crop size, then the adapted net corrects it);
    # false: the net restores the degraded face itself
    guide: bool = True
    adapt_crops_per_track: int = 24  # sharpest crops kept per track for adaptation
    # refstar, adapting: share of samples whose face is not degraded (the net learns to leave a
    # face that lost nothing as it is); 0 = every sample degraded
    adapt_clean: float = 0.0
    strength: float = 1.0  # guided: how much reference detail is transferred, 0..1
    # guided: a face given no reference whose edges look blurred past a few px of the crop gets
    # the shipped face prior's detail on top ("prior", refstar/blind.py); "none": guided alone
    blind: str = "prior"
    # every restorer: 0 = leave every face exactly as it is, 1 = the restorer's full result;
    # between, the restored face is blended with the input (input + fidelity x change)
    fidelity: float = 1.0
    # whom to restore: comma-separated person numbers (an item's manifest "identities" ids, so
    # per item) or names from the reference library; "" = everyone. Others are left untouched.
    persons: str = ""
    skip_persons: str = ""  # the same, for people to leave untouched
    largest_face_only: bool = False  # in each frame or photo only its largest face is restored

    @property
    def adapts(self) -> bool:
        """Whether each item fine-tunes RefSTAR on its own faces before it is restored."""
        return self.restorer == "refstar" and self.adapt and self.fidelity > 0


@dataclass(frozen=True)
class PasteConfig:
    feather: float = 0.08  # feather width as a fraction of the crop side
    color_match: bool = True  # match the restored face's colour statistics to the input's


@dataclass(frozen=True)
class OutputConfig:
    video_codec: str = "auto"  # "auto" = same family as the source, else h264
    crf: int = 18  # x264/x265 quality (lower = better)
    jpeg_quality: int = 95
    write_report: bool = True
    report_faces: int = 6  # before/after crops per identity in report.html
    # "items": OUT/<item-id>/restored.<ext>; "mirror": the input's tree and names, with the
    # item's refs/manifest/report in a <name>.refstar sidecar (worker.item.layout)
    layout: str = "items"
    suffix: str = ""  # mirror layout: added before each restored file's extension ("_restored")
    # 1, 2 or 4: restored media at that many times the input's width and height; the background
    # is resized with Lanczos (OpenCV INTER_LANCZOS4), faces are restored on crops cut from it
    upscale: int = 1


@dataclass(frozen=True)
class LimitsConfig:
    max_image_pixels: int = 100_000_000  # refuse larger images (decompression bombs)
    max_video_pixels: int = 8192 * 4320  # refuse larger frames
    max_video_bytes: int = 64 * 1024**3
    max_video_frames: int = 2_000_000
    max_faces_per_frame: int = 64


@dataclass(frozen=True)
class Config:
    detect: DetectConfig = field(default_factory=DetectConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    references: ReferenceConfig = field(default_factory=ReferenceConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    paste: PasteConfig = field(default_factory=PasteConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    progress: bool = True  # progress lines on stderr


# Short aliases used in docs and issues (e.g. ``--set restorer=none``).
ALIASES = {"restorer": "restore.restorer", "backend": "detect.backend"}


def _coerce(value: Any, typ: Any, key: str) -> Any:
    if isinstance(typ, types.UnionType):  # "X | None": None, or an X
        if value is None:
            return None
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str) and not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r}")
    return value


def person_list(value: str) -> list[str]:
    """``restore.persons`` / ``restore.skip_persons`` as its entries, in order, without blanks."""
    return [p.strip() for p in value.split(",") if p.strip()]


def add_selection_args(p) -> None:
    """The options that choose whom to restore and where the results go (``refstar restore``,
    ``run``, ``demo``)."""
    g = p.add_argument_group("people", "whom to restore; the others are left exactly as they are")
    g.add_argument("--persons", metavar="LIST", help="only these people: person numbers from the item's "
                   "manifest (per item) or names from the reference library, comma-separated (restore.persons)")
    g.add_argument("--skip-persons", metavar="LIST", help="everyone but these (restore.skip_persons)")
    g.add_argument("--largest-face-only", action="store_true",
                   help="only the largest face of each frame or photo (restore.largest_face_only)")
    o = p.add_argument_group("output", "where the restored files go, and their size")
    o.add_argument("--layout", choices=("items", "mirror"), help="items: OUT/<item-id>/restored.<ext>; "
                   "mirror: the input's own names in a tree like the input's, each item's report in a "
                   "<name>.refstar folder beside it (output.layout; default items)")
    o.add_argument("--suffix", metavar="S", help="mirror layout: added before each restored file's "
                   "extension, clip.mp4 -> clip_S.mp4 when S is _S (output.suffix)")
    o.add_argument("--upscale", type=int, choices=(1, 2, 4), metavar="N", help="1, 2 or 4: restored media at N "
                   "times the input's width and height, the background resized with Lanczos and the faces "
                   "restored at that size (output.upscale; default 1)")


def selection_overrides(args) -> list[str]:
    """``--set`` overrides for the options of :func:`add_selection_args`."""
    out = [f"output.{opt}={json.dumps(getattr(args, opt))}" for opt in ("layout", "suffix", "upscale")
           if getattr(args, opt, None) is not None]
    for opt in ("persons", "skip_persons"):
        if getattr(args, opt, None):
            out.append(f"restore.{opt}={json.dumps(getattr(args, opt))}")
    if getattr(args, "largest_face_only", False):
        out.append("restore.largest_face_only=true")
    return out


FIDELITY_HELP = ("0..1 (restore.fidelity, default 1): 0 leaves every face exactly as it is, "
                 "1 is the restorer's full result, between blends the two")

# closed ranges of the numeric keys a wrong value would silently misuse (None: no bound)
RANGES: dict[str, tuple[float | None, float | None]] = {
    "detect.upsample": (0, 4), "detect.stride": (1, None),
    "detect.thorough_every": (1, None), "detect.min_score": (0.0, 1.0),
    "detect.max_side": (64, None), "detect.landmark_refits": (0, 5),
    "track.iou_min": (0.0, 1.0), "track.max_gap": (0, None), "track.cut_threshold": (0.0, 1.0),
    "track.smooth_window": (1, None), "track.embed_every": (1, None),
    "identity.min_faces": (1, None), "identity.min_track_frames": (1, None),
    "references.top_k": (0, None), "references.candidates_per_track": (1, None), "references.compare": (1, None),
    "references.min_gain": (1.0, None), "references.min_quality": (0.0, 1.0),
    "references.min_exposure": (0.0, 1.0),
    "restore.crop_size": (64, 2048), "restore.batch_size": (1, None), "restore.min_face_px": (0, None),
    "restore.adapt_steps": (1, None), "restore.adapt_time_s": (0.0, None),
    "restore.adapt_size": (32, 1024), "restore.adapt_crops_per_track": (2, None),
    "restore.strength": (0.0, 1.0), "restore.fidelity": (0.0, 1.0), "restore.adapt_clean": (0.0, 1.0),
    "paste.feather": (0.0, 0.5),
    "output.crf": (0, 51), "output.jpeg_quality": (1, 100), "output.report_faces": (0, None),
}


# the values a string key takes (a regex where the set is open, e.g. a GPU index)
CHOICES: dict[str, tuple[str, ...]] = {
    "restore.restorer": ("none", "guided", "refstar"),
    "restore.device": ("auto", "cpu", "cuda", r"cuda:\d+"),
    "restore.adapt_preset": ("tiny", "adapt", "small", "base"),
    "restore.blind": ("prior", "none"),
    "detect.backend": ("dlib", "insightface"),
    "detect.dlib_detector": ("hog", "cnn"),
    "output.layout": ("items", "mirror"),
    "output.upscale": ("1", "2", "4"),
}

# free-text keys that end up in file names: (pattern, what it allows)
NAME_PATTERNS: dict[str, tuple[str, str]] = {
    "output.suffix": (r"[\w\-+.@ ]{0,40}", "at most 40 letters, digits, spaces and _-+.@ (no '/')"),
}


def _check_choice(key: str, value: Any) -> None:
    import re

    allowed = CHOICES.get(key)
    if allowed is None or any(re.fullmatch(a, str(value)) for a in allowed):
        return
    import difflib

    shown = [a.replace(r"\d+", "N") for a in allowed]
    near = difflib.get_close_matches(str(value), shown, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ConfigError(f"{key}: {value!r} is not one of {', '.join(shown)}{hint}")


def _check_name(key: str, value: Any) -> None:
    import re

    rule = NAME_PATTERNS.get(key)
    if rule is not None and not re.fullmatch(rule[0], str(value)):
        raise ConfigError(f"{key}: {value!r} cannot be part of a file name ({rule[1]})")


def _check_range(key: str, value: Any) -> None:
    lo, hi = RANGES.get(key, (None, None))
    if value is None or (lo is None and hi is None):
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"[{lo}, {hi}]" if hi is not None else f">= {lo}" if lo is not None else f"<= {hi}"
        raise ConfigError(f"{key}: {value!r} is out of range (allowed: {span})")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            import difflib

            near = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean '{prefix}{near[0]}'? " if near else ""
            raise ConfigError(f"unknown config key {name!r}; {hint}known: {', '.join(sorted(fields))}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value, name + ".")
        else:
            kwargs[key] = _coerce(value, typ, name)
            _check_range(name, kwargs[key])
            _check_choice(name, kwargs[key])
            _check_name(name, kwargs[key])
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = ALIASES.get(dotted, dotted).split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``path`` (YAML, optional) and apply ``key=value`` overrides (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: top level must be a mapping")
        tree = loaded
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        _set_path(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return _build(Config, tree, "")


def with_backend_defaults(cfg: Config, identity_max_dist: float, track_max_embed_dist: float) -> Config:
    """Fill the thresholds left to the face backend (embedding spaces differ: dlib's 128-d
    distances are about a sixth of ArcFace's)."""
    ident, track = cfg.identity, cfg.track
    if ident.max_dist is None:
        ident = dataclasses.replace(ident, max_dist=identity_max_dist)
    if track.max_embed_dist is None:
        track = dataclasses.replace(track, max_embed_dist=track_max_embed_dist)
    return dataclasses.replace(cfg, identity=ident, track=track)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# keys that change what is printed, never what is written: an item finished with them one way
# is done for a run that sets them the other way (``-q`` must not redo a two-hour film)
PRESENTATION_KEYS = ("progress",)


def digest(cfg: Config) -> str:
    """Short stable hash of the config keys that shape an item's outputs (part of deterministic
    item ids)."""
    import hashlib
    import json

    shaping = {k: v for k, v in to_dict(cfg).items() if k not in PRESENTATION_KEYS}
    blob = json.dumps(shaping, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
