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
    res = blind.restore(lq, None)
    both = tensor_to_bgr(res.image)
    before, guided, after = (_psnr(x, faces["clean"]) for x in (faces["x8"], alone, both))
    # input 25.31 dB, guided 25.31, guided + prior 25.40
    assert after > guided + 0.05 and after > before + 0.05, (before, guided, after)
    assert blind.finished == len(faces["x8"])
    assert res.prior.shape == (len(faces["x8"]),) and bool((res.prior > 0).all()) and float(res.prior.max()) <= 1


def test_faces_that_kept_their_detail_or_have_a_reference_stay_guided_s(faces):
    blind = make_restorer("guided", blind="prior", device="cpu")
    guided = GuidedRestorer()
    mild = bgr_to_tensor(faces["x2"])
    res = blind.restore(mild, None)
    assert np.array_equal(np.stack(tensor_to_bgr(res.image)),
                          np.stack(tensor_to_bgr(guided.restore(mild, None).image)))
    assert not res.prior.any()
    lq, ref = bgr_to_tensor(faces["x8"][:2]), bgr_to_tensor(faces["clean"][1:3])
    res = blind.restore(lq, ref)
    assert np.array_equal(np.stack(tensor_to_bgr(res.image)),
                          np.stack(tensor_to_bgr(guided.restore(lq, ref).image)))
    assert not res.prior.any()
    assert blind.finished == 0
    assert prior_weight(0.0) == 0.0 and prior_weight(1.0) == 1.0


def test_the_blind_key_is_checked_and_none_leaves_guided_alone():
    assert load_config(None, []).restore.blind == "prior"
    with pytest.raises(ConfigError, match="restore.blind"):
        load_config(None, ["restore.blind=gan"])
    assert isinstance(make_restorer("guided", blind="none"), GuidedRestorer)


def test_an_album_says_which_faces_the_prior_gave_its_detail(tmp_path):
    """A photo of one person blurred at x8 and another left sharp, nobody else: neither face has
    a reference; the manifest records the share of the prior's detail each was given (the blurred
    one all of it, the sharp one none), the counts and the report page say so."""
    import json
    from pathlib import Path

    import cv2

    from worker.item.pipeline import restore_item

    album = tmp_path / "album"
    album.mkdir()
    for name, person, p in (("blurred.png", "t1_2", X8), ("sharp.png", "hanks", None)):
        frame = FaceScene(persons=(person,), size=(360, 320), face_px=200).render(0)
        cv2.imwrite(str(album / name), degrade(frame, p) if p else frame)
    res = restore_item(album, str(tmp_path / "out"), load_config(None, ["progress=false"]))
    assert res.status == "ok", res.errors
    m = json.loads((Path(res.output) / "manifest.json").read_text())
    given = {f["source"]: f["prior"] for f in m["faces"] if f["restored"] and f["reference"] is None}
    assert given == {"blurred.png": 1.0, "sharp.png": 0.0}, m["faces"]
    assert m["counts"]["faces_prior"] == 1
    page = (Path(res.output) / "report.html").read_text()
    assert "1 with no reference given some of the face prior's detail" in page
    assert "without a reference, with 100% of the face prior's detail" in page
