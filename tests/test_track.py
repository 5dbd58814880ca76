import numpy as np

from worker.config import TrackConfig
from worker.records import Face
from worker.stages.track import ShotCutDetector, Tracker, cannot_link_tracks, iou, smooth_landmarks


def _face(x, y, emb, frame=0, s=60.0):
    kps = np.array([[x + 18, y + 22], [x + 42, y + 22], [x + 30, y + 36], [x + 20, y + 48],
                    [x + 40, y + 48]], np.float32)
    return Face(bbox=np.array([x, y, x + s, y + s], np.float32), kps=kps, det_score=0.9,
                embedding=emb, frame=frame)


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_iou():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou(a, b)[0], [1, 50 / 150, 0], rtol=1e-6)


def test_two_people_crossing_paths_keep_their_tracks():
    """Two moving faces with distinct embeddings; when their boxes briefly overlap the
    embedding check keeps each face on its own track."""
    ea, eb = _unit([1, 0, 0]), _unit([0, 1, 0])
    tr = Tracker(TrackConfig(iou_min=0.2, max_embed_dist=0.5))
    all_faces = []
    for t in range(20):
        fa = _face(10 + 5 * t, 50, ea, t)
        fb = _face(110 - 5 * t, 52, eb, t)
        faces = [fb, fa] if t % 2 else [fa, fb]  # detector order is arbitrary
        tr.update(t, faces)
        all_faces += faces
    a_tracks = {f.track for f in all_faces if f.embedding is ea}
    b_tracks = {f.track for f in all_faces if f.embedding is eb}
    assert len(a_tracks) == 1 and len(b_tracks) == 1 and a_tracks != b_tracks
    summ = tr.summaries(all_faces)
    assert sorted(s.n_faces for s in summ.values()) == [20, 20]
    assert cannot_link_tracks(summ, all_faces) == [{0, 1}]


def test_cut_and_gap_end_tracks():
    e = _unit([1, 0, 0])
    tr = Tracker(TrackConfig(max_gap=2))
    f0, f1 = _face(10, 10, e, 0), _face(11, 10, e, 1)
    tr.update(0, [f0])
    tr.update(1, [f1])
    tr.cut()
    f2 = _face(11, 10, e, 2)
    tr.update(2, [f2])
    f3 = _face(11, 10, e, 9)  # gap of 7 frames > max_gap
    tr.update(9, [f3])
    assert f0.track == f1.track != f2.track != f3.track


def test_shot_cut_detector(tmp_path):
    rng = np.random.default_rng(0)
    warm = np.full((90, 160, 3), (40, 120, 200), np.uint8)
    cool = np.full((90, 160, 3), (200, 90, 30), np.uint8)
    det = ShotCutDetector(0.5)
    moved = [np.clip(warm.astype(int) + rng.integers(-8, 8, warm.shape), 0, 255).astype(np.uint8)
             for _ in range(3)]
    flags = [det(x) for x in [warm, *moved, cool, cool]]
    assert flags == [False, False, False, False, True, False]


def test_smooth_landmarks_reduces_jitter_and_respects_gaps():
    rng = np.random.default_rng(1)
    faces = []
    for t in list(range(10)) + [20]:
        f = _face(50, 50, None, t)
        f.kps = f.kps + rng.normal(0, 2, (5, 2)).astype(np.float32)
        faces.append(f)
    before = np.stack([f.kps for f in faces[:10]])
    last = faces[-1].kps.copy()
    smooth_landmarks(faces, list(range(len(faces))), 5)
    after = np.stack([f.kps for f in faces[:10]])
    assert np.abs(np.diff(after, axis=0)).mean() < 0.6 * np.abs(np.diff(before, axis=0)).mean()
    np.testing.assert_array_equal(faces[-1].kps, last)  # alone after a gap: untouched


def test_a_track_landmarks_cannot_follow_waits_for_the_detector():
    ea, eb = _unit([1, 0, 0]), _unit([0, 1, 0])
    tr = Tracker(TrackConfig(max_embed_dist=0.1))
    first = _face(10, 10, ea, 0)
    tr.update(0, [first])
    ids, boxes, scores = tr.missing(1)
    assert ids == [first.track] and scores[0] == first.det_score
    impostor = _face(14, 10, eb, 1, s=60.0)  # what the landmark model found there: someone else
    assert not tr.follow(ids[0], impostor)
    assert tr.missing(2)[0] == []  # not looked for again until a detection picks it up
    again = _face(12, 10, ea, 3)
    tr.update(3, [again])
    assert again.track == first.track and tr.missing(4)[0] == [first.track]
    follower = _face(40, 40, ea, 4)
    follower.kps = follower.kps + 5  # moved: the box follows the landmarks
    assert tr.follow(first.track, follower)
    assert abs(float(follower.bbox[0]) - 45.0) < 1e-3
