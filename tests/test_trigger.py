"""The S3-triggered pipeline end to end: moto's server (S3 + SQS, bucket notifications to the
queue, a dead-letter queue), a real local Ray cluster with its job server, and the consumer as
its own process (``python -m jobs.s3_trigger``), stopped with SIGTERM like a Kubernetes pod."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import ray
from ray.job_submission import JobSubmissionClient

from tests.mediagen import _group, _save_pil
from tests.test_segments import gop_video
from worker import storage
from worker.synthetic import FaceScene

pytest_plugins = ["tests.s3server"]
pytestmark = pytest.mark.slow

JOB_ARGS = "--segment-frames 12"  # the pools as a user gets them on this 2-CPU cluster
SETS = ["progress=false", "restore.crop_size=256"]


@pytest.fixture(scope="module")
def ray_address(s3_server):  # after s3_server: the cluster's processes inherit its environment
    ctx = ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    yield f"http://{ctx.dashboard_url}"
    ray.shutdown()


def make_queues(s3_server, bucket: str, max_receives: int = 2) -> tuple[object, str, str]:
    """A queue with a dead-letter queue, fed by the bucket's ObjectCreated events under in/."""
    sqs = boto3.session.Session().client("sqs", endpoint_url=s3_server.endpoint)
    dlq = sqs.create_queue(QueueName=f"{bucket}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)})
    url = sqs.create_queue(QueueName=bucket, Attributes={"VisibilityTimeout": "60", "RedrivePolicy": redrive})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3_server.client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
                                 "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"}]}}}]})
    return sqs, url, dlq


class Trigger:
    """``python -m jobs.s3_trigger`` in its own process; its JSON decision lines collected."""

    def __init__(self, tmp: Path, *args: str):
        self.log = tmp / f"trigger-{time.monotonic_ns()}.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "jobs.s3_trigger", *args], stdout=self._out,
                                     stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])

    def lines(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def decisions(self, kind: str) -> list[dict]:
        return [r for r in self.lines() if r["decision"] == kind]

    def wait_for(self, cond, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = cond()
            if got:
                return got
            assert self.proc.poll() is None, f"trigger exited early:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()[-3000:]}")

    def sigterm(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def trigger_args(url: str, bucket: str, address: str, **kw) -> list[str]:
    args = ["--queue", url, "--input", f"s3://{bucket}/in/", "--output", f"s3://{bucket}/out/",
            "--address", address, "--python", sys.executable, "--wait", "1", "--visibility", "20",
            "--job-args", JOB_ARGS]
    for s in SETS:
        args += ["--set", s]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def _upload_album(tmp: Path, prefix: str, persons: list[list[str]]) -> list[str]:
    keys = []
    for n, who in enumerate(persons):
        path = tmp / f"{Path(prefix).name}_{n}.jpg"
        _save_pil(_group(who, (320, 300), n)[0], path, quality=92)
        keys.append(storage.join(prefix, f"photo_{n}.jpg"))
        storage.upload_file(path, keys[-1])
    return keys


def _done_items(out: str) -> list[str]:
    return [u for u, _, _ in storage.list(out) if u.endswith("/_DONE")]


def test_uploads_become_restored_items_once(s3_server, ray_address, tmp_path):
    bucket = s3_server.new_bucket()
    sqs, url, dlq = make_queues(s3_server, bucket)
    trig = Trigger(tmp_path, *trigger_args(url, bucket, ray_address, album_settle=3))
    try:
        video = tmp_path / "clip.mp4"
        gop_video(FaceScene(persons=("hanks",), size=(320, 256), face_px=110, seed=3), video, 24,
                  degrade=range(4, 8))
        storage.upload_file(video, f"s3://{bucket}/in/reels/clip one.mp4")
        album = _upload_album(tmp_path, f"s3://{bucket}/in/family", [["t1_0"], ["t1_0", "hanks"], ["hanks"]])
        storage.write_atomic(f"s3://{bucket}/in/notes.txt", b"not media")
        sqs.send_message(QueueUrl=url, MessageBody="garbage")

        out = f"s3://{bucket}/out"
        # a job writes its summary after its item's _DONE: wait for both
        trig.wait_for(lambda: len(_done_items(out)) >= 2 and len(list(storage.list(f"{out}/_jobs"))) >= 2,
                      420, "two items done and their jobs summarised")

        # one job per item, the album's three images under one submission
        submitted = trig.decisions("submitted")
        assert sorted(r["uri"] for r in submitted) == [f"s3://{bucket}/in/family", f"s3://{bucket}/in/reels/clip one.mp4"]
        assert {r["uri"] for r in trig.decisions("held")} == set(album)
        summaries = [json.loads(storage.read_bytes(u)) for u, _, _ in storage.list(f"{out}/_jobs")]
        assert sorted(s["job"] for s in summaries) == sorted(r["submission_id"] for r in submitted)
        assert all((s["done"], s["failed"]) == (1, 0) for s in summaries), summaries
        manifests = {m["kind"]: m for m in (json.loads(storage.read_bytes(u.replace("_DONE", "manifest.json")))
                                            for u in _done_items(out))}
        assert manifests["video"]["counts"]["frames"] == 24 and len(manifests["video"]["identities"]) == 1
        assert manifests["album"]["counts"]["identities"] == 2
        assert len([f for f in manifests["album"]["files"] if f["status"] == "restored"]) == 3

        # the same S3 event delivered again starts no second job, and is still deleted
        etag = s3_server.client.head_object(Bucket=bucket, Key="in/reels/clip one.mp4")["ETag"].strip('"')
        again = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {
            "key": "in/reels/clip+one.mp4", "size": video.stat().st_size, "eTag": etag}}}]}
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(again))
        dup = trig.wait_for(lambda: trig.decisions("duplicate"), 60, "the duplicate")
        video_sid = next(r["submission_id"] for r in submitted if r["uri"].endswith(".mp4"))
        assert dup[0]["submission_id"] == video_sid
        jobs = [j for j in JobSubmissionClient(ray_address).list_jobs() if (j.metadata or {}).get("refstar")]
        assert sorted(j.submission_id for j in jobs) == sorted(r["submission_id"] for r in submitted)

        # a malformed message is handed back until the redrive policy dead-letters it
        def dead() -> list[str]:
            r = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1, MaxNumberOfMessages=10)
            return [m["Body"] for m in r.get("Messages", [])]
        assert trig.wait_for(dead, 90, "the dead-letter queue") == ["garbage"]
        assert len(trig.decisions("malformed")) == 2

        assert [r["uri"] for r in trig.decisions("skipped")] == [f"s3://{bucket}/in/notes.txt"]
        assert trig.decisions("test-event")
        assert trig.sigterm() == 0
        assert trig.lines()[-1]["decision"] == "stopped"
        left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                       "ApproximateNumberOfMessagesNotVisible"])
        assert set(left["Attributes"].values()) == {"0"}  # everything answered
    finally:
        trig.kill()


