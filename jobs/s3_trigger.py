"""S3-triggered pipeline: an SQS consumer that submits one Ray job per new item.

    refstar trigger --queue URL --input s3://bucket/in/ --output s3://bucket/out/ [--address URL]
    python -m jobs.s3_trigger ...   (the same)

The queue is fed by the input bucket's ``s3:ObjectCreated:*`` notifications (directly, or
wrapped by SNS or EventBridge). Each new video is one item; images in a first-level folder of the
input prefix form one album item (a burst is held until ``--album-settle`` seconds pass with no
new image there); images lying directly in the input prefix are one item each, as in
``jobs.restore``'s archive listing. Every item becomes ``python -m jobs.restore --item URI`` as a
Ray job whose ``submission_id`` is derived from bucket, key and version/ETag, so a duplicate event
never starts a second job. A message is deleted only once its job is accepted; anything else is
left to the queue's redrive policy (dead-letter queue after N receives). SIGTERM drains: no new
receives, held messages are handed back to the queue, the process exits 0.
"""

from __future__ import annotations

import argparse
import shlex
import sys

DEFAULT_WAIT_S = 20  # SQS long-poll maximum
DEFAULT_VISIBILITY_S = 120
DEFAULT_ALBUM_SETTLE_S = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from worker.helptext import HelpFormatter, plain

    p = argparse.ArgumentParser(prog="refstar trigger", description=plain(__doc__.split("\n\n")[0]),
                                formatter_class=HelpFormatter)
    p.add_argument("--queue", required=True, metavar="URL",
                   help="SQS queue URL that receives the input bucket's ObjectCreated events")
    p.add_argument("-i", "--input", required=True, metavar="S3_PREFIX", help="watched s3://bucket/prefix/")
    p.add_argument("-o", "--output", required=True, metavar="URI",
                   help="where restored items go (s3://bucket/prefix/); events for keys below it are ignored")
    p.add_argument("--address", metavar="URL",
                   help="Ray dashboard/job server, e.g. http://head:8265 (default: start a local Ray)")
    p.add_argument("--config", metavar="FILE", help="YAML config file passed to every job")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to every job")
    p.add_argument("--job-args", default="", metavar="ARGS",
                   help="extra arguments for python -m jobs.restore, e.g. '--restore-gpus 1 --restore-actors 2'")
    p.add_argument("--python", default=None, metavar="EXE",
                   help="interpreter on the cluster for the job entrypoint (default: 'python'; "
                        "this interpreter when Ray is local)")
    p.add_argument("--suffix", action="append", default=[], metavar=".EXT",
                   help="only keys with these suffixes (default: every video and image type the worker reads)")
    p.add_argument("--album-settle", type=float, default=DEFAULT_ALBUM_SETTLE_S, metavar="S",
                   help="seconds without a new image in an album folder before it is submitted")
    p.add_argument("--wait", type=int, default=DEFAULT_WAIT_S, metavar="S", help="SQS long-poll seconds (0-20)")
    p.add_argument("--visibility", type=int, default=DEFAULT_VISIBILITY_S, metavar="S",
                   help="seconds a received message stays hidden; extended while it is held")
    p.add_argument("--max-idle", type=float, default=None, metavar="S",
                   help="exit after this many seconds with nothing received or held (default: run forever)")
    p.add_argument("--dry-run", action="store_true", help="print what would be submitted; delete nothing")
    args = p.parse_args(argv)
    if not args.input.startswith("s3://"):
        p.error("--input must be an s3:// prefix")
    from worker import storage

    try:
        storage.check_root(args.output)
    except storage.StorageError as e:
        p.error(str(e))
    if not 0 <= args.wait <= 20:
        p.error("--wait must be 0..20 seconds (the SQS long-poll limit)")
    if args.visibility < 2:
        p.error("--visibility must be at least 2 seconds")
    try:
        args.job_argv = shlex.split(args.job_args)
    except ValueError as e:
        p.error(f"--job-args: {e}")
    return args


def main(argv: list[str] | None = None) -> int:
    from jobs.trigger_consumer import run_trigger

    return run_trigger(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
