"""The SQS consumer behind ``refstar trigger`` (arguments: ``jobs.s3_trigger.parse_args``).

A message's life: received (hidden for ``--visibility`` s) -> parsed -> each event routed to an
item -> videos and single images submitted at once, album images held until their folder has
been quiet for ``--album-settle`` s (hidden time extended meanwhile) -> deleted once every item it
named was accepted (a duplicate submission id counts as accepted). A message whose submission
failed is left hidden until its visibility lapses, then redelivered; a malformed one is handed
back at once, so the queue's redrive policy moves it to the dead-letter queue after its
``maxReceiveCount`` receives. Every decision is one JSON line on stdout.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from jobs.submit import DuplicateJob, JobRequest, JobSubmitter
from worker import storage
from worker.collection import events


def log_line(decision: str, **fields) -> None:
    rec = {"t": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "decision": decision}
    rec.update({k: v for k, v in fields.items() if v is not None})
    print(json.dumps(rec, sort_keys=False), flush=True)


@dataclass
class Held:
    """A received message we still owe an answer: its items not yet accepted by Ray."""

    message_id: str
    receipt: str
    receives: int
    hidden_until: float  # monotonic seconds
    pending: set[str] = field(default_factory=set)  # album folders it waits on
    failed: bool = False


@dataclass
class Burst:
    """Album images arriving one by one: submitted once the folder has been quiet."""

    last_event: float
    messages: list[Held] = field(default_factory=list)


class DryRunSubmitter:
    """Logs what would be submitted; accepts nothing, so nothing is deleted."""

    python = "python"

    def submit(self, req: JobRequest) -> str:
        raise DryRun(req)

    def close(self) -> None:
        pass


class DryRun(Exception):
    pass


class Consumer:
    def __init__(self, sqs, submitter, args, log: Callable[..., None] = log_line,
                 clock: Callable[[], float] = time.monotonic):
        self.sqs, self.submitter, self.args, self.log, self.clock = sqs, submitter, args, log, clock
        self.suffixes = tuple(args.suffix)
        self.bursts: dict[str, Burst] = {}
        self.stop = threading.Event()
        self.counts = {"received": 0, "submitted": 0, "duplicate": 0, "deleted": 0, "failed": 0}

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        idle_since = self.clock()
        while not self.stop.is_set():
            got = self.poll(self._wait())
            self.flush_albums()
            self.extend()
            if got or self.bursts:
                idle_since = self.clock()
            elif self.args.max_idle is not None and self.clock() - idle_since >= self.args.max_idle:
                self.log("idle", seconds=self.args.max_idle)
                break
        self.drain()
        self.log("stopped", **self.counts)
        return 0

    def _wait(self) -> int:
        wait = float(self.args.wait)
        if self.bursts:  # wake up when the next album is due, and in time to extend visibility
            due = min(b.last_event for b in self.bursts.values()) + self.args.album_settle
            wait = min(wait, max(0.0, due - self.clock()), self.args.visibility / 3)
        return int(math.ceil(wait))

    def poll(self, wait: int) -> int:
        resp = self.sqs.receive_message(QueueUrl=self.args.queue, MaxNumberOfMessages=10,
                                        WaitTimeSeconds=wait, VisibilityTimeout=self.args.visibility,
                                        AttributeNames=["ApproximateReceiveCount"])
        msgs = resp.get("Messages", [])
        for m in msgs:
            self.counts["received"] += 1
            held = Held(m["MessageId"], m["ReceiptHandle"],
                        int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                        self.clock() + self.args.visibility)
            self.handle(held, m.get("Body", ""))
        return len(msgs)

    # -- one message ----------------------------------------------------------------------------
    def handle(self, held: Held, body: str) -> None:
        try:
            msg = events.parse_message(body)
        except events.MalformedEvent as e:
            # never deleted: handed back now, the redrive policy dead-letters it after N receives
            self.log("malformed", message=held.message_id, receives=held.receives, reason=str(e))
            self._release(held)
            return
        if msg.test:
            self.log("test-event", message=held.message_id)
            self._delete(held)
            return
        for ev in msg.events:
            target = events.route(ev, self.args.input, self.args.output, self.suffixes)
            if isinstance(target, str):
                self.log("skipped", message=held.message_id, uri=ev.uri, reason=target)
            elif target.folder:
                burst = self.bursts.setdefault(target.uri, Burst(self.clock()))
                burst.last_event = self.clock()
                if held not in burst.messages:
                    burst.messages.append(held)
                held.pending.add(target.uri)
                self.log("held", message=held.message_id, uri=ev.uri, album=target.uri,
                         settle_s=self.args.album_settle)
            elif not self._submit(target.uri, target.version, held.message_id):
                held.failed = True
        self._settle(held)

    def _settle(self, held: Held) -> None:
        if not held.pending and not held.failed:
            self._delete(held)

    def _submit(self, uri: str, version: str, message_id: str) -> bool:
        """True when Ray accepted the job (or already had it)."""
        sid = events.submission_id(uri, version, self.args.output)
        req = JobRequest(sid, self.args.output, (uri,), self.args.config, tuple(self.args.sets),
                         tuple(self.args.job_argv), source="trigger")
        try:
            self.submitter.submit(req)
        except DuplicateJob:
            self.counts["duplicate"] += 1
            self.log("duplicate", message=message_id, uri=uri, submission_id=sid)
            return True
        except DryRun:
            self.log("dry-run", message=message_id, uri=uri, submission_id=sid,
                     entrypoint=" ".join(req.argv(self.submitter.python)))
            return False
        except Exception as e:  # noqa: BLE001 - Ray unreachable, refused...: the queue retries
            self.counts["failed"] += 1
            self.log("submit-failed", message=message_id, uri=uri, submission_id=sid,
                     reason=f"{type(e).__name__}: {str(e)[:300]}")
            return False
        self.counts["submitted"] += 1
        self.log("submitted", message=message_id, uri=uri, submission_id=sid)
        return True

    # -- albums and visibility ------------------------------------------------------------------
    def flush_albums(self, force: bool = False) -> None:
        now = self.clock()
        for folder, burst in list(self.bursts.items()):
            if not force and now - burst.last_event < self.args.album_settle:
                continue
            del self.bursts[folder]
            try:
                version = events.folder_version(folder)
            except storage.StorageError as e:
                self.log("submit-failed", uri=folder, reason=str(e))
                ok = False
            else:
                ok = self._submit(folder, version, ",".join(h.message_id for h in burst.messages))
            for held in burst.messages:
                held.pending.discard(folder)
                held.failed |= not ok
                self._settle(held)

    def extend(self) -> None:
        now = self.clock()
        for held in {id(h): h for b in self.bursts.values() for h in b.messages}.values():
            if held.hidden_until - now < self.args.visibility / 2:
                try:
                    self.sqs.change_message_visibility(QueueUrl=self.args.queue, ReceiptHandle=held.receipt,
                                                       VisibilityTimeout=self.args.visibility)
                    held.hidden_until = now + self.args.visibility
                except Exception as e:  # noqa: BLE001 - it will simply be redelivered
                    self.log("extend-failed", message=held.message_id, reason=str(e)[:300])

    def drain(self) -> None:
        """Stopping: messages of albums not yet submitted go back to the queue for the next consumer."""
        for folder, burst in list(self.bursts.items()):
            for held in burst.messages:
                if not held.failed:
                    held.failed = True
                    self._release(held)
                    self.log("released", message=held.message_id, album=folder)
        self.bursts.clear()

    def _release(self, held: Held) -> None:
        try:
            self.sqs.change_message_visibility(QueueUrl=self.args.queue, ReceiptHandle=held.receipt,
                                               VisibilityTimeout=0)
        except Exception as e:  # noqa: BLE001 - it reappears when its visibility lapses anyway
            self.log("release-failed", message=held.message_id, reason=str(e)[:300])

    def _delete(self, held: Held) -> None:
        if self.args.dry_run:
            return
        self.sqs.delete_message(QueueUrl=self.args.queue, ReceiptHandle=held.receipt)
        self.counts["deleted"] += 1
        self.log("deleted", message=held.message_id)


def sqs_client():
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("sqs", config=Config(retries={"mode": "standard", "max_attempts": 8}))


def run_trigger(args) -> int:
    """``refstar trigger``: consume until SIGTERM/SIGINT (or ``--max-idle``); exit 0 when drained."""
    sqs = sqs_client()
    try:
        sqs.get_queue_attributes(QueueUrl=args.queue, AttributeNames=["QueueArn"])
    except Exception as e:  # noqa: BLE001 - wrong URL or no permission: say so before anything else
        print(f"refstar trigger: cannot use queue {args.queue}: {e}", file=sys.stderr)
        return 2
    try:
        submitter = DryRunSubmitter() if args.dry_run else JobSubmitter(args.address, args.python)
    except Exception as e:  # noqa: BLE001 - no job server there: say so and let the supervisor retry
        print(f"refstar trigger: cannot reach the Ray job server at {args.address or 'a local Ray'}: "
              f"{type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
        return 2
    consumer = Consumer(sqs, submitter, args)

    def _stop(signum, _frame):
        consumer.log("stopping", signal=signal.Signals(signum).name)
        consumer.stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    consumer.log("started", queue=args.queue, input=args.input, output=args.output,
                 ray=getattr(submitter, "address", None), dry_run=args.dry_run or None)
    try:
        return consumer.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        submitter.close()
