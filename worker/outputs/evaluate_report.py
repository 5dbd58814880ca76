"""What ``refstar eval`` reports: the frame selection, per-candidate accumulators, summaries and
gains, ``eval.json``, the stdout table and the self-contained ``eval.html``.

``eval.json`` (schema ``refstar-worker/eval`` v1): ``gt``, ``backend``, ``crop_size``,
``frames`` {spec, evaluated, with_faces}, ``faces`` (GT faces evaluated), ``faces_too_small``,
``baseline`` (label), ``warnings``, ``seconds`` and ``candidates``, each with ``label``, ``path``,
``media``, ``restorer`` and ``timings`` (from a worker item's manifest), ``references`` ("own",
"--refs" or null), ``frames_missing``, the means below, ``gain`` (mean difference from the
baseline over the faces both have; null for the baseline) and ``per_face`` rows {frame, face,
[file], psnr, ssim, identity_gt, identity_ref}. Metrics, per GT face:

- ``psnr``: dB on the aligned crop, weighted by the face mask (the region restorers paste);
  identical crops score ``PSNR_CAP_DB``; ``ssim``: on the bounding box of the face mask;
- ``identity_gt``: cosine similarity (``refstar.metrics.identity_similarity``) of the backend's
  embeddings of the candidate's and GT's face; ``identity_ref``: candidate vs the reference the
  worker used for that face (else the person's best one);
- ``flicker``: ``refstar.metrics.flicker`` pooled over every pair of consecutive evaluated frames
  (a face is followed by box IoU): the candidate's frame-to-frame change minus GT's (0..1 scale);
  ``flicker_ratio``: candidate change / GT change (1 = as steady as the original).
"""

from __future__ import annotations

import html
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

SCHEMA, VERSION = "refstar-worker/eval", 1
PSNR_CAP_DB = 100.0
METRICS = ("psnr", "ssim", "identity_gt", "identity_ref")


@dataclass(frozen=True)
class FrameSelection:
    """Frame indices to evaluate: a union of ``start:stop:step`` ranges (stop None = open)."""

    parts: tuple[tuple[int, int | None, int], ...]
    spec: str = "all"

    def __contains__(self, i: int) -> bool:
        return any(a <= i and (b is None or i < b) and (i - a) % s == 0 for a, b, s in self.parts)

    @property
    def stop(self) -> int | None:
        """One past the last selectable index, None when open-ended."""
        stops = [b for _, b, _ in self.parts]
        return None if None in stops else max(stops)


def parse_frames(spec: str | None) -> FrameSelection:
    """``"all"``, ``"1::3"``, ``"0:30"``, ``"4,9,20:40:2"`` (0-based; python slice rules, no
    negatives). Raises ValueError on anything else."""
    if not spec or spec.strip() == "all":
        return FrameSelection(((0, None, 1),))
    parts = []
    for part in spec.split(","):
        bits = part.strip().split(":")
        try:
            nums = [int(b) if b.strip() else None for b in bits]
        except ValueError:
            raise ValueError(f"bad --frames part {part!r}: integers and ':' only") from None
        if len(nums) == 1 and nums[0] is not None:
            nums = [nums[0], nums[0] + 1]
        if len(nums) > 3 or any(n is not None and n < 0 for n in nums) or (len(nums) == 3 and nums[2] == 0):
            raise ValueError(f"bad --frames part {part!r}: use start:stop:step, no negatives")
        a, b, s = (nums + [None, None])[:3]
        parts.append((a or 0, b, s or 1))
    return FrameSelection(tuple(parts), spec)


@dataclass
class CandidateScores:
    """Running results of one candidate: per-face rows and pooled flicker sums."""

    label: str
    path: str  # as given
    media: str  # what was read
    manifest: dict | None = None  # worker item output folders
    references: str | None = None  # "own" | "--refs" | None
    rows: list[dict] = field(default_factory=list)
    pairs: int = 0  # consecutive-frame pairs of one face
    flicker_sum: float = 0.0
    change: float = 0.0  # summed frame-to-frame change of the candidate's crops
    gt_change: float = 0.0  # ... and of GT's
    missing: int = 0  # GT frames the candidate lacks

    def add_pair(self, flicker: float, change: float, gt_change: float) -> None:
        self.pairs += 1
        self.flicker_sum += flicker
        self.change += change
        self.gt_change += gt_change

    def flicker(self) -> dict:
        ok = self.pairs > 0
        return {"flicker": self.flicker_sum / self.pairs if ok else None,
                "flicker_ratio": self.change / self.gt_change if ok and self.gt_change > 0 else None,
                "flicker_pairs": self.pairs}


