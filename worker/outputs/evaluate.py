"""``refstar eval``: score restored media against the originals, face by face.

    refstar eval GT CANDIDATE [CANDIDATE ...] -o OUTDIR [--label NAME ...] [--frames SPEC]
                 [--baseline LABEL] [--refs ITEM_DIR] [--crop-size 256] [--config F] [--set K=V]

GT is the original video, image or folder of images (local paths); each CANDIDATE holds the same
frames (the degraded input, a restorer's output) as a video, image or folder, or is a worker item
output folder (``manifest.json`` + ``restored.<ext>`` or ``restored/`` + ``refs/``), whose
restored media and references are used. Faces are detected once, on GT, with the configured
backend; each candidate's crop is cut with the GT face's affine, so the crops of one face are
comparable pixel for pixel; the candidate's face is embedded at the GT face's box. Metrics and
the JSON layout: ``worker.outputs.evaluate_report``.

Video is streamed: GT and candidates are decoded in lockstep; only the previous frame's crops and
per-face numbers are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from refstar.align import estimate_affine, face_mask, warp_face
from refstar.metrics import flicker, identity_similarity, psnr, ssim, temporal_change
from worker.config import Config, LimitsConfig
from worker.errors import MediaError
from worker.media.image import is_image_name, list_album, read_image
from worker.media.video import VideoInfo, iter_frames, probe_video
from worker.outputs.evaluate_report import (
    PSNR_CAP_DB,
    CandidateScores,
    FrameSelection,
    parse_frames,
)
from worker.progress import Progress
from worker.stages.track import iou

MATCH_IOU = 0.3  # a face in two consecutive frames, or a GT face and a manifest face
_EMBED_BOX = np.array([0.2, 0.28, 0.8, 0.88], np.float32)  # face box in an aligned crop / side


class EvalError(Exception):
    """Bad usage or unreadable input; the message names the file."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")


# -- inputs ---------------------------------------------------------------------------------------
@dataclass
class Source:
    """One input: GT or a candidate."""

    path: str  # as given
    label: str
    media: str  # the video file, or the folder of the images
    kind: str  # "video" | "images"
    names: list[str] = field(default_factory=list)  # images: relative names under ``media``
    manifest: dict | None = None  # worker item output folders
    item: Path | None = None
    info: VideoInfo | None = None  # videos: probed when opened