def test_sigterm_hands_held_messages_back(s3_server, ray_address, tmp_path):
    bucket = s3_server.new_bucket()
    sqs, url, _ = make_queues(s3_server, bucket)
    trig = Trigger(tmp_path, *trigger_args(url, bucket, ray_address, album_settle=600))
    try:
        keys = _upload_album(tmp_path, f"s3://{bucket}/in/late", [["t1_0"], ["hanks"]])
        trig.wait_for(lambda: len(trig.decisions("held")) == 2, 60, "two held images")
        assert trig.sigterm() == 0
        assert len(trig.decisions("released")) == 2 and not trig.decisions("submitted")
    finally:
        trig.kill()
    r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2, MaxNumberOfMessages=10)
    bodies = [json.loads(m["Body"]) for m in r.get("Messages", [])]
    got = sorted(f"s3://{bucket}/" + b["Records"][0]["s3"]["object"]["key"].replace("%2F", "/") for b in bodies)
    assert got == sorted(keys)  # nothing lost: the next consumer gets them


def _wait_job(client: JobSubmissionClient, sid: str, timeout: float = 300) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = str(client.get_job_status(sid).value)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(1)
    raise AssertionError(f"{sid} still {status}:\n{client.get_job_logs(sid)[-3000:]}")


def test_failed_job_is_resubmitted_without_redoing_finished_items(s3_server, ray_address, tmp_path, capsys):
    from worker.cli import main

    bucket = s3_server.new_bucket()
    video = tmp_path / "clip.mp4"
    gop_video(FaceScene(persons=("t1_0",), size=(320, 256), face_px=110, seed=5), video, 12)
    first, later, out = f"s3://{bucket}/in/first.mp4", f"s3://{bucket}/in/later.mp4", f"s3://{bucket}/out"
    storage.upload_file(video, first)
    job = ["--item", first, "--item", later, "--output", out, *JOB_ARGS.split(),
           *[a for s in SETS for a in ("--set", s)]]
    assert main(["submit", "--address", ray_address, "--python", sys.executable, "--", *job]) == 0
    sid = capsys.readouterr().out.strip()
    client = JobSubmissionClient(ray_address)
    assert _wait_job(client, sid) == "FAILED"  # later.mp4 is not there yet: its item failed, exit 1
    summary = json.loads(storage.read_bytes(f"{out}/_jobs/{sid}.json"))
    assert (summary["done"], summary["failed"]) == (1, 1)

    assert main(["status", "--output", out, "--address", ray_address, "--json"]) == 1  # a job failed
    state = json.loads(capsys.readouterr().out)
    assert [i["state"] for i in state["items"]] == ["done"]
    assert [(j["job"], j["status"]) for j in state["jobs"]] == [(sid, "FAILED")]

    storage.upload_file(video, later)
    assert main(["status", "--output", out, "--address", ray_address, "--resubmit", "--json"]) == 0
    retry = json.loads(capsys.readouterr().out)["resubmitted"]
    assert retry == [f"{sid}-retry1"]
    assert _wait_job(client, retry[0]) == "SUCCEEDED", client.get_job_logs(retry[0])[-3000:]
    summary = json.loads(storage.read_bytes(f"{out}/_jobs/{retry[0]}.json"))
    assert (summary["skipped"], summary["done"], summary["failed"]) == (1, 1, 0)  # first.mp4 not redone

    assert main(["status", "--output", out, "--address", ray_address, "--resubmit"]) == 0
    text = capsys.readouterr().out
    assert "resubmitted" not in text and text.count("done") >= 2 and "SUCCEEDED" in text


