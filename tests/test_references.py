import dataclasses

import numpy as np

from worker.config import ReferenceConfig
from worker.records import Face, Reference
from worker.stages.references import (
    Candidate,
    CandidatePool,
    choose_reference,
    pool_references,
    select_references,
)


def _cand(frame, quality, yaw, seed, size=200.0):
    rng = np.random.default_rng(seed)
    crop = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    d = size / 2.5
    kps = np.array([[0, 0], [d, 0], [d / 2, d / 2], [0, d], [d, d]], np.float32)
    f = Face(bbox=np.zeros(4, np.float32), kps=kps, det_score=1.0, frame=frame, quality=quality, yaw=yaw)
    return Candidate(f, crop)


def test_best_first_diverse_in_pose_no_duplicates():
    base = _cand(0, 0.9, 0, seed=1)
    dup = Candidate(_cand(1, 0.89, 20, seed=9).face, base.crop.copy())  # same pixels, other pose
    near_pose = _cand(2, 0.85, 3, seed=2)  # good but same pose as the best
    side = _cand(3, 0.6, -25, seed=3)
    tiny = _cand(4, 0.95, 40, seed=4, size=30)  # best quality but under the size floor
    away = _cand(5, 0.92, 70, seed=5)  # a profile: over the pose floor
    refs, why = select_references(7, [dup, near_pose, side, tiny, away, base], ReferenceConfig(top_k=3))
    assert [r.frame for r in refs] == [0, 3, 2]  # pose-diverse first, then fill by quality
    assert [r.ref_id for r in refs] == ["7/0", "7/1", "7/2"] and why == ""


def test_references_come_from_other_moments_before_more_of_the_same_one():
    """The sharp frames of a clip come in runs: one frontal head sharp at frames 0-3 and 41-42
    and, less, at 18 (windows of 12 frames: 0, 3 and 1). By rank alone the four references would
    be 0, 42, 1, 41: two moments; the moment pass takes 18 before a second face of either."""
    quality = {0: 0.9, 42: 0.89, 1: 0.88, 41: 0.87, 2: 0.86, 3: 0.85, 18: 0.6, 30: 0.05}
    cands = [_cand(f, q, 0, seed=f) for f, q in quality.items()]
    refs, _ = select_references(0, cands, ReferenceConfig(top_k=4), person_sharpness=[0.05] * 20)
    assert [r.frame for r in refs] == [0, 42, 18, 1]
    # pooling the references of several files: frame 0 of another file is another moment
    a0, a1, b0 = (dataclasses.replace(r, source=src, frame=f, quality=q) for r, src, f, q in
                  zip(refs[:3], ("a.mp4", "a.mp4", "b.mp4"), (0, 1, 0), (0.9, 0.85, 0.7), strict=True))
    pooled = pool_references(5, [a1, b0, a0], ReferenceConfig(top_k=2))
    assert [(r.source, r.frame, r.ref_id) for r in pooled] == [("a.mp4", 0, "5/0"), ("b.mp4", 0, "5/1")]


def test_a_person_whose_faces_all_score_low_still_gets_references():
    """Quality 0.05-0.11 on a sharp, frontal talking head (under the old absolute gate of 0.2):
    ranked against the person's own faces, the best ones are clearly better than most."""
    person = [0.05, 0.06, 0.06, 0.07, 0.07, 0.08, 0.08, 0.09, 0.10, 0.11]
    cands = [_cand(i, q, 0, seed=i) for i, q in enumerate(person) if q >= 0.09]
    refs, why = select_references(0, cands, ReferenceConfig(top_k=1), person)
    assert [r.quality for r in refs] == [0.11] and why == ""


def test_no_reference_when_no_face_is_clearly_sharper_and_the_reason_says_so():
    person = [0.30, 0.31, 0.31, 0.32, 0.32, 0.33]  # old TV: every frame as soft as the others
    refs, why = select_references(0, [_cand(5, 0.33, 0, seed=1)], ReferenceConfig(), person)
    assert refs == []
    assert why.startswith("no face is 1.15x sharper than the lower quartile of this person's faces")
    refs, why = select_references(0, [_cand(5, 0.9, 0, seed=1, size=20)], ReferenceConfig(), person)
    assert refs == [] and why == "every candidate face is under 32 px (1)"


def test_choose_reference_nearest_pose_and_not_itself():
    cands = [_cand(0, 0.9, 0, 1), _cand(10, 0.7, 30, 2)]
    refs, _ = select_references(0, cands, ReferenceConfig(top_k=2))
    target = _cand(50, 0.3, 25, 3).face
    assert choose_reference(target, refs).frame == 10
    itself = cands[1].face  # nearest in pose to itself, but never its own guide
    assert choose_reference(itself, refs).frame == 0
    assert choose_reference(cands[0].face, refs) is None  # only a worse one is left
    assert choose_reference(target, []) is None


