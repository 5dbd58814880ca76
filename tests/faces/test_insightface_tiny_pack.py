"""The insightface backend on a tiny model pack (tests/faces/tiny_insightface_pack.py): the real
loading (FaceAnalysis, model_zoo's routing by graph shape), preprocessing, SCRFD decoding,
recognizer batching and the mapping back to source pixels, against graphs whose answers are
known: a coloured square is a face at its own box, an embedding a known function of its crop.
Detection and recognition quality of real weights is out of reach here (the real-pack tests in
test_insightface_backend.py skip without a pack)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from insightface.utils import face_align

from tests.faces.tiny_insightface_pack import (
    SLOT_SCORES,
    background,
    expected_embedding,
    paint_face,
    template_box_kps,
    write_pack,
)
from tests.mediagen import write_video
from tests.outputs import item_dirs
from worker.cli import main
from worker.config import DetectConfig
from worker.errors import ModelError
from worker.faces.base import make_analyzer
from worker.faces.insightface_backend import template_kps

# (slot, box, seed) on a 1280 x 720 frame: detected at 640 px, so one detector pixel is 2 px here
FACES = [(1, (200, 100, 328, 228), 2), (0, (640, 320, 704, 384), 1), (2, (1001, 499, 1097, 595), 3)]


def frame(faces=FACES, size=(1280, 720), times: float = 1.0) -> np.ndarray:
    w, h = size
    image = background(round(w * times), round(h * times))
    for slot, box, seed in faces:
        paint_face(image, slot, [round(v * times) for v in box], seed)
    return image


def _analyzer(root, **kw):
    return make_analyzer(DetectConfig(backend="insightface", insightface_root=str(root), **kw))


@pytest.fixture(scope="module")
def analyzer(root):
    return _analyzer(root)


def _check_faces(faces, image, times: float, det_px: float):
    assert len(faces) == len(FACES)
    for face, (slot, box, _) in zip(faces, sorted(FACES, key=lambda f: f[1][0]), strict=True):
        box = np.array(box, np.float32) * times
        assert np.abs(face.bbox - box).max() <= det_px
        assert np.abs(face.kps - template_box_kps(box)).max() <= det_px
        assert face.det_score == pytest.approx(SLOT_SCORES[slot]) and face.detected
        chip = face_align.norm_crop(image, landmark=face.kps, image_size=112)
        np.testing.assert_allclose(face.embedding, expected_embedding(chip), atol=1e-5)


def test_the_pack_loads_through_model_zoo(analyzer):
    app = analyzer.app
    assert analyzer.name == "insightface-buffalo_l" and analyzer.embed_dim == 512
    assert set(app.models) == {"detection", "recognition"}  # the other heads were skipped
    det, rec = app.models["detection"], app.models["recognition"]
    assert type(det).__name__ == "SCRFD" and det.use_kps and det._num_anchors == 2
    assert type(rec).__name__ == "ArcFaceONNX" and (rec.input_mean, rec.input_std) == (127.5, 127.5)


def test_faces_come_back_at_their_boxes(analyzer):
    image = frame()
    faces = analyzer.analyze(image)
    _check_faces(faces, image, 1.0, det_px=2.0)
    embs = np.stack([f.embedding for f in faces])
    np.testing.assert_allclose(np.linalg.norm(embs, axis=1), 1.0, atol=1e-5)
    assert (embs @ embs.T - np.eye(3)).max() < 0.5  # different faces, different embeddings


def _batches(analyzer, monkeypatch) -> list[int]:
    """The number of crops in each recognizer run the analyzer makes from now on."""
    rec, batches = analyzer.app.models["recognition"], []
    get_feat = rec.get_feat
    monkeypatch.setattr(rec, "get_feat", lambda chips: batches.append(len(chips)) or get_feat(chips))
    return batches


def test_downscaled_detection_maps_back_and_embeds_in_one_batch(root, monkeypatch):
    """Above max_side the backend detects on a smaller copy, then embeds every face from the
    full-resolution frame in one recognizer run."""
    analyzer = _analyzer(root, max_side=960)
    batches = _batches(analyzer, monkeypatch)
    get_feat = analyzer.app.models["recognition"].get_feat
    image = frame(times=1.5)  # 1920 x 1080 -> 960 x 540 -> 640 x 360: 3 px a detector pixel
    faces = analyzer.analyze(image)
    assert batches == [3]
    _check_faces(faces, image, 1.5, det_px=3.0)
    for face in faces:  # the batch gives what one crop at a time gives
        one = get_feat(face_align.norm_crop(image, landmark=face.kps, image_size=112))[0]
        np.testing.assert_allclose(face.embedding, one / np.linalg.norm(one), atol=1e-5)


def test_a_recognizer_with_a_fixed_batch_of_one(tmp_path, monkeypatch):
    write_pack(tmp_path, rec_batch=1)
    fixed = _analyzer(tmp_path, max_side=960)
    batches = _batches(fixed, monkeypatch)
    image = frame(times=1.5)
    faces = fixed.analyze(image)
    assert batches == [1, 1, 1]
    _check_faces(faces, image, 1.5, det_px=3.0)


def test_no_face_gives_none(analyzer):
    image = background(640, 480, seed=5)
    image[100:200, 100:200] = (230, 230, 250)  # bright, but no channel dominates
    assert analyzer.analyze(image) == []


def test_refine_gives_the_landmarks_of_each_box(analyzer):
    image = frame()
    found = analyzer.analyze(image)  # sorted by x, like FACES by box
    truth = np.array(sorted(box for _, box, _ in FACES), np.float32)
    boxes = np.array([f.bbox for f in found])[::-1]  # refine keeps box order
    scores = np.array([0.3, 0.4, 0.5], np.float32)
    refined = analyzer.refine(image, boxes, scores)
    for face, box, true, score, same in zip(
        refined, boxes, truth[::-1], scores, found[::-1], strict=True
    ):
        assert not face.detected and face.det_score == pytest.approx(score)
        np.testing.assert_array_equal(face.bbox, box)  # the tracker's box is kept
        # detected on the crop magnified to 640 px for two box sides: 0.2 px a detector pixel
        assert np.abs(face.kps - template_box_kps(true)).max() < 0.5
        assert float(face.embedding @ same.embedding) > 0.99


def test_refine_does_not_take_a_neighbours_face(analyzer):
    """The grown crop around a box beside the red face holds part of it; that face's centre is
    outside the box, so the box keeps template landmarks rather than the neighbour's."""
    image = frame()
    box = np.array([560, 320, 624, 384], np.float32)  # ends 16 px before the red face
    (face,) = analyzer.refine(image, box[None])
    np.testing.assert_allclose(face.kps, template_kps(box))
    assert not face.detected and face.embedding.shape == (512,)


