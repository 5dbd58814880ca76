"""Records that flow between pipeline stages.

Conventions (every stage relies on them):
- images are BGR ``uint8`` arrays of shape (H, W, 3), C-contiguous, in *upright* orientation
  (video rotation and EXIF orientation already applied on read, undone on write);
- coordinates are float32 pixels of that upright image, origin top-left;
- the five landmarks are ordered as in insightface: image-left eye centre, image-right eye centre,
  nose tip, image-left mouth corner, image-right mouth corner;
- ``pts`` is in the video stream's ``time_base`` (a ``fractions.Fraction`` of seconds);
- embeddings are float32 vectors of unit L2 norm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass
class Frame:
    """One decoded video frame (or one album image, with ``index`` 0 and no pts)."""

    index: int  # position in decode (presentation) order, 0-based
    image: np.ndarray  # (H, W, 3) BGR uint8, upright, C-contiguous
    pts: int | None = None  # presentation timestamp in ``time_base`` units
    time_base: Fraction | None = None  # seconds per pts unit


@dataclass
class Face:
    """One face seen in one frame or image."""

    bbox: np.ndarray  # (4,) float32 x1, y1, x2, y2 in upright source pixels
    kps: np.ndarray  # (5, 2) float32 landmarks in upright source pixels (order: module doc)
    det_score: float  # detector confidence; dlib HOG margins are mapped to 0..1
    embedding: np.ndarray | None = None  # (D,) float32, unit norm; None when not embedded
    frame: int = 0  # Frame.index of the frame it belongs to
    pts: int | None = None  # Frame.pts, copied for the manifest
    source: str = ""  # file name inside an album; "" for videos
    detected: bool = True  # False when the box was carried by the tracker between detections
    track: int = -1  # track id within the item (videos); -1 when untracked
    identity: int = -1  # identity id within the item; -1 when unassigned (noise)
    quality: float = 0.0  # overall quality score, 0..1 (worker.stages.quality)
    quality_parts: dict[str, float] = field(default_factory=dict)  # named components, each 0..1
    yaw: float = 0.0  # approximate head yaw from landmarks, degrees (+ = facing image right)
    pitch: float = 0.0  # approximate head pitch from landmarks, degrees (+ = looking down)
    reference: str | None = None  # Reference.ref_id used to restore it
    restored: bool = False
    prior: float = 0.0  # share (0..1) of the face prior's detail it was given, having no reference (refstar.blind)
    skipped: str | None = None  # why it was left untouched ("too_small", "not_a_face", ...)

    @property
    def size(self) -> float:
        """Face size in pixels: the distance between eye centre and mouth centre times 2.5,
        roughly the side of an aligned crop; robust to box conventions of different detectors."""
        eyes = (self.kps[0] + self.kps[1]) / 2
        mouth = (self.kps[3] + self.kps[4]) / 2
        return float(np.linalg.norm(mouth - eyes) * 2.5)


@dataclass
class Reference:
    """A high-quality aligned face chosen to guide the restoration of one identity."""

    ref_id: str  # "<identity>/<rank>" (its file: ``worker.outputs.report.ref_path``)
    identity: int
    rank: int  # 0 = best
    frame: int  # Frame.index it was cut from
    pts: int | None
    source: str  # album file name, "" for videos
    quality: float  # 0..1
    yaw: float  # degrees
    pitch: float  # degrees
    crop: np.ndarray  # (S, S, 3) BGR uint8, aligned to the restoration template
    quality_parts: dict[str, float] = field(default_factory=dict)
    origin: str = ""  # item id it was cut from when another item of the archive gave it, "library"
    # for a reference library's photo (``source`` is then "<name>/<file>"); "" = this item


@dataclass
class Identity:
    """One person found in an item."""

    id: int
    n_faces: int
    n_tracks: int
    centroid: np.ndarray  # (D,) float32 unit-norm mean embedding
    references: list[Reference] = field(default_factory=list)
    person: str = ""  # archive-wide person id when the job links identities across items
    why_no_reference: str = ""  # when ``references`` is empty: why none of the faces qualified
    # linked items only (identity.link_archive): when no face is clearly sharper than this
    # person's others here (a clip sharp throughout), their best faces all the same; they serve
    # no face of this item, but a linked item's softer faces (worker.collection.archive_identity)
    spare: list[Reference] = field(default_factory=list)
    name: str = ""  # the reference library's name for this person, when one matched


@dataclass
class ItemError:
    """A failure that travels with the data instead of killing the batch."""

    file: str  # the offending input file (path or album member)
    reason: str  # human-readable, names what was wrong
    stage: str = ""  # "read", "analyse", "restore", "write", ...

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}" + (f" [{self.stage}]" if self.stage else "")


@dataclass
class ItemResult:
    """What one item (a video, an image or an album) produced."""

    item_id: str
    source: str  # input path or URI
    kind: str  # "video" | "album"
    status: str = "ok"  # "ok" | "partial" (some files failed) | "failed"
    output: str = ""  # output folder of the item
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    restorer: dict[str, object] = field(default_factory=dict)  # which restorer, how it was adapted
    library: dict[str, object] = field(default_factory=dict)  # worker.collection.library.summary: who matched
    errors: list[ItemError] = field(default_factory=list)
