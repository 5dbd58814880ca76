import numpy as np

from worker.config import ReferenceConfig
from worker.records import Face
from worker.references import Candidate, CandidatePool, choose_reference, select_references


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
    tiny = _cand(4, 0.95, 40, seed=4, size=30)  # best quality but under the size gate
    low = _cand(5, 0.1, 60, seed=5)  # under the quality gate
    refs = select_references(7, [dup, near_pose, side, tiny, low, base], ReferenceConfig(top_k=3))
    assert [r.frame for r in refs] == [0, 3, 2]  # pose-diverse first, then fill by quality
    assert [r.ref_id for r in refs] == ["7/0", "7/1", "7/2"]


def test_choose_reference_nearest_pose_and_not_itself():
    cands = [_cand(0, 0.9, 0, 1), _cand(10, 0.7, 30, 2)]
    refs = select_references(0, cands, ReferenceConfig(top_k=2))
    target = _cand(50, 0.3, 25, 3).face
    assert choose_reference(target, refs).frame == 10
    itself = cands[0].face
    assert choose_reference(itself, refs).frame == 10
    assert choose_reference(target, []) is None


def test_candidate_pool_keeps_the_best_per_group():
    pool = CandidatePool(2)
    for i, q in enumerate([0.1, 0.5, 0.3, 0.9, 0.2]):
        c = _cand(i, q, 0, i)
        if pool.would_keep(0, q):
            pool.offer(0, c)
    pool.offer(1, _cand(9, 0.05, 0, 9))
    assert sorted(c.face.quality for c in pool.candidates([0])) == [0.5, 0.9]
    assert len(pool.candidates()) == 3