def build_report(meta: dict, cands: list[CandidateScores], baseline: int, seconds: float) -> dict:
    """The ``eval.json`` dict from the run's facts (``meta``) and the candidates' scores."""
    base = cands[baseline]
    report = {"schema": SCHEMA, "version": VERSION, "gt": meta["gt"], "backend": meta["backend"],
              "crop_size": meta["crop_size"],
              "frames": {k: meta[k] for k in ("spec", "evaluated", "with_faces")},
              "faces": meta["faces"], "faces_too_small": meta["faces_too_small"],
              "baseline": base.label, "warnings": list(meta["warnings"]), "candidates": []}
    for c in cands:
        if c.missing:
            report["warnings"].append(f"{c.label}: {c.missing} of {meta['evaluated']} GT frames "
                                      f"missing in {c.path}")
        m = c.manifest or {}
        gain = None
        if c is not base:
            gain = summarise(c.rows, base=base.rows)
            f, fb = c.flicker()["flicker"], base.flicker()["flicker"]
            gain["flicker"] = None if f is None or fb is None else f - fb
        report["candidates"].append({
            "label": c.label, "path": c.path, "media": c.media, "restorer": m.get("restorer"),
            "timings": m.get("timings"), "references": c.references, "frames_missing": c.missing,
            **summarise(c.rows), **c.flicker(), "gain": gain, "per_face": c.rows})
    report["seconds"] = round(seconds, 2)
    return report


def _key(row: dict) -> tuple:
    return row["frame"], row.get("file", ""), row["face"]


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarise(rows: list[dict], base: list[dict] | None = None,
              frames: Collection[int] | None = None) -> dict:
    """Means of the per-face ``rows`` (only those of ``frames`` when given).

    With ``base`` (the baseline's rows): mean differences row minus baseline over the faces both
    have, i.e. the gains. Returns ``{"faces": n, "psnr": dB, "ssim", "identity_gt",
    "identity_ref", "identity_ref_faces": n}``; a metric with no value is None."""
    if frames is not None:
        frames = set(frames)
        rows = [r for r in rows if r["frame"] in frames]
    if base is not None:
        by_key = {_key(r): r for r in base}
        pairs = [(r, by_key[_key(r)]) for r in rows if _key(r) in by_key]
        out: dict = {"faces": len(pairs)}
        for m in METRICS:
            out[m] = _mean([None if r[m] is None or b[m] is None else r[m] - b[m] for r, b in pairs])
        return out
    out = {"faces": len(rows), **{m: _mean([r[m] for r in rows]) for m in METRICS}}
    out["identity_ref_faces"] = sum(r["identity_ref"] is not None for r in rows)
    return out


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


COLUMNS = [  # header, value of a candidate dict, format
    ("faces", lambda c: c["faces"], "d"),
    ("PSNR dB", lambda c: c["psnr"], ".2f"),
    ("gain dB", lambda c: (c["gain"] or {}).get("psnr"), "+.2f"),
    ("SSIM", lambda c: c["ssim"], ".4f"),
    ("id vs GT", lambda c: c["identity_gt"], ".4f"),
    ("id vs ref", lambda c: c["identity_ref"], ".4f"),
    ("flicker", lambda c: c["flicker"], "+.4f"),
    ("flicker x", lambda c: c["flicker_ratio"], ".2f"),
    ("adapt s", lambda c: adapt_seconds(c), ".1f"),
]


def adapt_seconds(cand: dict) -> float | None:
    """Seconds the worker spent adapting RefSTAR for this candidate's item, when it did."""
    restorer = cand.get("restorer") or {}
    if restorer.get("adapted"):
        return (cand.get("timings") or {}).get("adapt", restorer.get("seconds"))
    return None


def _cells(cand: dict) -> list[str]:
    return [_f(get(cand), fmt) for _, get, fmt in COLUMNS]


def format_table(report: dict) -> str:
    """Compact fixed-width table, one line per candidate."""
    width = max(8, *(len(c["label"]) for c in report["candidates"]))
    head = f"{'candidate':<{width}} " + " ".join(f"{h:>9}" for h, _, _ in COLUMNS)
    lines = [f"{report['gt']}: {report['frames']['evaluated']} frames, {report['faces']} faces "
             f"({report['backend']}, {report['crop_size']} px crops; gains vs "
             f"{report['baseline']})", head]
    for c in report["candidates"]:
        lines.append(f"{c['label']:<{width}} " + " ".join(f"{v:>9}" for v in _cells(c)))
    return "\n".join(lines)


def render_html(report: dict) -> str:
    """``eval.html``: one table, no external resources."""
    e = html.escape
    rows = "".join("<tr><th>" + e(c["label"]) + "</th>" + "".join(f"<td>{e(v)}</td>" for v in _cells(c))
                   + f"<td class=p>{e(c['path'])}</td></tr>" for c in report["candidates"])
    heads = "".join(f"<th>{e(h)}</th>" for h, _, _ in COLUMNS)
    warn = "".join(f"<li>{e(w)}</li>" for w in report["warnings"])
    return (
        "<!doctype html><meta charset=utf-8><title>refstar eval</title><style>"
        "body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td.p{text-align:left;color:#666}"
        "</style>"
        f"<h1>refstar eval</h1><p>GT <code>{e(report['gt'])}</code>: "
        f"{report['frames']['evaluated']} frames ({e(report['frames']['spec'])}), "
        f"{report['faces']} faces, backend {e(report['backend'])}, {report['crop_size']} px crops; "
        f"gains vs <b>{e(report['baseline'])}</b>.</p>"
        f"<table><tr><th>candidate</th>{heads}<th>path</th></tr>{rows}</table>"
        "<p>PSNR on the face mask of aligned crops (identical = 100 dB), SSIM on its box; identity: "
        "cosine similarity of the backend's embeddings; flicker: frame-to-frame change of the "
        "crops minus GT's (0..1 scale), and their ratio.</p>"
        + (f"<ul>{warn}</ul>" if warn else "")
    )
