"""A user's reference library: good photos of the people an archive shows, one folder per name.

    LIBRARY/Rose Smith/1954-wedding.jpg
    LIBRARY/Rose Smith/passport.png
    LIBRARY/John Smith/...

``references.library`` (``refstar restore --references LIBRARY``) points at it, a local folder
or an ``s3://`` prefix. Each photo's largest confirmed face is aligned and measured like an item's
own faces; a library person is the unit mean of their photos' embeddings. After an item's faces
are clustered, each library person is matched to the nearest identity of the item under the
clustering's distance (``identity.max_dist``), one identity per library person and one library
person per identity, nearest pairs first (two identities of one item are two people, so a name
can only be one of them). A matched identity takes the name, and the person's library photos
join its reference candidates, ranked with the item's own by the same rules. A library person
who matches nobody is listed as unmatched and used nowhere.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker import storage
from worker.config import Config
from worker.errors import MediaError, WorkerError
from worker.stages.references import Candidate

log = logging.getLogger(__name__)


@dataclass
class LibraryPerson:
    """One named person of the library."""

    name: str
    centroid: np.ndarray  # (D,) float32 unit mean embedding of their photos' faces
    candidates: list[Candidate]  # their photos' faces, aligned (crop_size), measured; source = file
    skipped: list[str] = field(default_factory=list)  # "file: why" for photos that gave no face


@dataclass
class Library:
    root: str
    people: list[LibraryPerson]

    def names(self) -> list[str]:
        return [p.name for p in self.people]


def _photos(root: str) -> dict[str, list[str]]:
    """{person name: [photo URI, ...]} of the first-level folders under ``root``."""
    from worker.media.image import is_image_name

    out: dict[str, list[str]] = {}
    for uri, _, _ in storage.list(root):
        rel = storage.relative_to(root, uri)
        parts = rel.split("/")
        if len(parts) < 2 or any(p.startswith(".") for p in parts) or not is_image_name(parts[-1]):
            continue
        out.setdefault(parts[0], []).append(uri)
    return {name: sorted(uris) for name, uris in sorted(out.items())}


def load_library(root: str, analyzer, cfg: Config) -> Library:
    """Read every person's photos: the largest face of each (confirmed by the face check when
    ``detect.verify``), aligned at ``restore.crop_size`` and measured. A photo with no usable
    face, or that cannot be read, is skipped with its reason; a person with no face at all is
    left out with a warning."""
    from worker.faces.verify import face_confidence_at
    from worker.media.image import read_image
    from worker.stages.analyse import measure

    if not storage.is_s3(root) and not Path(root).expanduser().is_dir():
        raise WorkerError(f"reference library {root}: no such folder")
    photos = _photos(root)
    if not photos:
        raise WorkerError(f"reference library {root}: no photos in person folders (expected {root}/<name>/<photo>)")
    people = []
    with tempfile.TemporaryDirectory(prefix="refstar-library-") as tmp:
        for name, uris in photos.items():
            cands, embs, skipped = [], [], []
            for uri in uris:
                rel = storage.relative_to(root, uri)
                try:
                    local = storage.local_path(uri) if not storage.is_s3(uri) else storage.download(uri, Path(tmp) / "photo")
                    image, _ = read_image(local, cfg.limits)
                except (MediaError, storage.StorageError) as e:
                    skipped.append(f"{rel}: {getattr(e, 'reason', e)}")
                    continue
                faces = sorted(analyzer.analyze(image), key=lambda f: -f.size)
                if cfg.detect.verify:
                    faces = [f for f in faces if face_confidence_at(image, f.kps) >= 0]
                if not faces:
                    skipped.append(f"{rel}: no face found")
                    continue
                face = faces[0]
                face.source, face.frame = rel, -1
                crop = measure(image, face, cfg)
                cands.append(Candidate(face, crop, confidence=1.0, origin="library"))
                embs.append(face.embedding)
                face.embedding = None
            if not cands:
                log.warning("reference library %s: %s has no usable photo (%s)", root, name, "; ".join(skipped))
                continue
            c = np.mean(embs, axis=0)
            people.append(LibraryPerson(name, (c / max(np.linalg.norm(c), 1e-12)).astype(np.float32), cands, skipped))
    return Library(root, people)


@functools.lru_cache(maxsize=2)
def _cached(root: str, cfg: Config) -> Library:
    from worker.faces.base import make_analyzer

    return load_library(root, make_analyzer(cfg.detect), cfg)


def library_for(cfg: Config) -> Library | None:
    """The library of ``references.library``, read once per process and config (None when
    unset)."""
    root = cfg.references.library
    return _cached(root, cfg) if root else None


def match(centroids: list[np.ndarray], library: Library, max_dist: float) -> dict[int, LibraryPerson]:
    """{position in ``centroids``: library person}: nearest pairs first, each side used once,
    cosine distance under ``max_dist``."""
    if not centroids or not library.people:
        return {}
    lib = np.stack([p.centroid for p in library.people])
    dist = 1.0 - np.stack(centroids) @ lib.T
    out: dict[int, LibraryPerson] = {}
    used: set[int] = set()
    for i, j in zip(*np.unravel_index(np.argsort(dist, axis=None), dist.shape), strict=True):
        if dist[i, j] >= max_dist:
            break
        if int(i) in out or int(j) in used:
            continue
        out[int(i)] = library.people[int(j)]
        used.add(int(j))
    return out


def summary(library: Library | None, named: list[str]) -> dict:
    """The manifest's ``library`` entry: who matched, who did not, which photos were skipped."""
    if library is None:
        return {}
    return {"root": library.root, "matched": sorted(named),
            "unmatched": [n for n in library.names() if n not in named],
            "skipped": [f"{p.name}/{s}" for p in library.people for s in p.skipped]}
