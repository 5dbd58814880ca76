"""Pass 3 on pixels: cut aligned crops, restore them in batches, paste them back."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from refstar.align import estimate_affine, face_mask, warp_face
from refstar.restorer import Restorer, bgr_to_tensor, tensor_to_bgr
from worker.config import Config
from worker.media.image import enlarge
from worker.records import Face, Frame, Reference
from worker.stages.paste import Paste, paste_faces
from worker.stages.references import rank_references

# (face, input crop, restored crop), both S x S BGR uint8; for the report's before/after pictures
SampleSink = Callable[[Face, np.ndarray, np.ndarray], None]

# frames held while their faces fill a restorer batch; bounds memory on face-less stretches
MAX_BUFFERED_FRAMES = 16


class FaceRestoreStage:
    """Restores the faces of a few images at once (batching faces across video frames).

    Pure stage: no I/O, no Ray. Faces with a reference and faces without one go to the restorer
    in separate calls, so a batch never mixes the two paths.
    """

    def __init__(self, cfg: Config, restorer: Restorer):
        self.cfg = cfg
        self.restorer = restorer
        self.size = cfg.restore.crop_size
        self.mask = face_mask(self.size, cfg.paste.feather)
        self._ref_tensors: dict[str, object] = {}  # ref_id -> (1,3,S,S) tensor, made once
        # batch occupancy counters (bench/bench_ray.py): ``run`` calls that reached the restorer
        # (not the "none" pass-through), restorer calls, faces sent to the restorer, and the
        # slots those calls offered (calls x batch_size)
        self.runs = self.calls = self.faces = self.slots = 0

    def stats(self) -> dict[str, int]:
        """Counters since this stage was made; occupancy = faces / slots."""
        return {"runs": self.runs, "calls": self.calls, "faces": self.faces, "slots": self.slots}

    def _ref_tensor(self, ref: Reference):
        if ref.ref_id not in self._ref_tensors:
            self._ref_tensors[ref.ref_id] = bgr_to_tensor([ref.crop])
        return self._ref_tensors[ref.ref_id]

    def _nearest_references(self, jobs: list, refs: dict[str, Reference]) -> None:
        """Each face given a reference at planning (nearest in pose) takes its person's reference
        nearest in appearance to its own crop, among those planning allowed it (sharper enough,
        not itself): only here is the crop at hand. A restorer that ranks references
        (``pick_reference``) then chooses among the ``references.compare`` nearest."""
        by_person: dict[int, list[Reference]] = {}
        for r in refs.values():
            by_person.setdefault(r.identity, []).append(r)
        pick_among = getattr(self.restorer, "pick_reference", None)
        for _, face, _, crop in jobs:
            if face.reference not in refs:
                continue
            mine = by_person[refs[face.reference].identity]
            if len(mine) < 2:
                continue
            ranked = rank_references(face, mine, self.cfg.references.min_gain, crop)[: self.cfg.references.compare]
            i = 0
            if len(ranked) > 1 and pick_among is not None:
                import torch

                i = pick_among(bgr_to_tensor([crop]), torch.cat([self._ref_tensor(r) for r in ranked]))
            if ranked:
                face.reference = ranked[i].ref_id

    def run(self, images: list[np.ndarray], faces: list[list[Face]], refs: dict[str, Reference],
            sample: SampleSink | None = None, enlarged: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Returns new images (the inputs are not modified); pixels outside every pasted face mask
        are bit-identical to the input, or with ``output.upscale`` N, to the input enlarged N
        times (``enlarged`` when the caller made them, else Lanczos here): faces are cut from
        the enlarged image and restored at that size."""
        import torch

        n = self.cfg.output.upscale
        if n > 1 and enlarged is None:
            enlarged = [enlarge(img, n) for img in images]
        bases = enlarged if n > 1 else images
        fidelity = self.cfg.restore.fidelity
        if self.restorer.name == "none" or fidelity <= 0:  # not even a resampling round trip
            return bases
        jobs = []  # (image index, face, M, crop)
        for i, (image, fs) in enumerate(zip(bases, faces, strict=True)):
            for face in fs:
                if face.skipped:
                    continue
                # landmarks are in input pixels; pixel centres of an n-times resize sit at n x + (n - 1) / 2
                m = estimate_affine(face.kps * n + (n - 1) / 2, self.size)
                jobs.append((i, face, m, warp_face(image, m, self.size)))
        self._nearest_references(jobs, refs)
        restored: dict[int, np.ndarray] = {}
        bs = max(1, self.cfg.restore.batch_size)
        self.runs += 1
        # a restorer may hand some people to another (GuidedThenNet: those its net never learned)
        per_person = getattr(self.restorer, "for_person", lambda _identity: self.restorer)
        groups: dict[tuple, list[int]] = {}
        for j, job in enumerate(jobs):
            restorer = per_person(job[1].identity)
            groups.setdefault((job[1].reference in refs, id(restorer)), []).append(j)
        for (with_ref, _), group in groups.items():
            restorer = per_person(jobs[group[0]][1].identity)
            for start in range(0, len(group), bs):
                chunk = group[start: start + bs]
                lq = bgr_to_tensor([jobs[j][3] for j in chunk])
                ref = (torch.cat([self._ref_tensor(refs[jobs[j][1].reference]) for j in chunk])
                       if with_ref else None)
                res = restorer.restore(lq, ref)
                out = res.image
                if res.prior is not None:
                    for j, w in zip(chunk, res.prior.tolist(), strict=True):
                        jobs[j][1].prior = w
                if fidelity < 1:
                    out = lq + fidelity * (out - lq)
                self.calls += 1
                self.faces += len(chunk)
                self.slots += bs
                for j, crop in zip(chunk, tensor_to_bgr(out), strict=True):
                    restored[j] = crop
        pastes: list[list[Paste]] = [[] for _ in images]
        for j, (i, face, m, crop) in enumerate(jobs):
            pastes[i].append(Paste(crop=restored[j], M=m, mask=self.mask, original_crop=crop))
            face.restored = True
            if sample is not None:
                sample(face, crop, restored[j])
        return [paste_faces(img, p, self.cfg.paste) if p else img
                for img, p in zip(bases, pastes, strict=True)]


def restore_stream(frames: Iterable[Frame], faces_by_frame: dict[int, list[Face]],
                   refs: dict[str, Reference], stage: FaceRestoreStage,
                   write: Callable[[Frame], None], sample: SampleSink | None = None,
                   progress: Callable[[int], None] | None = None,
                   whole: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> int:
    """Restore a stream of frames, batching faces across frames (about ``batch_size`` faces, at
    most ``MAX_BUFFERED_FRAMES`` frames held), and hand every frame to ``write`` in order (and,
    with ``whole``, its index, its pixels before and after). Returns the number of frames written."""
    buffered: list[Frame] = []
    pending = written = 0

    def flush() -> None:
        nonlocal pending, written
        if buffered:
            images = stage.run([f.image for f in buffered],
                               [faces_by_frame.get(f.index, []) for f in buffered], refs, sample)
            for frame, image in zip(buffered, images, strict=True):
                if whole is not None:
                    whole(frame.index, frame.image, image)
                write(Frame(frame.index, image, frame.pts, frame.time_base))
            written += len(buffered)
            if progress is not None:
                progress(len(buffered))
            buffered.clear()
        pending = 0

    for frame in frames:
        buffered.append(frame)
        pending += len(faces_by_frame.get(frame.index, []))
        if pending >= stage.cfg.restore.batch_size or len(buffered) >= MAX_BUFFERED_FRAMES:
            flush()
    flush()
    return written
