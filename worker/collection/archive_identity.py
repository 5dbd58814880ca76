"""Identity across an archive: the same person in several reels and albums, so that each of
their appearances is restored with the best references of all of them (pure: FAISS + numpy).

Each item's identities were found by that item's own clustering. Here their centroids go into
one FAISS inner-product index; pairs of identities of different items closer than ``max_dist``
(cosine distance) are joined, most similar first, and a join is refused when the two groups
already hold identities of a common item (that item's clustering said they are two people).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from worker.config import ReferenceConfig
from worker.records import Identity, Reference
from worker.stages.references import pool_references


@dataclass
class Person:
    """One person of the archive: ``members`` are ``(item id, identity id)``."""

    id: str  # "p<n>", numbered in order of first appearance
    members: list[tuple[str, int]] = field(default_factory=list)


def link(identities: dict[str, list[Identity]], max_dist: float) -> list[Person]:
    """Group the identities of all items into persons (every identity is in exactly one)."""
    import faiss

    keys = [(item, ident.id) for item in identities for ident in identities[item]]
    if not keys:
        return []
    x = np.stack([ident.centroid for item in identities for ident in identities[item]]).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, sims, nbrs = index.range_search(x, 1.0 - max_dist)
    pairs = sorted({(-float(sims[k]), min(i, int(nbrs[k])), max(i, int(nbrs[k])))
                    for i in range(len(keys)) for k in range(lims[i], lims[i + 1])
                    if keys[int(nbrs[k])][0] != keys[i][0]})
    parent = list(range(len(keys)))
    items_of = [{keys[i][0]} for i in range(len(keys))]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for _, i, j in pairs:
        a, b = root(i), root(j)
        if a != b and not (items_of[a] & items_of[b]):
            parent[b] = a
            items_of[a] |= items_of[b]
    persons: dict[int, Person] = {}
    for i, key in enumerate(keys):
        r = root(i)
        if r not in persons:
            persons[r] = Person(f"p{len(persons)}")
        persons[r].members.append(key)
    return list(persons.values())


def share_references(identities: dict[str, list[Identity]], persons: list[Person], cfg: ReferenceConfig,
                     crop_size: dict[str, int] | None = None) -> None:
    """Give every identity its person's id and the person's best references, chosen from the
    references of all its members (or their ``spare`` faces: a member sharp throughout has no
    face clearly sharper than its others, yet its faces are the best references of a soft
    member); a reference from another item keeps that item's id in ``origin`` and is resized to
    this item's crop size when it differs."""
    by_key = {(item, ident.id): ident for item in identities for ident in identities[item]}
    for person in persons:
        pooled = [dataclasses.replace(r, origin=r.origin or item) for item, iid in person.members
                  for r in by_key[(item, iid)].references or by_key[(item, iid)].spare]
        for item, iid in person.members:
            ident = by_key[(item, iid)]
            ident.person = person.id
            if len(person.members) == 1:
                continue  # alone in the archive: its own choice stands
            size = (crop_size or {}).get(item)
            ident.references = [_for_item(r, item, size) for r in pool_references(iid, pooled, cfg)]
            if ident.references:
                ident.why_no_reference = ""


def _for_item(ref: Reference, item: str, size: int | None) -> Reference:
    crop = ref.crop
    if size and crop.shape[0] != size:
        from refstar.align import resize_square

        crop = resize_square(crop, size)
    return dataclasses.replace(ref, origin="" if ref.origin == item else ref.origin, crop=crop)
