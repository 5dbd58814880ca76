"""Restorer batch occupancy counters of FaceRestoreStage (and the restore actor's sum of them),
on hand-built batches with known face counts: no models, no Ray actors."""

from __future__ import annotations

import numpy as np

from refstar.restorer import PassThrough, Restored
from worker.config import load_config
from worker.records import Face, Frame, Reference
from worker.stages.restore import MAX_BUFFERED_FRAMES, FaceRestoreStage, restore_stream

S = 64  # crop side: small and fast


class Recording:
    """A restorer that returns its input and records each call's batch and reference use."""

    name = "recording"

    def __init__(self) -> None:
        self.batches: list[tuple[int, bool]] = []

    def restore(self, lq, ref) -> Restored:
        self.batches.append((lq.shape[0], ref is not None))
        return PassThrough().restore(lq, ref)


def cfg(batch_size: int, restorer: str = "guided"):
    return load_config(None, [f"restore.crop_size={S}", f"restore.batch_size={batch_size}",
                              f"restore.restorer={restorer}"])


def face(frame: int = 0, reference: str | None = None, skipped: str | None = None) -> Face:
    kps = np.array([[40, 45], [60, 45], [50, 55], [42, 66], [58, 66]], np.float32)
    return Face(bbox=np.array([30, 30, 70, 80], np.float32), kps=kps, det_score=0.9, frame=frame,
                reference=reference, skipped=skipped)


def ref(ref_id: str) -> Reference:
    return Reference(ref_id, 0, 0, 0, None, "", 0.9, 0.0, 0.0, np.full((S, S, 3), 128, np.uint8))


def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (100, 100, 3), np.uint8)


def test_one_run_counts_calls_faces_and_slots():
    restorer = Recording()
    stage = FaceRestoreStage(cfg(4), restorer)
    refs = {"0/0": ref("0/0")}
    # 5 faces with a reference, 2 without (one has a reference id that is not in refs), 1 skipped
    faces = [[face(0, "0/0"), face(0, "0/0"), face(0)],
             [face(1, "0/0"), face(1, "0/0"), face(1, "9/0"), face(1, skipped="too_small")],
             [face(2, "0/0")]]
    assert stage.stats() == {"runs": 0, "calls": 0, "faces": 0, "slots": 0}
    stage.run([image() for _ in faces], faces, refs)
    # with references: 4 + 1, without: 2, never mixed
    assert restorer.batches == [(4, True), (1, True), (2, False)]
    assert stage.stats() == {"runs": 1, "calls": 3, "faces": 7, "slots": 12}
    stage.run([image()], [[face(0)]], refs)  # counters accumulate
    assert stage.stats() == {"runs": 2, "calls": 4, "faces": 8, "slots": 16}


def test_stream_batches_faces_across_frames():
    restorer = Recording()
    stage = FaceRestoreStage(cfg(4), restorer)
    frames = [Frame(i, image()) for i in range(10)]
    by_frame = {i: [face(i)] for i in range(10)}  # one face per frame: flushes at 4, 8, end
    written = []
    assert restore_stream(frames, by_frame, {}, stage, written.append) == 10
    assert [f.index for f in written] == list(range(10))
    assert restorer.batches == [(4, False), (4, False), (2, False)]
    s = stage.stats()
    assert s == {"runs": 3, "calls": 3, "faces": 10, "slots": 12}
    assert s["faces"] / s["slots"] == 10 / 12


def test_face_less_frames_flush_without_restorer_calls():
    restorer = Recording()
    stage = FaceRestoreStage(cfg(8), restorer)
    n = MAX_BUFFERED_FRAMES + 4
    frames = [Frame(i, image()) for i in range(n)]
    by_frame = {0: [face(0)], 1: [face(1, skipped="too_small")]}
    assert restore_stream(frames, by_frame, {}, stage, lambda f: None) == n
    # two flushes (16 buffered frames, then the end), one restorer call with the one usable face
    assert stage.stats() == {"runs": 2, "calls": 1, "faces": 1, "slots": 8}


def test_pass_through_counts_nothing():
    stage = FaceRestoreStage(cfg(4, "none"), PassThrough())
    stage.run([image()], [[face(0), face(0)]], {})
    assert stage.stats() == {"runs": 0, "calls": 0, "faces": 0, "slots": 0}


def test_restore_worker_sums_its_stages():
    """The actor class, used in-process: a new item makes a new stage, the counters carry on."""
    from worker.cluster.ray_adapter import RestoreWorker

    c = cfg(4)
    worker = RestoreWorker(c)
    assert worker.stats() == {}
    worker._stage_for("a", c).run([image()], [[face(0), face(0), face(0)]], {})
    assert worker.stats() == {"runs": 1, "calls": 1, "faces": 3, "slots": 4}
    worker._stage_for("a", c)  # same item and config: same stage
    worker._stage_for("b", c).run([image(), image()], [[face(0)] * 3, [face(1)] * 3], {})
    assert worker.stats() == {"runs": 2, "calls": 3, "faces": 9, "slots": 12}
