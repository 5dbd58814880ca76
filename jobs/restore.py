"""Archive job: restore every item of a folder, an S3 prefix, a JSONL manifest or a list of
``--item`` URIs on Ray (``refstar run`` is this; ``refstar submit`` and the S3 trigger submit it).

    python -m jobs.restore --input s3://bucket/archive/ --output s3://bucket/restored/
    ray job submit --address http://head:8265 -- python -m jobs.restore --input ... --output ...

Items whose ``_DONE`` exists are skipped, so a rerun resumes; a failing item is reported in its
manifest and the job summary and never stops the others; the exit status is 1 if any item failed.
Each item is computed like ``worker.item.pipeline.restore_item`` (same stages, same outputs), with its
segments / images spread over the actors of ``worker.cluster.ray_adapter`` (``jobs.items``); with
``identity.link_archive`` the people of all items are linked first (``worker.collection.archive_identity``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections.abc import Callable

from worker import storage
from worker.collection import archive
from worker.config import (
    FIDELITY_HELP,
    ConfigError,
    add_selection_args,
    load_config,
    selection_overrides,
)
from worker.helptext import HelpFormatter, plain
from worker.item.litter import work_dir
from worker.logs import add_log_args, setup_logging_from
from worker.records import ItemResult


def run_job(items: list[archive.ArchiveItem], out_root: str, config_file: str | None, sets: list[str],
            opts, work: str | None = None, force: bool = False,
            on_restore: Callable[[], None] | None = None, pools=None, job_name: str | None = None) -> dict:
    """Restore ``items`` into ``out_root``; returns the job summary, also written to
    ``_jobs/<job_name>.json`` there (``_job_summary.json`` without a name).

    With ``identity.link_archive`` every item is analysed and planned before any is restored,
    the identities of all items are linked into archive-wide persons, and each person's best
    references are shared by all their appearances (the driver holds every item's face records
    and staged input meanwhile)."""
    from jobs.items import start_item
    from worker.cluster.ray_pools import Pools
    from worker.item.lifecycle import finish_item, link_started
    from worker.progress import BatchProgress

    t0 = time.monotonic()
    base = load_config(config_file, sets)
    if base.output.layout == "mirror":
        from worker.item.layout import check_unique

        check_unique([(item.uri, item.rel or item.name) for item in items])
    link = base.identity.link_archive
    tmp_root = work_dir("refstar-job-")
    work = work or str(tmp_root / "segments")
    storage.makedirs(work)
    own_pools = pools is None
    rows: list[tuple[archive.ArchiveItem, ItemResult]] = []
    started = []
    persons: list = []

    batch = BatchProgress([item.size for item in items], enabled=base.progress)

    def log(n: int, res: ItemResult) -> None:
        print(f"[{n}/{len(items)}] {res.item_id}: {res.status} in {res.timings.get('total', 0):.1f} s "
              f"{json.dumps(res.counts)}" + "".join(f"\n  error: {e}" for e in res.errors),
              file=sys.stderr, flush=True)
        batch.finished(n - 1, worked=res.status != "skipped")

    try:
        for n, item in enumerate(items, 1):
            try:
                cfg = archive.item_config(config_file, sets, item)
                iid = archive.item_id(item, cfg)  # stats the input: it may have gone
                layout = archive.item_layout(item, out_root, cfg)
            except (ConfigError, storage.StorageError, FileNotFoundError) as e:
                from worker.records import ItemError

                stage = "config" if isinstance(e, ConfigError) else "read"
                rows.append((item, ItemResult("", item.uri, item.kind, "failed",
                                              errors=[ItemError(item.uri, str(e), stage)])))
                print(f"[{n}/{len(items)}] {item.uri}: failed: {e}", file=sys.stderr, flush=True)
                batch.finished(n - 1, worked=False)
                continue
            if not force and layout.done_by(iid):
                rows.append((item, ItemResult(iid, item.uri, item.kind, "skipped",
                                              output=layout.final_dir(iid))))
                print(f"[{n}/{len(items)}] {iid}: skipped (done)", file=sys.stderr, flush=True)
                batch.finished(n - 1, worked=False)
                continue
            if pools is None:  # no actors for a rerun that has nothing to do
                pools = Pools(base, opts)
            tmp = tmp_root / f"item-{n}"
            tmp.mkdir()
            st = start_item(pools, item, cfg, layout, work, tmp, on_restore)
            if link and not pools.stuck:
                started.append((n, item, st))
                continue
            res = finish_item(st)
            rows.append((item, res))
            log(n, res)
            if pools.stuck:
                break
        if started and not pools.stuck:
            persons = link_started([st for _, _, st in started], base)
            print(f"linked {sum(len(st.identities) for _, _, st in started)} identities of "
                  f"{len(started)} items into {len(persons)} persons", file=sys.stderr, flush=True)
        for n, item, st in started:
            res = finish_item(st) if not pools.stuck else _not_run(item, pools.stuck, st.result)
            rows.append((item, res))
            log(n, res)
        if pools is not None and pools.stuck:  # nothing more can run: say so for every item left
            seen = {id(item) for item, _ in rows}
            rows += [(item, _not_run(item, pools.stuck)) for item in items if id(item) not in seen]
            print(f"job stopped: {pools.stuck}", file=sys.stderr, flush=True)
    finally:
        if own_pools and pools is not None:
            pools.shutdown()
        shutil.rmtree(tmp_root, ignore_errors=True)
    summary = archive.summarise(rows, time.monotonic() - t0)
    summary["job"] = job_name
    if link:
        summary["persons"] = persons
    where = storage.join(out_root, "_jobs", f"{job_name}.json") if job_name else storage.join(out_root, "_job_summary.json")
    storage.write_atomic(where, json.dumps(summary, indent=1) + "\n")
    if base.output.write_report:
        from worker.outputs.index_html import write_index

        write_index(out_root)
    return summary


def _not_run(item: archive.ArchiveItem, why: str, result: ItemResult | None = None) -> ItemResult:
    """The result of an item the job could not run (or finish) because its pools are stuck."""
    from worker.records import ItemError

    result = result or ItemResult("", item.uri, item.kind)
    result.status = "failed"
    result.errors.append(ItemError(item.uri, f"not run: {why}", "job"))
    return result


def parse_args(argv: list[str] | None = None, prog: str = "python -m jobs.restore") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=plain(__doc__.split("\n\n")[0]),
                                formatter_class=HelpFormatter)
    p.add_argument("-i", "--input", help="archive: local folder or s3:// prefix")
    p.add_argument("--manifest", help="JSONL manifest (local path or s3:// URI) instead of --input")
    p.add_argument("--item", action="append", default=[], metavar="URI",
                   help="one item instead of --input: a video, an image or an album folder (repeatable)")
    p.add_argument("-o", "--output", required=True, help="output folder or s3:// prefix")
    p.add_argument("--address", help="Ray cluster address (default: the job's cluster, else a local one)")
    p.add_argument("--config", metavar="FILE", help="YAML config file")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set restorer=none")
    p.add_argument("--fidelity", type=float, metavar="F", help=FIDELITY_HELP)
    add_selection_args(p)
    add_log_args(p, level="info")  # the pools' waiting lines are info
    pool = p.add_argument_group(
        "actor pools", "Unset sizes fill the cluster; analysis and restore actors that do not fit "
        "side by side take turns. Defaults work on any machine, a 2-core laptop included.")
    pool.add_argument("--analysis-actors", type=int, metavar="N",
                      help="analysis actors (default: the cluster's CPUs / --analysis-cpus)")
    pool.add_argument("--restore-actors", type=int, metavar="N", help="restore actors (default: the "
                      "cluster's GPUs / --restore-gpus when that is set, else CPUs / --restore-cpus)")
    pool.add_argument("--analysis-cpus", type=float, default=1.0, metavar="N", help="CPUs reserved per analysis actor")
    pool.add_argument("--restore-cpus", type=float, default=1.0, metavar="N", help="CPUs reserved per restore actor")
    pool.add_argument("--restore-gpus", type=float, default=0.0, metavar="N", help="GPUs per restore actor")
    pool.add_argument("--segment-frames", type=int, default=250, metavar="N",
                      help="minimum frames per video segment")
    pool.add_argument("--placement-timeout", type=float, default=900.0, metavar="S",
                      help="stop the job when no actor of a pool could be placed in S seconds, "
                           "e.g. GPUs asked of a cluster that has none")
    p.add_argument("--work", metavar="URI", help="folder/prefix for segment files (a shared one on multi-node clusters)")
    p.add_argument("--force", action="store_true", help="redo items that are already done")
    p.add_argument("--job-name", metavar="NAME", help="write the summary to <output>/_jobs/NAME.json "
                   "(default: <output>/_job_summary.json); the S3 trigger passes its submission id")
    args = p.parse_args(argv)
    if sum(map(bool, (args.input, args.manifest, args.item))) != 1:
        p.error("give exactly one of --input, --manifest and --item")
    for name in ("analysis_actors", "restore_actors"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("analysis_cpus", "restore_cpus", "restore_gpus"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    if args.segment_frames < 1 or args.placement_timeout <= 0:
        p.error("--segment-frames and --placement-timeout must be positive")
    if args.fidelity is not None:
        args.sets.append(f"restore.fidelity={args.fidelity!r}")
    args.sets += selection_overrides(args)
    if args.job_name and not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", args.job_name):
        p.error("--job-name: letters, digits, '.', '_' and '-' only")
    return args


def main(argv: list[str] | None = None, prog: str = "python -m jobs.restore") -> int:
    from jobs.ray_session import ray_session, sigterm_unwinds
    from worker.cluster.ray_pools import PoolOptions
    from worker.signals import exit_status

    args = parse_args(argv, prog)
    setup_logging_from(args)
    try:
        load_config(args.config, args.sets)  # a bad config fails the job before any work
        storage.check_root(args.output)
        if args.manifest:
            items = archive.read_manifest(storage.read_bytes(args.manifest).decode())
        elif args.item:
            items = archive.items_from_uris(args.item)
        else:
            items = archive.list_prefix(args.input)
    except (ConfigError, storage.StorageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opts = PoolOptions(args.analysis_actors, args.restore_actors, args.analysis_cpus, args.restore_cpus,
                       args.restore_gpus, args.segment_frames, placement_timeout_s=args.placement_timeout)
    try:
        with sigterm_unwinds(), ray_session(args.address):
            summary = run_job(items, args.output, args.config, args.sets, opts, args.work, args.force,
                              job_name=args.job_name)
    except KeyboardInterrupt as e:
        status = exit_status(e)
        print(f"{prog}: {'terminated' if status == 143 else 'interrupted'}; items without "
              "_DONE are redone by the next run", file=sys.stderr)
        return status
    print(json.dumps(summary, indent=1))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
