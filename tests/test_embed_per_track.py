"""Embedding per track (track.embed_every): a tracked face is embedded at its track's start, every
N frames and when in doubt; on a two-person clip the faces, people and references stay those of
the per-frame path (on the dev clips: bench/bench_analysis.py)."""

from __future__ import annotations

import numpy as np
import pytest

from worker.config import PER_FRAME, TrackConfig, load_config
from worker.item.pipeline import Engine
from worker.media.video import probe_video
from worker.records import Face
from worker.stages.analyse import analyse_video
from worker.stages.plan import plan_video
from worker.stages.track import LOOK_SIZE, SMALL_FACE_PX, Tracker, alike
from worker.synthetic import FaceScene, write_video

pytestmark = pytest.mark.slow


def _patch(seed: int) -> np.ndarray:
    g = np.random.default_rng(seed).standard_normal((LOOK_SIZE, LOOK_SIZE)).astype(np.float32)
    g -= g.mean()
    return g / np.linalg.norm(g)


def _face(x: float, emb: np.ndarray | None = None, side: float = 60) -> Face:
    k = side / 60
    kps = np.array([[x + 18 * k, 22 * k], [x + 42 * k, 22 * k], [x + 30 * k, 36 * k], [x + 20 * k, 48 * k],
                    [x + 40 * k, 48 * k]], np.float32)
    return Face(bbox=np.array([x, 0, x + side, side], np.float32), kps=kps, det_score=0.9, embedding=emb)


@pytest.mark.parametrize(("side", "every"), [(120, 4), (SMALL_FACE_PX - 1, 2)])
def test_a_steady_face_is_embedded_at_its_start_and_every_n_frames(side, every):
    """Every ``embed_every`` (4) frames; a face under SMALL_FACE_PX every half as many (its
    embedding is noisier: on the crowd clip the fast settings merged two people without it)."""
    tr = Tracker(TrackConfig(max_embed_dist=0.1, embed_every=4))
    look, emb = _patch(0), np.eye(3, dtype=np.float32)[0]
    asked = []
    for t in range(10):
        face = _face(10 + t, side=side)
        need = tr.to_embed(t, [face], [look])
        asked.append(need[0])
        if need[0]:
            face.embedding = emb
        tr.update(t, [face], patches=[look])
    assert asked == [t % every == 0 for t in range(10)]
    assert len(tr.summaries([])) == 1


def test_doubt_asks_for_an_embedding():
    tr = Tracker(TrackConfig(max_embed_dist=0.1, embed_every=10))
    emb = np.eye(3, dtype=np.float32)[0]
    tr.update(0, [_face(10, emb)], patches=[_patch(0)])
    # it looks like itself: no embedding needed; another look, or a second face on its box: needed
    assert tr.to_embed(1, [_face(12)], [_patch(0)]) == [False]
    assert tr.to_embed(1, [_face(12)], [_patch(1)]) == [True]
    assert tr.to_embed(1, [_face(12), _face(20)], [_patch(0), _patch(0)]) == [True, True]
    assert tr.to_embed(1, [_face(200)], [_patch(0)]) == [True]  # a new track
    tid = tr.missing(1)[0][0]
    assert not tr.in_doubt(tid, 1, _patch(0)) and tr.in_doubt(tid, 1, _patch(2))
    # a face let through on its look follows without an embedding; a checked one must agree
    assert tr.follow(tid, _face(11))
    assert not tr.follow(tid, _face(11, np.eye(3, dtype=np.float32)[1]))
    # embed_every=1 is the per-frame path: always asked
    flat = Tracker(TrackConfig(max_embed_dist=0.1, embed_every=1))
    flat.update(0, [_face(10, emb)], patches=[_patch(0)])
    assert flat.to_embed(1, [_face(12)], [_patch(0)]) == [True] and flat.in_doubt(0, 1, _patch(0))
    assert alike(_patch(3), _patch(3)) and not alike(_patch(3), _patch(4)) and not alike(None, _patch(3))


class _Leaves(FaceScene):
    """The first person walks out of the shot after frame ``gone`` (no cut: same background)."""

    gone = 14

    def render(self, i):
        if i <= self.gone:
            return super().render(i)
        keep, self._shots[0]["persons"] = self._shots[0]["persons"], self._shots[0]["persons"][1:]
        try:
            return super().render(i)
        finally:
            self._shots[0]["persons"] = keep


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    scene = _Leaves(persons=("t1_2", "hanks"), size=(384, 256), face_px=110)
    path = tmp_path_factory.mktemp("embed") / "leaves.mp4"
    write_video(scene, path, 30, degrade=set(range(6, 12)), audio=False)
    return path


def _analyse(path, *sets):
    engine = Engine(load_config(None, ["progress=false", "restore.crop_size=256", *sets]))
    cfg, analyzer = engine.cfg, engine.analyzer  # thresholds calibrated for the backend
    a = analyse_video(str(path), probe_video(str(path), cfg.limits), analyzer, cfg)
    people = plan_video(a, cfg)
    return a, {i.id: sorted(r.frame for r in i.references) for i in people}


def test_per_track_embedding_keeps_the_faces_people_and_references(clip):
    full, full_refs = _analyse(clip, *PER_FRAME)
    lazy, lazy_refs = _analyse(clip, *PER_FRAME, "track.embed_every=8")  # the detector still on every frame
    # per frame: every face, and the look at the first person's place once they left (refused)
    assert len(full.faces) == 15 * 2 + 15 and full.embedded == len(full.faces) + 1
    assert lazy.embedded <= 10  # per track: its start and every 8 frames, and that look (measured 7)
    key = [(f.frame, tuple(np.round(f.bbox, 3)), f.track) for f in full.faces]
    assert key == [(f.frame, tuple(np.round(f.bbox, 3)), f.track) for f in lazy.faces]
    assert [f.identity for f in full.faces] == [f.identity for f in lazy.faces]
    assert full_refs == lazy_refs and len(full_refs) == 2 and all(full_refs.values())


def test_with_detector_stride_a_face_that_left_is_not_followed_onto_the_background(clip):
    """Between detections the landmark model answers even where the face has gone; its look
    no longer matches, so it is embedded and the embedding refuses it."""
    a, refs = _analyse(clip, "detect.stride=4", "track.embed_every=8")
    assert max(f.frame for f in a.faces if f.bbox[0] < 384 / 2 - 40) <= _Leaves.gone
    assert len(a.faces) == 15 * 2 + 15  # every face there, none more
    assert len(refs) == 2 and a.embedded < len(a.faces) / 2
    assert a.detector_frames == 9  # 0, 1, 3, 7, 11 ... 27: the gap doubles up to 4