def test_dry_run_prints_the_jobs_and_deletes_nothing(s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    sqs, url, _ = make_queues(s3_server, bucket)
    storage.write_atomic(f"s3://{bucket}/in/a.mp4", b"not really a video: a dry run never reads it")
    trig = Trigger(tmp_path, *trigger_args(url, bucket, "http://127.0.0.1:9", max_idle=2), "--dry-run")
    try:
        assert trig.proc.wait(60) == 0
    finally:
        trig.kill()
    (run,) = trig.decisions("dry-run")
    assert run["uri"] == f"s3://{bucket}/in/a.mp4" and "-m jobs.restore --item" in run["entrypoint"]
    assert not trig.decisions("deleted") and trig.decisions("test-event")  # the test event is kept too
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert left["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "2"


def test_unreachable_ray_is_a_clear_error(s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    _, url, _ = make_queues(s3_server, bucket)
    trig = Trigger(tmp_path, *trigger_args(url, bucket, "http://127.0.0.1:9"))
    assert trig.proc.wait(60) == 2
    trig.kill()
    assert "cannot reach the Ray job server at http://127.0.0.1:9" in trig.log.read_text()


def test_failed_submission_leaves_the_message_to_the_queue(s3_server):
    """Ray refusing (or down) mid-run: nothing is deleted, the message comes back later."""
    from jobs.s3_trigger import parse_args
    from jobs.trigger_consumer import Consumer, sqs_client

    class Down:  # a cluster that went away after the consumer started
        python = "python"

        def submit(self, req):
            raise ConnectionError("connection refused")

    bucket = s3_server.new_bucket()
    _, url, _ = make_queues(s3_server, bucket)
    storage.write_atomic(f"s3://{bucket}/in/a.mp4", b"x")
    args = parse_args(trigger_args(url, bucket, "http://unused", max_idle=1) + ["--visibility", "2"])
    logged = []
    consumer = Consumer(sqs_client(), Down(), args, log=lambda d, **kw: logged.append((d, kw)))
    assert consumer.run() == 0
    failed = [kw for d, kw in logged if d == "submit-failed"]
    assert failed and failed[0]["uri"] == f"s3://{bucket}/in/a.mp4" and "refused" in failed[0]["reason"]
    assert consumer.counts["deleted"] == 1  # only the test event
    time.sleep(2.5)  # its visibility lapses: it is back for the next consumer
    r = sqs_client().receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert "in%2Fa.mp4" in r["Messages"][0]["Body"] or "in/a.mp4" in r["Messages"][0]["Body"]
