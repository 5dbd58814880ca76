"""Following faces between detections: the box moves with the image (``moved_box``), the
detector comes back sooner while new people appear, and two tracks never keep one face."""

from __future__ import annotations

import numpy as np
import pytest

from worker.config import TrackConfig, load_config
from worker.item.pipeline import Engine
from worker.media.video import probe_video
from worker.records import Face
from worker.stages.analyse import analyse_video
from worker.stages.track import MOTION_SEARCH, Tracker, iou, moved_box
from worker.synthetic import FaceScene, write_video


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def grey():
    """Fine texture: nothing in it matches a box but the box itself."""
    import cv2

    noise = np.random.default_rng(0).integers(0, 256, (360, 480)).astype(np.uint8)
    return (cv2.GaussianBlur(noise, (0, 0), 3).astype(np.float32) * 3 - 255).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("dx,dy", [(0.0, 0.0), (13.5, -20.0), (-40.0, 9.0)])
def test_a_box_moves_with_its_content(grey, dx, dy):
    box = np.array([180, 120, 270, 210], np.float32)
    moved = moved_box(grey, _shifted(grey, dx, dy), box)
    np.testing.assert_allclose(moved - box, [dx, dy, dx, dy], atol=0.3)


def test_a_box_stays_when_its_content_is_out_of_reach_or_flat(grey):
    box = np.array([180, 120, 270, 210], np.float32)
    far = 90 * MOTION_SEARCH + 20  # beyond the search window
    np.testing.assert_array_equal(moved_box(grey, _shifted(grey, far, 0), box), box)
    flat = np.full_like(grey, 128)
    np.testing.assert_array_equal(moved_box(flat, flat, box), box)


def _face(x: float, frame: int, detected: bool = True) -> Face:
    kps = np.array([[x + 18, 22], [x + 42, 22], [x + 30, 36], [x + 20, 48], [x + 40, 48]], np.float32)
    return Face(bbox=np.array([x, 0, x + 60, 60], np.float32), kps=kps, det_score=0.9,
                embedding=np.eye(3, dtype=np.float32)[0], frame=frame, detected=detected)


def test_the_freshest_track_keeps_a_face_and_a_dropped_one_waits_for_the_detector():
    tr = Tracker(TrackConfig(max_embed_dist=0.5))
    tr.update(0, [_face(0, 0), _face(200, 0)])
    tr.update(3, [_face(200, 3)])  # only the second is detected again
    ids = tr.missing(4)[0]
    assert [ids[k] for k in tr.rank(ids)] == [1, 0]
    tr.drop(0)
    assert tr.missing(4)[0] == [1]
    tr.update(5, [_face(2, 5)])  # a detection picks the dropped track up again
    assert 0 in tr.missing(6)[0]


class _Sweep(FaceScene):
    """One face crossing the frame at ``speed`` px a frame (a fifth of its width)."""

    speed = 20.0

    def _placements(self, i):
        for person, patch, mask, x, y, box in super()._placements(0):
            dx = int(round(self.speed * i))
            yield person, patch, mask, x + dx, y, box + np.array([dx, 0, dx, 0], np.float32)


def _analyse(path, *sets):
    engine = Engine(load_config(None, ["progress=false", "restore.crop_size=256", *sets]))
    cfg = engine.cfg
    return analyse_video(str(path), probe_video(str(path), cfg.limits), engine.analyzer, cfg)


@pytest.mark.slow
def test_a_face_crossing_the_frame_stays_one_track_between_detections(tmp_path):
    """Without moving the box (the code before ``moved_box``) the landmarks stay behind the
    face: 16 of its 24 faces in 3 tracks."""
    scene = _Sweep(persons=("t1_2",), size=(640, 256), face_px=100, motion=0)
    scene._shots[0]["centres"]["t1_2"] = (90, 128)
    path = tmp_path / "sweep.mp4"
    write_video(scene, path, 24, audio=False)
    a = _analyse(path, "detect.stride=5", "track.embed_every=10")
    assert len(a.faces) == 24 and len({f.track for f in a.faces}) == 1
    truth = [iou(f.bbox[None], scene.face_boxes(f.frame)["t1_2"][None])[0, 0] for f in a.faces]
    assert min(truth) >= 0.6
    assert a.detector_frames == 7  # frames 0, 1, 3, 7, 12, 17, 22: the gap doubles up to 5


class _Enters(FaceScene):
    """The second person walks into the shot at frame ``comes``."""

    comes = 10

    def render(self, i):
        if i >= self.comes:
            return super().render(i)
        keep, self._shots[0]["persons"] = self._shots[0]["persons"], self._shots[0]["persons"][:1]
        try:
            return super().render(i)
        finally:
            self._shots[0]["persons"] = keep


@pytest.mark.slow
def test_the_detector_comes_back_on_the_next_frame_after_finding_someone_new(tmp_path):
    scene = _Enters(persons=("t1_2", "hanks"), size=(384, 256), face_px=110)
    path = tmp_path / "enters.mp4"
    write_video(scene, path, 30, audio=False)
    a = _analyse(path, "detect.stride=8", "track.embed_every=8")
    detected = sorted({f.frame for f in a.faces if f.detected})
    # the gap doubles from 1 after each new face: 0 (one person), 1, 3, 7, then 15 finds the
    # second one, and 16, 18, 22, 30 ...
    assert detected == [0, 1, 3, 7, 15, 16, 18, 22] and a.detector_frames == 8
    second = [f for f in a.faces if f.bbox[0] > 384 / 2]
    assert min(f.frame for f in second) == 15 and len({f.track for f in second}) == 1


@pytest.mark.slow
def test_quick_detections_keep_the_tracked_face_and_leave_a_small_newcomer_to_a_thorough_one(tmp_path):
    """A 186 px face from frame 0; a 44 px one walks in at frame 12. With
    ``detect.thorough_every=3`` two detections in three look only for faces near 186 px: the
    large face is found on every frame as before, the small one on the next thorough detection
    (19) instead of the first after it came (15)."""
    from worker.synthetic import _face_patch

    scene = _Enters(persons=("t1_2", "hanks"), size=(640, 360), face_px=150, motion=0)
    scene.comes = 12
    scene._shots[0]["patches"]["hanks"] = _face_patch("hanks", 50)
    path = tmp_path / "small.mp4"
    write_video(scene, path, 40, audio=False)
    runs = {n: _analyse(path, "detect.stride=4", "track.embed_every=8", f"detect.thorough_every={n}")
            for n in (1, 3)}

    def small(a):
        return [f for f in a.faces if f.bbox[2] - f.bbox[0] < 90]

    assert min(f.frame for f in small(runs[1])) == 15 and runs[1].quick_detections == 0
    a = runs[3]
    # thorough on 0, 7, 19, 26, 38 (every third, and always with nobody tracked)
    assert sorted({f.frame for f in a.faces if f.detected}) == [0, 1, 3, 7, 11, 15, 19, 20, 22, 26, 30, 34, 38]
    assert a.quick_detections == 8 and min(f.frame for f in small(a)) == 19
    assert len({f.track for f in small(a)}) == 1
    big = {n: [f for f in r.faces if f.bbox[2] - f.bbox[0] >= 90] for n, r in runs.items()}
    assert [f.frame for f in big[3]] == [f.frame for f in big[1]] == list(range(40))
    assert min(iou(f.bbox[None], g.bbox[None])[0, 0] for f, g in zip(big[1], big[3], strict=True)) >= 0.7
