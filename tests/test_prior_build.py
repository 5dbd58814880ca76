"""jobs/prior.py: the train/held-out split of the real media, and installing a run's weights."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.prior import install, split, train
from refstar import checkpoint as ckpt
from refstar.networks import NetConfig, RefSTARNet


def _tree(root: Path) -> Path:
    for name in ("b.mp4", "a.mp4", "d.mp4", "c.mp4", "facenet-pytorch__video.mp4"):
        (root / "videos").mkdir(parents=True, exist_ok=True)
        (root / "videos" / name).write_bytes(b"")
    for rel in ("identities/src/ann/1.jpg", "identities/src/ann/2.JPG", "identities/src/_group/g.jpg",
                "identities/src/bob/notes.txt", "lq/old.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    return root


def test_the_split_halves_the_clips_and_the_rotation_swaps_the_halves(tmp_path):
    a, b = split(_tree(tmp_path), "a"), split(tmp_path, "b")
    assert a["train_clips"] == ["videos/a.mp4", "videos/c.mp4"] == b["held_out_clips"]
    assert a["held_out_clips"] == ["videos/b.mp4", "videos/d.mp4"] == b["train_clips"]
    # labelled photos only: no group photo, no text file, nothing of lq/, and not the crowd clip
    assert a["photos"] == ["identities/src/ann/1.jpg", "identities/src/ann/2.JPG"] == b["photos"]


def test_install_ships_only_the_ema_weights_with_the_split(tmp_path):
    net = RefSTARNet(NetConfig.preset("tiny"))
    ema = RefSTARNet(NetConfig.preset("tiny"))
    ckpt.save_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000010", net, config=net.cfg.to_dict(),
                         step=10, ema=ema, optimizer_state={"step": 10}, extra={"train_size": 64})
    parts = {"train_clips": ["videos/a.mp4"], "held_out_clips": ["videos/b.mp4"], "photos": []}
    out = install(tmp_path / "run", {"split": parts, "command": "python -m jobs.prior ..."}, tmp_path / "prior")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.safetensors", "split.json"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["step"] == 10 and meta["extra"]["train_size"] == 64
    assert meta["extra"]["prior"]["command"].startswith("python -m jobs.prior")
    assert json.loads((out / "split.json").read_text()) == parts
    shipped = ckpt.load_weights(out)
    assert all((shipped[k] == v).all() for k, v in ema.state_dict().items())  # the EMA, not the raw


def test_checkpoint_prior_names_the_installed_prior_or_says_there_is_none(tmp_path, monkeypatch):
    import pytest

    import refstar.prior
    from worker.config import load_config
    from worker.errors import ModelError
    from worker.models import restorer_checkpoint

    monkeypatch.setattr(refstar.prior, "PRIOR_DIR", tmp_path / "face_prior")
    r = load_config(None, ["restorer=refstar", "restore.checkpoint=prior"]).restore
    with pytest.raises(ModelError, match="no face prior"):
        restorer_checkpoint(r)
    net = RefSTARNet(NetConfig.preset("tiny"))
    ckpt.save_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000001", net, config=net.cfg.to_dict(), step=1)
    install(tmp_path / "run", {"split": {"train_clips": ["videos/a.mp4"], "held_out_clips": [], "photos": []}})
    assert restorer_checkpoint(r) == str(tmp_path / "face_prior")
    assert refstar.prior.seen_by_prior() == {"a.mp4"}
    assert restorer_checkpoint(load_config(None, ["restorer=guided", "restore.checkpoint=prior"]).restore) == ""


def test_training_can_continue_from_a_checkpoint(tmp_path):
    """``--init``: the run starts from the given net (here a tiny one), not a new ``adapt`` net."""
    import cv2
    import numpy as np

    net = RefSTARNet(NetConfig.preset("tiny"))
    ckpt.save_checkpoint(tmp_path / "init", net, config=net.cfg.to_dict(), step=7, extra={"train_size": 128})
    rng = np.random.default_rng(0)
    for person in ("ann", "bob"):
        (tmp_path / "faces" / person).mkdir(parents=True)
        for k in range(2):
            cv2.imwrite(str(tmp_path / "faces" / person / f"{k}.png"), rng.integers(0, 255, (128, 128, 3), np.uint8))
    train(tmp_path / "faces", tmp_path / "run", budget_s=600, steps=1, seed=0, init=str(tmp_path / "init"), clean=0.5)
    trained, _ = ckpt.load_net(tmp_path / "run", "cpu")
    assert trained.cfg == net.cfg
