"""``refstar status``: what happened to the items of an output prefix, and to their Ray jobs.

Reads the output itself (``<item>/_DONE``, ``<item>/manifest.json``, ``_jobs/<job>.json`` job
summaries), and, with ``--address``, the cluster's job table. ``--resubmit`` submits every
failed or stopped job of this output again under a new submission id (``<id>-retry<N>``) with
the same entrypoint; the job skips items whose ``_DONE`` exists, so nothing finished is redone.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from worker import storage

RETRY = "-retry"
FINISHED_BAD = ("FAILED", "STOPPED")
ALIVE = ("PENDING", "RUNNING")


@dataclass
class ItemState:
    item_id: str
    state: str  # "done" | "failed" | "partial" | "analysed" | "incomplete"
    source: str = ""
    counts: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    restorer: str = ""  # the manifest's restorer name
    settings: dict = field(default_factory=dict)  # config keys (dotted) that differ from the defaults
    siblings: list[str] = field(default_factory=list)  # other items of the same source


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def default_settings() -> dict:
    """Today's defaults as dotted keys (what :func:`settings_of` compares with)."""
    from worker.config import load_config, to_dict

    return _flat(to_dict(load_config()))


def settings_of(config: dict, defaults: dict) -> dict:
    """The output-shaping keys of a manifest's config that differ from ``defaults``. Keys whose
    default is left to the face backend (``None``) are shown only when siblings differ."""
    from worker.config import PRESENTATION_KEYS

    return {k: v for k, v in _flat(config).items()
            if k not in PRESENTATION_KEYS and defaults.get(k) is not None and defaults.get(k) != v}


def link_siblings(items: list[ItemState], configs: dict[str, dict]) -> None:
    """Items of one source made with different settings know each other, and each shows every
    key on which they differ (backend-filled ones included)."""
    by_source: dict[str, list[ItemState]] = defaultdict(list)
    for it in items:
        if it.source:
            by_source[it.source].append(it)
    for group in by_source.values():
        if len(group) < 2:
            continue
        flats = {it.item_id: _flat(configs.get(it.item_id, {})) for it in group}
        keys = set().union(*flats.values())
        differ = {k for k in keys if len({repr(f.get(k)) for f in flats.values()}) > 1}
        for it in group:
            it.siblings = [o.item_id for o in group if o is not it]
            it.settings.update({k: flats[it.item_id].get(k) for k in differ})


def read_items(out_root: str) -> list[ItemState]:
    """Every item folder below ``out_root`` (``worker.outputs.index_html.read_entries``): done
    (``_DONE``), failed/partial (a manifest but no ``_DONE``), or incomplete (outputs being
    written, or left by a killed job). An item is named by its folder (its id in the items
    layout, ``a/b/clip.mp4.refstar`` in the mirror layout)."""
    from worker.outputs.index_html import read_entries

    items, configs, defaults = [], {}, default_settings()
    for entry in read_entries(out_root):
        m, st = entry.manifest, ItemState(entry.folder, entry.state)
        if m:
            st.source, st.counts = m.get("source", ""), m.get("counts", {})
            st.errors = [f"{e.get('file')}: {e.get('reason')}" for e in m.get("errors", [])]
            st.restorer = (m.get("restorer") or {}).get("name", "")
            configs[entry.folder] = m.get("config") or {}
            st.settings = settings_of(configs[entry.folder], defaults)
        items.append(st)
    link_siblings(items, configs)
    return items


def read_summaries(out_root: str) -> dict[str, dict]:
    """Job summaries written by ``jobs.restore --job-name``: name -> summary."""
    out = {}
    for uri, _, _ in storage.list(storage.join(out_root, "_jobs")):
        if uri.endswith(".json"):
            out[PurePosixPath(uri).stem] = json.loads(storage.read_bytes(uri))
    return out


def base_id(submission_id: str) -> str:
    return submission_id.split(RETRY, 1)[0]


def to_resubmit(jobs: list, out_root: str) -> list:
    """Jobs for ``out_root`` that ended badly and have no retry that succeeded or is under way."""
    mine = [j for j in jobs if (j.metadata or {}).get("output", "").rstrip("/") == out_root.rstrip("/")]
    by_base: dict[str, list] = defaultdict(list)
    for j in mine:
        by_base[base_id(j.submission_id or "")].append(j)
    todo = []
    for group in by_base.values():
        latest = max(group, key=lambda j: j.start_time or 0)
        if str(latest.status.value) in FINISHED_BAD:
            todo.append(latest)
    return todo


