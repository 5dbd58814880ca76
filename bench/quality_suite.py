"""The quality suite: how much the worker restores, measured on every real clip and photo.

    python bench/quality_suite.py [--clips SUBSTR ...] [--frames 60] [--strengths x2 x4 x8]
                                  [--run 'NAME: KEY=VALUE ...' ...] [--set KEY=VALUE ...]
                                  [--no-photos] [--out DIR]

Per clip of ``../shared/data/videos`` (``--clips`` picks those whose name contains one of the
strings): the first ``--frames`` frames, the face regions of every third frame degraded at each
strength (``bench/_suite_media.py``: x2, x4, x8 area-down with blur, noise and JPEG scaled
along), restored by the worker once per run (``--run``; default: one run with the worker's
defaults) and scored against the untouched clip with ``worker.outputs.evaluate``: PSNR and SSIM gain
over the degraded input on the degraded frames' faces, identity similarity to the clean face
(input and output), flicker against the clean clip (frame-to-frame change of the output's face
crops over the clean clip's, all frames; 1 = as steady as the original), seconds per frame (the
worker's total), and from each manifest the people, their references (and why a person has
none), and the face tracks rejected as not faces. Clips the shipped face prior was trained on
are marked (``refstar/weights/face_prior/split.json``), the tables give the figures over the
others apart, and ``--unseen`` runs only those.

Per real LQ photo (``lq/``, no ground truth): before/after aligned crops side by side and a
no-reference sharpness (0..1) before and after. Per negative photo (``negatives/``, no face):
the faces found and restored (should be none).

Writes ``OUT/suite.json`` and ``OUT/suite.html`` (tables with the mean and the worst clip of
every figure, reference crops, before/after pairs, links to each item's report) and prints the
tables. The items stay under ``OUT/items`` for a look.

Runs whose ``restore`` settings are the same (``references.top_k=0`` beside the default, say)
adapt RefSTAR once per clip and strength: the second restores with the first's adapted net
(manifest ``restorer.shared: true``, its seconds those of the first's adaptation, which its own
timings leave out). The item's adaptation crops are compared by their bytes, so only identical
inputs share; ``--no-share`` adapts every run anew.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import real_data_root  # noqa: E402
from bench._suite_media import STRENGTHS, before_after, make_degraded, reproducible_x264  # noqa: E402
from bench._suite_report import clip_rows, photo_rows, print_tables, render_html  # noqa: E402
from refstar.prior import seen_by_prior  # noqa: E402
from worker.config import load_config  # noqa: E402
from worker.item.pipeline import Engine, restore_item  # noqa: E402
from worker.outputs.evaluate import evaluate  # noqa: E402
from worker.outputs.evaluate_report import summarise  # noqa: E402


def parse_runs(specs: list[str]) -> dict[str, list[str]]:
    """``'NAME: k=v k=v'`` -> {NAME: [k=v, ...]}; no spec: one run of the defaults."""
    runs = {}
    for spec in specs or ["default:"]:
        name, _, sets = spec.partition(":")
        if not name.strip() or name.strip() in runs:
            sys.exit(f"--run {spec!r}: give each run a distinct NAME before ':'")
        runs[name.strip()] = sets.split()
    return runs


def manifest_facts(item_dir: Path) -> dict:
    """What a worker manifest says about people, references and rejected tracks."""
    m = json.loads((item_dir / "manifest.json").read_text())
    people = []
    for ident in m.get("identities", []):
        people.append({"id": ident["id"], "name": ident.get("name"), "faces": ident.get("n_faces"),
                       "references": len(ident.get("references", [])),
                       "why_none": ident.get("why_no_reference"),
                       "ref_paths": [r["path"] for r in ident.get("references", [])]})
    c = m.get("counts", {})
    return {"status": m.get("status"), "people": people, "counts": c,
            "not_faces": c.get("tracks_not_faces", c.get("faces_not_faces", 0)),
            "seconds": m.get("timings", {}).get("total"), "frames": c.get("frames"),
            "restorer": m.get("restorer"), "item": str(item_dir)}


def share_adaptation() -> dict:
    """Make ``adapt_net`` remember its answer per (restore settings, crops' bytes) in the
    returned dict (clear it to forget)."""
    import hashlib

    from worker.item import pipeline

    memo, adapt = {}, pipeline.adapt_net

    def shared(crops, cfg):
        h = hashlib.sha1(repr(cfg.restore).encode())
        for k in sorted(crops):
            for c in crops[k]:
                h.update(f"{k}:{c.shape}".encode())
                h.update(c.tobytes())
        key = h.hexdigest()
        if key in memo:
            net, info = memo[key]
            return net, dict(info, shared=True)
        memo[key] = adapt(crops, cfg)
        return memo[key]

    pipeline.adapt_net = shared
    return memo


def run_clip(clip: Path, runs: dict, args, work: Path, engines: dict, analyzer) -> dict:
    t0 = time.monotonic()
    deg_dir = work / "degraded"
    deg_dir.mkdir(parents=True, exist_ok=True)
    inputs, bad, n_deg = make_degraded(clip, deg_dir, args.frames, args.strengths, analyzer)
    cands, labels, facts = [], [], {}
    for s, path in inputs.items():
        cands.append(str(path))
        labels.append(f"input {s}")
    for name in runs:
        for s, path in inputs.items():
            res = restore_item(path, str(work / "items" / name / s), engines[name].cfg,
                               engine=engines[name], force=True)
            if res.status not in ("ok", "partial"):
                facts[(name, s)] = {"status": res.status, "errors": [str(e) for e in res.errors]}
                continue
            facts[(name, s)] = manifest_facts(Path(res.output))
            cands.append(res.output)
            labels.append(f"{name} {s}")
    report = evaluate(str(clip), cands, load_config(None, ["progress=false", *args.set]), labels=labels,
                      frames=f":{args.frames}", baseline=labels[0], analyzer=analyzer)
    by_label = {c["label"]: c for c in report["candidates"]}
    out = {"clip": clip.name, "frames": report["frames"]["evaluated"], "degraded_frames": len(bad),
           "degraded_faces": n_deg, "runs": {}}
    for name in runs:
        for s in inputs:
            base, cand = by_label[f"input {s}"], by_label.get(f"{name} {s}")
            row = {"facts": facts[(name, s)]}
            if cand is not None:
                before = summarise(base["per_face"], frames=bad)
                after = summarise(cand["per_face"], frames=bad)
                gain = summarise(cand["per_face"], base=base["per_face"], frames=bad)
                row.update(psnr_in=before["psnr"], psnr_gain=gain["psnr"], ssim_gain=gain["ssim"],
                           id_in=before["identity_gt"], id_out=after["identity_gt"],
                           faces_scored=gain["faces"], flicker_in=base["flicker_ratio"],
                           flicker_out=cand["flicker_ratio"])
            out["runs"].setdefault(name, {})[s] = row
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def run_photos(folder: Path, runs: dict, work: Path, engines: dict, analyzer, kind: str) -> dict:
    """One album item per run; per photo the faces found/restored (from the manifest) and, for
    ``lq``, before/after crops with sharpness."""
    import cv2

    from worker.media.image import read_image

    out = {}
    for name in runs:
        res = restore_item(folder, str(work / "items" / name / kind), engines[name].cfg,
                           engine=engines[name], force=True)
        m = json.loads(Path(res.output, "manifest.json").read_text())
        per_file = {}
        for f in m.get("faces", []):
            row = per_file.setdefault(f["source"], {"faces": 0, "restored": 0})
            row["faces"] += 1
            row["restored"] += bool(f.get("restored"))
        photos = []
        for entry in m.get("files", []):
            file = entry["file"]
            row = {"file": file, "status": entry.get("status"), **per_file.get(file, {"faces": 0, "restored": 0})}
            if kind == "lq":
                limits = engines[name].cfg.limits
                before, _ = read_image(folder / file, limits)
                after, _ = read_image(Path(res.output, "restored", file), limits)
                pairs = before_after(before, after, analyzer)
                row["crops"] = []
                for k, p in enumerate(pairs):
                    png = work / "crops" / name / f"{Path(file).stem}-{k}.png"
                    png.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(png), p.pop("pair"))
                    row["crops"].append({**p, "png": str(png)})
            photos.append(row)
        out[name] = {"item": res.output, "status": res.status, "photos": photos,
                     "facts": manifest_facts(Path(res.output))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="*", default=[], metavar="SUBSTR", help="only clips whose name contains one")
    ap.add_argument("--frames", type=int, default=60, help="frames per clip (default 60)")
    ap.add_argument("--strengths", nargs="*", default=list(STRENGTHS), choices=list(STRENGTHS))
    ap.add_argument("--run", action="append", default=[], metavar="'NAME: K=V ...'",
                    help="a restorer/config to compare (repeatable); default: the worker's defaults")
    ap.add_argument("--set", action="append", default=[], metavar="K=V", help="config for every run")
    ap.add_argument("--no-photos", action="store_true", help="skip lq/ and negatives/")
    ap.add_argument("--no-clips", action="store_true", help="photos only")
    ap.add_argument("--unseen", action="store_true",
                    help="only the clips the shipped face prior never saw (refstar/weights/face_prior/split.json)")
    ap.add_argument("--no-share", action="store_true", help="adapt every run anew (see above)")
    ap.add_argument("--out", default=f"quality-suite-{time.strftime('%Y%m%d-%H%M%S')}")
    args = ap.parse_args()
    root, out = real_data_root(), Path(args.out)
    clips = [] if args.no_clips else sorted((root / "videos").glob("*.mp4"))
    if args.clips:
        clips = [c for c in clips if any(s in c.name for s in args.clips)]
    seen = seen_by_prior()
    if args.unseen:
        clips = [c for c in clips if c.name not in seen]
    if not clips and not args.no_clips:
        sys.exit(f"no clip found in {root / 'videos'} (REFSTAR_REAL_DATA?)")
    runs = parse_runs(args.run)
    engines = {n: Engine(load_config(None, ["progress=false", *args.set, *sets])) for n, sets in runs.items()}
    analyzer = next(iter(engines.values())).analyzer  # the default backend, for GT faces
    result = {"machine": _machine(), "frames": args.frames, "strengths": args.strengths,
              "runs": runs, "sets": args.set, "clips": [], "photos": {}}
    memo = {} if args.no_share else share_adaptation()
    reproducible_x264().start()  # the restored videos too: the figures repeat run after run
    for clip in clips:
        memo.clear()  # a clip's nets are not kept past it
        row = run_clip(clip, runs, args, out / clip.stem, engines, analyzer)
        row["prior_saw"] = clip.name in seen
        result["clips"].append(row)
        print("\n".join(clip_rows(row)), flush=True)
        (out / "suite.json").write_text(json.dumps(result, indent=1, default=str))
    if not args.no_photos:
        for kind in ("lq", "negatives"):
            result["photos"][kind] = run_photos(root / kind, runs, out / kind, engines, analyzer, kind)
            print("\n".join(photo_rows(kind, result["photos"][kind])), flush=True)
    (out / "suite.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "suite.html").write_text(render_html(result, out))
    print_tables(result)
    print(f"wrote {out / 'suite.json'} and {out / 'suite.html'}")


def _machine() -> str:
    import os
    import platform

    return f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"


if __name__ == "__main__":
    main()
