"""Build the face prior RefSTAR ships with: faces from real media, then ``refstar train``.

    python -m jobs.prior --data ../shared/data --out RUN [--rotation a|b]
                         [--time-budget 7200] [--install | --install-only]

1. **Faces.** The split (``split``): every labelled photo of ``identities/<source>/<person>/``
   and one half of the clips of ``videos/`` (rotation ``a``: the even places of the sorted
   list, ``b``: the odd ones); the other half is held out for the quality suite, and so are
   ``lq/`` (no ground truth), ``negatives/`` and the crowd clip (no single person). From each
   training clip, up to ``--per-clip`` frames evenly spread; from each photo, its largest face.
   Faces smaller than ``--min-face`` px are skipped (nothing to learn detail from). Crops are
   template-aligned at ``CROP`` px and written to ``RUN/faces/<identity>/*.png`` (one identity
   per clip and per person), with ``RUN/split.json``.
2. **Training.** The ``adapt`` preset (2.4 M parameters, the net per-item adaptation fine-tunes)
   at 128 px, blind degradations over every strength the worker meets at that scale
   (``PRIOR_RANGES``), a reference of the same person from another frame or photo for 90% of
   the samples; pixel (Charbonnier), frequency and RefSel mask losses (the cycle term is left
   out: every sample has its ground truth, and it costs a tenth of each step); ``--time-budget``
   seconds on this machine (the LR anneals over it); a rerun with the same ``--out`` resumes.
3. **Install** (``--install``): the EMA weights with their recipe and split go to
   ``refstar/weights/face_prior`` (what ``restorer=refstar`` starts from).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

CROP = 256  # stored crop side, px: twice the training size, for native-resolution training later
PHOTO_EXTS = (".jpg", ".jpeg", ".png")
CROWD = ("facenet-pytorch__video",)  # many small people walking: no identity per clip


def split(data: Path, rotation: str) -> dict[str, list[str]]:
    """Which files the prior trains on and which it never sees (paths relative to ``data``)."""
    clips = sorted(p.name for p in (data / "videos").glob("*.mp4") if p.stem not in CROWD)
    keep = 0 if rotation == "a" else 1
    photos = sorted(str(p.relative_to(data)) for p in (data / "identities").glob("*/*/*")
                    if p.suffix.lower() in PHOTO_EXTS and not p.parent.name.startswith("_"))
    return {"rotation": rotation,
            "train_clips": [f"videos/{c}" for i, c in enumerate(clips) if i % 2 == keep],
            "held_out_clips": [f"videos/{c}" for i, c in enumerate(clips) if i % 2 != keep],
            "photos": photos}


def _largest(analyzer, image: np.ndarray):
    faces = analyzer.analyze(np.ascontiguousarray(image))
    return max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]), default=None)


def _crop(image: np.ndarray, face, min_face: int) -> np.ndarray | None:
    from refstar.align import estimate_affine, warp_face

    if face is None or min(face.bbox[2] - face.bbox[0], face.bbox[3] - face.bbox[1]) < min_face:
        return None
    return warp_face(image, estimate_affine(face.kps, CROP), CROP)


def extract(data: Path, parts: dict[str, list[str]], out: Path, per_clip: int, min_face: int) -> dict:
    """Write the aligned crops of the training half to ``out/<identity>/``; returns counts."""
    from worker.config import DetectConfig, LimitsConfig
    from worker.faces.base import make_analyzer
    from worker.media.video import iter_frames, probe_video

    analyzer = make_analyzer(DetectConfig())
    counts: dict[str, int] = {}
    for rel in parts["train_clips"]:
        info = probe_video(data / rel, LimitsConfig())
        step = max(1, info.frames // per_clip)
        ident = Path(rel).stem
        (out / ident).mkdir(parents=True, exist_ok=True)
        for frame in iter_frames(data / rel, info):
            if frame.index % step:
                continue
            crop = _crop(frame.image, _largest(analyzer, frame.image), min_face)
            if crop is not None:
                cv2.imwrite(str(out / ident / f"{frame.index:05d}.png"), crop)
                counts[ident] = counts.get(ident, 0) + 1
        log.info("%s: %d faces", rel, counts.get(ident, 0))
    for rel in parts["photos"]:
        image = cv2.imread(str(data / rel), cv2.IMREAD_COLOR)
        crop = None if image is None else _crop(image, _largest(analyzer, image), min_face)
        if crop is not None:
            ident = "__".join(Path(rel).parts[1:3])  # source__person
            (out / ident).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / ident / f"{Path(rel).stem}.png"), crop)
            counts[ident] = counts.get(ident, 0) + 1
    return counts


def train(faces: Path, run: Path, budget_s: float, steps: int, seed: int, *,
          init: str | None = None, lr: float = 1e-3, no_ref: float = 0.1, clean: float = 0.0) -> dict:
    """``refstar train`` on the crops with the prior's recipe; returns the final metrics.
    ``init``: a checkpoint to continue from (``prior``: the shipped one) instead of a new net."""
    from refstar.errors import ModelError
    from refstar.prior import NAME, require_prior
    from refstar.training.dataset import PRIOR_RANGES, FacePairs, PairConfig
    from refstar.training.loop import TrainConfig, Trainer, build_net

    if init == NAME:
        try:
            init = str(require_prior("--init prior", "give a checkpoint path"))
        except ModelError as e:
            raise SystemExit(f"error: {e}") from None
    pair = PairConfig(size=128, ranges=PRIOR_RANGES, seed=seed, no_ref_prob=no_ref, clean_prob=clean)
    cfg = TrainConfig(max_steps=steps, time_budget_s=budget_s, batch_size=8, lr=lr,
                      ckpt_every=500, num_workers=1, seed=seed, log_every=50, w_cycle=0.0)
    trainer = Trainer(build_net("adapt", 128, init, seed), FacePairs.from_folder(faces, pair, aligned=True),
                      cfg, run, log=lambda line: log.info("%s", line))
    if trainer.resume():
        log.info("resumed at step %d", trainer.step)
    return trainer.fit()


def install(run: Path, record: dict, dest: Path | None = None) -> Path:
    """Copy the run's EMA weights (as the checkpoint's only weights) and its record to ``dest``."""
    from refstar import checkpoint as ckpt
    from refstar.prior import PRIOR_DIR

    net, meta = ckpt.load_net(run, "cpu", ema=True)
    extra = {**meta["extra"], "prior": {k: v for k, v in record.items() if k != "split"}}
    out = ckpt.save_checkpoint(dest or PRIOR_DIR, net, config=net.cfg.to_dict(), step=meta["step"],
                               metrics=meta["metrics"], extra=extra)
    (out / "split.json").write_text(json.dumps(record["split"], indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.prior", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="the face media (../shared/data)")
    ap.add_argument("-o", "--output", "--out", dest="out", required=True, help="run folder: faces/, checkpoints/, split.json")
    ap.add_argument("--rotation", choices=("a", "b"), default="a", help="which half of the clips trains")
    ap.add_argument("--time-budget", type=float, default=7200.0, metavar="S", help="training seconds")
    ap.add_argument("--steps", type=int, default=100_000, help="step cap (the time budget ends it first)")
    ap.add_argument("--per-clip", type=int, default=60, help="frames taken per training clip")
    ap.add_argument("--min-face", type=int, default=96, help="smallest face box side kept, px")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", metavar="CKPT", help="continue from this checkpoint ('prior': the shipped one)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay over the budget)")
    ap.add_argument("--no-ref", type=float, default=0.1, metavar="P", help="share of samples without a reference")
    ap.add_argument("--clean", type=float, default=0.0, metavar="P", help="share of samples left undegraded")
    ap.add_argument("--install", action="store_true", help="copy the result to refstar/weights/face_prior")
    ap.add_argument("--install-only", action="store_true",
                    help="install the run's latest checkpoint as it is (an interrupted run), no training")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data, run = Path(args.data), Path(args.out)
    if not (data / "videos").is_dir():
        print(f"error: {data} has no videos/ folder", file=sys.stderr)
        return 2
    parts = split(data, args.rotation)
    faces = run / "faces"
    t0 = time.monotonic()
    if not (run / "split.json").is_file():  # a resumed run keeps its faces
        shutil.rmtree(faces, ignore_errors=True)
        counts = extract(data, parts, faces, args.per_clip, args.min_face)
        (run / "split.json").write_text(json.dumps({**parts, "faces": counts}, indent=1) + "\n")
    record = json.loads((run / "split.json").read_text())
    t_extract = time.monotonic() - t0
    command = "python -m jobs.prior " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.install_only:
        print(f"installed {install(run, {'split': record, 'command': command})}")
        return 0
    metrics = train(faces, run, args.time_budget, args.steps, args.seed, init=args.init, lr=args.lr,
                    no_ref=args.no_ref, clean=args.clean)
    record = {"split": record, "extract_s": round(t_extract, 1), "metrics": metrics, "command": command}
    (run / "record.json").write_text(json.dumps(record, indent=1) + "\n")
    if args.install:
        print(f"installed {install(run, record)}")
    print(json.dumps({k: v for k, v in record.items() if k != "split"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
