"""restorer=refstar in the worker: adapted per item on the item's own faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.mediagen import FaceScene, write_video
from worker.config import load_config
from worker.item.pipeline import restore_item

pytestmark = pytest.mark.slow


def test_video_restored_by_refstar_adapted_on_its_own_faces(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: two threads only spin against each other here
    try:
        src = tmp_path / "clip.mp4"
        write_video(FaceScene(persons=("t1_2",), size=(320, 256), face_px=110), src, 18,
                    degrade=range(6, 12))
        cfg = load_config(None, ["progress=false", "restore.crop_size=256", "restorer=refstar",
                                 "restore.adapt_preset=tiny", "restore.adapt_steps=12", "restore.checkpoint=",
                                 "restore.adapt_size=64"])
        res = restore_item(src, str(tmp_path / "out"), cfg)
    finally:
        torch.set_num_threads(threads)
    assert res.status == "ok", res.errors
    m = json.loads((Path(res.output) / "manifest.json").read_text())
    r = m["restorer"]
    assert r["name"] == "refstar" and r["adapted"] and r["steps"] == 12 and r["identities"] == 1
    assert (r["max_steps"], r["stopped"]) == (12, "steps") and "12 of 12 steps" in r["stop_reason"]
    assert r["crops"] >= 10  # the sharp frames of the track, not just its references
    c = m["counts"]
    restored = {f["frame"] for f in m["faces"] if f["restored"]}
    assert set(range(6, 12)) <= restored  # every degraded face; sharp ones may be left as they are
    assert c["faces_restored"] == c["faces_with_reference"] == 18 - c["faces_sharp"]
    assert "adapt" in m["timings"]


def test_refstar_with_a_missing_checkpoint_fails_clearly(tmp_path):
    src = tmp_path / "clip.mp4"
    write_video(FaceScene(persons=("t1_2",), size=(320, 256), face_px=110), src, 4, audio=False)
    cfg = load_config(None, ["progress=false", "restorer=refstar", f"restore.checkpoint={tmp_path}/nope"])
    res = restore_item(src, str(tmp_path / "out"), cfg)
    assert res.status == "failed" and "checkpoint not found" in res.errors[0].reason


def test_a_time_capped_adaptation_says_so_on_screen_and_in_the_manifest(capsys):
    from worker.item.pipeline import adapt_net

    rng = np.random.default_rng(0)
    crops = {0: [rng.integers(0, 255, (64, 64, 3), np.uint8) for _ in range(3)]}
    cfg = load_config(None, ["restorer=refstar", "restore.checkpoint=", "restore.adapt_preset=tiny", "restore.adapt_size=64",
                             "restore.adapt_steps=50", "restore.adapt_time_s=0.000001"])
    net, info = adapt_net(crops, cfg)
    assert net is not None and info["stopped"] == "time" and info["steps"] < info["max_steps"] == 50
    assert "time cap restore.adapt_time_s=1e-06 came first" in info["stop_reason"]
    assert f"adapt: stopped at step {info['steps']} of 50" in capsys.readouterr().err
