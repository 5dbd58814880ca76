"""The face prior shipped inside the package (``refstar/weights/face_prior``): small, loads
offline without pickle, and restores faces it never saw (the insightface sample photos are not
in its training split) closer to their originals than the degraded input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refstar.align import estimate_affine, warp_face
from refstar.degradations import DegradationParams, degrade
from refstar.metrics import psnr
from refstar.prior import NAME, PRIOR_DIR, prior_path, seen_by_prior
from refstar.refstar_restorer import RefSTARRestorer
from refstar.restorer import bgr_to_tensor, tensor_to_bgr
from worker.config import DetectConfig, load_config
from worker.faces.base import make_analyzer
from worker.synthetic import FaceScene

S = 128  # the prior's working size
# about what x4 at the source leaves at the 128 px working size of a 250 px face
HARM = DegradationParams(blur_sigma=1.2, scale=3.0, noise_sigma=3.0, jpeg_quality=50)


def test_the_prior_ships_small_and_pickle_free():
    assert prior_path() == PRIOR_DIR
    files = {p.name: p.stat().st_size for p in PRIOR_DIR.iterdir()}
    assert "model.safetensors" in files and "meta.json" in files
    assert not any(n.endswith((".pt", ".pth", ".pkl")) for n in files)  # nothing torch.load reads
    assert sum(files.values()) <= 20 * 2**20
    meta = json.loads((PRIOR_DIR / "meta.json").read_text())
    assert meta["extra"]["train_size"] == S and meta["step"] > 0
    split = json.loads((PRIOR_DIR / "split.json").read_text())
    assert split["train_clips"] and split["held_out_clips"]
    assert seen_by_prior().isdisjoint(Path(c).name for c in split["held_out_clips"])


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    """Aligned crops of a moving face the prior never saw (insightface's sample photo)."""
    analyzer = make_analyzer(DetectConfig())
    scene = FaceScene(persons=("t1_2",), size=(320, 288), face_px=140, motion=12)
    crops = []
    for i in range(18):
        frame = scene.render(i)
        face = analyzer.analyze(frame)[0]
        crops.append(warp_face(frame, estimate_affine(face.kps, S), S))
    return crops


def test_adapted_from_the_prior_restores_unseen_faces_closer_to_their_originals(clip):
    """What restorer=refstar does per item: a few steps of adaptation from the prior on the
    item's sharp faces, then its degraded faces restored with one of them as reference."""
    from refstar.adapt import adapt_report

    train = [c for i, c in enumerate(clip) if i % 3 != 2]
    held = [c for i, c in enumerate(clip) if i % 3 == 2]
    lq = [degrade(c, HARM) for c in held]
    ref = bgr_to_tensor([train[0]] * len(held))
    net, rep = adapt_report({0: train}, steps=30, init=str(prior_path()), device="cpu")
    assert rep.steps == 30
    out = tensor_to_bgr(RefSTARRestorer(net, work_size=S, device="cpu").restore(bgr_to_tensor(lq), ref).image)
    gains = [psnr(o, c) - psnr(q, c) for o, q, c in zip(out, lq, held, strict=True)]
    assert min(gains) > 0.5, gains


def test_refstar_starts_from_the_prior_by_default():
    cfg = load_config(None, ["restorer=refstar"])
    assert cfg.restore.checkpoint == NAME
    from worker.models import restorer_checkpoint

    assert restorer_checkpoint(cfg.restore) == str(PRIOR_DIR)
    assert restorer_checkpoint(load_config(None, ["restorer=guided"]).restore) == ""
