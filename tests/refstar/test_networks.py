"""RefSTARNet: shapes, the no-reference path, reference reuse, and the anti-trivial-solution
property (inside the mask the output must depend on the reference)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from refstar.networks import (
    NetConfig,
    PatchDiscriminator,
    RefSTARNet,
    WindowCrossAttention,
    count_parameters,
)

TINY = NetConfig.preset("tiny")


@pytest.fixture(scope="module")
def net() -> RefSTARNet:
    torch.manual_seed(0)
    return RefSTARNet(TINY).eval()


def _pair(b: int, s: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, s, s, generator=g), torch.rand(b, 3, s, s, generator=g)


@pytest.mark.parametrize("s", [32, 64])
def test_shapes_dtypes_and_ranges(net, s):
    lq, ref = _pair(2, s)
    with torch.no_grad():
        out = net(lq, ref)
    assert out.image.shape == (2, 3, s, s) and out.image.dtype == torch.float32
    assert out.mask.shape == (2, 1, s, s) and out.mask.dtype == torch.float32
    assert [m.shape[-1] for m in out.masks] == [s // 4, s // 2, s]  # coarse to fine
    assert 0 <= out.image.min() and out.image.max() <= 1
    assert 0 <= out.mask.min() and out.mask.max() <= 1 and out.mask.max() > 0


def test_sizes_that_do_not_fit_are_errors(net):
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.rand(1, 3, 30, 30))
    with pytest.raises(ValueError, match="S, S"):
        net(torch.rand(1, 3, 32, 64))
    with pytest.raises(ValueError, match="does not fit"):
        net(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiple"):
        replace(TINY, size=66)


def test_no_reference_means_zero_mask_and_no_dependence_on_any_ref(net):
    lq, ref = _pair(2, 32)
    with torch.no_grad():
        plain = net(lq)
        empty = net(lq, torch.zeros(0, 3, 0, 0))
        # sample 0 has a reference, sample 1 an all-zero one ("no reference")
        mixed = net(lq, torch.stack([ref[0], torch.zeros_like(ref[1])]))
    assert plain.mask.abs().max() == 0 and all(m.abs().max() == 0 for m in plain.masks)
    assert torch.equal(empty.image, plain.image)
    assert mixed.mask[1].abs().max() == 0 and mixed.mask[0].max() > 0
    torch.testing.assert_close(mixed.image[1], plain.image[1])
    assert not torch.allclose(mixed.image[0], plain.image[0])


def test_encode_reference_reuse_and_batch1_broadcast(net):
    lq, ref = _pair(3, 32)
    one = ref[:1]
    with torch.no_grad():
        direct = net(lq, one.expand(3, -1, -1, -1))
        feats = net.encode_reference(one)  # computed once, shared by the 3 targets
        reused = net(lq, ref_feats=feats)
        also = net(lq, one)  # a batch-1 ref tensor broadcasts too
    torch.testing.assert_close(reused.image, direct.image)
    torch.testing.assert_close(reused.mask, direct.mask)
    torch.testing.assert_close(also.image, direct.image)
    with pytest.raises(ValueError, match="not both"):
        net(lq, one, ref_feats=feats)


def test_reference_branch_gets_gradient_and_is_not_ignorable():
    torch.manual_seed(0)
    net = RefSTARNet(TINY)
    lq, ref = _pair(2, 32)
    net(lq, ref).image.sum().backward()
    ref_params = [p for n, p in net.named_parameters() if n.startswith("ref_encoder")]
    attn_params = [p for n, p in net.named_parameters() if ".attn." in n or ".ref_stream." in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ref_params + attn_params)
    net.zero_grad()
    net(lq).image.sum().backward()  # the no-reference path never touches the reference branch
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in ref_params)

    with torch.no_grad():  # mask forced to 1: the reference is the only source at fused scales
        a = net(lq, ref, mask_override=1.0).image
        b = net(lq, ref.flip(-1), mask_override=1.0).image
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-4


def test_window_attention_matches_naive_loop():
    torch.manual_seed(0)
    c, h, w, win, halo, heads = 4, 6, 5, 4, 1, 2  # odd sizes exercise the internal padding
    attn = WindowCrossAttention(c, heads, win, halo)
    x, r = torch.randn(1, c, h, w), torch.randn(1, c, h, w)
    k, v = attn.project_ref(r)
    with torch.no_grad():
        out, peak = attn(x, k, v)
        q = attn.q(attn.norm_q(x))
        d, rr = c // heads, 2 * (win + halo) - 1
        want = torch.zeros(1, c, h, w)
        for y in range(h):
            for xx in range(w):
                y0, x0 = y // win * win, xx // win * win
                keys = [
                    (u, t)
                    for u in range(max(0, y0 - halo), min(h, y0 + win + halo))
                    for t in range(max(0, x0 - halo), min(w, x0 + win + halo))
                ]
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    bias = [
                        attn.rel_bias[hd, (u - y + win + halo - 1) * rr + t - xx + win + halo - 1]
                        for u, t in keys
                    ]
                    logits = torch.stack(
                        [q[0, sl, y, xx] @ k[0, sl, u, t] * d**-0.5 for u, t in keys]
                    )
                    p = (logits + torch.stack(bias)).softmax(0)
                    want[0, sl, y, xx] = sum(p[i] * v[0, sl, u, t] for i, (u, t) in enumerate(keys))
        torch.testing.assert_close(out, attn.proj(want), atol=1e-5, rtol=1e-5)
    assert peak.shape == (1, 1, h, w)


def test_channels_last_and_bf16_autocast(net):
    lq, ref = _pair(1, 32)
    with torch.no_grad():
        want = net(lq, ref).image
        cl = net(
            lq.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = net(lq, ref)
    torch.testing.assert_close(cl.image, want, atol=1e-5, rtol=1e-5)
    assert bf.image.dtype == torch.float32 and (bf.image - want).abs().max() < 0.05


def test_deterministic_init_and_config_round_trip():
    torch.manual_seed(3)
    a = RefSTARNet(TINY).state_dict()
    torch.manual_seed(3)
    b = RefSTARNet(TINY).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = NetConfig.preset("small")
    assert NetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        NetConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        NetConfig.preset("huge")


@pytest.mark.parametrize(
    ("name", "lo", "hi"), [("tiny", 1e5, 3e5), ("adapt", 1e6, 3e6), ("small", 1e6, 3e6), ("base", 1e7, 1e8)]
)
def test_preset_parameter_counts(name, lo, hi):
    with torch.device("meta"):  # no memory, no init cost, even for "base"
        n = count_parameters(RefSTARNet(NetConfig.preset(name)))
    assert lo <= n <= hi, n


def test_adapt_preset_runs_at_its_size_with_and_without_reference():
    torch.manual_seed(0)
    net = RefSTARNet(NetConfig.preset("adapt")).eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        plain, with_ref = net(x), net(x, ref=torch.rand(1, 3, 128, 128))
    assert plain.image.shape == with_ref.image.shape == (1, 3, 128, 128)
    assert float(plain.mask.abs().max()) == 0.0 and float(with_ref.mask.mean()) > 0.0


def test_patch_discriminator_shape():
    d = PatchDiscriminator(channels=8, levels=3)
    assert d(torch.rand(2, 3, 32, 32)).shape == (2, 1, 4, 4)