def retry_entrypoint(entrypoint: str, new_id: str) -> str:
    """The same command with ``--job-name`` (the summary's name) switched to the new id."""
    argv = shlex.split(entrypoint)
    if "--job-name" in argv:
        argv[argv.index("--job-name") + 1] = new_id
    else:
        argv += ["--job-name", new_id]
    return shlex.join(argv)


def resubmit(submitter, jobs: list, out_root: str) -> list[str]:
    """Submit each job of :func:`to_resubmit` again; returns the new submission ids."""
    existing = {j.submission_id for j in jobs}
    new_ids = []
    for job in to_resubmit(jobs, out_root):
        base = base_id(job.submission_id)
        n = 1
        while f"{base}{RETRY}{n}" in existing:
            n += 1
        sid = f"{base}{RETRY}{n}"
        meta = dict(job.metadata or {}, retry_of=job.submission_id)
        submitter.submit_entrypoint(sid, retry_entrypoint(job.entrypoint, sid), meta)
        new_ids.append(sid)
    return new_ids


def _short(settings: dict, width: int = 48) -> str:
    text = " ".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(settings.items())) or "defaults"
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*map(str, r)).rstrip() for r in [head, *rows])


def run_status(output: str, address: str | None = None, resubmit_failed: bool = False,
               as_json: bool = False) -> int:
    """Prints items and jobs; exit 0 when every item is done and no job's last attempt failed
    (failed ones resubmitted now count as under way), 1 otherwise, 2 on error."""
    try:
        items, summaries = read_items(output), read_summaries(output)
    except storage.StorageError as e:
        print(f"refstar status: {e}", file=sys.stderr)
        return 2
    jobs, retried, failed_jobs = [], [], []
    if address or resubmit_failed:
        from jobs.submit import JobSubmitter

        sub = JobSubmitter(address)
        try:
            jobs = [j for j in sub.jobs() if (j.metadata or {}).get("output", "").rstrip("/") == output.rstrip("/")]
            failed_jobs = [j.submission_id for j in to_resubmit(jobs, output)]
            if resubmit_failed:
                retried = resubmit(sub, jobs, output)
                failed_jobs = []
        finally:
            sub.close()
    job_rows = []
    for j in jobs:
        s = summaries.get(j.submission_id or "", {})
        job_rows.append({"job": j.submission_id, "status": str(j.status.value),
                         "items": (j.metadata or {}).get("items", "").split("\n"),
                         "done": s.get("done"), "skipped": s.get("skipped"), "failed": s.get("failed")})
    for name, s in summaries.items():
        if name not in {r["job"] for r in job_rows}:
            job_rows.append({"job": name, "status": "-", "items": [r["uri"] for r in s.get("results", [])],
                             "done": s.get("done"), "skipped": s.get("skipped"), "failed": s.get("failed")})
    if as_json:
        print(json.dumps({"items": [vars(i) for i in items], "jobs": job_rows, "resubmitted": retried}, indent=1))
    else:
        print(_table([[i.item_id, i.state, i.restorer or "-", _short(i.settings), i.counts.get("faces_restored", ""),
                       i.source] for i in items],
                     ["ITEM", "STATE", "RESTORER", "SETTINGS", "FACES RESTORED", "SOURCE"])
              if items else f"{output}: no items yet")
        for i in items:
            for e in i.errors:
                print(f"  {i.item_id}: {e}")
        shown: set[str] = set()
        for i in items:
            if i.siblings and i.item_id not in shown:
                group = [i.item_id, *i.siblings]
                shown.update(group)
                print(f"note: {i.source} has {len(group)} items made with different settings: {', '.join(group)}")
        if job_rows:
            print()
            print(_table([[r["job"], r["status"], r["done"] if r["done"] is not None else "-",
                           r["failed"] if r["failed"] is not None else "-", " ".join(r["items"])[:80]]
                          for r in job_rows], ["JOB", "RAY STATUS", "DONE", "FAILED", "ITEMS"]))
        for sid in retried:
            print(f"resubmitted as {sid}")
    return 0 if items and all(i.state == "done" for i in items) and not failed_jobs else 1
