"""Checkpoint I/O: bit-exact round trip, EMA preference, pickle-free optimizer state, errors."""

from __future__ import annotations

import json

import pytest
import torch

from refstar.checkpoint import (
    latest,
    load_net,
    load_optimizer_state,
    read_meta,
    save_checkpoint,
)
from refstar.errors import ModelError
from refstar.networks import NetConfig, RefSTARNet


def _net(seed: int) -> RefSTARNet:
    torch.manual_seed(seed)
    return RefSTARNet(NetConfig.preset("tiny"))


def test_round_trip_bit_exact(tmp_path):
    net, ema = _net(0), _net(1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.rand(1, 3, 32, 32), ref=torch.rand(1, 3, 32, 32)).image.mean().backward()
    opt.step()
    d = save_checkpoint(tmp_path / "ck", net, config=net.cfg.to_dict(), step=7, ema=ema,
                        optimizer_state={"optimizer": opt.state_dict()},
                        metrics={"psnr": 30.5}, extra={"train_size": 64})
    meta = json.loads((d / "meta.json").read_text())
    assert meta["step"] == 7 and meta["config"] == net.cfg.to_dict() and meta["has_ema"]
    raw, _ = load_net(d, ema=False)
    for k, v in net.state_dict().items():
        assert torch.equal(raw.state_dict()[k], v), k
    loaded_ema, meta2 = load_net(d / "model.safetensors")  # EMA preferred when present
    for k, v in ema.state_dict().items():
        assert torch.equal(loaded_ema.state_dict()[k], v), k
    assert meta2["metrics"] == {"psnr": 30.5} and not loaded_ema.training
    x, r = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(raw(x, ref=r).image, net.eval()(x, ref=r).image)
    state = load_optimizer_state(d)  # torch.load(weights_only=True) under the hood
    opt2 = torch.optim.AdamW(raw.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"]) for i in s1)


def test_latest_picks_highest_step_and_overwrite_is_atomic(tmp_path):
    net = _net(0)
    for step in (5, 12):
        save_checkpoint(tmp_path / "run" / "checkpoints" / f"step_{step:07d}", net,
                        config=net.cfg.to_dict(), step=step)
    assert latest(tmp_path / "run").name == "step_0000012"
    assert read_meta(tmp_path / "run")["step"] == 12
    save_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000012", net,
                    config=net.cfg.to_dict(), step=13)
    assert read_meta(tmp_path / "run")["step"] == 13
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")]
    assert load_optimizer_state(tmp_path / "run") is None


def test_missing_and_mismatched_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match=str(tmp_path / "nope")):
        load_net(tmp_path / "nope")
    net = _net(0)
    cfg = net.cfg.to_dict()
    cfg["channels"] = [8, 16, 64]
    save_checkpoint(tmp_path / "bad", net, config=cfg)
    with pytest.raises(ModelError, match="does not match"):
        load_net(tmp_path / "bad")
