"""The insightface backend on the tiny pack of tests/faces/tiny_insightface_pack.py, for what
tests/faces/test_insightface_tiny_pack.py leaves out: the pack chosen through ``load_config``,
detection now and embedding later (both recognizer batch shapes), ``detect.min_score``, a
portrait frame above ``max_side`` (insightface's other letterbox branch), a detector with a fixed
640x640 input, a pack without a recognizer and refine boxes at or past the frame's edges.
A coloured square is a face at its own box (score SLOT_SCORES[slot]) and an embedding a known
function of its aligned crop, so every answer here is known."""

from __future__ import annotations

import numpy as np
import onnx
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
from worker.config import load_config
from worker.errors import ModelError
from worker.faces.base import make_analyzer
from worker.faces.insightface_backend import InsightFaceAnalyzer, template_kps

# (slot, box, seed): red and green faces on a 640 x 480 frame, detected at 640 px (1 px a pixel)
TWO = [(0, (60, 80, 188, 208), 1), (1, (400, 240, 480, 320), 2)]


def paint(faces, size, seed: int = 0) -> np.ndarray:
    image = background(*size, seed=seed)
    for slot, box, face_seed in faces:
        paint_face(image, slot, box, face_seed)
    return image


def analyzer_for(root, *overrides: str) -> InsightFaceAnalyzer:
    # through the config a user writes: the "backend" alias and detect.insightface_root
    cfg = load_config(None, ["backend=insightface", f"detect.insightface_root={root}", *overrides])
    return make_analyzer(cfg.detect)


def recognizer_runs(analyzer, monkeypatch) -> list[int]:
    """The number of crops in each recognizer run the analyzer makes from now on."""
    rec, runs = analyzer.app.models["recognition"], []
    get_feat = rec.get_feat
    monkeypatch.setattr(rec, "get_feat", lambda chips: runs.append(len(chips)) or get_feat(chips))
    return runs


def check_found(faces, truth, image, det_px: float) -> None:
    """``faces`` are ``truth``'s faces left to right, at their boxes within ``det_px``."""
    assert len(faces) == len(truth)
    for face, (slot, box, _) in zip(faces, sorted(truth, key=lambda f: f[1][0]), strict=True):
        assert np.abs(face.bbox - np.array(box, np.float32)).max() <= det_px
        assert face.kps.shape == (5, 2)
        assert np.abs(face.kps - template_box_kps(box)).max() <= det_px
        assert face.det_score == pytest.approx(SLOT_SCORES[slot]) and face.detected
        if face.embedding is not None:  # from the full-resolution frame
            chip = face_align.norm_crop(image, landmark=face.kps, image_size=112)
            np.testing.assert_allclose(face.embedding, expected_embedding(chip), atol=1e-5)


@pytest.fixture(scope="module")
def root_batch_of_one(tmp_path_factory):
    """A pack whose recognizer takes one crop a run (its own root: packs are cached by root)."""
    root = tmp_path_factory.mktemp("pack_batch1")
    write_pack(root, rec_batch=1)
    return root


@pytest.mark.parametrize("pack, runs_of_two", [("root", [2]), ("root_batch_of_one", [1, 1])],
                         ids=["any_batch", "batch_of_one"])
def test_detect_now_and_embed_later(pack, runs_of_two, request, monkeypatch):
    analyzer = analyzer_for(request.getfixturevalue(pack))
    assert analyzer.name == "insightface-buffalo_l" and analyzer.embed_dim == 512
    runs = recognizer_runs(analyzer, monkeypatch)
    image = paint(TWO, (640, 480))
    faces = analyzer.analyze(image, embed=False)
    check_found(faces, TWO, image, det_px=1.0)
    assert runs == [] and all(f.embedding is None for f in faces)
    analyzer.embed(image, [])
    assert runs == []
    analyzer.embed(image, faces)
    assert runs == runs_of_two
    check_found(faces, TWO, image, det_px=1.0)  # now with the embeddings checked
    embs = np.stack([f.embedding for f in faces])
    assert embs.shape == (2, 512) and embs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embs, axis=1), 1.0, atol=1e-5)
    assert float(embs[0] @ embs[1]) < 0.5  # two people, two directions
    # the same frame analysed in one call gives the same embeddings
    np.testing.assert_allclose(np.stack([f.embedding for f in analyzer.analyze(image)]), embs,
                               atol=1e-6)