def test_a_folder_named_like_the_pack_does_not_shadow_it(tmp_path, monkeypatch):
    """insightface reads a pack name that is also a folder in the working directory as that
    folder; the backend must load the pack it checked under insightface_root."""
    write_pack(tmp_path / "root")
    (tmp_path / "cwd" / "buffalo_l").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert len(_analyzer(tmp_path / "root").analyze(frame())) == 3


def test_a_pack_without_a_detector_is_a_model_error(tmp_path):
    folder = write_pack(tmp_path, detector_file=False)
    with pytest.raises(ModelError, match=f"{folder}.*no detection model"):
        _analyzer(tmp_path)


def _restore(inputs, out, root, *extra) -> dict:
    """Run ``refstar restore`` on the pack (dlib's face check off: it would see coloured
    squares) and return the item's manifest."""
    args = ["restore", *map(str, inputs), "-o", str(out), "-q", "--set", "restore.crop_size=128"]
    for kv in ("detect.backend=insightface", f"detect.insightface_root={root}",
               "detect.verify=false", *extra):
        args += ["--set", kv]
    assert main(args) == 0
    (item,) = item_dirs(out)
    return json.loads((item / "manifest.json").read_text())


@pytest.mark.slow
def test_restore_an_album_with_the_pack(root, tmp_path):
    album = tmp_path / "album"
    album.mkdir()
    cv2.imwrite(str(album / "a.png"), frame())
    second = [(0, (300, 200, 380, 280), 1)]  # the red face of a.png again, smaller
    cv2.imwrite(str(album / "b.jpg"), frame(second, (640, 480)), [cv2.IMWRITE_JPEG_QUALITY, 95])
    m = _restore([album], tmp_path / "out", root)
    assert m["counts"]["faces"] == 4 and len(m["identities"]) == 3
    truth = {"a.png": list(FACES), "b.jpg": second}
    people = {}
    for f in m["faces"]:
        off = [np.abs(np.subtract(box, f["bbox"])).max() for _, box, _ in truth[f["source"]]]
        assert min(off) <= 2  # one detector pixel
        slot, _, seed = truth[f["source"]].pop(int(np.argmin(off)))
        assert f["det_score"] == pytest.approx(SLOT_SCORES[slot], abs=1e-3)
        people.setdefault(seed, set()).add(f["identity"])
    assert not any(truth.values()) and all(len(ids) == 1 for ids in people.values())
    assert len(set.union(*people.values())) == 3  # the red face is one person in both photos


class _MovingFace:
    """A red face moving 6 px a frame: ``write_video`` draws ``render(i)``."""

    size = (320, 240)

    @staticmethod
    def box(i: int) -> tuple[int, int, int, int]:
        return (60 + 6 * i, 80, 140 + 6 * i, 160)

    def render(self, i: int) -> np.ndarray:
        image = background(*self.size, seed=7)
        paint_face(image, 0, self.box(i), seed=1)
        return image


@pytest.mark.slow
def test_restore_a_video_with_the_pack(root, tmp_path):
    """Detection at most every 4th frame: the frames between are followed through ``refine``."""
    write_video(_MovingFace(), tmp_path / "clip.mp4", 12, audio=False)
    m = _restore([tmp_path / "clip.mp4"], tmp_path / "out", root, "detect.stride=4")
    c = m["counts"]
    # detections on frames 0 (a new face), 1, 3, 7 and 11: the gap doubles up to the stride
    assert (c["faces"], c["detector_frames"], c["tracks"], c["identities"]) == (12, 5, 1, 1)
    for f in m["faces"]:  # 320 px detected at 640: half a pixel, plus 4:2:0 chroma at the edges
        assert np.abs(np.subtract(f["bbox"], _MovingFace.box(f["frame"]))).max() <= 1.5
