"""A second opinion on whether a detection is a face, before anything is pasted onto it.

dlib's HOG detector fires on textured clothing (a sweater at score 0.745, 37 px), and landmark
following then carries such a box through a whole clip: restoring it would paint a face onto a
jumper. The check is dlib's CNN face detector (MMOD, trained apart from HOG, shipped in
``face-recognition-models``), run on the aligned crop of the detection: a face lands where the
alignment template puts one; a sweater, a wall or a dog does not.

Measured on the 2-core development machine: about 0.15-0.3 s per 160 px crop; every real face
of ``../shared/data/lq`` is confirmed at confidence 1.0-1.1.
"""

from __future__ import annotations

import cv2
import numpy as np

from refstar.align import estimate_affine, warp_face

SIDE = 160  # px: the crop MMOD looks at; the face in it is ~95 px, over MMOD's 80 px window
# where the restoration template puts the face box, as fractions of the crop side (MMOD's boxes
# on the aligned crops of 20 real faces: 0.21-0.33 / 0.25-0.38 to 0.80-0.96 / 0.84-0.97)
FACE_BOX = np.array([0.2, 0.25, 0.8, 0.85])
MIN_IOU = 0.3  # a detection elsewhere in the crop (a second face at its edge) does not count


def face_confidence(crop: np.ndarray) -> float:
    """MMOD's confidence that the aligned crop ((S, S, 3) BGR uint8, restoration template, any
    S) shows a face where the template puts it; -1.0 when MMOD finds none there. MMOD reports
    detections above its own threshold (confidence 0), so any value >= 0 is a face."""
    from worker.faces.dlib_backend import _cnn, to_dlib_rgb
    from worker.stages.track import iou

    small = crop if crop.shape[0] == SIDE else cv2.resize(crop, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    best = -1.0
    for det in _cnn()(to_dlib_rgb(small), 0):
        r = det.rect
        box = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1]], np.float32)
        if iou(box, FACE_BOX[None] * SIDE)[0, 0] >= MIN_IOU:
            best = max(best, float(det.confidence))
    return best


def face_confidence_at(image: np.ndarray, kps: np.ndarray) -> float:
    """``face_confidence`` of the face whose five landmarks are ``kps`` in ``image``."""
    return face_confidence(warp_face(image, estimate_affine(kps, SIDE), SIDE))