def test_min_score_drops_the_weaker_faces(root):
    three = [*TWO, (2, (250, 20, 314, 84), 3)]  # blue scores 0.7, green 0.8, red 0.9
    image = paint(three, (640, 480))
    for min_score, kept in ((0.0, three), (0.75, TWO), (0.85, TWO[:1])):
        faces = analyzer_for(root, f"detect.min_score={min_score}").analyze(image)
        check_found(faces, kept, image, det_px=1.0)


def test_a_portrait_frame_above_max_side(root):
    """1280 px tall with max_side 960: detected on a 540 x 960 copy, which insightface scales to
    360 x 640 and pads on the right (2 source px a detector pixel); boxes come back in the full
    frame's pixels and embeddings from it."""
    faces = [(1, (500, 100, 660, 260), 4), (0, (80, 900, 240, 1060), 5)]
    image = paint(faces, (720, 1280), seed=1)
    found = analyzer_for(root, "detect.max_side=960").analyze(image)
    check_found(found, faces, image, det_px=2.0)
    assert all(f.embedding is not None for f in found)


def test_a_detector_with_a_fixed_input_size(tmp_path):
    """Some packs fix the detector's input at 640 x 640: insightface must then letterbox every
    image (and refine's crops) to that size whatever det_size the backend asks for."""
    folder = write_pack(tmp_path)
    det = onnx.load(str(folder / "det_10g.onnx"))
    for dim in det.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.ClearField("dim_param")
        dim.dim_value = 640
    onnx.save(det, str(folder / "det_10g.onnx"))
    analyzer = analyzer_for(tmp_path)
    assert analyzer.app.det_model.static_input_size == (640, 640)
    image = paint(TWO, (640, 480))
    faces = analyzer.analyze(image)
    check_found(faces, TWO, image, det_px=1.0)
    boxes = np.array([box for _, box, _ in TWO], np.float32)
    for face, box in zip(analyzer.refine(image, boxes), boxes, strict=True):
        assert np.abs(face.kps - template_box_kps(box)).max() < 0.5


def test_a_pack_without_a_recognizer_is_a_model_error(tmp_path):
    # the landmark and gender/age heads stay: none of them may pass for a recognizer
    folder = write_pack(tmp_path)
    (folder / "w600k_r50.onnx").unlink()
    with pytest.raises(ModelError, match=f"{folder}.*no recognition model"):
        analyzer_for(tmp_path)


def test_refine_boxes_at_and_past_the_frame_edges(root, monkeypatch):
    """A tracked box can hang over the frame's edge or leave it: one hanging over the left edge
    gets the landmarks of the face's visible part; boxes wholly outside get the template without
    a detector run (their crop is empty: past the right edge it used to crash cv2.resize, and
    above the top a negative crop end wrapped round to a crop of most of the frame)."""
    analyzer = analyzer_for(root)
    det, crops = analyzer.app.det_model, []
    detect = det.detect
    monkeypatch.setattr(det, "detect", lambda img, **kw: crops.append(img) or detect(img, **kw))
    image = paint([(0, (0, 100, 64, 164), 1)], (640, 480))
    boxes = np.array([[-20, 100, 64, 164], [700, 100, 780, 180], [100, -300, 180, -220]],
                     np.float32)
    over, right, above = analyzer.refine(image, boxes, np.array([0.9, 0.8, 0.7]))
    assert len(crops) == 1  # only the box that holds part of the frame is looked at
    assert np.abs(over.kps - template_box_kps((0, 100, 64, 164))).max() < 0.5
    for face, box in ((right, boxes[1]), (above, boxes[2])):
        np.testing.assert_allclose(face.kps, template_kps(box))
    for face, box, score in zip((over, right, above), boxes, (0.9, 0.8, 0.7), strict=True):
        np.testing.assert_array_equal(face.bbox, box)  # the tracker owns the box
        assert not face.detected and face.det_score == pytest.approx(score)
        assert face.embedding.shape == (512,)
        assert np.linalg.norm(face.embedding) == pytest.approx(1.0, abs=1e-5)
    assert analyzer.refine(image, np.zeros((0, 4), np.float32)) == []