def open_source(path: str, label: str, limits: LimitsConfig) -> Source:
    """Classify and probe ``path``; raises EvalError when it cannot be evaluated."""
    p = Path(path)
    if not p.exists():
        raise EvalError(path, "no such file or folder")
    if p.is_dir() and (p / "manifest.json").is_file():
        try:
            manifest = json.loads((p / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise EvalError(str(p / "manifest.json"), f"unreadable manifest ({e})") from e
        output = (manifest.get("media") or {}).get("output") or ""
        if output.startswith("../"):  # the mirror layout's sidecar: the media lie outside it
            found = [q for q in [(p / output).resolve()] if q.exists()]
        else:
            found = [p / "restored"] if (p / "restored").is_dir() else sorted(p.glob("restored.*"))
        if not found:
            raise EvalError(path, f"worker output folder without restored media "
                                  f"(item status {manifest.get('status')!r})")
        src = _plain(str(found[0]), label, path, limits)
        src.manifest, src.item = manifest, p
        return src
    return _plain(path, label, path, limits)


def _plain(media: str, label: str, given: str, limits: LimitsConfig) -> Source:
    p = Path(media)
    if p.is_dir():
        names = [n for n in list_album(p) if is_image_name(n)]
        if not names:
            raise EvalError(given, "folder holds no images")
        return Source(given, label, media, "images", names)
    if is_image_name(p.name):
        return Source(given, label, str(p.parent), "images", [p.name])
    try:
        return Source(given, label, media, "video", info=probe_video(media, limits))
    except MediaError as e:
        raise EvalError(given if e.file == media else e.file, e.reason) from e


def _video(src: Source, sel: FrameSelection) -> Iterator[tuple[int, np.ndarray]]:
    for f in iter_frames(src.media, src.info):
        if sel.stop is not None and f.index >= sel.stop:
            return
        if f.index in sel:
            yield f.index, f.image


class _Reader:
    """A candidate's frame matching GT's current one: decoded in lockstep, or read by name."""

    def __init__(self, src: Source, gt: Source, sel: FrameSelection, limits: LimitsConfig):
        self.src, self.limits = src, limits
        self.single = len(src.names) == 1 and len(gt.names) == 1  # two single images: a pair
        self._names = set(src.names)
        self._it = _video(src, sel) if src.kind == "video" else None

    def get(self, index: int, name: str) -> tuple[np.ndarray | None, int | str]:
        """(image or None when the candidate lacks it, the key of the frame in its manifest)."""
        if self._it is not None:
            for i, image in self._it:
                if i == index:
                    return image, index
            return None, index
        name = self.src.names[0] if self.single else name
        if name not in self._names:
            return None, name
        return read_image(Path(self.src.media) / name, self.limits)[0], name


class RefBook:
    """The references of one worker item, and which face used which."""

    def __init__(self, item: Path, manifest: dict):
        self.item = item
        best = {i["id"]: i["references"][0]["ref_id"] for i in manifest.get("identities", [])
                if i.get("references")}
        self.paths = {r["ref_id"]: r["path"] for i in manifest.get("identities", []) for r in i.get("references", [])}
        self.faces: dict[int | str, list[tuple[np.ndarray, str]]] = defaultdict(list)
        for f in manifest.get("faces", []):
            ref = f.get("reference") or best.get(f.get("identity"))
            if ref:
                self.faces[f.get("source") or f.get("frame")].append((np.array(f["bbox"]), ref))
        self._emb: dict[str, np.ndarray | None] = {}

    def embedding(self, key: int | str, box: np.ndarray, analyzer) -> np.ndarray | None:
        """Embedding of the reference of the manifest face at ``box`` in frame/file ``key``."""
        cands = self.faces.get(key, [])
        if not cands:
            return None
        overlap = iou(box[None], np.stack([b for b, _ in cands]))[0]
        if overlap.max() < MATCH_IOU:
            return None
        ref = cands[int(overlap.argmax())][1]
        if ref not in self._emb:
            crop = cv2.imread(str(self.item / self.paths.get(ref, f"refs/{ref}.png")), cv2.IMREAD_COLOR)
            self._emb[ref] = None if crop is None else embed_crop(analyzer, crop)
        return self._emb[ref]


def embed_crop(analyzer, crop: np.ndarray) -> np.ndarray | None:
    """The backend's embedding of an aligned (S, S, 3) BGR crop (landmarks found in a fixed box
    where the alignment template puts the face; no detector run)."""
    faces = analyzer.refine(np.ascontiguousarray(crop), _EMBED_BOX[None] * crop.shape[0])
    return faces[0].embedding if faces else None


# -- scoring ------------------------------------------------------------------------------------
@dataclass
class _GTFace:
    box: np.ndarray  # (4,) x1, y1, x2, y2 px
    M: np.ndarray  # (2, 3) source -> crop affine
    crop: np.ndarray  # (S, S, 3) BGR
    emb: np.ndarray | None  # the backend's embedding of the GT face


def _link(prev: list[_GTFace], cur: list[_GTFace]) -> dict[int, int]:
    """current face -> the previous frame's face it overlaps most (box IoU >= MATCH_IOU)."""
    if not prev or not cur:
        return {}
    m = iou(np.stack([f.box for f in cur]), np.stack([f.box for f in prev]))
    return {j: int(k) for j, k in enumerate(m.argmax(1)) if m[j, k] >= MATCH_IOU}


def _gt_frames(gt: Source, sel: FrameSelection, limits: LimitsConfig, warnings: list[str]):
    if gt.kind == "video":
        yield from ((i, str(i), img) for i, img in _video(gt, sel))
        return
    for i, name in enumerate(gt.names):
        if i in sel:
            try:
                yield i, name, read_image(Path(gt.media) / name, limits)[0]
            except MediaError as e:  # an album may hold broken files: the worker skips them too
                warnings.append(f"GT {e}: skipped")


class _Scorer:
    """Scores one candidate frame by frame; keeps only the previous frame's crops."""

    def __init__(self, src: Source, reader: _Reader, refs: RefBook | None, acc: CandidateScores):
        self.src, self.reader, self.refs, self.acc = src, reader, refs, acc
        self.prev: list[np.ndarray] = []

    def frame(self, index: int, name: str, image_shape: tuple, cur: list[_GTFace],
              prev: list[_GTFace], links: dict[int, int], embed: bool, analyzer, ctx) -> None:
        img, key = self.reader.get(index, name)
        acc = self.acc
        if img is None:
            acc.missing += 1
            self.prev = []
            return
        if img.shape != image_shape:
            raise EvalError(self.src.path, f"frame {name} is {img.shape[1]}x{img.shape[0]}, "
                                           f"GT is {image_shape[1]}x{image_shape[0]}")
        size, mask, box = ctx
        crops = [warp_face(img, f.M, size) for f in cur]
        embs = [None] * len(cur)
        if embed and cur:  # the candidate's face embedded at GT's box, landmarks found on it
            embs = [g.embedding for g in analyzer.refine(img, np.stack([f.box for f in cur]))]
        for j, (f, c, e) in enumerate(zip(cur, crops, embs, strict=True)):
            r = self.refs.embedding(key, f.box, analyzer) if self.refs and embed else None
            row = {"frame": index, "face": j,
                   "psnr": round(min(psnr(c, f.crop, mask), PSNR_CAP_DB), 3),
                   "ssim": round(ssim(c[box], f.crop[box]), 5),
                   "identity_gt": _sim(e, f.emb), "identity_ref": _sim(e, r)}
            if self.src.kind == "images":
                row["file"] = name
            acc.rows.append(row)
            if j in links and self.prev:
                pair, gt_pair = [self.prev[links[j]], c], [prev[links[j]].crop, f.crop]
                acc.add_pair(flicker(pair, gt_pair), temporal_change(pair), temporal_change(gt_pair))
        self.prev = crops


def _sim(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    return None if a is None or b is None else round(float(identity_similarity(a, b)), 5)


def _open_all(gt_path: str, cand_paths: list[str], labels: list[str], baseline: str | None,
              refs: str | None, limits: LimitsConfig) -> tuple[Source, list[Source], RefBook | None]:
    if labels and len(labels) != len(cand_paths):
        raise EvalError("--label", f"{len(labels)} labels for {len(cand_paths)} candidates")
    if not labels:
        labels = [Path(p.rstrip("/")).name for p in cand_paths]
        if len(set(labels)) != len(labels):
            labels = [f"{i}:{lab}" for i, lab in enumerate(labels, 1)]
    if len(set(labels)) != len(labels):
        raise EvalError("--label", f"labels must differ: {labels}")
    if baseline is not None and baseline not in labels:
        raise EvalError("--baseline", f"{baseline!r} is not one of the labels {labels}")
    gt = open_source(gt_path, "GT", limits)
    cands = [open_source(p, lab, limits) for p, lab in zip(cand_paths, labels, strict=True)]
    for c in cands:
        if c.kind != gt.kind:
            raise EvalError(c.path, f"is {c.kind} but GT {gt.path} is {gt.kind}")
    shared = None
    if refs:
        src = open_source(refs, "refs", limits)
        if src.item is None:
            raise EvalError(refs, "--refs must be a worker item output folder (with manifest.json)")
        shared = RefBook(src.item, src.manifest)
    return gt, cands, shared


def evaluate(gt_path: str, cand_paths: list[str], cfg: Config, *, labels: list[str] | None = None,
             frames: str | FrameSelection | None = None, crop_size: int = 256,
             refs: str | None = None, baseline: str | None = None, id_every: int = 1,
             analyzer=None) -> dict:
    """Score every candidate against GT; returns the report (schema: ``worker.outputs.evaluate_report``).
    Raises EvalError (bad usage, unreadable input) naming the file."""
    t0 = time.monotonic()
    sel = frames if isinstance(frames, FrameSelection) else parse_frames(frames)
    gt, cands, shared = _open_all(gt_path, cand_paths, list(labels or []), baseline, refs, cfg.limits)
    if analyzer is None:
        from worker.faces.base import make_analyzer

        analyzer = make_analyzer(cfg.detect)
    mask = face_mask(crop_size)
    ys, xs = np.nonzero(mask > 0)
    ctx = (crop_size, mask, (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)))
    scorers = []
    for c in cands:
        own = RefBook(c.item, c.manifest) if c.item else None
        book = own if own and own.faces else shared
        acc = CandidateScores(c.label, c.path, c.media, c.manifest,
                              None if book is None else "own" if book is own else "--refs")
        scorers.append(_Scorer(c, _Reader(c, gt, sel, cfg.limits), book, acc))
    meta = {"gt": gt.path, "backend": analyzer.name, "crop_size": crop_size, "spec": sel.spec,
            "evaluated": 0, "with_faces": 0, "faces": 0, "faces_too_small": 0, "warnings": []}
    prev: list[_GTFace] = []
    prev_index = None
    progress = Progress(f"eval {gt.path}", 0, enabled=cfg.progress)
    try:
        for index, name, image in _gt_frames(gt, sel, cfg.limits, meta["warnings"]):
            found = analyzer.analyze(image)[: cfg.limits.max_faces_per_frame]
            big = [f for f in found if f.size >= cfg.restore.min_face_px]
            cur = []
            for f in big:
                M = estimate_affine(f.kps, crop_size)
                cur.append(_GTFace(f.bbox, M, warp_face(image, M, crop_size), f.embedding))
            embed = meta["evaluated"] % max(1, id_every) == 0
            links = _link(prev, cur) if gt.kind == "video" and prev_index == index - 1 else {}
            for sc in scorers:
                sc.frame(index, name, image.shape, cur, prev, links, embed, analyzer, ctx)
            prev, prev_index = cur, index
            meta["evaluated"] += 1
            meta["with_faces"] += bool(cur)
            meta["faces"] += len(cur)
            meta["faces_too_small"] += len(found) - len(big)
            progress.update(1)
    except MediaError as e:
        raise EvalError(e.file, e.reason) from e
    progress.done()
    if meta["evaluated"] == 0:
        raise EvalError(gt.path, f"no frame selected by --frames {sel.spec!r}")
    base = [c.label for c in cands].index(baseline) if baseline else 0
    from worker.outputs.evaluate_report import build_report

    return build_report(meta, [sc.acc for sc in scorers], base, time.monotonic() - t0)


# -- CLI ----------------------------------------------------------------------------------------
def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser
    p.description = ("Compare restored media with the originals: PSNR/SSIM on face crops, identity "
                     "similarity, temporal flicker. Writes OUT/eval.json and OUT/eval.html.")
    p.add_argument("gt", metavar="GT", help="original video, image or folder of images")
    p.add_argument("candidates", nargs="+", metavar="CANDIDATE",
                   help="the same frames degraded or restored: video/image/folder, or a worker "
                        "item output folder (its restored media and references are used)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for eval.json/html")
    p.add_argument("--label", action="append", default=[], metavar="NAME",
                   help="name of each candidate, in order (default: file names)")
    p.add_argument("--frames", default="all", metavar="SPEC",
                   help="frames to evaluate, 0-based (images: in name order): 'all', '1::3', "
                        "'0:30', '4,9,20:40' (default all)")
    p.add_argument("--baseline", metavar="LABEL", help="gains are measured against it (default: first)")
    p.add_argument("--refs", metavar="ITEM_DIR",
                   help="worker output folder whose references score candidates that have none")
    p.add_argument("--crop-size", type=int, default=256, metavar="PX",
                   help="aligned face crop side, px (256)")
    p.add_argument("--id-every", type=int, default=1, metavar="N",
                   help="identity similarity on every Nth evaluated frame only (embedding is the "
                        "slow part: ~0.1 s per face with dlib on CPU)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("--config", metavar="FILE", help="YAML config file (detect.* picks the backend)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key")
    return p


def run_eval(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 2 bad usage, configuration or unreadable input."""
    from worker.config import ConfigError, load_config
    from worker.errors import ModelError
    from worker.outputs.evaluate_report import format_table, render_html

    try:
        cfg = load_config(args.config, list(args.set) + (["progress=false"] if args.quiet else []))
        if args.crop_size < 32:
            raise ValueError(f"--crop-size {args.crop_size} is too small (>= 32)")
        report = evaluate(args.gt, args.candidates, cfg, labels=args.label, frames=args.frames,
                          crop_size=args.crop_size, refs=args.refs, baseline=args.baseline,
                          id_every=args.id_every)
    except (EvalError, ModelError, ValueError) as e:  # ConfigError is a ValueError
        print(f"refstar eval: {'config error: ' if isinstance(e, ConfigError) else ''}{e}",
              file=sys.stderr)
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    from worker import storage

    storage.write_atomic(str(out / "eval.json"), json.dumps(report, indent=1) + "\n")
    storage.write_atomic(str(out / "eval.html"), render_html(report))
    print(format_table(report))
    for w in report["warnings"]:
        print(f"  warning: {w}", file=sys.stderr)
    print(f"-> {out / 'eval.json'}, {out / 'eval.html'}")
    return 0
