"""What RefSTAR adapts on: the item's own crops and the references lent from outside it."""

from __future__ import annotations

import numpy as np

from worker.config import load_config
from worker.item.pipeline import SOFT_OWN, adaptation_set
from worker.records import Identity, Reference


def _ref(ident: int, sharp: float, origin: str = "", side: int = 256) -> Reference:
    return Reference(ref_id=f"{ident}/0", identity=ident, rank=0, frame=0, pts=0, source="", quality=sharp,
                     yaw=0.0, pitch=0.0, crop=np.full((side, side, 3), 7, np.uint8),
                     quality_parts={"sharpness": sharp}, origin=origin)


def _person(ident: int, *refs: Reference) -> Identity:
    return Identity(id=ident, n_faces=10, n_tracks=1, centroid=np.zeros(128, np.float32), references=list(refs))


def test_lent_references_join_their_person_at_the_items_crop_side():
    r = load_config(None, []).restore
    own = {0: [np.zeros((96, 96, 3), np.uint8)] * 3, 1: [np.zeros((160, 160, 3), np.uint8)] * 2}
    people = [_person(0, _ref(0, 0.40), _ref(0, 0.50, "library")),  # a little sharper: own crops stay
              _person(1, _ref(1, 0.30))]  # nothing lent
    crops, counts = adaptation_set(own, people, r)
    assert counts == {"lent_crops": 1, "own_crops_left_out": 0}
    assert len(crops[0]) == 4 and crops[0][-1].shape == (96, 96, 3)  # the median side of the item's crops
    assert len(crops[1]) == 2 and own[0] is not crops[0] and len(own[0]) == 3


def test_own_crops_of_a_person_soft_throughout_are_left_out():
    r = load_config(None, []).restore
    own = {0: [np.zeros((96, 96, 3), np.uint8)] * 5}
    soft = _person(0, _ref(0, 0.002), _ref(0, 0.002 * SOFT_OWN, "reel-2"), _ref(0, 0.05, "reel-2"))
    crops, counts = adaptation_set(own, [soft], r)
    assert counts == {"lent_crops": 2, "own_crops_left_out": 5} and len(crops[0]) == 2
    # linking left the person no reference of their own: what was lent was only a little sharper
    crops, counts = adaptation_set(own, [_person(0, _ref(0, 0.05, "reel-2"), _ref(0, 0.04, "reel-2"))], r)
    assert counts == {"lent_crops": 2, "own_crops_left_out": 0} and len(crops[0]) == 7
    # an item with no crops of its own: the lent ones at adapt_size
    crops, counts = adaptation_set({}, [soft], r)
    assert counts["own_crops_left_out"] == 0 and crops[0][0].shape == (r.adapt_size, r.adapt_size, 3)
