"""manifest.json (versioned, machine-readable) and report.html (for people) of one item."""

from __future__ import annotations

import base64
import html
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
        "reference": face.reference, "restored": face.restored, "skipped": face.skipped,
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


THUMB_PX = 160  # side of the before/after pictures in report.html


def thumbnails(*crops: np.ndarray) -> list[np.ndarray]:
    """Report-sized copies of face crops (kept instead of the full crops)."""
    return [cv2.resize(x, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA) for x in crops]


@dataclass
class ReportSamples:
    """Before/after crops for the report: per identity, its lowest-quality faces (where
    restoration matters most), one per frame/file, at most ``per_identity``."""

    wanted: set[int] = field(default_factory=set)  # id() of the faces to keep
    pairs: dict[int, list[tuple[Face, np.ndarray, np.ndarray]]] = field(default_factory=dict)

    @classmethod
    def choose(cls, faces: list[Face], per_identity: int) -> ReportSamples:
        out = cls()
        by_ident: dict[int, list[Face]] = {}
        for f in faces:
            if not f.skipped:
                by_ident.setdefault(f.identity, []).append(f)
        for group in by_ident.values():
            seen: set[tuple[int, str]] = set()
            for f in sorted(group, key=lambda f: f.quality):
                if len(seen) >= per_identity:
                    break
                if (f.frame, f.source) not in seen:
                    seen.add((f.frame, f.source))
                    out.wanted.add(id(f))
        return out

    def __call__(self, face: Face, before: np.ndarray, after: np.ndarray) -> None:
        if id(face) in self.wanted:
            self.pairs.setdefault(face.identity, []).append((face, *thumbnails(before, after)))


def _img(bgr: np.ndarray, size: int = 160) -> str:
    if bgr.shape[0] != size:
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.tobytes()).decode()}">'


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
.row{display:flex;flex-wrap:wrap;gap:14px}.card{background:#fff;padding:6px;border:1px solid #ddd;
border-radius:4px;font-size:.8em;text-align:center}.pair img{margin:0 1px}.err{color:#a00}"""


def render_html(manifest: dict, identities: list[Identity], samples: ReportSamples) -> str:
    """A self-contained page (images inlined): summary, errors, and per identity the chosen
    references and before/after crops."""
    e = html.escape
    c = manifest["counts"]
    parts = [f"<!doctype html><meta charset=utf-8><title>refstar report: {e(manifest['item_id'])}"
             f"</title><style>{_CSS}</style>",
             f"<h1>{e(manifest['source'])}</h1><p>item <code>{e(manifest['item_id'])}</code>, "
             f"{e(manifest['kind'])}, status <b>{e(manifest['status'])}</b></p><table>"]
    parts += [f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in c.items()]
    if c.get("faces_not_faces"):
        parts.append(f"<tr><th>not faces</th><td>{c['faces_not_faces']} detections "
                     f"({c.get('tracks_not_faces', '-')} tracks) that the face check rejected were "
                     "left untouched</td></tr>")
    parts += [f"<tr><th>time: {e(k)}</th><td>{v:.2f} s</td></tr>" for k, v in manifest["timings"].items()]
    parts.append("</table>")
    if manifest["errors"]:
        parts.append("<h2>Errors</h2><ul>")
        parts += [f'<li class=err>{e(x["file"])}: {e(x["reason"])}</li>' for x in manifest["errors"]]
        parts.append("</ul>")
    groups = [(i.id, f"Person {i.id}" + (f" ({i.name})" if i.name else "") + f": {i.n_faces} faces"
               + (f" in {i.n_tracks} tracks" if i.n_tracks else ""), i) for i in identities]
    if -1 in samples.pairs:
        groups.append((-1, "Faces not matched to a person (restored without reference)", None))
    for ident, title, person in groups:
        parts.append(f"<h2>{e(title)}</h2>")
        refs = person.references if person is not None else []
        if person is not None and not refs:
            parts.append(f"<p>No reference: {e(person.why_no_reference or 'none was chosen')}. "
                         "Its faces are restored without one.</p>")
        if refs:
            parts.append("<p>References</p><div class=row>")
            for r in refs:
                where = r.source or f"frame {r.frame}"
                parts.append(f"<div class=card>{_img(r.crop)}<br>#{r.rank} {e(where)}<br>"
                             f"quality {r.quality:.2f}, yaw {r.yaw:.0f}&deg;</div>")
            parts.append("</div>")
        pairs = samples.pairs.get(ident, [])
        if pairs:
            parts.append("<p>Before / after</p><div class=row>")
            for face, before, after in pairs:
                where = face.source or f"frame {face.frame}"
                parts.append(f"<div class='card pair'>{_img(before)}{_img(after)}<br>{e(where)}, "
                             f"quality {face.quality:.2f}, ref {e(face.reference or 'none')}</div>")
            parts.append("</div>")
    return "\n".join(parts) + "\n"
