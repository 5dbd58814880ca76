"""The learned restorer behind the worker's Restorer interface."""

from __future__ import annotations

import pytest
import torch

from refstar.checkpoint import save_checkpoint
from refstar.errors import ModelError
from refstar.networks import NetConfig, RefSTARNet
from refstar.refstar_restorer import RefSTARRestorer
from refstar.restorer import Restorer, make_restorer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = RefSTARNet(NetConfig.preset("tiny"))
    path = tmp_path_factory.mktemp("ck") / "tiny"
    return save_checkpoint(path, net, config=net.cfg.to_dict(), extra={"train_size": 32})


def test_make_restorer_loads_a_checkpoint_and_restores(ckpt):
    r = make_restorer("refstar", checkpoint=str(ckpt), device="cpu")
    assert isinstance(r, Restorer) and isinstance(r, RefSTARRestorer) and r.work_size == 32
    lq = torch.rand(3, 3, 48, 48)  # the worker's crop size differs from the training size
    ref = torch.rand(3, 3, 48, 48)
    ref[1] = 0  # sample 1 has no reference
    out = r.restore(lq, ref)
    assert out.image.shape == (3, 3, 48, 48) and out.mask.shape == (3, 1, 48, 48)
    assert out.image.dtype == torch.float32 and 0 <= float(out.image.min()) <= float(out.image.max()) <= 1
    assert float(out.mask[1].abs().max()) == 0.0 and float(out.mask[0].max()) > 0
    assert torch.isfinite(r.restore(lq, None).image).all()
    assert float(r.restore(lq, None).mask.abs().max()) == 0.0


def test_reference_features_are_encoded_once_per_reference(ckpt):
    r = RefSTARRestorer.from_checkpoint(str(ckpt), device="cpu", batch_size=4)
    a, b = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    lq = torch.rand(10, 3, 32, 32)
    ref = torch.stack([a, b] * 5)  # 10 targets share 2 references (fresh tensor, new pointers)
    first = r.restore(lq, ref)
    assert r.encoded == 2
    again = r.restore(lq, ref.clone())
    assert r.encoded == 2 and torch.equal(first.image, again.image)
    # cached features give what encoding every reference does
    with torch.no_grad():
        direct = r.net(lq[:4], ref=ref[:4]).image
    assert torch.allclose(first.image[:4], direct, atol=1e-6)
    r.restore(lq[:2], ref[:2], ref_ids=["x", "y"])  # explicit ids are keys too
    assert r.encoded == 4


def test_missing_checkpoint_is_a_clear_model_error(tmp_path):
    with pytest.raises(ModelError, match="needs a checkpoint"):
        make_restorer("refstar")
    missing = tmp_path / "nowhere" / "ckpt"
    with pytest.raises(ModelError, match=str(missing)):
        make_restorer("refstar", checkpoint=str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="meta.json"):
        make_restorer("refstar", checkpoint=str(tmp_path / "empty"))