def test_a_face_as_sharp_as_its_references_gets_none():
    refs, _ = select_references(0, [_cand(0, 0.5, 0, 1), _cand(10, 0.4, 30, 2)], ReferenceConfig(top_k=2))
    assert choose_reference(_cand(50, 0.3, 25, 3).face, refs, 1.15).frame == 10
    assert choose_reference(_cand(51, 0.4, 25, 3).face, refs, 1.15).frame == 0  # only 0.5 is 1.15x
    assert choose_reference(_cand(52, 0.45, 0, 3).face, refs, 1.15) is None


def test_candidate_pool_keeps_the_best_per_group():
    pool = CandidatePool(2)
    for i, q in enumerate([0.1, 0.5, 0.3, 0.9, 0.2]):
        c = _cand(i, q, 0, i)
        if pool.would_keep(0, q):
            pool.offer(0, c)
    pool.offer(1, _cand(9, 0.05, 0, 9))
    assert sorted(c.face.quality for c in pool.candidates([0])) == [0.5, 0.9]
    assert len(pool.candidates()) == 3


def _windowed(cands: list[Candidate]) -> list[int]:
    pool = CandidatePool(2, window=10)
    for c in cands:
        if pool.would_keep(c.face.track, c.face.quality, c.face.frame):
            pool.offer(c.face.track, c)
    return sorted(c.face.frame for c in pool.candidates())


def test_the_pool_keeps_other_moments_of_a_track_whatever_the_order():
    """A track's sharpest moment (frames 20-23) gives its best crops; with windows of 10 frames
    the pool also keeps the best of the 2 windows whose best is best: frame 5 (window 0, 0.6)
    and frame 21 (window 2); window 1's best (0.55) and the rest of window 0 are dropped."""
    quality = {1: 0.3, 5: 0.6, 8: 0.5, 12: 0.55, 20: 0.8, 21: 0.9, 22: 0.85, 23: 0.7}
    cands = [_cand(f, q, 0, seed=f) for f, q in quality.items()]
    assert _windowed(cands) == [5, 21, 22]
    rng = np.random.default_rng(0)
    for _ in range(20):  # what the segments' pools merge into is what one pass keeps
        assert _windowed([cands[i] for i in rng.permutation(len(cands))]) == [5, 21, 22]


def _ref(ref_id: str, crop: np.ndarray, yaw: float) -> Reference:
    return Reference(ref_id=ref_id, identity=0, rank=int(ref_id[-1]), frame=100 + int(ref_id[-1]), pts=None,
                     source="", quality=0.9, yaw=yaw, pitch=0.0, crop=crop, quality_parts={"sharpness": 0.9})


def test_at_restore_a_face_takes_its_persons_reference_nearest_in_appearance():
    """The astronaut degraded x4 in her photo; her person has two references: "another frame"
    of her at a pose planning thinks far (yaw 40), and a crop of another face at her pose (what
    a reference of another expression or lighting is to a talking head). Planning, by pose,
    gave the second; the restore stage, with her crop at hand, takes the first, and the face
    comes out closer to the original than with the planning's choice (measured: degraded 23.50,
    planning's reference 23.51, the stage's 27.76 dB)."""
    from refstar.align import estimate_affine, face_mask, warp_face
    from refstar.degradations import DegradationParams, degrade
    from refstar.metrics import psnr
    from refstar.restorer import make_restorer
    from tests.refstar.test_align import S, astronaut, insightface_photo
    from tests.refstar.test_guided import _another_frame
    from worker.config import load_config
    from worker.stages.restore import FaceRestoreStage

    img, kps = astronaut()
    bad = img.copy()
    x0, y0, x1, y1 = 140, 20, 340, 240  # her face, with a margin
    bad[y0:y1, x0:x1] = degrade(img[y0:y1, x0:x1], DegradationParams(blur_sigma=1.5, scale=4.0, noise_sigma=4.0, jpeg_quality=45, seed=1))
    other, faces = insightface_photo("t1.jpg")
    right = _ref("0/1", _another_frame(img, kps), yaw=40.0)
    wrong = _ref("0/0", warp_face(other, estimate_affine(faces[0], S), S), yaw=0.0)
    cfg = load_config(None, [f"restore.crop_size={S}"])
    stage = FaceRestoreStage(cfg, make_restorer("guided"))
    face = Face(bbox=np.array([x0, y0, x1, y1], np.float32), kps=kps, det_score=1.0, frame=7, quality=0.1,
                quality_parts={"sharpness": 0.1}, identity=0)
    assert choose_reference(face, [wrong, right], 1.15).ref_id == "0/0"  # nearest in pose
    face.reference = "0/0"
    out = stage.run([bad], [[face]], {"0/0": wrong, "0/1": right})[0]
    assert face.reference == "0/1"
    face.reference = "0/0"
    planned = stage.run([bad], [[face]], {"0/0": wrong})[0]
    m = estimate_affine(kps, S)
    gt, mask = warp_face(img, m, S), face_mask(S, 0.08)
    assert psnr(warp_face(out, m, S), gt, mask) > psnr(warp_face(planned, m, S), gt, mask) + 2.0


