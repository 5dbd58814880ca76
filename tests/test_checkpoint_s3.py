"""restore.checkpoint=s3://...: a run folder on S3 (moto over HTTP) is fetched once into the
cache (its latest step, no optimizer state) and restores exactly as the local copy does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.mediagen import FaceScene, write_video
from worker import storage
from worker.config import load_config
from worker.errors import ModelError
from worker.item.pipeline import restore_item
from worker.media.video import iter_frames
from worker.models import local_checkpoint

pytest_plugins = ["tests.s3server"]


@pytest.fixture
def run_on_s3(tmp_path, bucket):
    import torch

    from refstar.checkpoint import save_checkpoint
    from refstar.training.loop import build_net

    torch.manual_seed(0)
    run = tmp_path / "run"
    for step in (2, 4):
        net = build_net("tiny", 64)
        save_checkpoint(run / "checkpoints" / f"step_{step:07d}", net, config=net.cfg.to_dict(), step=step,
                        optimizer_state={"lr": 0.1})
    for p in sorted(run.rglob("*")):
        if p.is_file():
            storage.upload_file(p, f"s3://{bucket}/models/run/{p.relative_to(run).as_posix()}")
    return run, f"s3://{bucket}/models/run"


def test_s3_checkpoint_is_cached_once_and_restores_like_the_local_one(run_on_s3, tmp_path, monkeypatch):
    run, uri = run_on_s3
    monkeypatch.setenv("REFSTAR_CACHE", str(tmp_path / "cache"))
    local = Path(local_checkpoint(uri))
    assert json.loads((local / "meta.json").read_text())["step"] == 4
    assert sorted(p.name for p in local.iterdir()) == ["meta.json", "model.safetensors"]  # no optimizer
    assert (local / "model.safetensors").read_bytes() == \
        (run / "checkpoints" / "step_0000004" / "model.safetensors").read_bytes()
    assert local_checkpoint(uri) == str(local)  # cached: same folder, nothing fetched again

    src = tmp_path / "clip.mp4"
    write_video(FaceScene(persons=("t1_2",), size=(256, 192), face_px=96), src, 4, audio=False)
    sets = ["progress=false", "restore.crop_size=128", "restorer=refstar", "restore.adapt=false",
            "restore.skip_sharp=false",  # synthetic faces are as sharp as their references
            "output.crf=0"]  # lossless: x264's threaded encodes of the same frames may differ
    outs = [restore_item(src, str(tmp_path / name), load_config(None, [*sets, f"restore.checkpoint={ck}"]))
            for name, ck in (("s3", uri), ("local", run))]
    for res in outs:
        assert res.status == "ok", res.errors
        assert res.counts["faces_restored"] == 4
    a, b = (list(iter_frames(Path(r.output) / "restored.mp4")) for r in outs)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))


def test_missing_s3_checkpoint_is_a_clear_error(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("REFSTAR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match=f"no RefSTAR checkpoint at s3://{bucket}/nothing"):
        local_checkpoint(f"s3://{bucket}/nothing")
