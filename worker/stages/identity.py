"""Cluster face (or track) embeddings into identities with FAISS.

Algorithm: constrained average-linkage agglomeration on cosine distance.
- For unit vectors the average pairwise cosine similarity of two clusters A, B is exactly
  ``mean_A . mean_B`` (means not renormalised), and with weights it is the weighted means' dot
  product. So each cluster is one (weight, weighted-mean) pair and a FAISS ``IndexFlatIP`` over
  the means finds every cluster's nearest neighbours in the exact average-linkage metric.
- Each round merges the *reciprocal* nearest-neighbour pairs (A's best partner is B and B's is A)
  whose distance is <= ``max_dist``. Average linkage is reducible, so this reproduces the
  sequential closest-pair-first merge order, in O(rounds * K^2 * D) with FAISS doing the K^2 part;
  tens of thousands of faces take a few rounds of seconds.
- Cannot-link groups (faces of one photo or frame, tracks overlapping in time) are carried as sets
  of group ids per cluster: two clusters sharing a group id never merge, whatever their distance.
- Average rather than single linkage prefers splitting: one stray close pair cannot chain two
  people together (measured on ../shared/data, see tests/test_identity_realdata.py).
- Density rule: a cluster whose total weight (faces; for videos, faces of its tracks) is below
  ``min_size`` becomes noise (-1).

Distances are cosine distances ``1 - cos`` (0 = same direction, 2 = opposite).
"""

from __future__ import annotations

import numpy as np

