"""Pass 2 (no pixels decoded): who is who, which faces become references, which reference each
face is restored with."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from worker.config import Config, ReferenceConfig
from worker.records import Face, Identity, ItemResult, Reference
from worker.stages.analyse import Analysis
from worker.stages.identity import assign, centroids, cluster
from worker.stages.references import (
    CANDIDATE_WINDOW,
    Candidate,
    choose_reference,
    reference_pool,
    select_references,
    sharpness_of,
)
from worker.stages.track import cannot_link_tracks, smooth_landmarks

log = logging.getLogger(__name__)


def face_tracks(analysis: Analysis, cfg: Config) -> set[int]:
    """The tracks the evidence says are faces: with ``detect.verify``, those of which dlib's CNN
    detector confirmed one of the best crops (``worker.stages.analyse.verify_tracks``); all of them
    otherwise."""
    return set(analysis.confirmed) if cfg.detect.verify else set(analysis.tracks)


# faces measured between detections (followed, or found by a quick detection) whose quality is
# within this share of a person's weakest chosen reference, and any reference still chosen on
# such a measure after that, are measured again (``look_again``):
# landmarks fitted on a followed box can put a face's quality at a third of what the per-frame
# path measures (LivePortrait d12: 0.016 against 0.044 as the mouth opens), and the detector
# score is the track's last; at most LOOK_AGAIN_MAX of a person's, and in all at most
# LOOK_AGAIN_SHARE times the detections the analysis ran (each costs one) or LOOK_AGAIN_MAX if
# more, every person's best first. Measured with the fast settings on the dev clips (150 frames
# and the quality suite's 45): 0.25 and 8 left the suite's d12 and Thin-Plate clips and the
# retalking face_1 clip on references the per-frame path ranks x0.83-0.99 (x1.8: one more);
# 0.5 and 16 give those two suite clips and face_1 the per-frame choice (face_1 within 3 frames;
# measured with 3 references a person)
LOOK_AGAIN_MARGIN = 0.5
LOOK_AGAIN_MAX = 16
LOOK_AGAIN_SHARE = 0.25
# then the faces next to a reference (NEIGHBOUR_FRAMES either side, on its track) whose measure
# is within NEIGHBOUR_SHARE of the reference's, at most NEIGHBOUR_COST times the detections the
# analysis ran: the fast settings' references differed from the per-frame path's mostly by a
# frame or a few (d10 46 -> 48, d6 85 -> 86, d20 115 -> 116, face_4 135 -> 136, s29 148 -> 144:
# the per-frame path's measured 1-5 % under the one taken and never looked again). Measured with
# the fast settings on the dev clips (150 frames): the same references on 11 -> 16 of 20 talking
# heads (bench/bench_analysis.py; README, Analysis speed); a share of 0.15 gave one more and
# took the crowd clip under x2
NEIGHBOUR_FRAMES = 4
NEIGHBOUR_SHARE = 0.1
NEIGHBOUR_COST = 0.5


def plan_video(analysis: Analysis, cfg: Config,
               look_again: Callable[[list[Face]], list[Candidate]] | None = None) -> list[Identity]:
    """Cluster track-mean embeddings into identities, then choose references from the crops the
    analysis kept; ``look_again`` (``worker.stages.analyse.look_again``) first measures the
    contenders that were measured between detections as the per-frame path would. Sets
    ``face.identity`` on every face; the faces of tracks that are not faces (``face_tracks``) are
    marked ``skipped = "not_a_face"`` and join no identity."""
    faces, tracks = analysis.faces, analysis.tracks
    for tr in tracks.values():
        smooth_landmarks(faces, tr.faces, cfg.track.smooth_window)
    real = face_tracks(analysis, cfg)
    for t, tr in tracks.items():
        if t not in real:
            for i in tr.faces:
                faces[i].skipped = "not_a_face"
    tids = [t for t in sorted(tracks) if tracks[t].embedding is not None and t in real]
    if not tids:
        return []
    emb = np.stack([tracks[t].embedding for t in tids]).astype(np.float32)
    weights = np.array([tracks[t].n_faces for t in tids], np.float32)
    # short tracks (a face glimpsed for two frames) are too noisy to found a person; they may
    # still join one afterwards
    long_ = np.array([tracks[t].n_faces >= cfg.identity.min_track_frames for t in tids])
    sub = {t: tracks[t] for t, keep in zip(tids, long_, strict=True) if keep}
    labels = np.full(len(tids), -1)
    if long_.any():
        labels[long_] = cluster(emb[long_], max_dist=cfg.identity.max_dist,
                                min_size=cfg.identity.min_faces,
                                cannot_link=cannot_link_tracks(sub, faces), weights=weights[long_])
    if (labels >= 0).any() and (~long_).any():
        cents = centroids(emb[labels >= 0], labels[labels >= 0])
        labels[~long_] = assign(emb[~long_], cents, cfg.identity.max_dist)
    track_label = dict(zip(tids, labels.tolist(), strict=True))
    short = {t for t, keep in zip(tids, long_, strict=True) if not keep}
    for face in faces:
        face.identity = track_label.get(face.track, -1)
        if face.skipped:
            continue
        if face.identity < 0 and (face.track in short or face.track not in track_label):
            # seen in a frame or two and like nobody else: most likely a false detection, and
            # pasting a "restored face" onto background would be worse than leaving it
            face.skipped = "unconfirmed"
    people = []
    for ident in sorted(set(labels.tolist()) - {-1}):
        members = [t for t in tids if track_label[t] == ident]
        people.append((Identity(id=ident, n_faces=int(sum(tracks[t].n_faces for t in members)),
                                n_tracks=len(members), centroid=_unit(emb[[tids.index(t) for t in members]].mean(0))),
                       analysis.pool.candidates(members) if analysis.pool else [],
                       [sharpness_of(faces[i]) for t in members for i in tracks[t].faces]))
    if look_again is not None:
        people = _look_again(people, analysis, cfg, look_again)
    return with_references(people, cfg)


def _look_again(people: list[tuple[Identity, list[Candidate], list[float]]], analysis: Analysis,
                cfg: Config, look_again: Callable[[list[Face]], list[Candidate]]
                ) -> list[tuple[Identity, list[Candidate], list[float]]]:
    """``people`` with the faces measured again competing for their track's candidate slots on
    their new measures. First each person's faces off the searched frames that could displace one
    of the references chosen on the analysis's measures (every person's best before anyone's
    second); then, while the budget lasts, any reference still chosen on a follow's measure."""
    unsearched: dict[int, list[Face]] = defaultdict(list)
    for f in analysis.faces:
        if f.identity >= 0 and not f.skipped and f.frame not in analysis.searched:
            unsearched[f.identity].append(f)
    if not unsearched:  # the per-frame path: every face was measured on a searched frame
        return people
    ranked = []
    for ident, cands, sharp in people:
        refs, _ = select_references(ident.id, cands, cfg.references, sharp)
        if refs:
            floor = (1 - LOOK_AGAIN_MARGIN) * min(r.quality for r in refs)
            near = sorted((f for f in unsearched[ident.id] if f.quality >= floor), key=lambda f: -f.quality)
            # the best of each of the pool's windows first, then the second best...: a follow's
            # measure is noisy, and the pool keeps other moments than the sharpest too
            seen: dict[tuple[int, int], int] = defaultdict(int)
            order = []
            for f in near:
                key = (f.track, f.frame // CANDIDATE_WINDOW)
                order.append((seen[key], -f.quality, f))
                seen[key] += 1
            near = [f for *_, f in sorted(order, key=lambda o: o[:2])]
            ranked += [(k, -f.quality, ident.id, f) for k, f in enumerate(near[:LOOK_AGAIN_MAX])]
    ranked.sort(key=lambda r: r[:3])
    budget = max(LOOK_AGAIN_MAX, round(LOOK_AGAIN_SHARE * analysis.detector_frames))
    todo, looked = [f for *_, f in ranked[:budget]], set()
    # the neighbours' own allowance: twice the references the people may have (top_k each), and
    # at most NEIGHBOUR_COST times the detections the analysis ran (top_k if more)
    nearby = min(2 * cfg.references.top_k * len(people),
                 max(cfg.references.top_k, round(NEIGHBOUR_COST * analysis.detector_frames)))
    at = {(f.track, f.frame): f for f in analysis.faces if f.identity >= 0 and not f.skipped}
    while todo:
        budget -= len(todo)
        looked |= {id(f) for f in todo}
        fresh = {id(c.face): c for c in look_again(todo)}
        people = [(ident, _best_per_track([fresh.pop(id(c.face), c) for c in cands]
                                          + [c for c in fresh.values() if c.face.identity == ident.id],
                                          cfg.references), sharp)
                  for ident, cands, sharp in people]
        todo, close = [], {}  # close: id -> (best measure over a chosen neighbour's, face)
        for ident, cands, sharp in people:
            frames = {r.frame for r in select_references(ident.id, cands, cfg.references, sharp)[0]}
            chosen = [c.face for c in cands if c.face.frame in frames]
            todo += [f for f in chosen if f.frame not in analysis.searched and id(f) not in looked]
            kept = {id(c.face) for c in cands} | looked
            for f in chosen:
                for g in _neighbours(f, at):
                    if id(g) not in kept:
                        close[id(g)] = max(close.get(id(g), (0.0, g))[0], g.quality / f.quality), g
        todo = todo[:max(budget, 0)]
        taken = {id(f) for f in todo}
        extra = [g for _, g in sorted((v for k, v in close.items() if k not in taken), key=lambda v: -v[0])]
        extra = extra[:max(nearby, 0)]
        todo += extra
        nearby -= len(extra)
    return people


def _neighbours(ref: Face, at: dict[tuple[int, int], Face]) -> list[Face]:
    """The faces of ``ref``'s track (``at``: by track and frame) within NEIGHBOUR_FRAMES frames
    of it whose measure is within NEIGHBOUR_SHARE of its own: a frame next to a reference looks
    like it, and a follow's measure is a few percent off (one on a searched frame is measured
    again only to get back the crop the analysis's pool let go)."""
    out = []
    for d in range(1, NEIGHBOUR_FRAMES + 1):
        for k in (ref.frame - d, ref.frame + d):
            g = at.get((ref.track, k))
            if g is not None and g.quality >= (1 - NEIGHBOUR_SHARE) * ref.quality:
                out.append(g)
    return out


def _best_per_track(cands: list[Candidate], cfg: ReferenceConfig) -> list[Candidate]:
    """Each track's candidates as the analysis's pool keeps them."""
    pool = reference_pool(cfg)
    for c in cands:
        pool.offer(c.face.track, c)
    return pool.candidates()


def with_references(people: list[tuple[Identity, list[Candidate], list[float]]], cfg: Config) -> list[Identity]:
    """Each identity (with its reference candidates and the sharpness of all its faces) gets its
    references, chosen among its own candidates and, when it matches a person of the reference
    library (``worker.collection.library``), that person's photos; a matched identity takes their name."""
    from worker.collection.library import library_for, match

    library = library_for(cfg)
    named = match([p[0].centroid for p in people], library, cfg.identity.max_dist) if library else {}
    out = []
    for k, (ident, cands, sharp) in enumerate(people):
        lib = named.get(k)
        ident.references, ident.why_no_reference = select_references(
            ident.id, cands + (lib.candidates if lib else []), cfg.references, sharp)
        if cfg.identity.link_archive and not ident.references:
            ident.spare = select_references(ident.id, cands, cfg.references)[0]
        ident.name = lib.name if lib else ""
        out.append(ident)
    return out


def plan_video_item(analysis: Analysis, cfg: Config, result: ItemResult,
                    look_again: Callable[[list[Face]], list[Candidate]] | None = None,
                    ) -> tuple[list[Identity], dict[str, Reference], dict[int, list[Face]]]:
    """The planning step of a video item (single machine or Ray): identities, the references by
    id, and the faces grouped by frame index for the restore pass; adds ``timings["plan"]`` and
    the reference library's matches to ``result``. ``look_again``: see ``plan_video``."""
    from worker.collection.library import library_for, summary

    t = time.monotonic()
    identities = plan_video(analysis, cfg, look_again)
    result.library = summary(library_for(cfg), [i.name for i in identities if i.name])
    refs = assign_references(analysis.faces, identities, cfg)
    by_frame: dict[int, list[Face]] = defaultdict(list)
    for face in analysis.faces:
        by_frame[face.frame].append(face)
    result.timings["plan"] = time.monotonic() - t
    return identities, refs, dict(by_frame)


def plan_album(faces: list[Face], embeddings: np.ndarray, cfg: Config,
               cut_crops: Callable[[list[Face]], list[np.ndarray]]) -> list[Identity]:
    """Cluster album faces (two faces of one photo are two people), then choose references among
    each person's best faces; ``cut_crops`` re-reads their files to cut the aligned crops, so the
    analysis never holds crops of a whole album."""
    real = [i for i, f in enumerate(faces) if f.skipped != "not_a_face"]
    if not real:
        return []
    by_file: dict[str, set[int]] = defaultdict(set)
    for k, i in enumerate(real):
        by_file[faces[i].source].add(k)
    labels = np.full(len(faces), -1)
    labels[real] = cluster(embeddings[real].astype(np.float32), max_dist=cfg.identity.max_dist,
                           min_size=cfg.identity.min_faces,
                           cannot_link=[g for g in by_file.values() if len(g) > 1])
    people = []
    for ident in sorted(set(labels.tolist()) - {-1}):
        idx = np.nonzero(labels == ident)[0]
        members = [faces[i] for i in idx]
        for face in members:
            face.identity = ident
        # more candidates than slots: some will fail the duplicate/pose rules
        best = sorted(members, key=lambda f: -f.quality)[: 4 * cfg.references.top_k]
        people.append((Identity(id=ident, n_faces=len(members), n_tracks=0, centroid=_unit(embeddings[idx].mean(0))),
                       [Candidate(f, c) for f, c in zip(best, cut_crops(best), strict=True)],
                       [sharpness_of(f) for f in members]))
    return with_references(people, cfg)


def chosen_people(identities: list[Identity], rc) -> tuple[set[int] | None, list[str]]:
    """The identity ids ``restore.persons`` / ``restore.skip_persons`` (``rc``, a RestoreConfig)
    leave to restore (None: everyone, faces of no identity included), and the entries that named
    nobody in this item. An entry is a person number (``Identity.id``) or a library name (any case)."""
    from worker.config import person_list

    want, skip = person_list(rc.persons), person_list(rc.skip_persons)
    if not want and not skip:
        return None, []

    def who(entry: str) -> set[int]:
        return {i.id for i in identities if entry == str(i.id) or (i.name and entry.casefold() == i.name.casefold())}

    unmatched = [e for e in want + skip if not who(e)]
    keep = set().union(*map(who, want)) if want else {i.id for i in identities} | {-1}
    return keep - set().union(*map(who, skip)), unmatched


UNCHOSEN = ("not_selected", "not_largest")  # left untouched because the user chose other faces


def assign_references(faces: list[Face], identities: list[Identity], cfg: Config) -> dict[str, Reference]:
    """Pick the reference of every face (nearest in pose among those ``references.min_gain``
    times sharper than it) and mark faces left untouched: not chosen (``restore.persons``,
    ``skip_persons``, ``largest_face_only``), too small, or (``restore.skip_sharp``) as sharp as
    their person's references, which have nothing to give them and which restoring could only
    move away from what they are. Faces without an identity or whose person has no reference are
    restored blind. Runs again when linking changes the references. Returns the references by id."""
    refs_of = {ident.id: ident.references for ident in identities}
    keep, unmatched = chosen_people(identities, cfg.restore)
    if unmatched:
        log.warning("no person %s in this item (person numbers: %s; names: %s)", ", ".join(map(repr, unmatched)),
                    [i.id for i in identities], [i.name for i in identities if i.name])
    for face in faces:
        if face.skipped == "sharp" or face.skipped in UNCHOSEN:
            face.skipped = None
        if not face.skipped and keep is not None and face.identity not in keep:
            face.skipped = "not_selected"
    if cfg.restore.largest_face_only:
        largest: dict[tuple[str, int], Face] = {}
        for face in faces:
            if not face.skipped:
                key = (face.source, face.frame)
                if key not in largest or _area(face) > _area(largest[key]):
                    largest[key] = face
        for face in faces:
            if not face.skipped and largest[(face.source, face.frame)] is not face:
                face.skipped = "not_largest"
    for face in faces:
        if face.skipped:
            continue
        if face.size < cfg.restore.min_face_px:
            face.skipped = "too_small"
            continue
        refs = refs_of.get(face.identity, [])
        ref = choose_reference(face, refs, cfg.references.min_gain)
        face.reference = ref.ref_id if ref else None
        if ref is None and refs and cfg.restore.skip_sharp:
            face.skipped = "sharp"
    return {r.ref_id: r for ident in identities for r in ident.references}


def _area(face: Face) -> float:
    x0, y0, x1, y1 = face.bbox
    return float((x1 - x0) * (y1 - y0))


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
