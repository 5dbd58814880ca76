"""``OUT/index.html``: one page for a whole output folder or prefix, built from what is there
(every item's ``manifest.json`` and ``_DONE``), so that both executors, reruns and several jobs
into one output all end with the same page: each item's state, people, references as
thumbnails, and links to its report and restored media. Links are relative, so the page works
on a copied or synced folder."""

from __future__ import annotations

import html
import json
import logging
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from worker import storage
from worker.item.layout import SIDECAR
from worker.outputs.report import MANIFEST_SCHEMA

log = logging.getLogger(__name__)
e = html.escape

INDEX = "index.html"
THUMBS_PER_ITEM = 8  # reference thumbnails shown per item

INDEX_CSS = """body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1.5em;color:#222;
background:#f6f6f4}h1{font-size:1.5em}.lead{font-size:1.05em;color:#444}
.item{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:12px 0}
.item h2{font-size:1.05em;margin:0 0 4px}.st{font-size:.8em;padding:1px 7px;border-radius:9px;color:#fff;
margin-left:8px}.done{background:#2a7d2a}.partial{background:#b07a00}.failed{background:#b00020}.analysed{background:#3366aa}
.incomplete{background:#777}.thumbs{display:flex;gap:6px;flex-wrap:wrap;margin:6px 0}
.thumbs figure{margin:0;text-align:center;font-size:.75em;color:#555}.thumbs img{width:72px;height:72px;display:block}
.err{color:#a00;font-size:.9em}small{color:#666}"""


@dataclass
class IndexEntry:
    """One item folder of the output, as the index shows it."""

    folder: str  # path relative to the output root, "/"-separated
    state: str  # "done" | "partial" | "analysed" | "failed" | "incomplete"
    manifest: dict = field(default_factory=dict)
    files: set[str] = field(default_factory=set)  # names relative to the folder


ITEM_FOLDER = re.compile(r".+-[0-9a-f]{10}")  # OUT/<stem>-<hash> (worker.item.staging.item_id)


def _is_item_folder(folder: str, names: set[str]) -> bool:
    return ("manifest.json" in names or storage.DONE_MARKER in names or folder.endswith(SIDECAR)
            or ("/" not in folder and ITEM_FOLDER.fullmatch(folder) is not None))


def read_entries(out_root: str) -> list[IndexEntry]:
    """Every item folder under ``out_root`` (outside ``_``-named folders): an items-layout
    ``<item-id>`` folder, a mirror layout's ``.refstar`` sidecar at any depth, or any folder
    holding a worker manifest or a ``_DONE``; "incomplete" when it has neither yet."""
    by_folder: dict[str, set[str]] = {}
    for uri, _, _ in storage.list(out_root):
        rel = PurePosixPath(storage.relative_to(out_root, uri))
        if len(rel.parts) < 2 or rel.parts[0].startswith("_"):
            continue
        for depth in range(1, len(rel.parts)):
            by_folder.setdefault("/".join(rel.parts[:depth]), set()).add("/".join(rel.parts[depth:]))
    out = []
    for folder, names in sorted(by_folder.items()):
        if not _is_item_folder(folder, names):
            continue
        entry = IndexEntry(folder, "incomplete", files=names)
        if "manifest.json" in names:
            try:
                m = json.loads(storage.read_bytes(storage.join(out_root, folder, "manifest.json")))
            except (ValueError, storage.StorageError) as err:
                log.warning("unreadable manifest in %s: %s", folder, err)
                m = None
            if m is not None and m.get("schema") != MANIFEST_SCHEMA:
                continue  # a manifest of the user's own inside a restored album
            if m is not None:
                entry.manifest = m
                entry.state = "done" if storage.DONE_MARKER in names else (
                    m.get("status") if m.get("status") in ("partial", "analysed") else "failed")
        out.append(entry)
    return out


def _entry_html(x: IndexEntry) -> str:
    m, f = x.manifest, x.folder
    name = (m.get("source") or f).rstrip("/").rsplit("/", 1)[-1]
    c = m.get("counts", {})
    parts = [f"<div class=item><h2>{e(name)}<span class='st {x.state}'>{x.state}</span></h2>"]
    if m:
        people = len(m.get("identities", []))
        parts.append(f"<div>{e(m.get('kind', ''))}; {people} {'person' if people == 1 else 'people'}; "
                     f"{c.get('faces_restored', 0)} of {c.get('faces', 0)} faces restored; restorer "
                     f"{e((m.get('restorer') or {}).get('name', '?'))}</div>")
        thumbs = [(i, r) for i in m.get("identities", []) for r in i.get("references", [])[:1]]
        if thumbs:
            parts.append("<div class=thumbs>")
            parts += [f"<figure><img alt='person {i['id']}' src='{e(f)}/{e(r['path'])}'>"
                      f"<figcaption>{e(i.get('name') or 'person ' + str(i['id']))}</figcaption></figure>"
                      for i, r in thumbs[:THUMBS_PER_ITEM]]
            parts.append("</div>")
    links = []
    if "report.html" in x.files:
        links.append(f"<a href='{e(f)}/report.html'>report</a>")
    output = (m.get("media") or {}).get("output")
    if output and x.state in ("done", "partial"):
        what = "restored photos" if output.endswith("/") else "restored video"
        links.append(f"<a href='{e(posixpath.normpath(f + '/' + output))}{'/' if output.endswith('/') else ''}'>{what}</a>")
    if "manifest.json" in x.files:
        links.append(f"<a href='{e(f)}/manifest.json'>manifest</a>")
    parts.append(f"<div>{' &middot; '.join(links)} <small>{e(m.get('source', f))}</small></div>")
    parts += [f"<div class=err>{e(str(err.get('file')))}: {e(str(err.get('reason')))}</div>"
              for err in m.get("errors", [])[:5]]
    return "".join(parts) + "</div>"


def render_index(entries: list[IndexEntry]) -> str:
    states = {s: sum(x.state == s for x in entries) for s in ("done", "partial", "analysed", "failed", "incomplete")}
    faces = sum(x.manifest.get("counts", {}).get("faces_restored", 0) for x in entries)
    people = sum(len(x.manifest.get("identities", [])) for x in entries)  # per item, not linked
    lead = ", ".join(f"{n} {s}" for s, n in states.items() if n) or "nothing yet"
    title = f"{len(entries)} item{'' if len(entries) == 1 else 's'}"
    return (f"<!doctype html><html lang=en><meta charset=utf-8><link rel=icon href='data:,'>"
            f"<title>refstar: {title}</title><style>{INDEX_CSS}</style>"
            f"<h1>{title}</h1><p class=lead>{lead}. {people} people, {faces} faces restored.</p>"
            + "\n".join(_entry_html(x) for x in entries) + "\n</html>\n")


def write_index(out_root: str) -> str | None:
    """Write ``OUT/index.html`` for everything in ``out_root`` now; its URI, or None when the
    output could not be listed or written (the items themselves are unaffected)."""
    try:
        uri = storage.join(out_root, INDEX)
        storage.write_atomic(uri, render_index(read_entries(out_root)))
        return uri
    except (storage.StorageError, OSError) as err:
        log.warning("could not write %s: %s", storage.join(out_root, INDEX), err)
        return None