_KNN = 32  # neighbours searched per cluster and round; more only when constraints block them all


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` ((N, D)) as C-contiguous float32 with unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(n > 0, n, 1.0), dtype=np.float32)


def _groups_per_item(n: int, cannot_link: list[set[int]] | None) -> list[set[int]]:
    groups: list[set[int]] = [set() for _ in range(n)]
    for g, members in enumerate(cannot_link or ()):
        if len(members) < 2:
            continue
        for i in members:
            if not 0 <= i < n:
                raise ValueError(f"cannot_link index {i} out of range for {n} embeddings")
            groups[i].add(g)
    return groups


def _best_partners(
    means: np.ndarray, groups: list[set[int]], min_sim: float
) -> tuple[np.ndarray, np.ndarray]:
    """For every cluster: the most similar cluster it may merge with (-1 if none with similarity
    >= min_sim) and that similarity."""
    import faiss

    k = len(means)
    index = faiss.IndexFlatIP(means.shape[1])
    index.add(means)
    kk = min(k, _KNN + 1)
    sims, nbrs = index.search(means, kk)
    best = np.full(k, -1, dtype=np.int64)
    best_sim = np.full(k, -np.inf, dtype=np.float32)
    for a in range(k):
        exhausted = True
        for s, b in zip(sims[a], nbrs[a], strict=True):
            if s < min_sim:
                exhausted = False
                break
            if b == a or b < 0 or groups[a] & groups[b]:
                continue
            best[a], best_sim[a], exhausted = b, s, False
            break
        if exhausted and kk < k:
            # Every close neighbour was cannot-linked: fall back to an exact scan of all clusters.
            row = means @ means[a]
            for b in np.argsort(-row):
                if row[b] < min_sim:
                    break
                if b != a and not groups[a] & groups[b]:
                    best[a], best_sim[a] = b, row[b]
                    break
    return best, best_sim


def cluster(
    embeddings: np.ndarray,
    *,
    max_dist: float,
    min_size: float = 1,
    cannot_link: list[set[int]] | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Identity labels for ``embeddings`` ((N, D), normalised here).

    max_dist: largest average-linkage cosine distance at which two clusters still merge.
    min_size: density rule; clusters whose total weight is below it are labelled -1.
    cannot_link: groups of indices that must end up with pairwise different labels.
    weights: (N,) positive weight per row (faces per track); 1 each when omitted.
    Returns (N,) int64 labels 0..K-1 numbered by descending total weight, -1 for noise.
    """
    x = normalize(embeddings)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    w = np.ones(n, np.float64) if weights is None else np.asarray(weights, np.float64).ravel()
    if w.shape != (n,) or np.any(w <= 0):
        raise ValueError("weights must be (N,) and positive")

    # Cluster state: member lists, total weight, weighted mean vector, cannot-link group ids.
    members: list[list[int]] = [[i] for i in range(n)]
    weight = w.copy()
    means = x.copy()
    groups = _groups_per_item(n, cannot_link)
    min_sim = 1.0 - max_dist

    while len(members) > 1:
        best, best_sim = _best_partners(means, groups, min_sim)
        pairs = [(a, int(b)) for a, b in enumerate(best) if b > a and best[b] == a]
        if not pairs:
            if best.max() < 0:
                break
            # Float ties can form a best-partner cycle with no reciprocal pair: merge the single
            # closest pair so every round makes progress.
            a = int(np.argmax(best_sim))
            pairs = [tuple(sorted((a, int(best[a]))))]
        merged = set()
        for a, b in pairs:
            wa, wb = weight[a], weight[b]
            means[a] = (wa * means[a] + wb * means[b]) / (wa + wb)
            weight[a] = wa + wb
            members[a] += members[b]
            groups[a] = groups[a] | groups[b]
            merged.add(b)
        keep = [c for c in range(len(members)) if c not in merged]
        members = [members[c] for c in keep]
        groups = [groups[c] for c in keep]
        weight, means = weight[keep], np.ascontiguousarray(means[keep])

    labels = np.full(n, -1, dtype=np.int64)
    order = sorted(range(len(members)), key=lambda c: (-weight[c], min(members[c])))
    next_label = 0
    for c in order:
        if weight[c] + 1e-9 < min_size:
            continue
        labels[members[c]] = next_label
        next_label += 1
    return labels


def centroids(
    embeddings: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """(K, D) float32 unit-norm (weighted) mean embedding of each label 0..K-1 (noise ignored)."""
    x = normalize(embeddings)
    labels = np.asarray(labels)
    w = np.ones(len(x), np.float32) if weights is None else np.asarray(weights, np.float32)
    k = int(labels.max()) + 1 if labels.size else 0
    out = np.zeros((k, x.shape[1]), np.float32)
    for c in range(k):
        sel = labels == c
        out[c] = (w[sel, None] * x[sel]).sum(axis=0)
    return normalize(out)


def assign(
    embeddings: np.ndarray,
    centroids: np.ndarray,
    max_dist: float,
    cannot_link: list[set[int]] | None = None,
) -> np.ndarray:
    """Label of the nearest centroid (cosine) for each embedding, or -1 when it is farther than
    ``max_dist``. Within a cannot-link group (faces of one photo) each centroid is given to at
    most one member, best match first; the others fall back to their next centroid within
    ``max_dist`` or -1."""
    import faiss

    x = normalize(embeddings)
    c = normalize(centroids)
    n = len(x)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(c) == 0:
        return labels
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    sims, nbrs = index.search(x, len(c))
    min_sim = 1.0 - max_dist
    for i in range(n):
        if sims[i, 0] >= min_sim:
            labels[i] = nbrs[i, 0]
    for group in cannot_link or ():
        # Greedy matching over (face, centroid) pairs by descending similarity.
        idx = sorted(group)
        cand = [
            (sims[i, r], i, nbrs[i, r]) for i in idx for r in range(len(c)) if sims[i, r] >= min_sim
        ]
        taken_face: set[int] = set()
        taken_label: set[int] = set()
        for i in idx:
            labels[i] = -1
        for _, i, lab in sorted(cand, key=lambda t: -t[0]):
            if i in taken_face or lab in taken_label:
                continue
            labels[i] = lab
            taken_face.add(i)
            taken_label.add(lab)
    return labels
