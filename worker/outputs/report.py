"""manifest.json (versioned, machine-readable) of one item, and the before/after views that its
report.html (``worker.outputs.report_html``) shows."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from worker.records import Face, Identity, ItemResult

MANIFEST_SCHEMA = "refstar-worker/manifest"
MANIFEST_VERSION = 1


def _r(x: float, nd: int = 2) -> float:
    return round(float(x), nd)


def ref_path(ident: Identity, ref) -> str:
    """Where a reference goes in the item's folder: ``refs/<identity>[-<library name>]/<rank>.png``."""
    import re

    slug = re.sub(r"[^\w.-]+", "_", ident.name).strip("._") if ident.name else ""
    return f"refs/{ident.id}{'-' + slug if slug else ''}/{ref.rank}.png"


def face_record(face: Face) -> dict:
    return {
        "frame": face.frame, "pts": face.pts, "source": face.source,
        "bbox": [_r(v, 1) for v in face.bbox], "det_score": _r(face.det_score, 3),
        "detected": face.detected, "track": face.track, "identity": face.identity,
        "quality": _r(face.quality, 3), "yaw": _r(face.yaw, 1), "pitch": _r(face.pitch, 1),
        "reference": face.reference, "restored": face.restored, "prior": _r(face.prior, 2),
        "skipped": face.skipped,
    }


def build_manifest(result: ItemResult, identities: list[Identity], faces: list[Face],
                   media: dict, config: dict, files: list[dict] | None = None) -> dict:
    """The item's manifest. ``media`` describes the input (video stream facts or album size);
    ``files`` lists album members with their outcome."""
    return {
        "schema": MANIFEST_SCHEMA, "version": MANIFEST_VERSION,
        "item_id": result.item_id, "source": result.source, "kind": result.kind,
        "status": result.status, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "media": media, "counts": result.counts, "restorer": result.restorer,
        **({"library": result.library} if result.library else {}),
        "identities": [{
            "id": ident.id, "n_faces": ident.n_faces, "n_tracks": ident.n_tracks,
            **({"person": ident.person} if ident.person else {}),
            **({"name": ident.name} if ident.name else {}),
            **({"why_no_reference": ident.why_no_reference} if not ident.references else {}),
            "references": [{
                "ref_id": r.ref_id, "path": ref_path(ident, r), "rank": r.rank,
                "frame": r.frame, "pts": r.pts, "source": r.source, "quality": _r(r.quality, 3),
                "quality_parts": {k: _r(v, 3) for k, v in r.quality_parts.items()},
                "yaw": _r(r.yaw, 1), "pitch": _r(r.pitch, 1),
                **({"origin": r.origin} if r.origin else {}),
            } for r in ident.references],
        } for ident in identities],
        "faces": [face_record(f) for f in faces],
        "files": files or [],
        "timings": {k: _r(v, 3) for k, v in result.timings.items()},
        "errors": [{"file": e.file, "reason": e.reason, "stage": e.stage} for e in result.errors],
        "config": config,
    }


def dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, sort_keys=False) + "\n"


THUMB_PX = 256  # side of the before/after face crops kept for report.html
FRAME_PX = 960  # longest side of the whole-frame before/after views
FRAME_VIEWS = 3  # whole frames (or album photos) shown before/after per report
# the position that asks for the whole frame (album: image) in a restore actor's wanted samples,
# beside the (frame, face position) keys of single faces
WHOLE = -1


def thumbnails(*crops: np.ndarray) -> list[np.ndarray]:
    """Report-sized copies of face crops (kept instead of the full crops)."""
    return [cv2.resize(x, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA) for x in crops]


def frame_views(*images: np.ndarray) -> list[np.ndarray]:
    """Report-sized copies of whole frames, all the size of the first (longest side at most
    :data:`FRAME_PX`): an enlarged output (``output.upscale``) is shown beside its input."""
    h, w = images[0].shape[:2]
    k = min(1.0, FRAME_PX / max(h, w))
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return [x if x.shape[1::-1] == size else cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in images]


def _spread(keys: set[tuple[int, str]], people: dict[tuple[int, str], set[int]], n: int) -> set[tuple[int, str]]:
    """``n`` of ``keys`` (frame, source): those with the most people, spread evenly over the item
    (not three neighbouring frames)."""
    out: set[tuple[int, str]] = set()
    for count in sorted({len(people[k]) for k in keys}, reverse=True):
        tier = sorted((k for k in keys if len(people[k]) == count), key=lambda k: (k[1], k[0]))
        need = n - len(out)
        if need <= 0:
            break
        if len(tier) > need:
            tier = [tier[round(i * (len(tier) - 1) / max(need - 1, 1))] for i in range(need)]
        out.update(tier)
    return out


@dataclass
class ReportSamples:
    """Before/after views for the report: per identity, its lowest-quality faces (where
    restoration matters most), one per frame/file, at most ``per_identity``; and a few whole
    frames (album: photos), those where the most people appear."""

    wanted: set[int] = field(default_factory=set)  # id() of the faces to keep
    pairs: dict[int, list[tuple[Face, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    wanted_frames: set[tuple[int, str]] = field(default_factory=set)  # (frame, source)
    frames: list[tuple[int, str, np.ndarray, np.ndarray]] = field(default_factory=list)

    @classmethod
    def choose(cls, faces: list[Face], per_identity: int, n_frames: int = FRAME_VIEWS) -> ReportSamples:
        out = cls()
        by_ident: dict[int, list[Face]] = {}
        people: dict[tuple[int, str], set[int]] = {}
        for f in faces:
            if not f.skipped:
                by_ident.setdefault(f.identity, []).append(f)
                people.setdefault((f.frame, f.source), set()).add(f.identity)
        chosen: list[Face] = []
        for group in by_ident.values():
            seen: set[tuple[int, str]] = set()
            for f in sorted(group, key=lambda f: f.quality):
                if len(seen) >= per_identity:
                    break
                if (f.frame, f.source) not in seen:
                    seen.add((f.frame, f.source))
                    out.wanted.add(id(f))
                    chosen.append(f)
        if per_identity > 0:
            out.wanted_frames = _spread({(f.frame, f.source) for f in chosen}, people, n_frames)
        return out

    def __call__(self, face: Face, before: np.ndarray, after: np.ndarray) -> None:
        if id(face) in self.wanted:
            self.pairs.setdefault(face.identity, []).append((face, *thumbnails(before, after)))

    def keep_frame(self, frame: int, source: str, before: np.ndarray, after: np.ndarray) -> None:
        """Offer a whole frame (``source`` "" for videos, the file name for album photos)."""
        if (frame, source) in self.wanted_frames:
            self.frames.append((frame, source, *frame_views(before, after)))
