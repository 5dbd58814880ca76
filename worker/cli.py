"""``refstar`` console entry point.

Exit status: 0 when every item completed (possibly with per-file errors, listed), 1 when an item
failed, 2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from worker.config import (
    FIDELITY_HELP,
    ConfigError,
    add_selection_args,
    dump_config,
    load_config,
    selection_overrides,
)
from worker.helptext import HelpFormatter
from worker.logs import add_log_args, setup_logging_from
from worker.records import ItemResult


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. --set restorer=none --set detect.stride=3")
    p.add_argument("--fidelity", type=float, metavar="F", help=FIDELITY_HELP)
    add_selection_args(p)
    add_log_args(p)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("refstar-worker")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="refstar", description="Identity-aware, reference-based face "
                                 "restoration for videos and photo albums.", formatter_class=HelpFormatter)
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, what in (("restore", "restore videos, images or albums (folders of images)"),
                       ("analyse", "find and group the people of videos, images or albums and choose their "
                        "references, without restoring: a report to choose whom to restore (--persons), "
                        "and an analysis a later restore into the same OUT reuses")):
        r = sub.add_parser(name, help=what, description=what, formatter_class=HelpFormatter)
        r.add_argument("inputs", nargs="*", metavar="INPUT", help="video file, image, or folder of images")
        r.add_argument("-i", "--input", action="append", default=[], dest="more_inputs", metavar="INPUT",
                       help="an input given as an option (repeatable), as refstar run spells it")
        r.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
        r.add_argument("--force", action="store_true", help="redo items that are already done")
        r.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
        r.add_argument("--link", action="store_true", help="with several inputs: link their people, so "
                       "that each person is restored with the best references of all inputs "
                       "(identity.link_archive)")
        r.add_argument("--references", metavar="DIR", help="reference library: one folder of photos per "
                       "person name (DIR/Rose Smith/*.jpg), local or s3:// (references.library)")
        _config_args(r)
    d = sub.add_parser("demo", help="build a short degraded clip from bundled face photos and restore it", formatter_class=HelpFormatter)
    d.add_argument("-o", "--output", default="refstar-demo", metavar="OUT", help="output folder")
    d.add_argument("--frames", type=int, default=48, help="length of the clip in frames")
    _config_args(d)
    # its options live with the training code, which imports torch: parsed only when used
    sub.add_parser("train", help="train the RefSTAR network (refstar train --help)", add_help=False)
    sub.add_parser("eval", help="compare restored media with the originals: PSNR/SSIM, identity, "
                   "flicker (refstar eval --help)", add_help=False)
    # Ray entry points: their options live with the jobs (python -m jobs.restore / jobs.s3_trigger)
    sub.add_parser("run", help="restore an archive on Ray: a local one, or the cluster this runs in "
                   "(refstar run --help)", add_help=False)
    sub.add_parser("submit", help="submit an archive job to a Ray cluster (refstar submit --help)", add_help=False)
    sub.add_parser("trigger", help="consume S3 upload events from SQS, one Ray job per new item "
                   "(refstar trigger --help)", add_help=False)
    st = sub.add_parser("status", help="items and jobs of an output folder/prefix", formatter_class=HelpFormatter)
    st.add_argument("-o", "--output", required=True, metavar="URI", help="the output folder or s3:// prefix")
    st.add_argument("--address", metavar="URL", help="Ray job server, e.g. http://head:8265: adds job states")
    st.add_argument("--resubmit", action="store_true",
                    help="submit failed/stopped jobs of this output again (needs --address)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    c = sub.add_parser("config", help="configuration")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    show = csub.add_parser("show", help="print the effective configuration as YAML", formatter_class=HelpFormatter)
    _config_args(show)
    return ap


def _print_result(res) -> None:
    out = sys.stdout  # looked up per call: tests and callers may redirect it
    c = res.counts
    if res.status == "skipped":
        print(f"{res.source}: already done in {res.output} (use --force to redo)", file=out)
        return
    line = f"{res.source}: {res.status}"
    if res.status == "analysed":
        line += (f": {c.get('faces', 0)} faces, {c.get('identities', 0)} people, {c.get('references', 0)} "
                 f"references; choose whom to restore in {res.output}/report.html")
        c = {}
    if c:
        line += (f": {c.get('faces', 0)} faces ({c.get('faces_restored', 0)} restored, "
                 f"{c.get('faces_with_reference', 0)} with a reference, {c.get('faces_too_small', 0)} too small), "
                 f"{c.get('identities', 0)} people")
    if res.output:
        line += f" -> {res.output}"
    print(line, file=out)
    for err in res.errors:
        print(f"  error: {err}", file=sys.stderr)


def run_restore(inputs: list[str], output: str, cfg, force: bool = False, analyse: bool = False) -> int:
    """Restore each input in turn; with ``identity.link_archive`` every input is analysed and
    planned first and the people of all of them are linked, so that a person with no sharp face
    in one input is restored with their references from another (``worker.item.lifecycle``).
    ``analyse``: analyse and plan only (``refstar analyse``)."""
    from worker.item.lifecycle import finish_item, link_started
    from worker.item.pipeline import Engine, start_item
    from worker.item.staging import input_bytes
    from worker.progress import BatchProgress

    t0 = time.monotonic()
    if cfg.output.layout == "mirror":
        from worker.item.layout import check_unique, input_name

        check_unique([(src, input_name(src)) for src in inputs])
    engine = Engine(cfg)
    link = cfg.identity.link_archive and len(inputs) > 1
    batch = BatchProgress([input_bytes(src) for src in inputs], enabled=cfg.progress and len(inputs) > 1)
    results, started = [], []

    def finished(k: int, res: ItemResult) -> None:
        _print_result(res)
        results.append(res)
        batch.finished(k, worked=res.status != "skipped")

    for i, src in enumerate(inputs, 1):
        if cfg.progress and len(inputs) > 1:
            print(f"[{i}/{len(inputs)}] {src}", file=sys.stderr)
        st = start_item(src, output, cfg, engine=engine, force=force, analyse_only=analyse)
        if link and not isinstance(st, ItemResult):
            started.append((i - 1, st))
            continue
        finished(i - 1, st if isinstance(st, ItemResult) else finish_item(st))
    if started:
        persons = link_started([st for _, st in started], engine.cfg)
        if cfg.progress:
            print(f"linked {sum(len(st.identities) for _, st in started)} people of {len(started)} "
                  f"inputs into {len(persons)} persons", file=sys.stderr)
        for k, st in started:
            finished(k, finish_item(st))
    failed = [r for r in results if r.status == "failed"]
    if cfg.output.write_report:
        from worker.outputs.index_html import write_index

        write_index(output)
    if len(inputs) > 1:
        print(f"{len(results)} items: {len(results) - len(failed)} {'analysed' if analyse else 'done'}, {len(failed)} failed "
              f"in {time.monotonic() - t0:.1f} s")
    return 1 if failed else 0


def _train(rest: list[str]) -> int:
    from jobs.train import add_train_arguments, run_train
    parser = argparse.ArgumentParser(prog="refstar train", formatter_class=HelpFormatter)
    return run_train(add_train_arguments(parser).parse_args(rest))


def _eval(rest: list[str]) -> int:
    from worker.outputs.evaluate import add_eval_arguments, run_eval

    return run_eval(add_eval_arguments(argparse.ArgumentParser(prog="refstar eval", formatter_class=HelpFormatter)).parse_args(rest))


def _run(rest: list[str]) -> int:
    from jobs.restore import main as run_main

    return run_main(rest, prog="refstar run")


def _submit(rest: list[str]) -> int:
    from jobs.submit import submit_main

    return submit_main(rest)


def _trigger(rest: list[str]) -> int:
    from jobs.s3_trigger import main as trigger_main

    return trigger_main(rest)


_DELEGATED = {"train": _train, "eval": _eval, "run": _run, "submit": _submit, "trigger": _trigger}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _DELEGATED:  # their options live with their code (lazy imports)
        return _DELEGATED[argv[0]](argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cmd in ("restore", "analyse"):
        args.inputs = args.inputs + args.more_inputs
        if not args.inputs:
            parser.error(f"{args.cmd}: give at least one INPUT")
    if args.cmd == "status":
        from jobs.status import run_status

        if args.resubmit and not args.address:
            print("refstar status: --resubmit needs --address (the cluster whose jobs to resubmit)", file=sys.stderr)
            return 2
        return run_status(args.output, args.address, args.resubmit, args.json)
    try:
        overrides = list(args.set)
        if getattr(args, "quiet", False):
            overrides.append("progress=false")
        if getattr(args, "link", False):
            overrides.append("identity.link_archive=true")
        if getattr(args, "fidelity", None) is not None:
            overrides.append(f"restore.fidelity={args.fidelity!r}")
        overrides += selection_overrides(args)
        if getattr(args, "references", None):
            overrides.append(f"references.library={json.dumps(args.references)}")
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"refstar: config error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "config":
        print(dump_config(cfg), end="")
        return 0
    setup_logging_from(args)
    if args.cmd == "demo":
        from worker.demo import run_demo

        return run_demo(args.output, cfg, frames=args.frames)
    from worker import storage
    from worker.errors import EXPECTED_ERRORS
    from worker.signals import exit_status, sigterm_unwinds

    if "://" not in args.output and Path(args.output).exists() and not Path(args.output).is_dir():
        print(f"refstar: output {args.output} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        storage.check_root(args.output)
        with sigterm_unwinds():
            return run_restore(args.inputs, args.output, cfg, force=args.force, analyse=args.cmd == "analyse")
    except (*EXPECTED_ERRORS, ValueError) as e:  # a model, backend or library that cannot be loaded at all
        print(f"refstar: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        status = exit_status(e)
        print(f"refstar: {'terminated' if status == 143 else 'interrupted'}; partial files were "
              "removed, items without _DONE are redone by the next run", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
