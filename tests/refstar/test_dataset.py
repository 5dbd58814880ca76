"""(GT, reference) pairs: sources, sample contents, determinism, mask caching."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from refstar.align import template
from refstar.degradations import DegradationParams
from refstar.training.dataset import (
    FacePairs,
    PairConfig,
    align_photo,
    collate_pairs,
    load_identity_folder,
)
from tests.refstar.test_masks import _scene_crops
from worker.config import DetectConfig
from worker.faces.base import make_analyzer
from worker.synthetic import face_photos

S = 64


@pytest.fixture(scope="module")
def crops() -> dict[str, list]:
    return _scene_crops(("t1_2", "hanks"), range(0, 15, 3), S)


def test_sample_contents(crops):
    ds = FacePairs(crops, PairConfig(size=S, no_ref_prob=0.0))
    assert len(ds) == 10
    s = ds[3]
    for k in ("lq", "gt", "ref"):
        assert s[k].shape == (3, S, S) and s[k].dtype == torch.float32
        assert 0.0 <= float(s[k].min()) and float(s[k].max()) <= 1.0
    assert s["mask"].shape == (1, S, S) and float(s["mask"].max()) > 0
    assert isinstance(s["params"], DegradationParams) and 3.0 <= s["params"].scale <= 5.0
    assert bool(s["has_ref"]) and s["identity"] in crops
    # the LQ is a degraded GT: close at low frequencies, not equal
    blur = lambda t: cv2.GaussianBlur(t.permute(1, 2, 0).numpy(), (0, 0), 4)  # noqa: E731
    assert np.abs(blur(s["lq"]) - blur(s["gt"])).mean() < 0.05
    assert not torch.equal(s["lq"], s["gt"])


def test_clean_samples_give_the_ground_truth_itself_as_input(crops):
    ds = FacePairs(crops, PairConfig(size=S, clean_prob=0.5, seed=2))
    clean = [i for i in range(len(ds)) if torch.equal(ds[i]["lq"], ds[i]["gt"])]
    assert 0 < len(clean) < len(ds)  # some left as they are, the others degraded
    assert all(ds[i]["params"] == DegradationParams(seed=ds[i]["params"].seed) for i in clean)
    degraded = FacePairs(crops, PairConfig(size=S, seed=2))
    assert not any(torch.equal(degraded[i]["lq"], degraded[i]["gt"]) for i in range(len(degraded)))


def test_reference_is_another_crop_of_the_same_person(crops):
    cfg = PairConfig(size=S, flip_prob=0.0, jitter=0.0, jitter_deg=0.0, no_ref_prob=0.0)
    ds = FacePairs(crops, cfg)
    for i in range(len(ds)):
        identity, g = ds.index[i]
        s = ds[i]
        as_t = [torch.from_numpy(c[..., ::-1].copy()).permute(2, 0, 1).float() / 255
                for c in ds.crops[identity]]
        match = [j for j, t in enumerate(as_t) if torch.equal(t, s["ref"])]
        assert match and g not in match
        assert torch.equal(as_t[g], s["gt"])


def test_patch_samples_cut_gt_reference_and_mask_at_one_place(crops):
    cfg = PairConfig(size=S, patch=24, flip_prob=0.0, jitter=0.0, jitter_deg=0.0, no_ref_prob=0.0)
    ds = FacePairs(crops, cfg)
    as_t = lambda c: torch.from_numpy(c[..., ::-1].copy()).permute(2, 0, 1).float() / 255  # noqa: E731
    places = set()
    for i in range(len(ds)):
        s = ds[i]
        assert s["lq"].shape == s["gt"].shape == s["ref"].shape == (3, 24, 24)
        assert s["mask"].shape == (1, 24, 24)
        identity, g = ds.index[i]
        whole = as_t(ds.crops[identity][g])
        (y, x), = [(y, x) for y in range(S - 23) for x in range(S - 23)
                   if torch.equal(whole[:, y: y + 24, x: x + 24], s["gt"])]
        places.add((y, x))
        refs = [as_t(c)[:, y: y + 24, x: x + 24] for c in ds.crops[identity]]
        assert any(torch.equal(r, s["ref"]) for j, r in enumerate(refs) if j != g)
        full_mask = torch.from_numpy(ds.mask(identity, g, next(
            j for j, r in enumerate(refs) if j != g and torch.equal(r, s["ref"]))))
        assert torch.equal(full_mask[y: y + 24, x: x + 24], s["mask"][0])
    assert len(places) > 1  # not always the same corner


def test_a_first_pass_sees_the_whole_degraded_face_and_its_output_is_cut_like_the_gt(crops):
    seen = []

    def pre(lq, ref):  # hands back the reference: its cut must then equal the sample's ref
        seen.append((lq.shape, lq.dtype, None if ref is None else ref.shape))
        return lq if ref is None else ref.copy()

    cfg = PairConfig(size=S, patch=24, no_ref_prob=0.3, seed=1)
    ds = FacePairs(crops, cfg, pre=pre)
    plain = FacePairs(crops, cfg)
    samples = [ds[i] for i in range(len(ds))]
    assert all(lq == (S, S, 3) and dt == np.uint8 and r in (None, (S, S, 3)) for lq, dt, r in seen)
    with_ref = [s for s in samples if bool(s["has_ref"])]
    assert with_ref and len(with_ref) < len(samples)
    for s in with_ref:
        assert torch.equal(s["lq"], s["ref"]) and s["lq"].shape == (3, 24, 24)
    for i, s in enumerate(samples):  # the same GT, reference, mask and degradation as without
        p = plain[i]
        assert torch.equal(s["gt"], p["gt"]) and torch.equal(s["mask"], p["mask"])
        assert s["params"] == p["params"] and bool(s["has_ref"]) == bool(p["has_ref"])


def test_deterministic_per_epoch_and_masks_cached(crops):
    ds = FacePairs(crops, PairConfig(size=S, seed=3))
    a, b = ds[1], ds[1]
    assert torch.equal(a["lq"], b["lq"]) and a["params"] == b["params"]
    ds.set_epoch(1)
    assert ds[1]["params"] != a["params"]
    n = len(ds._masks)
    ds[1]
    assert len(ds._masks) == n  # the pair's mask was computed once


def test_no_reference_samples_and_collate(crops):
    ds = FacePairs(crops, PairConfig(size=S, no_ref_prob=1.0))
    s = ds[0]
    assert not bool(s["has_ref"]) and float(s["ref"].abs().max()) == 0 and float(s["mask"].max()) == 0
    batch = next(iter(DataLoader(FacePairs(crops, PairConfig(size=S)), batch_size=4,
                                 collate_fn=collate_pairs)))
    assert batch["lq"].shape == (4, 3, S, S) and batch["mask"].shape == (4, 1, S, S)
    assert len(batch["params"]) == 4 and batch["has_ref"].dtype == torch.bool


def test_single_crop_identities_are_dropped(crops):
    ds = FacePairs({"a": crops["t1_2"], "b": crops["hanks"][:1]}, PairConfig(size=S))
    assert set(ds.crops) == {"a"}
    with pytest.raises(ValueError, match="two"):
        FacePairs({"b": crops["hanks"][:1]}, PairConfig(size=S))


def test_identity_folder_aligns_photos_and_job_output(tmp_path, crops):
    photo = face_photos()["t1_2"]  # a full (not square-aligned) photo: detected and aligned
    (tmp_path / "ds" / "p1").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "ds" / "p1" / "a.jpg"), photo)
    cv2.imwrite(str(tmp_path / "ds" / "p1" / "b.png"), cv2.resize(photo, None, fx=1.3, fy=1.3))
    (tmp_path / "ds" / "_group").mkdir()  # skipped
    analyzer = make_analyzer(DetectConfig())
    tree = load_identity_folder(tmp_path / "ds", 128, analyzer=analyzer)
    assert list(tree) == ["p1"] and sorted(tree["p1"]) == ["a.jpg", "b.png"]
    # both photos of one face, aligned to the template: their crops nearly coincide
    a, b = (tree["p1"][k].astype(np.float32) for k in ("a.jpg", "b.png"))
    assert np.abs(a - b).mean() < 20
    # an aligned crop is recognised as such (kept, only resized)
    aligned = tree["p1"]["a.jpg"]
    assert np.array_equal(align_photo(aligned, 128, analyzer), aligned)
    with pytest.raises(ValueError, match="pass an analyzer"):  # refstar does not detect faces itself
        align_photo(photo, 128)
    assert np.array_equal(align_photo(aligned, 128, aligned=True), aligned)
    assert template(128).shape == (5, 2)
    ds = FacePairs.from_folder(tmp_path / "ds", PairConfig(size=S), analyzer=analyzer)
    assert len(ds) == 2
    # job output: refs/<identity>/*.png plus crops passed in memory
    (tmp_path / "item" / "refs" / "0").mkdir(parents=True)
    for i, c in enumerate(crops["t1_2"][:2]):
        cv2.imwrite(str(tmp_path / "item" / "refs" / "0" / f"{i}.png"), c)
    job = FacePairs.from_job_output(tmp_path / "item", PairConfig(size=S),
                                    extra={0: crops["t1_2"][2:4], 1: crops["hanks"][:2]})
    assert {k: len(v) for k, v in job.crops.items()} == {"0": 4, "1": 2}
