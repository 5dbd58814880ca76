"""An album item (a folder of images, or one image): analyse every photo, cluster the album's
faces, choose references, restore and write each photo under the same relative name.

A file that cannot be restored (not an image, corrupt, no faces) is copied through unchanged,
so the restored album is complete; bad files are reported, and never stop the others.

The per-image steps (:func:`analyse_image`, :func:`restore_image`) and the album's bookkeeping
(:class:`AlbumBook`) are shared with the Ray job, which spreads the images over actors.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from refstar.align import estimate_affine, warp_face
from worker import storage
from worker.collection.library import library_for, summary
from worker.config import Config
from worker.errors import MediaError
from worker.faces.verify import face_confidence_at
from worker.item.analysis_cache import reuse
from worker.media.image import (
    check_output_size,
    is_image_name,
    list_album,
    read_image,
    upscaled,
    write_image,
)
from worker.outputs.report import ReportSamples
from worker.progress import Progress
from worker.records import Face, Identity, ItemError, ItemResult, Reference
from worker.stages.analyse import adaptation_crop, measure
from worker.stages.plan import assign_references, plan_album
from worker.stages.restore import FaceRestoreStage, SampleSink


def album_files(src: Path, refused: dict[str, str] | None = None) -> tuple[Path, list[str], dict[str, str]]:
    """The album's root folder, its files (relative POSIX names, those ``refused`` when it was
    staged included) and the files refused by name: ``{name: why}`` for a name that could not
    be an output key (a backslash; on S3 also ``a//b.jpg``, ``../x.jpg``). One image is an album."""
    if not src.is_dir():
        return src.parent, [src.name], {}
    refused = dict(refused or {})
    names = list_album(src)
    for name in names:
        try:
            storage.safe_key(name)
        except storage.StorageError as e:
            refused[name] = str(e)
    return src, sorted({*names, *refused}), refused


def analyse_image(path: Path, analyzer, cfg: Config) -> list[Face]:
    """Faces of one image with landmarks, embeddings, pose and quality (MediaError if
    unreadable); with ``detect.verify`` those the face verifier rejects are marked
    ``skipped = "not_a_face"``."""
    image, _ = read_image(path, cfg.limits)
    found = analyzer.analyze(image)[: cfg.limits.max_faces_per_frame]
    for face in found:
        measure(image, face, cfg)
        if cfg.detect.verify and face_confidence_at(image, face.kps) < 0:
            face.skipped = "not_a_face"  # clustered with nobody, restored never
    return found


def restore_image(src: Path, dst: Path, faces: list[Face], refs: dict[str, Reference],
                  stage: FaceRestoreStage, cfg: Config, sample: SampleSink | None = None,
                  whole: Callable[[np.ndarray, np.ndarray], None] | None = None) -> None:
    """Restore the faces of one image and write it in its own format, EXIF kept (``whole``
    sees the image before and after)."""
    image, meta = read_image(src, cfg.limits)
    n = cfg.output.upscale
    check_output_size(str(src), image.shape[1], image.shape[0], n, cfg.limits.max_image_pixels)
    big, meta = upscaled(image, meta, n)
    (restored,) = stage.run([image], [faces], refs, sample, [big] if n > 1 else None)
    if whole is not None:
        whole(image, restored)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_image(dst, restored, meta, cfg.output)


def copy_through(src: Path, dst: Path) -> None:
    """Byte-identical copy (EXIF and all), atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


class AlbumBook:
    """What happened to each file of an album, its faces, and the item's counts."""

    def __init__(self, root: Path, names: list[str], result: ItemResult, refused: dict[str, str] | None = None):
        self.root, self.names, self.result = root, names, result
        self.status: dict[str, str] = {}  # name -> "restored" | "unchanged" | "failed" | "refused"
        for name, why in (refused or {}).items():  # never read, never written
            result.errors.append(ItemError(name, f"file name refused, file not written ({why})", "read"))
            self.status[name] = "refused"
        self.usable = [n for n in names if self.status.get(n) != "refused"]
        self.faces: list[Face] = []
        self.by_file: dict[str, list[Face]] = {}
        self.adapt_crops: dict[int, list[np.ndarray]] = {}  # per person, for restorer=refstar
        self._embeddings: list[np.ndarray] = []

    def fail(self, name: str, reason: str, stage: str) -> None:
        self.result.errors.append(ItemError(name, f"{reason}; copied unchanged", stage))
        self.status[name] = "failed"

    def add(self, name: str, found: list[Face] | MediaError | None) -> None:
        """Record one file's analysis: its faces, the read error, or None (not an image)."""
        if found is None:
            self.fail(name, "not an image (unsupported file type)", "read")
        elif isinstance(found, MediaError):
            self.fail(name, found.reason, "read")
        else:
            for face in found:
                face.source = name
                self._embeddings.append(face.embedding)
                self.faces.append(face)
            self.by_file[name] = found

    def add_all(self, found: dict[str, list[Face] | str | None]) -> None:
        """Record every usable file's analysis: its faces, the reason it could not be read, or
        nothing (not an image)."""
        for name in self.usable:
            got = found.get(name)
            self.add(name, MediaError(str(self.root / name), got) if isinstance(got, str) else got)

    def plan(self, cfg: Config, embed_dim: int) -> tuple[list[Identity], dict[str, Reference]]:
        """Cluster the album's faces and choose references (re-reading only their files)."""
        size = cfg.restore.crop_size

        adapting = cfg.restore.adapts

        def cut_crops(chosen: list[Face]) -> list[np.ndarray]:
            crops = {}
            for name in {f.source for f in chosen}:
                image, _ = read_image(self.root / name, cfg.limits)
                for f in chosen:
                    if f.source == name:
                        crops[id(f)] = warp_face(image, estimate_affine(f.kps, size), size)
            for f in chosen if adapting else ():  # a person's best faces: what RefSTAR adapts on
                self.adapt_crops.setdefault(f.identity, []).append(
                    adaptation_crop(crops[id(f)], f.kps, cfg.restore))
            return [crops[id(f)] for f in chosen]

        emb = np.stack(self._embeddings) if self._embeddings else np.zeros((0, embed_dim), np.float32)
        identities = plan_album(self.faces, emb, cfg, cut_crops)
        self.result.library = summary(library_for(cfg), [i.name for i in identities if i.name])
        refs = assign_references(self.faces, identities, cfg)
        for f in self.faces:
            f.embedding = None
        self._embeddings.clear()
        return identities, refs

    def to_restore(self, name: str, cfg: Config) -> list[Face] | None:
        """The file's faces when it is to be rewritten; None when it is copied through unchanged
        (no face to restore, or restorer "none" or fidelity 0, and no ``output.upscale``)."""
        if self.status.get(name) in ("failed", "refused") or name not in self.by_file:
            return None
        if cfg.output.upscale > 1:  # every photo is enlarged, with or without faces
            return self.by_file[name]
        if cfg.restore.restorer == "none" or cfg.restore.fidelity <= 0:
            return None
        if not any(not f.skipped for f in self.by_file[name]):
            return None
        return self.by_file[name]

    def finish(self, identities: list[Identity]) -> tuple[list[dict], dict]:
        """Counts and status into the result; returns the manifest's file list and media facts."""
        from worker.item.pipeline import count_faces

        st = self.status
        self.result.counts.update(
            files=len(self.names), files_restored=sum(v == "restored" for v in st.values()),
            files_failed=sum(v in ("failed", "refused") for v in st.values()),
            **count_faces(self.faces, identities))
        if self.names and self.result.counts["files_failed"] == len(self.names):
            self.result.status = "failed"  # nothing of the item could be read
        files = [{"file": n, "status": st.get(n, "unchanged"), "faces": len(self.by_file.get(n, []))}
                 for n in self.names]
        return files, {"root": str(self.root), "files": len(self.names), "output": "restored/"}


def start_album(src: Path, out_dir: str, cfg: Config, engine, result: ItemResult,
                refused: dict[str, str] | None = None, cache=None):
    """Analyse every photo (or take ``cache``'s stored results: ``worker.item.analysis_cache``)
    and plan the album: its identities, faces and its restore pass
    (``() -> (media, files, samples)``), run later, after any linking. ``refused``: files left
    out when it was staged, ``{name: why}``."""
    root, names, refused = album_files(src, refused)
    book = AlbumBook(root, names, result, refused)
    t = time.monotonic()
    found = reuse(cache, result, src.name, cfg)
    if found is None:
        found = {}
        progress = Progress(f"analyse {src.name}", len(book.usable), unit="images", enabled=cfg.progress)
        for name in book.usable:
            progress.update(1)
            if is_image_name(name):
                try:
                    found[name] = analyse_image(root / name, engine.analyzer, cfg)
                except MediaError as e:
                    found[name] = e.reason
        progress.done(f"{sum(len(f) for f in found.values() if isinstance(f, list))} faces")
        if cache is not None and cache.save:
            cache.store_album(found)
    book.add_all(found)
    result.timings["analyse"] = time.monotonic() - t

    t = time.monotonic()
    identities, _ = book.plan(cfg, engine.analyzer.embed_dim)
    result.timings["plan"] = time.monotonic() - t
    return identities, book.faces, functools.partial(_restore_album, src, out_dir, cfg, engine, book, identities)


def _restore_album(src: Path, out_dir: str, cfg: Config, engine, book: AlbumBook, identities: list[Identity]):
    root, names, result = book.root, book.usable, book.result
    out_root = storage.local_path(storage.join(out_dir, "restored"))
    refs = assign_references(book.faces, identities, cfg)  # linking may have changed them
    t = time.monotonic()
    samples = ReportSamples.choose(book.faces, cfg.output.report_faces)
    stage = FaceRestoreStage(cfg, engine.item_restorer(book.adapt_crops, result, identities))
    progress = Progress(f"restore {src.name}", len(names), unit="images", enabled=cfg.progress)
    for name in names:
        progress.update(1)
        faces = book.to_restore(name, cfg)
        if faces is not None:
            try:
                restore_image(root / name, out_root / name, faces, refs, stage, cfg, samples,
                              lambda before, after, name=name: samples.keep_frame(0, name, before, after))
                book.status[name] = "restored"
                continue
            except MediaError as e:
                book.fail(name, e.reason, "write")
        copy_through(root / name, out_root / name)
        book.status.setdefault(name, "unchanged")
    progress.done()
    result.timings["restore"] = time.monotonic() - t
    files, media = book.finish(identities)
    return media, files, samples
