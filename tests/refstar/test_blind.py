"""restore.blind=prior (``refstar/blind.py``): a face given no reference that lost most of its
detail gets the shipped prior's on top of guided's result; faces with a reference, or that kept
their detail, are guided's alone, to the byte."""

from __future__ import annotations

import numpy as np
import pytest

from refstar.align import estimate_affine, warp_face
from refstar.blind import PriorFinish, prior_weight
from refstar.degradations import DegradationParams, degrade
from refstar.guided import GuidedRestorer
from refstar.metrics import psnr
from refstar.restorer import bgr_to_tensor, make_restorer, tensor_to_bgr
from worker.config import ConfigError, DetectConfig, load_config
from worker.faces.base import make_analyzer
from worker.synthetic import FaceScene

S = 512
# the quality suite's x8 and x2 (bench/_suite_media.py), on the whole frame
X8 = DegradationParams(blur_sigma=3.0, scale=8.0, noise_sigma=8.0, jpeg_quality=30)
X2 = DegradationParams(blur_sigma=0.8, scale=2.0, noise_sigma=2.0, jpeg_quality=70)
CENTRE = slice(64, 448)  # the face without the crop's margin, as the suite scores it


@pytest.fixture(scope="module")
def faces() -> dict:
    """Aligned crops of two real faces the prior never saw (insightface's sample photos), clean
    and degraded, three frames each."""
    analyzer = make_analyzer(DetectConfig())
    out: dict = {"clean": [], "x8": [], "x2": []}
    for person in ("t1_2", "hanks"):
        scene = FaceScene(persons=(person,), size=(360, 320), face_px=200, motion=12)
        for i in range(0, 12, 4):
            frame = scene.render(i)
            m = estimate_affine(analyzer.analyze(frame)[0].kps, S)
            out["clean"].append(warp_face(frame, m, S))
            for name, p in (("x8", X8), ("x2", X2)):
                out[name].append(warp_face(degrade(frame, DegradationParams(**{**p.__dict__, "seed": i})), m, S))
    return out


def _psnr(crops: list[np.ndarray], clean: list[np.ndarray]) -> float:
    return float(np.mean([psnr(a[CENTRE], c[CENTRE]) for a, c in zip(crops, clean, strict=True)]))


def test_heavily_degraded_faces_with_no_reference_get_the_prior_s_detail(faces):
    blind = make_restorer("guided", blind="prior", device="cpu")
    assert isinstance(blind, PriorFinish) and blind.name == "guided"
    lq = bgr_to_tensor(faces["x8"])
    alone = tensor_to_bgr(GuidedRestorer().restore(lq, None).image)
    both = tensor_to_bgr(blind.restore(lq, None).image)
    before, guided, after = (_psnr(x, faces["clean"]) for x in (faces["x8"], alone, both))
    # input 25.31 dB, guided 25.31, guided + prior 25.40
    assert after > guided + 0.05 and after > before + 0.05, (before, guided, after)
    assert blind.finished == len(faces["x8"])


def test_faces_that_kept_their_detail_or_have_a_reference_stay_guided_s(faces):
    blind = make_restorer("guided", blind="prior", device="cpu")
    guided = GuidedRestorer()
    mild = bgr_to_tensor(faces["x2"])
    assert np.array_equal(np.stack(tensor_to_bgr(blind.restore(mild, None).image)),
                          np.stack(tensor_to_bgr(guided.restore(mild, None).image)))
    lq, ref = bgr_to_tensor(faces["x8"][:2]), bgr_to_tensor(faces["clean"][1:3])
    assert np.array_equal(np.stack(tensor_to_bgr(blind.restore(lq, ref).image)),
                          np.stack(tensor_to_bgr(guided.restore(lq, ref).image)))
    assert blind.finished == 0
    assert prior_weight(0.0) == 0.0 and prior_weight(1.0) == 1.0


def test_the_blind_key_is_checked_and_none_leaves_guided_alone():
    assert load_config(None, []).restore.blind == "prior"
    with pytest.raises(ConfigError, match="restore.blind"):
        load_config(None, ["restore.blind=gan"])
    assert isinstance(make_restorer("guided", blind="none"), GuidedRestorer)
