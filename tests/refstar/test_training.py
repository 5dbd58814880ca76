"""The training loop on the tiny net: loss falls, resume continues, checkpoints round-trip."""

from __future__ import annotations

import pytest
import torch

from refstar.checkpoint import load_net, read_meta
from refstar.networks import NetConfig, RefSTARNet
from refstar.training.dataset import FacePairs, PairConfig, collate_pairs
from refstar.training.loop import TrainConfig, Trainer
from tests.refstar.test_masks import _scene_crops

S = 32


@pytest.fixture(scope="module")
def data() -> FacePairs:
    crops = _scene_crops(("t1_2", "hanks"), range(0, 16, 2), 64)
    return FacePairs(crops, PairConfig(size=S, seed=0))


def _net() -> RefSTARNet:
    torch.manual_seed(0)
    return RefSTARNet(NetConfig.preset("tiny"))


def _eval_loss(net: torch.nn.Module, batch: dict) -> float:
    with torch.no_grad():
        out = net.eval()(batch["lq"], ref=batch["ref"])
    return float((out.image - batch["gt"]).abs().mean())


def test_loss_falls(data):
    held = FacePairs(data.crops, PairConfig(size=S, seed=99, jitter=0.0))
    batch = collate_pairs([held[i] for i in range(8)])
    net = _net()
    before = _eval_loss(net, batch)
    cfg = TrainConfig(max_steps=40, batch_size=4, lr=3e-3, warmup_steps=4, log_every=20,
                      ema_decay=0.9)
    lines: list[str] = []
    tr = Trainer(net, data, cfg, log=lines.append)
    last = tr.fit()
    assert tr.step == 40 and last["steps_per_s"] > 0
    assert _eval_loss(tr.module, batch) < 0.92 * before  # starts as the identity (out = lq)
    assert _eval_loss(tr.ema, batch) < before
    assert len(lines) == 2 and "steps/s" in lines[-1] and "ETA" in lines[-1]
    assert {"pixel", "freq", "mask", "cycle", "total"} <= set(last)


def test_resume_continues_step_count_and_checkpoints_round_trip(tmp_path, data):
    cfg = TrainConfig(max_steps=4, batch_size=4, ckpt_every=2, log_every=100)
    tr = Trainer(_net(), data, cfg, tmp_path, log=None)
    tr.fit()
    meta = read_meta(tmp_path)
    assert meta["step"] == 4 and meta["extra"]["train_size"] == S
    # the saved checkpoint is bit-exact: raw and EMA weights
    raw, _ = load_net(tmp_path, ema=False)
    ema, _ = load_net(tmp_path)
    for k, v in tr.module.state_dict().items():
        assert torch.equal(raw.state_dict()[k], v.cpu()), k
        assert torch.equal(ema.state_dict()[k], tr.ema.state_dict()[k].cpu()), k
    tr2 = Trainer(_net(), data, TrainConfig(max_steps=6, batch_size=4, log_every=100),
                  tmp_path, log=None)
    assert tr2.resume() == 4
    for k, v in tr.module.state_dict().items():
        assert torch.equal(tr2.module.state_dict()[k], v), k
    assert tr2.opt.state_dict()["state"][0]["step"] == tr.opt.state_dict()["state"][0]["step"]
    tr2.fit()
    assert tr2.step == 6 and read_meta(tmp_path)["step"] == 6
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1] == "step_0000006"
    # a fresh run folder has nothing to resume
    assert Trainer(_net(), data, cfg, tmp_path / "empty", log=None).resume() == 0


def test_time_budget_stops_and_anneals(data):
    cfg = TrainConfig(max_steps=10_000, time_budget_s=1.0, batch_size=2, warmup_steps=1,
                      log_every=1000)
    tr = Trainer(_net(), data, cfg, log=None)
    tr.fit()
    assert 0 < tr.step < 10_000 and tr.elapsed >= 1.0
    assert tr.progress() == 1.0 and tr.lr_now() == pytest.approx(cfg.lr * cfg.min_lr_ratio)


def test_adversarial_term_trains_a_discriminator_and_resumes_it(tmp_path, data):
    cfg = TrainConfig(max_steps=6, batch_size=4, log_every=100, w_adv=0.05, ckpt_every=3)
    tr = Trainer(_net(), data, cfg, tmp_path, log=None)
    d0 = {k: v.clone() for k, v in tr.d_module.state_dict().items()}
    last = tr.fit()
    assert {"adv", "disc"} <= set(last) and 0 < last["disc"] < 4  # hinge: 2 at chance
    assert any(not torch.equal(d0[k], v) for k, v in tr.d_module.state_dict().items())  # D learned
    again = Trainer(_net(), data, cfg, tmp_path, log=None)
    assert again.resume() == 6
    for k, v in tr.d_module.state_dict().items():
        assert torch.equal(v, again.d_module.state_dict()[k]), k
    assert not hasattr(Trainer(_net(), data, TrainConfig(max_steps=1)), "d_module")  # off by default
