"""An album item (a folder of images, or one image): analyse every photo, cluster the album's
faces, choose references, restore and write each photo under the same relative name.

A file that cannot be restored (not an image, corrupt, no faces) is copied through unchanged,
so the restored album is complete; bad files are reported, and never stop the others.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from worker import storage
from worker.analyse import measure
from worker.config import Config
from worker.errors import MediaError
from worker.faces.align import estimate_affine, warp_face
from worker.media.image import is_image_name, list_album, read_image, write_image
from worker.plan import assign_references, plan_album
from worker.progress import Progress
from worker.records import Face, ItemError, ItemResult
from worker.report import ReportSamples
from worker.restore import FaceRestoreStage


def _copy_through(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def restore_album(src: Path, out_dir: str, cfg: Config, engine, result: ItemResult):
    from worker.pipeline import count_faces

    root, names = (src, list_album(src)) if src.is_dir() else (src.parent, [src.name])
    out_root = storage.local_path(storage.join(out_dir, "restored"))
    status: dict[str, str] = {}  # name -> "restored" | "unchanged" | "failed"

    def fail(name: str, reason: str, stage: str) -> None:
        result.errors.append(ItemError(name, reason, stage))
        status[name] = "failed"

    t = time.monotonic()
    faces: list[Face] = []
    embeddings: list[np.ndarray] = []
    progress = Progress(f"analyse {src.name}", len(names), unit="images", enabled=cfg.progress)
    for name in names:
        progress.update(1)
        if not is_image_name(name):
            fail(name, "not an image (unsupported file type); copied unchanged", "read")
            continue
        try:
            image, _ = read_image(root / name, cfg.limits)
        except MediaError as e:
            fail(name, f"{e.reason}; copied unchanged", "read")
            continue
        found = engine.analyzer.analyze(image)[: cfg.limits.max_faces_per_frame]
        for face in found:
            face.source = name
            measure(image, face, cfg)
            embeddings.append(face.embedding)
            faces.append(face)
    progress.done(f"{len(faces)} faces")
    result.timings["analyse"] = time.monotonic() - t

    t = time.monotonic()
    size = cfg.restore.crop_size

    def cut_crops(chosen: list[Face]) -> list[np.ndarray]:
        crops = {}
        for name in {f.source for f in chosen}:
            image, _ = read_image(root / name, cfg.limits)
            for f in chosen:
                if f.source == name:
                    crops[id(f)] = warp_face(image, estimate_affine(f.kps, size), size)
        return [crops[id(f)] for f in chosen]

    emb = np.stack(embeddings) if embeddings else np.zeros((0, engine.analyzer.embed_dim), np.float32)
    identities = plan_album(faces, emb, cfg, cut_crops)
    refs = assign_references(faces, identities, cfg)
    for f in faces:
        f.embedding = None
    result.timings["plan"] = time.monotonic() - t

    t = time.monotonic()
    samples = ReportSamples.choose(faces, cfg.output.report_faces)
    stage = FaceRestoreStage(cfg, engine.restorer)
    by_file: dict[str, list[Face]] = {}
    for f in faces:
        by_file.setdefault(f.source, []).append(f)
    progress = Progress(f"restore {src.name}", len(names), unit="images", enabled=cfg.progress)
    for name in names:
        progress.update(1)
        dst = out_root / name
        todo = [f for f in by_file.get(name, []) if not f.skipped]
        if status.get(name) == "failed" or not todo or engine.restorer.name == "none":
            _copy_through(root / name, dst)  # byte-identical, EXIF and all
            status.setdefault(name, "unchanged")
            continue
        try:
            image, meta = read_image(root / name, cfg.limits)
            (restored,) = stage.run([image], [by_file[name]], refs, samples)
            dst.parent.mkdir(parents=True, exist_ok=True)
            write_image(dst, restored, meta, cfg.output)
            status[name] = "restored"
        except MediaError as e:
            fail(name, f"{e.reason}; copied unchanged", "write")
            _copy_through(root / name, dst)
    progress.done()
    result.timings["restore"] = time.monotonic() - t

    result.counts.update(files=len(names), files_restored=sum(v == "restored" for v in status.values()),
                         files_failed=sum(v == "failed" for v in status.values()),
                         **count_faces(faces, identities))
    if names and result.counts["files_failed"] == len(names):
        result.status = "failed"  # nothing of the item could be read
    files = [{"file": n, "status": status.get(n, "unchanged"),
              "faces": len(by_file.get(n, []))} for n in names]
    media = {"root": str(root), "files": len(names)}
    return identities, faces, media, files, samples
