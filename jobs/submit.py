"""Submitting archive jobs to a Ray cluster (``JobSubmissionClient``), or to a Ray started here.

Used by ``refstar submit``, the S3 trigger and ``refstar status --resubmit``. Every job runs
``python -m jobs.restore``; its ``metadata`` says which item(s) and output it is for, so status
can be read back from the job table.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

META_KEY = "refstar"  # metadata marker of our jobs in a shared cluster's job table


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

        self._started = False
        if address is None:
            import ray

            if not ray.is_initialized():
                ctx = ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                               log_to_driver=False)
                self._started = True
            else:
                ctx = ray.get_runtime_context()  # pragma: no cover - a caller's own Ray
            url = getattr(ctx, "dashboard_url", None) or ray.worker.get_dashboard_url()
            if not url:
                raise RuntimeError("the local Ray started without its dashboard (is ray[default] installed?)")
            address = url if url.startswith("http") else f"http://{url}"
            python = python or sys.executable  # same machine: this very interpreter
        self.address = address
        self.python = python or "python"
        self.client = JobSubmissionClient(address)

    def submit(self, req: JobRequest) -> str:
        """Submit; returns the submission id. Raises DuplicateJob when it exists already."""
        if self.exists(req.submission_id):
            raise DuplicateJob(req.submission_id)
        try:
            return self.client.submit_job(entrypoint=shlex.join(req.argv(self.python)),
                                          submission_id=req.submission_id, metadata=req.metadata(),
                                          entrypoint_num_cpus=0)
        except RuntimeError as e:  # the job server answers 400/500 with the ValueError's text
            if "already exists" in str(e):  # lost a race with another consumer
                raise DuplicateJob(req.submission_id) from None
            raise

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
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def pool_args(analysis_actors: int | None = None, restore_actors: int | None = None,
              restore_gpus: float | None = None) -> list[str]:
    out: list[str] = []
    for flag, v in (("--analysis-actors", analysis_actors), ("--restore-actors", restore_actors),
                    ("--restore-gpus", restore_gpus)):
        if v is not None:
            out += [flag, str(v)]
    return out


def describe(argv: Sequence[str]) -> str:
    return shlex.join(argv)
