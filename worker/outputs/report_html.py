"""report.html of one item: a self-contained page (images inlined) that a person opens to judge
the restoration: what happened in plain words, whole frames with a before/after slider, and per
person the references (with why each was chosen) and labelled before/after face pairs; any
picture enlarges on click."""

from __future__ import annotations

import base64
import html

import cv2
import numpy as np

from worker.outputs.report import ReportSamples
from worker.records import Identity, Reference

e = html.escape

PAGE_CSS = """body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1.5em;color:#222;
background:#f6f6f4}h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;
border-bottom:1px solid #ccc;padding-bottom:.2em}h3{font-size:1em;margin:1.2em 0 .4em}
.lead{font-size:1.05em;color:#444}.row{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
figcaption{font-size:.85em;color:#444;margin-top:6px;max-width:420px}
.pair{cursor:zoom-in}.pair .imgs{display:flex;gap:4px}.lab{position:relative}
.lab span{position:absolute;left:4px;top:4px;background:rgba(0,0,0,.65);color:#fff;font-size:.75em;
padding:1px 6px;border-radius:3px}.pair img{width:200px;height:200px;display:block}
.ref img{width:140px;height:140px;display:block;cursor:zoom-in}
.cmp{position:relative;display:inline-block;line-height:0;cursor:ew-resize;--x:50%}
.cmp img{max-width:100%;display:block}.cmp .before{position:absolute;left:0;top:0;
clip-path:inset(0 calc(100% - var(--x)) 0 0)}.cmp .bar{position:absolute;top:0;bottom:0;left:var(--x);
width:2px;background:#fff;box-shadow:0 0 3px #000}.cmp .l,.cmp .r{position:absolute;top:6px;line-height:1.4;
background:rgba(0,0,0,.65);color:#fff;font-size:.8em;padding:1px 6px;border-radius:3px}
.cmp .l{left:6px}.cmp .r{right:6px}.frame{max-width:100%}.frame input{width:100%;display:block}
.err{color:#a00}table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
#zoom{position:fixed;inset:0;background:rgba(0,0,0,.88);display:flex;gap:12px;align-items:center;
justify-content:center;cursor:zoom-out;z-index:9}#zoom[hidden]{display:none}
#zoom img{max-width:46vw;max-height:90vh;image-rendering:auto}#zoom .one{max-width:92vw}"""

