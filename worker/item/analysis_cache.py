"""What pass 1 learned about an item, kept by ``refstar analyse`` so that a later ``restore`` (or
``run``) of the same input with the same analysis settings starts from it instead of decoding and
detecting again.

Stored in ``OUT/_analysis/<key>/``: ``analysis.json`` (face records, tracks, cuts, errors) and
``arrays.npz`` (boxes, landmarks, embeddings, the kept reference and adaptation crops), read with
``allow_pickle=False``. ``<key>`` hashes the input's URI and contents' versions (as the item id
does) and only the config that shapes the analysis (``ANALYSIS_SECTIONS`` and ``RESTORE_KEYS``):
choosing people, a fidelity, a layout or an upscale later reuses it; another detector does not.
A cache that cannot be read is ignored (logged), never trusted in part.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import asdict, dataclass, fields

import numpy as np

from worker import storage
from worker.config import Config, to_dict
from worker.records import Face, ItemError
from worker.stages.analyse import Analysis
from worker.stages.references import Candidate, CandidatePool
from worker.stages.track import TrackSummary

log = logging.getLogger(__name__)

FOLDER = "_analysis"
# bump whenever the same input and settings analyse differently (2: boxes move with the image;
# 3: the frames the detector searched whole are kept; 4: sharpness without resampling the crop;
# 5: the 68 points refitted from the box they imply)
VERSION = 5
ANALYSIS_SECTIONS = ("detect", "track", "references", "limits")
# restore keys the analysis depends on: crop size (kept crops), and the adaptation pool
RESTORE_KEYS = ("crop_size", "adapt_size", "adapt_crops_per_track", "native")
_ARRAYS = ("bbox", "kps", "embedding")


def analysis_key(uri: str, fingerprint: str, cfg: Config) -> str:
    """The cache key of ``uri`` (its contents' ``fingerprint``) under ``cfg``."""
    d = to_dict(cfg)
    shaping = {s: d[s] for s in ANALYSIS_SECTIONS}
    shaping["restore"] = {k: d["restore"][k] for k in RESTORE_KEYS} | {"adapts": cfg.restore.adapts}
    blob = json.dumps([VERSION, uri, fingerprint, shaping], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AnalysisCache:
    """One item's place in the cache; ``save`` only for ``refstar analyse``."""

    folder: str  # OUT/_analysis/<key>
    save: bool = False

    def load(self) -> Analysis | None:
        """A video's stored analysis, or None when there is none (or it cannot be read)."""
        return self._read("video", _decode)

    def store(self, analysis: Analysis) -> None:
        self._write("video", *_encode(analysis))

    def load_album(self) -> dict[str, list[Face] | str | None] | None:
        """An album's stored per-photo results (faces, the reason it could not be read, or None
        for a file that is not an image), or None."""
        return self._read("album", _decode_album)

    def store_album(self, found: dict[str, list[Face] | str | None]) -> None:
        self._write("album", *_encode_album(found))

    def _read(self, kind: str, decode):
        try:
            meta = json.loads(storage.read_bytes(storage.join(self.folder, "analysis.json")))
            if meta.get("version") != VERSION or meta.get("kind") != kind:
                return None
            with np.load(io.BytesIO(storage.read_bytes(storage.join(self.folder, "arrays.npz"))),
                         allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            return decode(meta, arrays)
        except storage.ObjectNotFound:
            return None
        except (storage.StorageError, OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
                IndexError) as e:
            log.warning("ignoring the unreadable analysis in %s: %s", self.folder, e)
            return None

    def _write(self, kind: str, meta: dict, arrays: dict) -> None:
        """Arrays first, the JSON that makes them valid last."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        storage.write_atomic(storage.join(self.folder, "arrays.npz"), buf.getvalue())
        meta = {"version": VERSION, "kind": kind, **meta}
        storage.write_atomic(storage.join(self.folder, "analysis.json"), json.dumps(meta, default=_plain) + "\n")


def cache_for(out_root: str, uri: str, cfg: Config, save: bool = False) -> AnalysisCache:
    """The cache place of input ``uri`` (stats it, as ``item_id`` does) in ``out_root``."""
    from worker.item.staging import canonical, fingerprint

    return AnalysisCache(storage.join(out_root, FOLDER, analysis_key(canonical(uri), fingerprint(uri), cfg)), save)


def reuse(cache: AnalysisCache | None, result, name: str, cfg: Config):
    """What ``cache`` holds for this item (an ``Analysis``, or an album's per-photo results),
    said on the progress line and counted in the manifest (``analysis_reused``); None when
    there is no cache, it is being written, or it holds nothing."""
    if cache is None or cache.save:
        return None
    found = cache.load() if result.kind == "video" else cache.load_album()
    if found is not None:
        result.counts["analysis_reused"] = 1
        if cfg.progress:
            from worker.progress import say

            say(f"analyse {name}: reusing the analysis in {cache.folder}")
    return found


# -- encoding -------------------------------------------------------------------------------------
def _face_fields(face: Face) -> dict:
    return {f.name: getattr(face, f.name) for f in fields(Face) if f.name not in _ARRAYS}


def encode_faces(faces: list[Face], prefix: str, arrays: dict) -> list[dict]:
    """Face records as JSON rows, their arrays into ``arrays`` under ``prefix``."""
    n = len(faces)
    dim = max((len(f.embedding) for f in faces if f.embedding is not None), default=0)
    emb = np.full((n, dim), np.nan, np.float32)
    for i, f in enumerate(faces):
        if f.embedding is not None:
            emb[i] = f.embedding
    arrays[prefix + "bbox"] = np.array([f.bbox for f in faces], np.float32).reshape(n, 4)
    arrays[prefix + "kps"] = np.array([f.kps for f in faces], np.float32).reshape(n, 5, 2)
    arrays[prefix + "embedding"] = emb
    return [_face_fields(f) for f in faces]


def decode_faces(rows: list[dict], prefix: str, arrays: dict) -> list[Face]:
    bbox, kps, emb = (arrays[prefix + k] for k in _ARRAYS)
    out = []
    for i, row in enumerate(rows):
        e = emb[i] if emb.shape[1] and not np.isnan(emb[i]).any() else None
        out.append(Face(bbox=bbox[i].copy(), kps=kps[i].copy(), embedding=None if e is None else e.copy(), **row))
    return out


def _pool_rows(pool: CandidatePool | None, index: dict[int, int], name: str, arrays: dict) -> dict | None:
    if pool is None:
        return None
    cands = pool.candidates()
    if len({c.crop.shape for c in cands}) == 1:
        arrays[name] = np.stack([c.crop for c in cands])
    else:  # crops of several sides (restore.native): one array each
        arrays.update({f"{name}_{j}": c.crop for j, c in enumerate(cands)})
    return {"k": pool.k, "faces": [index[id(c.face)] for c in cands],
            "confidence": [c.confidence for c in cands], "origin": [c.origin for c in cands]}


def _pool(rows: dict | None, faces: list[Face], name: str, arrays: dict) -> CandidatePool | None:
    if rows is None:
        return None
    pool = CandidatePool(rows["k"])
    for j, i in enumerate(rows["faces"]):
        face = faces[i]
        crop = arrays[name][j] if name in arrays else arrays[f"{name}_{j}"]
        pool.offer(face.track, Candidate(face, crop, rows["confidence"][j], rows["origin"][j]))
    return pool


def _encode(a: Analysis) -> tuple[dict, dict]:
    arrays: dict[str, np.ndarray] = {}
    index = {id(f): i for i, f in enumerate(a.faces)}
    tracks = []
    for t in a.tracks.values():
        if t.embedding is not None:
            arrays[f"track{t.id}"] = t.embedding
        tracks.append({"id": t.id, "first_frame": t.first_frame, "last_frame": t.last_frame,
                       "n_faces": t.n_faces, "faces": t.faces})
    meta = {
        "faces": encode_faces(a.faces, "", arrays), "tracks": tracks,
        "pool": _pool_rows(a.pool, index, "pool", arrays),
        "adapt_pool": _pool_rows(a.adapt_pool, index, "adapt", arrays),
        "n_frames": a.n_frames, "cuts": a.cuts, "errors": [asdict(e) for e in a.errors],
        "detector_frames": a.detector_frames, "searched": sorted(a.searched),
        "embedded": a.embedded, "confirmed": sorted(a.confirmed),
    }
    return meta, arrays


def _decode(meta: dict, arrays: dict) -> Analysis:
    faces = decode_faces(meta["faces"], "", arrays)
    tracks = {t["id"]: TrackSummary(t["id"], t["first_frame"], t["last_frame"], t["n_faces"],
                                    arrays.get(f"track{t['id']}"), list(t["faces"]))
              for t in meta["tracks"]}
    return Analysis(faces=faces, tracks=tracks, pool=_pool(meta["pool"], faces, "pool", arrays),
                    adapt_pool=_pool(meta["adapt_pool"], faces, "adapt", arrays), n_frames=meta["n_frames"],
                    cuts=list(meta["cuts"]), errors=[ItemError(**e) for e in meta["errors"]],
                    detector_frames=meta["detector_frames"], searched=set(meta["searched"]),
                    embedded=meta.get("embedded", 0),
                    confirmed=set(meta["confirmed"]))


def _encode_album(found: dict[str, list[Face] | str | None]) -> tuple[dict, dict]:
    arrays: dict[str, np.ndarray] = {}
    files = {}
    for k, (name, got) in enumerate(found.items()):
        if isinstance(got, list):
            files[name] = {"faces": encode_faces(got, f"f{k}_", arrays), "k": k}
        else:
            files[name] = {"error": got}
    return {"files": files}, arrays


def _decode_album(meta: dict, arrays: dict) -> dict[str, list[Face] | str | None]:
    return {name: decode_faces(row["faces"], f"f{row['k']}_", arrays) if "faces" in row else row["error"]
            for name, row in meta["files"].items()}


def _plain(o):
    """numpy scalars (a face's quality, a track id) as JSON numbers."""
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