def test_at_restore_guided_passes_over_a_reference_sharper_than_the_face_ever_was():
    """The astronaut degraded x2; her person has two references: another frame of her (other
    light, pose and landmarks) and her own crop over-sharpened (detail she never had: what a
    sharper frame of another expression is to a talking head). The over-sharpened one is
    nearer in look on the 64 px grey copy, but only blurring it more explains the input, so
    guided's ``pick_reference`` takes the other frame; with ``references.compare=1`` the stage
    keeps the nearest in look (measured on the pasted face: degraded 28.04, nearest in look
    28.66, the guided pick 31.72 dB)."""
    import cv2

    from refstar.align import estimate_affine, face_mask, warp_face
    from refstar.degradations import DegradationParams, degrade
    from refstar.metrics import psnr
    from refstar.restorer import make_restorer
    from tests.refstar.test_align import S, astronaut
    from tests.refstar.test_guided import _another_frame
    from worker.config import load_config
    from worker.stages.restore import FaceRestoreStage

    img, kps = astronaut()
    bad = img.copy()
    x0, y0, x1, y1 = 140, 20, 340, 240
    bad[y0:y1, x0:x1] = degrade(img[y0:y1, x0:x1], DegradationParams(blur_sigma=0.8, scale=2.0, noise_sigma=2.0, jpeg_quality=70, seed=1))
    m = estimate_affine(kps, S)
    gt, mask = warp_face(img, m, S), face_mask(S, 0.08)
    c = gt.astype(np.float32)
    oversharp = np.roll(np.clip(c + 2.0 * (c - cv2.GaussianBlur(c, (0, 0), 2.0)), 0, 255).astype(np.uint8), (3, -2), (0, 1))
    refs = {"0/0": _ref("0/0", oversharp, yaw=0.0), "0/1": _ref("0/1", _another_frame(img, kps), yaw=0.0)}
    face = Face(bbox=np.array([x0, y0, x1, y1], np.float32), kps=kps, det_score=1.0, frame=7, quality=0.1,
                quality_parts={"sharpness": 0.1}, identity=0)
    got = {}
    for compare in (1, 4):
        cfg = load_config(None, [f"restore.crop_size={S}", f"references.compare={compare}"])
        face.reference = "0/0"
        out = FaceRestoreStage(cfg, make_restorer("guided")).run([bad], [[face]], refs)[0]
        got[compare] = (face.reference, psnr(warp_face(out, m, S), gt, mask))
    assert got[1][0] == "0/0" and got[4][0] == "0/1"
    assert got[4][1] > got[1][1] + 2.0
    assert got[4][1] > psnr(warp_face(bad, m, S), gt, mask) + 2.5


def test_guided_keeps_the_narrow_band_where_a_real_reference_holds_other_detail(real_data, monkeypatch):
    """SadTalker AOC, frame 43 degraded x2, restored with frame 41 (another moment of the same
    talking head): it matches only at 2 px of blur where the two crops' own softness implies
    1.3 (``guided.edge_blur``), so its band above the blur is other detail and the wide band
    stays off (measured 32.95 dB on the face against 31.80 with it on; input 32.76)."""
    import itertools

    from refstar import guided
    from refstar.align import estimate_affine, face_mask, warp_face
    from refstar.degradations import DegradationParams, degrade
    from refstar.metrics import psnr
    from refstar.restorer import bgr_to_tensor, tensor_to_bgr
    from worker.config import DetectConfig, load_config
    from worker.faces.base import make_analyzer
    from worker.media.video import iter_frames, probe_video

    path = str(real_data / "videos" / "SadTalker__WDA_AlexandriaOcasioCortez_000.mp4")
    info = probe_video(path, load_config(None, []).limits)
    frames = {f.index: f.image for f in itertools.islice(iter_frames(path, info), 44) if f.index in (41, 43)}
    analyzer = make_analyzer(DetectConfig())
    face = {i: max(analyzer.analyze(frames[i], embed=False), key=lambda f: f.size) for i in frames}
    x0, y0, x1, y1 = face[43].bbox.astype(int)
    cx, cy, h = (x0 + x1) // 2, (y0 + y1) // 2, int(0.75 * max(x1 - x0, y1 - y0))
    bad, region = frames[43].copy(), (slice(max(cy - h, 0), cy + h), slice(max(cx - h, 0), cx + h))
    bad[region] = degrade(np.ascontiguousarray(frames[43][region]),
                          DegradationParams(blur_sigma=0.8, scale=2.0, noise_sigma=2.0, jpeg_quality=70, seed=43))
    m = estimate_affine(face[43].kps, 512)
    lq, gt = bgr_to_tensor([warp_face(bad, m, 512)]), warp_face(frames[43], m, 512)
    ref = bgr_to_tensor([warp_face(frames[41], estimate_affine(face[41].kps, 512), 512)])
    mask = face_mask(512, 0.08)

    def restored() -> float:
        return psnr(tensor_to_bgr(guided.GuidedRestorer().restore(lq, ref).image)[0], gt, mask)

    narrow = restored()
    monkeypatch.setattr(guided, "MISMATCH", float("inf"))
    assert narrow > restored() + 0.8
