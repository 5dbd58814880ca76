"""A restorer may hand some people to another (``for_person``; ``GuidedThenNet`` gives the people
its net never learned to guided alone): the stage restores each face with its person's."""

from __future__ import annotations

import numpy as np

from refstar.restorer import Restored
from worker.config import load_config
from worker.records import Face
from worker.stages.restore import FaceRestoreStage

S = 64


class Lift:
    """A restorer with a known change: +``lift`` everywhere; counts the faces it gets."""

    name = "lift"

    def __init__(self, lift: float, learned: set[int] | None = None, other: Lift | None = None):
        self.lift, self.learned, self.other, self.faces = lift, learned, other, 0

    def restore(self, lq, ref) -> Restored:
        self.faces += len(lq)
        return Restored(image=(lq + self.lift).clamp(0, 1), mask=lq[:, :1] * 0)

    def for_person(self, identity: int):
        return self if self.learned is None or identity in self.learned else self.other


def _face(x0: float, identity: int) -> Face:
    kps = np.array([[40, 45], [60, 45], [50, 55], [42, 66], [58, 66]], np.float32) + [x0, 0]
    return Face(bbox=np.array([x0 + 30, 30, x0 + 70, 80], np.float32), kps=kps, det_score=0.9,
                frame=0, identity=identity)


def test_each_face_is_restored_by_its_persons_restorer():
    cfg = load_config(None, [f"restore.crop_size={S}"])
    image = np.random.default_rng(0).integers(40, 140, (100, 300, 3), np.uint8)  # no clipping
    guided = Lift(0.1)
    both = Lift(0.3, learned={0}, other=guided)
    faces = [_face(0, 0), _face(100, 1), _face(200, -1)]  # learned, another person, no identity
    got = {}
    FaceRestoreStage(cfg, both).run([image], [faces], {},
                                    lambda f, a, b: got.setdefault(f.identity, (a, b)))
    change = {k: float(np.median(b.astype(float) - a.astype(float))) for k, (a, b) in got.items()}
    assert abs(change[0] - 0.3 * 255) <= 1 and abs(change[1] - 0.1 * 255) <= 1
    assert abs(change[-1] - 0.1 * 255) <= 1
    assert both.faces == 1 and guided.faces == 2
