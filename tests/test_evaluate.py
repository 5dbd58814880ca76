"""`refstar eval` on real encoded clips whose ground truth we made: the clean clip, a copy with
chosen frames degraded by the degradation model, and the same scene with another person."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from refstar.degradations import DegradationParams, degrade
from refstar.metrics import identity_similarity
from tests.mediagen import FaceScene, write_video
from tests.outputs import item_dirs
from worker.cli import main
from worker.config import load_config
from worker.outputs.evaluate import evaluate
from worker.outputs.evaluate_report import PSNR_CAP_DB, parse_frames, summarise

N = 8
DEGRADED = {3, 4}
PARAMS = DegradationParams(blur_sigma=2.0, scale=4.0, noise_sigma=5.0, jpeg_quality=50)
SCENE = {"size": (256, 192), "face_px": 96}


class _Scene(FaceScene):
    """Degraded frames: the whole frame through refstar.degradations (seeded per frame)."""

    def degraded(self, i: int) -> np.ndarray:
        return degrade(self.render(i), PARAMS, seed=i)


def _cfg():
    return load_config(None, ["progress=false"])


def _by(report: dict, label: str) -> dict:
    return next(c for c in report["candidates"] if c["label"] == label)


def _psnr(cand: dict, frames) -> list[float]:
    return [r["psnr"] for r in cand["per_face"] if r["frame"] in frames]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    gt, deg, other = d / "gt.mp4", d / "degraded.mp4", d / "other.mp4"
    write_video(_Scene(("t1_2",), **SCENE), gt, N, audio=False)
    write_video(_Scene(("t1_2",), **SCENE), deg, N, degrade=DEGRADED, audio=False)
    write_video(_Scene(("hanks",), **SCENE), other, N, audio=False)  # same places, another face
    return {"dir": d, "gt": str(gt), "degraded": str(deg), "other": str(other)}


@pytest.fixture(scope="module")
def report(clips):
    return evaluate(clips["gt"], [clips["degraded"], clips["gt"], clips["other"]], _cfg(),
                    labels=["degraded", "gt", "other"])


def test_identity_similarity_is_the_cosine_of_embeddings():
    a = np.array([3.0, 4.0, 0.0])
    assert identity_similarity(a, 2 * a) == pytest.approx(1.0)
    assert identity_similarity(a, -a) == pytest.approx(-1.0)
    assert identity_similarity(a, np.array([0.0, 0.0, 5.0])) == pytest.approx(0.0)
    assert identity_similarity(a, np.zeros(3)) == 0.0
    rows = identity_similarity(np.stack([a, -a]), a)
    assert rows.shape == (2,) and rows.tolist() == pytest.approx([1.0, -1.0])
    with pytest.raises(ValueError):
        identity_similarity(a, np.ones(4))


def test_frame_specs():
    assert [i for i in range(12) if i in parse_frames("1::3")] == [1, 4, 7, 10]
    assert [i for i in range(12) if i in parse_frames("0:3,5,9:")] == [0, 1, 2, 5, 9, 10, 11]
    assert parse_frames("0:3,5").stop == 6 and parse_frames("all").stop is None
    for bad in ("a:b", "-1:", "0:4:0", "1:2:3:4"):
        with pytest.raises(ValueError):
            parse_frames(bad)


def test_gt_against_itself_is_perfect(report):
    gt = _by(report, "gt")
    assert report["frames"]["evaluated"] == N and report["faces"] == N == gt["faces"]
    assert all(r["psnr"] == PSNR_CAP_DB for r in gt["per_face"])
    assert gt["ssim"] == pytest.approx(1.0)
    assert gt["identity_gt"] > 0.999
    assert gt["flicker_pairs"] == N - 1
    assert gt["flicker"] == pytest.approx(0.0, abs=1e-12) and gt["flicker_ratio"] == pytest.approx(1.0)


def test_degraded_copy_scores_lower_only_on_its_degraded_frames(report):
    deg, gt = _by(report, "degraded"), _by(report, "gt")
    clean = set(range(N)) - DEGRADED
    # the clean frames differ only by their own encode; the degraded ones by far more
    assert min(_psnr(deg, clean)) > max(_psnr(deg, DEGRADED)) + 8
    assert max(_psnr(deg, DEGRADED)) < 30
    on_bad = summarise(deg["per_face"], frames=DEGRADED)
    assert on_bad["identity_gt"] < summarise(deg["per_face"], frames=clean)["identity_gt"]
    assert deg["flicker"] > 0 and deg["flicker_ratio"] > 1.1  # sharp-blurred-sharp jumps
    assert report["baseline"] == "degraded" and deg["gain"] is None
    assert gt["gain"]["psnr"] > 10 and gt["gain"]["identity_gt"] > 0 and gt["gain"]["flicker"] < 0


def test_another_person_is_less_similar_than_the_degraded_same_person(report):
    deg, other = _by(report, "degraded"), _by(report, "other")
    on_bad = summarise(deg["per_face"], frames=DEGRADED)["identity_gt"]
    assert other["identity_gt"] < on_bad - 0.03
    assert max(r["identity_gt"] for r in other["per_face"]) < min(
        r["identity_gt"] for r in deg["per_face"])


def test_frames_option_selects_frames(clips):
    r = evaluate(clips["gt"], [clips["degraded"]], _cfg(), frames="1::3")
    (c,) = r["candidates"]
    assert [x["frame"] for x in c["per_face"]] == [1, 4, 7]
    assert r["frames"] == {"spec": "1::3", "evaluated": 3, "with_faces": 3}
    assert c["flicker"] is None and c["flicker_pairs"] == 0  # no two consecutive frames
    r = evaluate(clips["gt"], [clips["degraded"]], _cfg(), frames="0:3,5", id_every=2)
    (c,) = r["candidates"]
    assert [x["frame"] for x in c["per_face"]] == [0, 1, 2, 5] and c["flicker_pairs"] == 2
    assert [x["identity_gt"] is None for x in c["per_face"]] == [False, True, False, True]


def test_images_and_folders_pair_by_name(clips, tmp_path):
    scene = _Scene(("t1_2",), **SCENE)
    gt_dir, cand_dir = tmp_path / "gt", tmp_path / "cand"
    gt_dir.mkdir(), cand_dir.mkdir()
    for i in (0, 5):
        cv2.imwrite(str(gt_dir / f"f{i}.png"), scene.render(i))
    cv2.imwrite(str(cand_dir / "f5.png"), scene.degraded(5))  # f0.png missing
    r = evaluate(str(gt_dir), [str(cand_dir)], _cfg())
    (c,) = r["candidates"]
    assert [(x["file"], x["frame"]) for x in c["per_face"]] == [("f5.png", 1)]
    assert c["frames_missing"] == 1 and "missing" in r["warnings"][0]
    assert c["psnr"] < 30 and c["flicker"] is None
    # two single images pair whatever their names
    r = evaluate(str(gt_dir / "f5.png"), [str(cand_dir / "f5.png"), str(gt_dir / "f5.png")], _cfg(),
                 labels=["deg", "same"])
    assert _by(r, "same")["psnr"] == PSNR_CAP_DB and _by(r, "deg")["faces"] == 1


def test_bad_inputs_exit_2_naming_the_file(clips, tmp_path, capsys):
    out = str(tmp_path / "ev")
    missing = str(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video\n")
    small = tmp_path / "small.mp4"
    write_video(_Scene(("t1_2",), **SCENE), small, 2, audio=False, size=(128, 96))
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), np.zeros((64, 64, 3), np.uint8))
    cases = [([missing, clips["degraded"]], missing), ([clips["gt"], missing], missing),
             ([clips["gt"], str(junk)], str(junk)), ([clips["gt"], str(small)], str(small)),
             ([clips["gt"], str(still)], str(still))]
    for args, named in cases:
        assert main(["eval", *args, "-o", out, "-q"]) == 2, args
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, err
    assert main(["eval", clips["gt"], clips["gt"], "-o", out, "--label", "a", "--label", "b"]) == 2
    assert "--label" in capsys.readouterr().err
    assert main(["eval", clips["gt"], clips["gt"], "-o", out, "--frames", "x"]) == 2
    assert main(["eval", clips["gt"], clips["gt"], "-o", out, "--set", "nope.key=1"]) == 2
    assert not Path(out).exists()


@pytest.mark.slow  # restores the clip first
def test_cli_scores_a_worker_output_folder_with_its_references(clips, tmp_path, capsys):
    assert main(["restore", clips["degraded"], "-o", str(tmp_path / "out"), "-q",
                 "--set", "restore.crop_size=256"]) == 0
    (item,) = item_dirs(tmp_path / "out")
    capsys.readouterr()
    ev = tmp_path / "ev"
    assert main(["eval", clips["gt"], clips["degraded"], str(item), "-o", str(ev), "-q",
                 "--label", "degraded", "--label", "guided", "--refs", str(item)]) == 0
    table = capsys.readouterr().out
    assert "degraded" in table and "guided" in table and "PSNR" in table
    r = json.loads((ev / "eval.json").read_text())
    assert {"schema", "version", "gt", "backend", "crop_size", "frames", "faces", "faces_too_small",
            "baseline", "candidates", "warnings", "seconds"} <= set(r)
    assert (r["schema"], r["version"], r["backend"], r["baseline"]) == ("refstar-worker/eval", 1,
                                                                         "dlib-hog", "degraded")
    deg, guided = r["candidates"]
    assert {"label", "path", "media", "restorer", "timings", "references", "faces", "psnr", "ssim",
            "identity_gt", "identity_ref", "flicker", "flicker_ratio", "gain", "per_face"} <= set(guided)
    assert guided["restorer"] == {"name": "guided", "blind": "prior"} and guided["timings"]["total"] > 0
    assert guided["media"].endswith("restored.mp4")
    assert (guided["references"], deg["references"]) == ("own", "--refs")
    assert guided["identity_ref_faces"] == N and guided["identity_ref"] > 0.9
    gain = summarise(guided["per_face"], base=deg["per_face"], frames=DEGRADED)
    assert gain["psnr"] > 1.0 and gain["identity_gt"] > 0
    html = (ev / "eval.html").read_text()
    assert html.startswith("<!doctype html>") and "guided" in html and "<table>" in html


@pytest.mark.slow  # restores the clip first
def test_cli_scores_a_mirror_layout_sidecar_by_the_media_beside_it(clips, tmp_path, capsys):
    assert main(["restore", clips["degraded"], "-o", str(tmp_path / "out"), "-q", "--set", "restore.crop_size=256",
                 "--layout", "mirror", "--suffix", "_r"]) == 0
    (side,) = (tmp_path / "out").glob("*.refstar")
    restored = tmp_path / "out" / (Path(clips["degraded"]).stem + "_r" + Path(clips["degraded"]).suffix)
    assert restored.is_file()
    ev = tmp_path / "ev"
    assert main(["eval", clips["gt"], clips["degraded"], str(side), "-o", str(ev), "-q",
                 "--label", "degraded", "--label", "guided"]) == 0
    deg, guided = json.loads((ev / "eval.json").read_text())["candidates"]
    assert Path(guided["media"]).resolve() == restored.resolve() and guided["references"] == "own"
    assert summarise(guided["per_face"], base=deg["per_face"], frames=DEGRADED)["psnr"] > 1.0
