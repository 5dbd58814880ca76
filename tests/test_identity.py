"""Identity clustering on real faces: insightface's t1.jpg (six people) with augmented copies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker.config import DetectConfig
from worker.faces.base import make_analyzer
from worker.stages.identity import assign, centroids, cluster

IMAGES = (
    Path(next(iter(importlib.util.find_spec("insightface").submodule_search_locations)))
    / "data"
    / "images"
)
MAX_DIST = 0.075  # dlib default measured in tests/test_identity_realdata.py


def _augment(image: np.ndarray) -> list[np.ndarray]:
    """Copies a restoration archive would contain: mirrored, slightly blurred, rescaled."""
    return [
        np.ascontiguousarray(image[:, ::-1]),
        cv2.GaussianBlur(image, (0, 0), 1.2),
        cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA),
    ]


@pytest.fixture(scope="module")
def faces():
    """(embeddings (24, 128), person labels (24,), photo index (24,)); person = left-to-right
    position in the original photo, tracked through the augmentations by box centre."""
    analyzer = make_analyzer(DetectConfig())
    t1 = cv2.imread(str(IMAGES / "t1.jpg"))
    base = analyzer.analyze(t1)
    assert len(base) == 6
    centres = np.stack([(f.bbox[:2] + f.bbox[2:]) / 2 for f in base])
    embs, people, photos = [f.embedding for f in base], list(range(6)), [0] * 6
    w = t1.shape[1]
    for p, (image, to_orig) in enumerate(
        [
            (a, t)
            for a, t in zip(
                _augment(t1),
                [lambda c: np.array([w - c[0], c[1]]), lambda c: c, lambda c: c / 0.8],
                strict=True,
            )
        ],
        start=1,
    ):
        found = analyzer.analyze(image)
        assert len(found) == 6
        for f in found:
            c = to_orig((f.bbox[:2] + f.bbox[2:]) / 2)
            embs.append(f.embedding)
            people.append(int(np.argmin(np.linalg.norm(centres - c, axis=1))))
            photos.append(p)
    return np.stack(embs), np.array(people), np.array(photos)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a, b, strict=True))) == len(set(a)) == len(set(b))


def test_six_identities_from_augmented_copies(faces):
    x, people, photos = faces
    groups = [set(np.flatnonzero(photos == p)) for p in range(4)]
    labels = cluster(x, max_dist=MAX_DIST, cannot_link=groups)
    assert set(labels) == set(range(6))
    assert _same_partition(labels, people)
    # Without the constraints the faces alone still separate the six people.
    assert _same_partition(cluster(x, max_dist=MAX_DIST), people)


def test_cannot_link_respected_even_when_loose(faces):
    x, _, photos = faces
    groups = [set(np.flatnonzero(photos == p)) for p in range(4)]
    labels = cluster(x, max_dist=1.5, cannot_link=groups)  # loose enough to merge everybody
    for g in groups:
        assert len({labels[i] for i in g}) == len(g)
    assert cluster(x, max_dist=1.5).max() == 0  # unconstrained: one cluster


def test_density_rule_and_weights(faces):
    x, people, _ = faces
    keep = np.flatnonzero((people != 5) | (np.arange(len(people)) < 6))  # person 5 seen once
    labels = cluster(x[keep], max_dist=MAX_DIST, min_size=2)
    lone = np.flatnonzero(people[keep] == 5)
    assert labels[lone].tolist() == [-1]
    assert set(labels) == {-1, 0, 1, 2, 3, 4}
    # Weighted as a long track (30 faces), the lone face is a person and the biggest one.
    w = np.ones(len(keep))
    w[lone] = 30
    weighted = cluster(x[keep], max_dist=MAX_DIST, min_size=2, weights=w)
    assert weighted[lone].tolist() == [0]


def test_labels_ordered_by_size():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 16))
    x = np.concatenate([a + 0.01 * rng.normal(size=(2, 16)), b + 0.01 * rng.normal(size=(5, 16))])
    assert cluster(x, max_dist=0.1).tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert cluster(np.zeros((0, 16)), max_dist=0.1).shape == (0,)
    # Exact duplicates (float ties) still merge.
    assert cluster(np.repeat(x[:1], 5, axis=0), max_dist=0.01).tolist() == [0] * 5


def test_centroids_and_assign(faces):
    x, people, photos = faces
    train, new = photos < 3, photos == 3
    labels = cluster(x[train], max_dist=MAX_DIST)
    c = centroids(x[train], labels)
    assert c.shape == (6, 128) and np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    got = assign(x[new], c, MAX_DIST, cannot_link=[set(range(6))])
    # Map each cluster to its person and compare.
    person_of = {lab: people[train][labels == lab][0] for lab in range(6)}
    assert [person_of[g] for g in got] == people[new].tolist()
    # Far from every centroid -> -1.
    assert assign(-c[:1], c, MAX_DIST).tolist() == [-1]


def test_assign_cannot_link_gives_each_centroid_once():
    c = np.eye(3, 8, dtype=np.float32)
    x = np.stack([c[0] + 0.05 * c[1], c[0] + 0.9 * c[1]])  # both closest to centroid 0
    assert assign(x, c, 0.5).tolist() == [0, 0]
    assert assign(x, c, 0.5, cannot_link=[{0, 1}]).tolist() == [0, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="weights"):
        cluster(np.eye(3), max_dist=0.1, weights=np.array([1, 0, 1]))
    with pytest.raises(ValueError, match="out of range"):
        cluster(np.eye(3), max_dist=0.1, cannot_link=[{0, 7}])
