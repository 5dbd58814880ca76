"""Linking identities across the items of an archive, and sharing their best references."""

from __future__ import annotations

import numpy as np

from worker.collection.archive_identity import link, share_references
from worker.config import ReferenceConfig
from worker.records import Identity, Reference

RNG = np.random.default_rng(0)
BASE = {name: v / np.linalg.norm(v) for name, v in
        (("ann", RNG.normal(size=128)), ("bob", RNG.normal(size=128)), ("cy", RNG.normal(size=128)))}


def ident(i: int, who: str, noise: float = 0.02, refs: list[Reference] | None = None) -> Identity:
    v = BASE[who] + RNG.normal(scale=noise, size=128)
    return Identity(i, 10, 1, (v / np.linalg.norm(v)).astype(np.float32), refs or [])


def ref(identity: int, quality: float, yaw: float, seed: int, size: int = 64) -> Reference:
    crop = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Reference(f"{identity}/0", identity, 0, seed, None, "", quality, yaw, 0.0, crop)


def members(persons) -> set[frozenset]:
    return {frozenset(p.members) for p in persons}


def test_same_people_in_different_items_are_linked():
    items = {"A": [ident(0, "ann"), ident(1, "bob")], "B": [ident(0, "ann")],
             "C": [ident(0, "bob"), ident(1, "ann")], "D": [ident(0, "cy")]}
    persons = link(items, max_dist=0.1)
    assert members(persons) == {frozenset({("A", 0), ("B", 0), ("C", 1)}),
                                frozenset({("A", 1), ("C", 0)}), frozenset({("D", 0)})}
    assert [p.id for p in persons] == ["p0", "p1", "p2"]


def test_two_identities_of_one_item_never_merge():
    # E's clustering split one face into two people (both look like ann): only one joins ann
    items = {"A": [ident(0, "ann", 0.0)], "E": [ident(0, "ann", 0.01), ident(1, "ann", 0.05)]}
    persons = link(items, max_dist=0.2)
    assert len(persons) == 2
    joined = next(p for p in persons if len(p.members) == 2)
    assert joined.members == [("A", 0), ("E", 0)]  # the closer one


def test_nothing_links_above_the_threshold():
    items = {"A": [ident(0, "ann")], "B": [ident(0, "bob")]}
    assert members(link(items, max_dist=0.1)) == {frozenset({("A", 0)}), frozenset({("B", 0)})}
    assert link({}, 0.1) == []


def test_people_share_the_best_references_of_all_their_appearances():
    cfg = ReferenceConfig(top_k=2, min_pose_gap=0.0, min_crop_dist=0.0)
    a = ident(0, "ann", refs=[ref(0, 0.5, 0, 1), ref(0, 0.4, 10, 2)])
    b = ident(3, "ann", refs=[ref(3, 0.9, 5, 3, size=128)])  # B's best face is the archive's best
    c = ident(0, "cy", refs=[ref(0, 0.7, 0, 4)])
    items = {"A": [a], "B": [b], "C": [c]}
    share_references(items, link(items, 0.1), cfg, crop_size={"A": 64, "B": 128})
    assert [(r.quality, r.origin, r.ref_id) for r in a.references] == [(0.9, "B", "0/0"), (0.5, "", "0/1")]
    assert [(r.quality, r.origin, r.ref_id) for r in b.references] == [(0.9, "", "3/0"), (0.5, "A", "3/1")]
    assert a.references[0].crop.shape == (64, 64, 3) and b.references[1].crop.shape == (128, 128, 3)
    assert a.person == b.person != c.person
    assert [(r.quality, r.origin) for r in c.references] == [(0.7, "")]  # alone: unchanged


def test_a_member_sharp_throughout_lends_its_spare_faces():
    """A clip sharp in every frame has no face clearly sharper than its others, so no reference
    of its own (``why_no_reference``); its best faces, kept as ``spare``, become the references
    of the same person's soft clip."""
    cfg = ReferenceConfig(top_k=2, min_pose_gap=0.0, min_crop_dist=0.0)
    sharp = ident(0, "ann")
    sharp.spare, sharp.why_no_reference = [ref(0, 0.6, 0, 1)], "no face is 1.15x sharper ..."
    soft = ident(1, "ann", refs=[ref(1, 0.05, 0, 2)])
    items = {"sharp": [sharp], "soft": [soft]}
    share_references(items, link(items, 0.1), cfg)
    assert [(r.quality, r.origin) for r in soft.references] == [(0.6, "sharp"), (0.05, "")]
    assert [(r.quality, r.origin) for r in sharp.references] == [(0.6, ""), (0.05, "soft")]
    assert sharp.why_no_reference == ""