# every picture with data-zoom opens its images large; sliders move the before/after split
PAGE_JS = """const zoom=document.getElementById('zoom');
document.querySelectorAll('[data-zoom]').forEach(el=>el.addEventListener('click',()=>{
zoom.replaceChildren(...[...el.querySelectorAll('img')].map(i=>{const c=i.cloneNode();c.removeAttribute('class');
return c}));if(zoom.children.length===1)zoom.firstChild.className='one';zoom.hidden=false}));
zoom.addEventListener('click',()=>{zoom.hidden=true});
document.addEventListener('keydown',ev=>{if(ev.key==='Escape')zoom.hidden=true});
document.querySelectorAll('.frame').forEach(f=>{const c=f.querySelector('.cmp'),r=f.querySelector('input');
const set=v=>c.style.setProperty('--x',v+'%');r.addEventListener('input',()=>set(r.value));
c.addEventListener('pointermove',ev=>{if(ev.buttons){const b=c.getBoundingClientRect();
r.value=Math.round(100*(ev.clientX-b.left)/b.width);set(r.value)}})});"""


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def img_tag(bgr: np.ndarray, cls: str = "", alt: str = "") -> str:
    """An inlined JPEG ``<img>``."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    c = f' class="{cls}"' if cls else ""
    return (f'<img{c} alt="{e(alt)}" src="data:image/jpeg;base64,'
            f'{base64.b64encode(buf.tobytes()).decode()}">')


def when(frame: int, fps: float | None) -> str:
    """"frame 120 (0:05)" for a video frame."""
    if not fps:
        return f"frame {frame}"
    s = frame / fps
    return f"frame {frame} ({int(s // 60)}:{s % 60:04.1f})"


def reference_reason(ref: Reference, fps: float | None) -> str:
    """Why a reference was chosen, in plain words: "sharpest frontal face, frame 120 (0:05)"."""
    parts = ref.quality_parts
    pose = ("frontal face" if parts.get("frontal", 0.0) >= 0.8 or abs(ref.yaw) < 15
            else f"face turned {abs(ref.yaw):.0f}&deg; sideways")
    what = f"sharpest {pose}" if ref.rank == 0 else f"next best {pose}, a different view"
    if ref.origin == "library":
        return f"{what}, from the reference library ({e(ref.source)})"
    where = e(ref.source) if ref.source else when(ref.frame, fps)
    if ref.origin:
        return f"{what}, from {e(ref.origin)}, {where}"
    return f"{what}, {where}"


LEFT_AS_THEY_WERE = {"faces_sharp": "already sharp", "faces_too_small": "too small",
                     "faces_not_faces": "not faces", "faces_unconfirmed": "not confirmed as faces",
                     "faces_not_selected": "of people not chosen", "faces_not_largest": "not the largest face"}


def summary_line(m: dict) -> str:
    """What happened to the item, in one or two sentences."""
    c = m["counts"]
    media = m.get("media") or {}
    if m["kind"] == "video":
        what = f"Video, {c.get('frames', media.get('frames', '?'))} frames"
    else:
        what = f"Album, {media.get('files', c.get('files', '?'))} photos"
    people = len(m.get("identities", []))
    faces, restored = c.get("faces", 0), c.get("faces_restored", 0)
    if m.get("status") == "analysed":
        return (f"{what}. Analysed, nothing restored yet: {faces} faces of {people} "
                f"{'person' if people == 1 else 'people'}, {c.get('references', 0)} references chosen. "
                f"To restore only some of them, give their numbers (the headings below) or library "
                f"names to <code>refstar restore ... --persons 0,2</code> (or <code>--skip-persons</code>) "
                f"with the same output folder: the analysis is reused.")
    line = (f"{what}. {people} {'person' if people == 1 else 'people'}; {restored} of {faces} faces "
            f"restored")
    if c.get("faces_with_reference") is not None:
        line += f", {c['faces_with_reference']} of them with a reference"
    if c.get("faces_prior"):
        line += (f", {c['faces_prior']} with no reference given some of the face prior's detail "
                 f"(too blurred for the restorer alone)")
    left = [f"{c[k]} {why}" for k, why in LEFT_AS_THEY_WERE.items() if c.get(k)]
    if left:
        line += f"; left as they were: {', '.join(left)}"
    return f"{line}. Restorer: {e((m.get('restorer') or {}).get('name', '?'))}."


def _frames_section(samples: ReportSamples, fps: float | None) -> list[str]:
    if not samples.frames:
        return []
    out = ["<h2>Whole frames</h2><p>Drag across a picture (or the slider) to compare; click a "
           "picture to enlarge it.</p><div class=row>"]
    for frame, source, before, after in sorted(samples.frames, key=lambda x: (x[1], x[0])):
        label = e(source) if source else when(frame, fps)
        out.append(f"<figure class=frame><div class=cmp data-zoom>{img_tag(after, 'after', 'after')}"
                   f"{img_tag(before, 'before', 'before')}<div class=bar></div>"
                   f"<span class=l>before</span><span class=r>after</span></div>"
                   f"<input type=range min=0 max=100 value=50 aria-label='before/after split'>"
                   f"<figcaption>{label}</figcaption></figure>")
    return [*out, "</div>"]


def _person_section(title: str, person: Identity | None, pairs: list, fps: float | None) -> list[str]:
    out = [f"<h2>{e(title)}</h2>"]
    refs = person.references if person is not None else []
    if person is not None and not refs:
        out.append(f"<p>No reference: {e(person.why_no_reference or 'none was chosen')}. This "
                   "person's faces were restored without one.</p>")
    if refs:
        out.append("<h3>References (the faces this person's other faces were restored from)</h3><div class=row>")
        out += [f"<figure class=ref data-zoom>{img_tag(r.crop, alt=f'reference {r.rank}')}"
                f"<figcaption>#{r.rank}: {reference_reason(r, fps)}</figcaption></figure>" for r in refs]
        out.append("</div>")
    if pairs:
        out.append("<h3>Before / after (this person's weakest faces; click to enlarge)</h3><div class=row>")
        for face, before, after in pairs:
            where = e(face.source) if face.source else when(face.frame, fps)
            how = (f"with reference #{e(face.reference.rsplit('/', 1)[-1])}" if face.reference
                   else "without a reference" + (f", with {face.prior:.0%} of the face prior's detail"
                                                  if face.prior > 0 else ""))
            out.append(f"<figure class=pair data-zoom><div class=imgs>"
                       f"<div class=lab>{img_tag(before, alt='before')}<span>before</span></div>"
                       f"<div class=lab>{img_tag(after, alt='after')}<span>after</span></div></div>"
                       f"<figcaption>{where}; face quality {face.quality:.2f}; restored {how}</figcaption></figure>")
        out.append("</div>")
    return out


def _details(m: dict) -> list[str]:
    c = m["counts"]
    out = ["<details><summary>All counts and timings</summary><table>"]
    out += [f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in c.items()]
    if c.get("faces_not_faces"):
        out.append(f"<tr><th>not faces</th><td>{c['faces_not_faces']} detections "
                   f"({c.get('tracks_not_faces', '-')} tracks) that the face check rejected were "
                   "left untouched</td></tr>")
    out += [f"<tr><th>time: {e(k)}</th><td>{v:.2f} s</td></tr>" for k, v in m["timings"].items()]
    out.append(f"<tr><th>item</th><td><code>{e(m['item_id'])}</code></td></tr></table></details>")
    return out


def render_html(manifest: dict, identities: list[Identity], samples: ReportSamples) -> str:
    """The item's report page from its manifest, identities (with reference crops) and the
    before/after views collected while restoring."""
    m = manifest
    fps = (m.get("media") or {}).get("avg_fps") if m["kind"] == "video" else None
    name = m["source"].rstrip("/").rsplit("/", 1)[-1] or m["source"]
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport "
             f"content='width=device-width'><link rel=icon href='data:,'>"
             f"<title>{e(name)}: refstar report</title><style>{PAGE_CSS}</style>",
             f"<h1>{e(name)}</h1><p class=lead>{summary_line(m)} Status: <b>{e(m['status'])}</b>.</p>"
             f"<p><small>{e(m['source'])}</small></p>"]
    if m["errors"]:
        parts.append("<h2>Problems</h2><ul>")
        parts += [f'<li class=err>{e(x["file"])}: {e(x["reason"])}</li>' for x in m["errors"]]
        parts.append("</ul>")
    parts += _frames_section(samples, fps)
    for person in identities:
        title = f"Person {person.id}" + (f": {person.name}" if person.name else "") + \
            f" ({_n(person.n_faces, 'face')}" + (f" in {_n(person.n_tracks, 'track')})" if person.n_tracks else ")")
        parts += _person_section(title, person, samples.pairs.get(person.id, []), fps)
    if -1 in samples.pairs:
        parts += _person_section("Faces not matched to a person (restored without a reference)", None,
                                 samples.pairs[-1], fps)
    parts += _details(m)
    parts.append(f"<div id=zoom hidden></div><script>{PAGE_JS}</script></html>")
    return "\n".join(parts) + "\n"
