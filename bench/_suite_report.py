"""The quality suite's tables (text) and page (HTML): every figure per clip, with the mean and
the worst clip beside it."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

# figure -> (label, format, which way is worse: min or max)
FIGURES = {
    "psnr_gain": ("PSNR gain dB", "+.2f", min),
    "ssim_gain": ("SSIM gain", "+.4f", min),
    "id_delta": ("identity gain", "+.4f", min),
    "flicker_out": ("flicker x", ".2f", max),
    "s_per_frame": ("s/frame", ".2f", max),
}


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def figures(row: dict) -> dict:
    """The figures of one clip x run x strength row, derived where needed."""
    facts = row["facts"]
    out = {k: row.get(k) for k in ("psnr_gain", "ssim_gain", "flicker_out")}
    out["id_delta"] = None if row.get("id_out") is None or row.get("id_in") is None else row["id_out"] - row["id_in"]
    secs, frames = facts.get("seconds"), facts.get("frames")
    out["s_per_frame"] = secs / frames if secs and frames else None
    return out


def people_cell(facts: dict) -> str:
    """'people: with refs / all, not-face tracks' of one run."""
    if "people" not in facts:
        return f"{facts.get('status')}: {facts.get('errors')}"
    ppl = facts["people"]
    with_refs = sum(p["references"] > 0 for p in ppl)
    return f"{with_refs}/{len(ppl)} ref'd, {facts.get('not_faces', 0)} not-face"


def clip_rows(clip: dict) -> list[str]:
    saw = " (the shipped prior saw it)" if clip.get("prior_saw") else ""
    out = [f"{clip['clip']}{saw}: {clip['frames']} frames, {clip['degraded_frames']} degraded "
           f"({clip['degraded_faces']} faces), {clip['seconds']:.0f} s"]
    for run, by_s in clip["runs"].items():
        for s, row in by_s.items():
            f = figures(row)
            out.append(f"  {run:>12s} {s}: in {_f(row.get('psnr_in'), '.2f')} dB "
                       + " ".join(f"{FIGURES[k][0]} {_f(f[k], FIGURES[k][1])}" for k in FIGURES)
                       + f" | id {_f(row.get('id_in'), '.3f')}->{_f(row.get('id_out'), '.3f')}"
                       + f" | {people_cell(row['facts'])}")
    return out


def photo_rows(kind: str, photos: dict) -> list[str]:
    out = []
    for run, res in photos.items():
        found = sum(p["faces"] for p in res["photos"])
        restored = sum(p["restored"] for p in res["photos"])
        line = f"{kind} {run}: {len(res['photos'])} photos, {found} faces found, {restored} restored"
        crops = [c for p in res["photos"] for c in p.get("crops", [])]
        if crops:
            b = np.mean([c["sharpness_before"] for c in crops])
            a = np.mean([c["sharpness_after"] for c in crops])
            line += f", sharpness {b:.3f} -> {a:.3f} over {len(crops)} faces"
        out.append(line)
    return out


def aggregate(result: dict, unseen: bool = False) -> dict:
    """{run: {strength: {figure: (mean, worst, worst clip)}}}; ``unseen``: over the clips the
    shipped prior never saw."""
    agg: dict = {}
    clips = [c for c in result["clips"] if not (unseen and c.get("prior_saw"))]
    for run in result["runs"]:
        for s in result["strengths"]:
            per = {}
            for clip in clips:
                row = clip["runs"].get(run, {}).get(s)
                if row is not None:
                    per[clip["clip"]] = figures(row)
            cell = {}
            for k, (_, _, worse) in FIGURES.items():
                vals = {c: f[k] for c, f in per.items() if f[k] is not None}
                if vals:
                    worst = worse(vals, key=vals.get)
                    cell[k] = (float(np.mean(list(vals.values()))), vals[worst], worst)
            refs = [sum(p["references"] > 0 for p in clip["runs"][run][s]["facts"].get("people", []))
                    for clip in clips if s in clip["runs"].get(run, {})]
            ppl = [len(clip["runs"][run][s]["facts"].get("people", []))
                   for clip in clips if s in clip["runs"].get(run, {})]
            nf = [clip["runs"][run][s]["facts"].get("not_faces", 0) or 0
                  for clip in clips if s in clip["runs"].get(run, {})]
            cell["people"] = (sum(refs), sum(ppl), sum(nf))
            agg.setdefault(run, {})[s] = cell
    return agg


def print_tables(result: dict) -> None:
    n_seen = sum(bool(c.get("prior_saw")) for c in result["clips"])
    views = [(False, f"{len(result['clips'])} clips")]
    if n_seen:
        views.append((True, f"the {len(result['clips']) - n_seen} clips the shipped prior never saw"))
    for unseen, what in views:
        print(f"\nmean (worst clip) over {what}, {result['frames']} frames each; {result['machine']}")
        for run, by_s in aggregate(result, unseen).items():
            for s, cell in by_s.items():
                refd, ppl, nf = cell["people"]
                parts = [f"{FIGURES[k][0]} {_f(cell[k][0], FIGURES[k][1])} ({_f(cell[k][1], FIGURES[k][1])} "
                         f"{cell[k][2]})" for k in FIGURES if k in cell]
                print(f"{run} {s}: people with references {refd}/{ppl}, not-face tracks {nf}; " + "; ".join(parts))
    for kind, photos in result.get("photos", {}).items():
        print("\n".join(photo_rows(kind, photos)))


def _img(path: str, width: int) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" width="{width}">'


def render_html(result: dict, out: Path) -> str:
    agg = aggregate(result, unseen=True)
    e = html.escape
    n_unseen = sum(not c.get("prior_saw") for c in result["clips"])
    parts = ["<!doctype html><meta charset='utf-8'><title>refstar quality suite</title>",
             "<style>body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:right}"
             "td.l,th.l{text-align:left} .bad{background:#fdd}</style>",
             f"<h1>Quality suite</h1><p>{len(result['clips'])} clips, first {result['frames']} frames, "
             f"face regions of every third frame degraded; machine: {e(result['machine'])}; runs: "
             + ", ".join(f"<b>{e(n)}</b> {e(' '.join(v)) or '(defaults)'}" for n, v in result["runs"].items())
             + f"</p><h2>Mean and worst clip, over the {n_unseen} clips the shipped prior never saw</h2><table><tr><th class=l>run</th><th>strength</th>"
             "<th>people with refs / all</th><th>not-face tracks</th>"
             + "".join(f"<th>{e(FIGURES[k][0])}<br>mean</th><th>worst</th>" for k in FIGURES) + "</tr>"]
    for run, by_s in agg.items():
        for s, cell in by_s.items():
            refd, ppl, nf = cell["people"]
            parts.append(f"<tr><td class=l>{e(run)}</td><td>{s}</td><td>{refd}/{ppl}</td><td>{nf}</td>")
            for k in FIGURES:
                if k in cell:
                    m, w, c = cell[k]
                    parts.append(f"<td>{_f(m, FIGURES[k][1])}</td><td title='{e(c)}'>{_f(w, FIGURES[k][1])}"
                                 f"<br><small>{e(c[:28])}</small></td>")
                else:
                    parts.append("<td>-</td><td>-</td>")
            parts.append("</tr>")
    parts.append("</table><h2>Per clip</h2><table><tr><th class=l>clip</th><th>run</th><th>strength</th>"
                 "<th>PSNR in</th>" + "".join(f"<th>{e(FIGURES[k][0])}</th>" for k in FIGURES)
                 + "<th>identity in -> out</th><th class=l>people</th><th class=l>references</th></tr>")
    for clip in result["clips"]:
        for run, by_s in clip["runs"].items():
            for s, row in by_s.items():
                f, facts = figures(row), row["facts"]
                refs = "".join(_img(str(Path(facts["item"]) / p), 64) for person in facts.get("people", [])
                               for p in person["ref_paths"][:2])
                why = "; ".join(f"person {p['id']}: {p['why_none']}" for p in facts.get("people", []) if p["why_none"])
                link = f"<a href='{e(str(Path(facts['item']).resolve() / 'report.html'))}'>report</a>" if "item" in facts else ""
                bad = " class=bad" if (f["psnr_gain"] or 0) < 0 else ""
                saw = "<br><small>the prior saw it</small>" if clip.get("prior_saw") else ""
                parts.append(f"<tr{bad}><td class=l>{e(clip['clip'])}{saw}</td><td>{e(run)}</td><td>{s}</td>"
                             f"<td>{_f(row.get('psnr_in'), '.2f')}</td>"
                             + "".join(f"<td>{_f(f[k], FIGURES[k][1])}</td>" for k in FIGURES)
                             + f"<td>{_f(row.get('id_in'), '.3f')} -> {_f(row.get('id_out'), '.3f')}</td>"
                             f"<td class=l>{e(people_cell(facts))} {link}<br><small>{e(why)}</small></td>"
                             f"<td class=l>{refs}</td></tr>")
    parts.append("</table>")
    for kind, photos in result.get("photos", {}).items():
        parts.append(f"<h2>{e(kind)}</h2>")
        for line in photo_rows(kind, photos):
            parts.append(f"<p>{e(line)}</p>")
        for run, res in photos.items():
            for p in res["photos"]:
                crops = "".join(f"<figure style='display:inline-block;margin:4px'>{_img(c['png'], 360)}"
                                f"<figcaption>before | after &mdash; {c['size_px']:.0f} px, sharpness "
                                f"{c['sharpness_before']:.3f} -> {c['sharpness_after']:.3f}</figcaption></figure>"
                                for c in p.get("crops", []))
                parts.append(f"<div><b>{e(run)}: {e(p['file'])}</b> {p['faces']} faces found, "
                             f"{p['restored']} restored ({e(str(p['status']))})<br>{crops}</div>")
    return "\n".join(parts)
