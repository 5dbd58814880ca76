"""The life of one item, in two steps that both executors run: *start* (stage, analyse, plan:
who is who, which faces become references) gives a ``Started``; *finish* runs its restore pass
and publishes it (refs, manifest, report, ``_DONE`` last). Between the two, the identities of
several started items can be linked into archive-wide persons who share their references
(``link_started``). The single-machine executor is ``worker.item.pipeline`` (``start_item``); the Ray
executor is ``jobs.items`` (its ``start_item`` spreads the same stages over actors).
"""

from __future__ import annotations

import contextlib
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2

from worker import storage
from worker.config import Config, to_dict
from worker.errors import EXPECTED_ERRORS, MediaError, PlacementError
from worker.item.layout import Layout
from worker.item.publish import discard, publish_lock, swap_in
from worker.outputs.report import ReportSamples, build_manifest, dumps, ref_path
from worker.outputs.report_html import render_html
from worker.records import Face, Identity, ItemError, ItemResult


@dataclass
class Started:
    """An item analysed and planned, its restore pass still to run (``finish`` is None when it
    already failed, its reason in ``result.errors``)."""

    uri: str
    cfg: Config  # calibrated to the face backend
    result: ItemResult
    staged: str  # this run's folder for all its outputs until publishing (``worker.item.publish``)
    final_dir: str  # OUT/<item-id>, or the mirror layout's sidecar
    t0: float = field(default_factory=time.monotonic)
    work: Path | None = None  # local work folder, removed when the item ends
    identities: list[Identity] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    # the restore pass: () -> (media facts, album file list, report samples)
    finish: Callable[[], tuple[dict, list[dict], ReportSamples]] | None = None
    layout: Layout | None = None  # where the media go (None: in ``final_dir``)

    def fail(self, e: BaseException) -> None:
        self.result.status = "failed"
        self.result.errors.append(item_error(e, self.uri))
        self.finish = None

    def name_inputs(self) -> None:
        """Errors name an S3 item's files by their ``s3://`` URIs, not by the local copies the
        worker read (which are gone when the item ends)."""
        if self.work is None or not storage.is_s3(self.uri):
            return
        from worker.item.staging import staged_path

        local, uri = str(staged_path(self.uri, self.work / "in")), self.uri.rstrip("/")
        self.result.errors = [replace(e, file=e.file.replace(local, uri), reason=e.reason.replace(local, uri))
                              for e in self.result.errors]


def item_error(e: BaseException, uri: str) -> ItemError:
    """The error record of a failure that stopped an item: a bad file named with its reason, a
    job that cannot place its actors, or an internal error named by its type."""
    if isinstance(e, MediaError):
        return ItemError(e.file, e.reason, "item")
    if isinstance(e, PlacementError):
        return ItemError(uri, str(e), "job")
    if isinstance(e, EXPECTED_ERRORS):
        return ItemError(uri, str(e), "item")
    return ItemError(uri, f"internal error: {traceback.format_exception_only(type(e), e)[-1].strip()}"
                     .splitlines()[0], "item")


def finish_item(st: Started) -> ItemResult:
    """Run the item's restore pass and publish it; never raises for the item's own failures
    (a bad file, a storage outage while publishing): they end up in its manifest, without
    ``_DONE``. Removes the item's work folder and its staging."""
    result = st.result
    media, files, samples = {}, [], ReportSamples()
    try:
        if st.finish is not None:
            try:
                media, files, samples = st.finish()
            except Exception as e:  # one bad item never sinks a batch; keep the evidence
                st.fail(e)
        result.timings["total"] = time.monotonic() - st.t0
        st.name_inputs()
        if result.status == "ok" and result.errors:
            result.status = "partial"
        identities, faces = (st.identities, st.faces) if result.status != "failed" else ([], [])
        try:
            publish(st.staged, result, identities, faces, media, files, samples, to_dict(st.cfg),
                    final_dir=st.final_dir, layout=st.layout)
        except Exception as e:  # noqa: BLE001 - storage outage while publishing: the item failed
            result.status = "failed"
            result.errors.append(item_error(e, st.uri))
            with contextlib.suppress(Exception), publish_lock(st.final_dir) as mine:
                if mine:  # a manifest saying "ok" may be up already
                    storage.write_atomic(storage.join(st.final_dir, "manifest.json"), dumps(
                        build_manifest(result, [], [], media, to_dict(st.cfg), files)))
    finally:
        with contextlib.suppress(Exception):
            discard(st.staged)
        if st.work is not None:
            shutil.rmtree(st.work, ignore_errors=True)
    return result


def publish(staged: str, result: ItemResult, identities: list[Identity], faces: list[Face],
            media: dict, files: list[dict], samples: ReportSamples, config: dict, final_dir: str,
            layout: Layout | None = None) -> None:
    """refs, manifest and report into this run's ``staged`` folder beside its media; then,
    holding the item's publish lock, all of it swapped into ``final_dir`` (the mirror layout's
    media to their own places) and ``_DONE`` written last (only for items that completed). A
    run that loses the item to another run leaves ``final_dir`` as it is: its result says so
    (status "skipped" unless it failed)."""
    if layout is not None and layout.mirror and "output" in media:
        media = {**media, "output": layout.output_ref(media["output"])}
    for ident in identities:
        for ref in ident.references:
            ok, buf = cv2.imencode(".png", ref.crop)
            storage.write_atomic(storage.join(staged, ref_path(ident, ref)), buf.tobytes())
    manifest = build_manifest(result, identities, faces, media, config, files)
    storage.write_atomic(storage.join(staged, "manifest.json"), dumps(manifest))
    if config["output"]["write_report"]:
        storage.write_atomic(storage.join(staged, "report.html"), render_html(manifest, identities, samples))
    with publish_lock(final_dir) as mine:
        if mine:
            if layout is not None:
                place_media(staged, layout)
            swap_in(staged, final_dir)
            if result.status in ("ok", "partial"):
                done = {"item_id": result.item_id, "status": result.status, "finished": time.time()}
                mine = storage.put_done_marker(final_dir, done)
    if not mine:
        if result.status != "failed":
            result.status = "skipped"
        result.errors.append(ItemError(result.source, "item was completed (or is being published) by another run; "
                                       "this run's outputs were discarded", "publish"))


def place_media(staged: str, layout: Layout) -> None:
    """Move a run's staged media where ``layout`` puts them, outside the item folder (each by a
    rename, replacing what an earlier run left there). Call it holding the publish lock."""
    for uri, _, _ in list(storage.list(staged)):
        target = layout.target(storage.relative_to(staged, uri))
        if target is not None:
            storage.move(uri, target)


def link_started(started: list[Started], base: Config) -> list[dict]:
    """Link the planned items' identities into persons (per face backend: embeddings of two
    backends are not comparable) and share each person's best references among them; the
    persons, for a job summary."""
    from worker.collection.archive_identity import link, share_references

    ok = [st for st in started if st.finish is not None]
    out = []
    for detect in {st.cfg.detect for st in ok}:
        group = [st for st in ok if st.cfg.detect == detect]
        by_item = {st.result.item_id: st.identities for st in group}
        cfg = group[0].cfg
        persons = link(by_item, base.identity.link_max_dist or cfg.identity.max_dist)
        share_references(by_item, persons, cfg.references,
                         crop_size={st.result.item_id: st.cfg.restore.crop_size for st in group})
        uri = {st.result.item_id: st.uri for st in group}
        out += [{"person": p.id, "members": [{"item": i, "uri": uri[i], "identity": k} for i, k in p.members]}
                for p in persons]
    return out
