"""Submitting archive jobs to a Ray cluster (``JobSubmissionClient``), or to a Ray started here.

Used by ``refstar submit``, the S3 trigger and ``refstar status --resubmit``. Every job runs
``python -m jobs.restore``; its ``metadata`` says which item(s) and output it is for, so status
can be read back from the job table.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass

from jobs.ray_session import RaySession

META_KEY = "refstar"  # metadata marker of our jobs in a shared cluster's job table
# a cluster that has just started has no job agent for a while: a minute or more on a busy
# 2-core machine; submissions retry this long (seconds) before the error is the user's
AGENT_WAIT_S = 180.0


@dataclass(frozen=True)
class JobRequest:
    """One job: ``python -m jobs.restore`` with these arguments."""

    submission_id: str
    output: str
    items: tuple[str, ...] = ()  # --item URIs; empty when input/manifest is given in extra_args
    config: str | None = None
    sets: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()  # pool options, --input/--manifest, ...
    source: str = "submit"  # who asked: "submit" | "trigger" | "resubmit"

    def argv(self, python: str) -> list[str]:
        args = [python, "-m", "jobs.restore"]
        for uri in self.items:
            args += ["--item", uri]
        args += ["--output", self.output, "--job-name", self.submission_id]
        if self.config:
            args += ["--config", self.config]
        for s in self.sets:
            args += ["--set", s]
        return args + list(self.extra_args)

    def metadata(self) -> dict[str, str]:
        meta = {META_KEY: self.source, "output": self.output}
        if self.items:
            meta["items"] = "\n".join(self.items)
        return meta


class DuplicateJob(Exception):
    """A job with this submission id exists already (counts as submitted)."""


class JobSubmitter:
    """Submits to ``address`` (``http://head:8265``), or starts a local Ray when it is None.

    Token authentication (Ray >= 2.52) is taken from the environment (``RAY_AUTH_TOKEN``) by
    Ray's own client; nothing here reads or logs it.
    """

    def __init__(self, address: str | None = None, python: str | None = None, num_cpus: int | None = None):
        from ray.job_submission import JobSubmissionClient

        self._ray = RaySession()
        if address is None:
            ctx = self._ray.start(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                                  log_to_driver=False)
            if ctx is not None:
                url = ctx.dashboard_url
            else:  # the caller's own Ray: no public API hands its dashboard URL back
                from ray._private.worker import get_dashboard_url

                url = get_dashboard_url()
            if not url:
                raise RuntimeError("the local Ray started without its dashboard (is ray[default] installed?)")
            address = url if url.startswith("http") else f"http://{url}"
            python = python or sys.executable  # same machine: this very interpreter
        self.address = address
        self.python = python or "python"
        self.client = JobSubmissionClient(address)

    def submit(self, req: JobRequest) -> str:
        """Submit; returns the submission id. Raises DuplicateJob when it exists already."""
        return self.submit_entrypoint(req.submission_id, shlex.join(req.argv(self.python)), req.metadata())

    def submit_entrypoint(self, submission_id: str, entrypoint: str, metadata: dict[str, str]) -> str:
        if self.exists(submission_id):
            raise DuplicateJob(submission_id)
        deadline, wait = time.monotonic() + AGENT_WAIT_S, 1.0
        while True:
            try:
                return self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                              metadata=metadata, entrypoint_num_cpus=0)
            except RuntimeError as e:  # the job server answers 400/500 with the ValueError's text
                if "already exists" in str(e):  # lost a race with another consumer
                    raise DuplicateJob(submission_id) from None
                if "No available agent" not in str(e) or time.monotonic() + wait > deadline:
                    raise
                time.sleep(wait)
                wait = min(2 * wait, 15.0)

    def exists(self, submission_id: str) -> bool:
        try:
            self.client.get_job_info(submission_id)
            return True
        except RuntimeError as e:
            if "does not exist" in str(e) or "404" in str(e):
                return False
            raise

    def jobs(self) -> list:
        """Our jobs in the cluster's job table (``JobDetails``), oldest first."""
        rows = [j for j in self.client.list_jobs() if (j.metadata or {}).get(META_KEY)]
        return sorted(rows, key=lambda j: j.start_time or 0)

    def status(self, submission_id: str) -> str:
        return str(self.client.get_job_status(submission_id).value)

    def logs(self, submission_id: str) -> str:
        return self.client.get_job_logs(submission_id)

    def close(self) -> None:
        """Stop the local Ray this submitter started (and every process it left), if any."""
        self._ray.stop()


def submit_main(argv: list[str]) -> int:
    """``refstar submit [--address URL] [--submission-id ID] [--wait] -- JOB_ARGS``: the archive job
    (``python -m jobs.restore JOB_ARGS``, checked here first) as a Ray job."""
    import argparse
    import hashlib

    from jobs.restore import parse_args as job_parse_args
    from worker.helptext import HelpFormatter, plain

    p = argparse.ArgumentParser(prog="refstar submit", description=plain(submit_main.__doc__.split("\n")[0]),
                                formatter_class=HelpFormatter)
    p.add_argument("--address", help="Ray job server, e.g. http://head:8265 (default: $RAY_ADDRESS, "
                   "else a local Ray that lives as long as this command: use with --wait)")
    p.add_argument("--submission-id", help="job id (default: derived from the arguments and the time)")
    p.add_argument("--python", help="interpreter on the cluster (default: python)")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends; exit 0 if it succeeded")
    p.add_argument("job_args", nargs=argparse.REMAINDER, help="arguments of python -m jobs.restore")
    args = p.parse_args(argv)
    job_argv = args.job_args[1:] if args.job_args[:1] == ["--"] else args.job_args
    job = job_parse_args(job_argv)  # exits 2 with the job's own usage message when they are wrong
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if address is None and not args.wait:
        p.error("without --address (or RAY_ADDRESS) the job would die with this command: add --wait")
    sid = args.submission_id or ("refstar-" + hashlib.sha256(shlex.join(job_argv).encode()).hexdigest()[:10]
                                 + time.strftime("-%Y%m%d-%H%M%S", time.gmtime()))
    if not job.job_name:
        job_argv = [*job_argv, "--job-name", sid]
    sub = JobSubmitter(address, args.python)
    try:
        meta = JobRequest(sid, job.output, tuple(job.item), source="submit").metadata()
        try:
            sub.submit_entrypoint(sid, shlex.join([sub.python, "-m", "jobs.restore", *job_argv]), meta)
        except DuplicateJob:
            print(f"{sid}: already submitted", file=sys.stderr)
        print(sid)
        if not args.wait:
            return 0
        last = None
        while True:
            status = sub.status(sid)
            if status != last:
                print(f"{sid}: {status}", file=sys.stderr, flush=True)
                last = status
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(2)
        sys.stderr.write(sub.logs(sid)[-4000:])
        return 0 if last == "SUCCEEDED" else 1
    finally:
        sub.close()
