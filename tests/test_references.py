import numpy as np

from worker.config import ReferenceConfig
from worker.records import Face
from worker.stages.references import Candidate, CandidatePool, choose_reference, select_references


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
