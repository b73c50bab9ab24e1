"""`bootstrap run` and `bootstrap consume` as processes against moto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from faulty_proxy import FaultyProxy

import bridge
from helpers import BRIDGE, keys, notifying_queue, put, read, s3_event, stopped_within, unique, wait_until


def bridge_env(aws_env, **settings):
    return {"PATH": os.environ["PATH"], **aws_env, **settings}


def run(aws_env, *args, **settings):
    return subprocess.run(
        [*BRIDGE, "run", *args], env=bridge_env(aws_env, **settings), capture_output=True, text=True, timeout=60
    )


# --- run ---------------------------------------------------------------------


def test_run_processes_the_group_named_by_bucket_and_prefix(aws_env, s3, bucket):
    put(s3, bucket, "one/input.txt", "abc")
    result = run(
        aws_env,
        "/bin/sh",
        "-c",
        'tr a-z A-Z < "$ROOT_FOLDER/input.txt" > "$ROOT_FOLDER/output.txt"',
        BUCKET=bucket,
        KEY_PREFIX="one/",
    )
    assert result.returncode == 0, result.stderr
    assert read(s3, bucket, "one/output.txt") == b"ABC"


def test_run_takes_bucket_and_prefix_options_and_the_renamed_variables(aws_env, s3, bucket):
    put(s3, bucket, "two/input.txt", "x")
    result = run(
        aws_env,
        "--prefix",
        "two/",
        "--",
        "/bin/sh",
        "-c",
        'echo "$B $P" > "$ROOT_FOLDER/seen"',
        BUCKET_VAR="B",
        KEY_PREFIX_VAR="P",
        B=bucket,
    )
    assert result.returncode == 0, result.stderr
    assert read(s3, bucket, "two/seen") == f"{bucket} two/\n".encode()


def test_run_skipped_by_the_filter_exits_0_without_running(aws_env, s3, bucket):
    put(s3, bucket, "skip/input.txt")
    result = run(
        aws_env,
        "/bin/sh",
        "-c",
        'touch "$ROOT_FOLDER/ran"',
        BUCKET=bucket,
        KEY_PREFIX="skip/",
        EXECUTION_FILTER_EXPR="length > 5",
    )
    assert result.returncode == 0, result.stderr
    assert keys(s3, bucket) == ["skip/input.txt"]
    assert "skipped" in result.stderr


def test_run_with_a_failing_handler_exits_1(aws_env, s3, bucket):
    put(s3, bucket, "bad/input.txt")
    result = run(aws_env, "/bin/sh", "-c", 'touch "$ROOT_FOLDER/partial"; exit 7', BUCKET=bucket, KEY_PREFIX="bad/")
    assert result.returncode == 1
    assert "exited with status 7" in result.stderr
    assert keys(s3, bucket) == ["bad/input.txt"]


@pytest.mark.parametrize(
    "settings, args, named",
    [
        ({"MATCH_KEY": "x("}, ["true"], "MATCH_KEY"),
        ({}, ["true"], "no bucket"),
        ({"BUCKET": "b"}, [], "HANDLER_COMMAND"),
        ({"BUCKET": "b", "TRANSFER_CONCURRENCY": "lots"}, ["true"], "TRANSFER_CONCURRENCY"),
    ],
)
def test_run_with_bad_configuration_exits_2_naming_it(aws_env, settings, args, named):
    result = run(aws_env, *args, **settings)
    assert result.returncode == 2
    assert named in result.stderr


def test_consume_without_a_queue_exits_2_naming_the_variable(aws_env):
    command = [*BRIDGE, "consume", "true"]
    result = subprocess.run(command, env=bridge_env(aws_env), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "SQS_QUEUE_URL" in result.stderr


def test_an_unknown_mode_or_option_is_a_usage_error():
    result = subprocess.run(
        [*BRIDGE, "run", "--nope"], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True
    )
    assert result.returncode == 2 and "usage" in result.stderr
    result = subprocess.run(BRIDGE, env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert result.returncode == 2 and "mode is required" in result.stderr


# --- consume -----------------------------------------------------------------


class Worker:
    """A `consume` process; its log is kept for assertions."""

    def __init__(self, aws_env, queue_url, handler, log_path, **settings):
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = bridge_env(aws_env, SQS_QUEUE_URL=queue_url, SQS_WAIT_TIME_SECONDS="1", **settings)
        self.process = subprocess.Popen(
            [*BRIDGE, "consume", *handler], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self, signum=signal.SIGTERM, timeout=40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout)
        self.log.close()
        return code


@pytest.fixture
def workers(aws_env, tmp_path):
    started = []

    def start(queue_url, handler, **settings):
        worker = Worker(aws_env, queue_url, handler, tmp_path / f"worker{len(started)}.log", **settings)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


def queue_counts(sqs, url):
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def runs_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_consume_deletes_only_succeeded_messages_and_failures_reach_the_dead_letter_queue(
    clients, bucket, workers, tmp_path
):
    s3, sqs = clients["s3"], clients["sqs"]
    url, dlq = notifying_queue(clients["s3"], clients["sqs"], bucket, dead_letter_after=2)
    ledger = tmp_path / "runs"
    handler = [
        "/bin/sh",
        "-c",
        f'echo "$KEY_PREFIX" >> {ledger}; test "$KEY_PREFIX" != bad/ && touch "$ROOT_FOLDER/output.txt"',
    ]
    worker = workers(url, handler, MATCH_KEY=r"input\.txt$", SQS_VISIBILITY_TIMEOUT="2")
    put(s3, bucket, "ok/input.txt")
    put(s3, bucket, "bad/input.txt")
    wait_until(lambda: "ok/output.txt" in keys(s3, bucket), 30, "the good group's output")
    moved = wait_until(
        lambda: sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages"),
        40,
        "the failing message in the DLQ",
    )
    assert "bad%2Finput.txt" in moved[0]["Body"] or "bad/input.txt" in moved[0]["Body"]
    assert worker.stop() == 0
    assert runs_of(ledger).count("ok/") == 1
    assert runs_of(ledger).count("bad/") == 2
    assert "bad/output.txt" not in keys(s3, bucket)
    assert queue_counts(sqs, url) == (0, 0)


def test_consume_neither_runs_nor_deletes_a_message_naming_a_bucket_outside_source_buckets(
    clients, bucket, workers, tmp_path
):
    url, _ = notifying_queue(clients["s3"], clients["sqs"], bucket)
    ledger = tmp_path / "runs"
    handler = ["/bin/sh", "-c", f"echo ran >> {ledger}"]
    worker = workers(url, handler, SOURCE_BUCKETS="only-this-one", SQS_VISIBILITY_TIMEOUT="1")
    put(clients["s3"], bucket, "a/input.txt")
    wait_until(lambda: worker.output().count("SOURCE_BUCKETS") >= 2, 30, "the message refused twice: never deleted")
    assert worker.stop() == 0
    assert not ledger.exists()


def test_a_job_longer_than_the_visibility_timeout_is_not_redelivered_while_it_runs(clients, bucket, workers, tmp_path):
    s3 = clients["s3"]
    url, _ = notifying_queue(clients["s3"], clients["sqs"], bucket)
    ledger = tmp_path / "runs"
    handler = ["/bin/sh", "-c", f'echo "$KEY_PREFIX" >> {ledger}; sleep 7; touch "$ROOT_FOLDER/output.txt"']
    settings = {"MATCH_KEY": r"input\.txt$", "SQS_VISIBILITY_TIMEOUT": "2"}
    first, second = workers(url, handler, **settings), workers(url, handler, **settings)
    put(s3, bucket, "long/input.txt")
    wait_until(lambda: "long/output.txt" in keys(s3, bucket), 40, "the long job's output")
    wait_until(lambda: queue_counts(clients["sqs"], url) == (0, 0), 20, "its message deleted, so never redelivered")
    assert runs_of(ledger) == ["long/"], "a lost heartbeat would have let the other worker run it during the 7 s"
    assert first.stop() == 0 and second.stop() == 0


def test_sigterm_lets_a_short_job_finish_and_deletes_its_message(clients, bucket, workers, tmp_path):
    s3 = clients["s3"]
    url, _ = notifying_queue(clients["s3"], clients["sqs"], bucket)
    started = tmp_path / "started"
    worker = workers(
        url, ["/bin/sh", "-c", f'touch {started}; sleep 2; touch "$ROOT_FOLDER/output.txt"'], MATCH_KEY=r"input\.txt$"
    )
    put(s3, bucket, "short/input.txt")
    wait_until(started.exists, 30, "the handler to start")
    assert worker.stop(signal.SIGTERM) == 0
    assert "short/output.txt" in keys(s3, bucket)
    (left,) = clients["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert "short%2Foutput.txt" in left["Body"], "only the upload's own notification is left"


def test_sigterm_ends_a_job_past_the_grace_period_and_keeps_its_message(clients, bucket, workers, tmp_path):
    s3 = clients["s3"]
    url, _ = notifying_queue(clients["s3"], clients["sqs"], bucket)
    started = tmp_path / "started"
    worker = workers(
        url,
        ["/bin/sh", "-c", f"touch {started}; exec sleep 300"],
        MATCH_KEY=r"input\.txt$",
        SQS_VISIBILITY_TIMEOUT="30",
    )
    put(s3, bucket, "stuck/input.txt")
    wait_until(started.exists, 30, "the handler to start")
    began = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=60) == 0
    assert time.monotonic() - began < stopped_within(bridge.SHUTDOWN_GRACE_SECONDS)
    assert keys(s3, bucket) == ["stuck/input.txt"]
    assert queue_counts(clients["sqs"], url) == (0, 1), "the message is kept, to come back after its visibility timeout"
    assert "not started" not in worker.output() and "handler ended by shutdown" in worker.output()


def test_an_idle_worker_stops_at_once_on_sigint(clients, bucket, workers):
    url, _ = notifying_queue(clients["s3"], clients["sqs"], bucket)
    worker = workers(url, ["true"])
    wait_until(lambda: "consuming" in worker.output(), 20, "the worker to start")
    began = time.monotonic()
    assert worker.stop(signal.SIGINT) == 0
    assert time.monotonic() - began < bridge.SHUTDOWN_GRACE_SECONDS, "idle: no grace is waited for"


def test_two_workers_on_one_queue_process_every_message_once(clients, bucket, workers, tmp_path):
    s3 = clients["s3"]
    url, _ = notifying_queue(clients["s3"], clients["sqs"], bucket)
    ledger = tmp_path / "runs"
    handler = ["/bin/sh", "-c", f'echo "$KEY_PREFIX" >> {ledger}; sleep 0.3; touch "$ROOT_FOLDER/output.txt"']
    for _ in range(2):
        workers(url, handler, MATCH_KEY=r"input\.txt$", SQS_MAX_NUMBER_OF_MESSAGES="1")
    folders = [f"f{i}/" for i in range(8)]
    for folder in folders:
        put(s3, bucket, f"{folder}input.txt")
    wait_until(lambda: sum(k.endswith("output.txt") for k in keys(s3, bucket)) == 8, 60, "every output")
    assert sorted(runs_of(ledger)) == folders
    wait_until(lambda: queue_counts(clients["sqs"], url) == (0, 0), 30, "the outputs' own notifications acknowledged")
    assert sorted(runs_of(ledger)) == folders


def test_a_worker_backs_off_while_the_queue_is_missing_and_recovers(clients, bucket, workers, aws_env):
    s3, sqs = clients["s3"], clients["sqs"]
    name = unique("late")
    url = f"{aws_env['AWS_ENDPOINT_URL']}/123456789012/{name}"
    worker = workers(url, ["/bin/sh", "-c", 'touch "$ROOT_FOLDER/output.txt"'])
    wait_until(lambda: "receiving from" in worker.output(), 30, "a failed receive")
    assert "retrying in" in worker.output()
    real_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    assert real_url == url
    put(s3, bucket, "late/input.txt")
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(s3_event(bucket, "late/input.txt")))
    wait_until(lambda: "late/output.txt" in keys(s3, bucket), 60, "the output once the queue exists")
    assert worker.stop() == 0


def test_sigterm_while_inputs_download_lets_no_handler_start_and_keeps_the_message(
    clients, bucket, aws_env, moto_url, tmp_path
):
    url, _ = notifying_queue(clients["s3"], clients["sqs"], bucket)
    proxy = FaultyProxy(moto_url)
    proxy.stall = lambda method, path: method == "GET" and path.endswith("/pull/input.txt")
    started = tmp_path / "started"
    worker = Worker(
        {**aws_env, "AWS_ENDPOINT_URL": proxy.url},
        url,
        ["/bin/sh", "-c", f"touch {started}"],
        tmp_path / "log",
        MATCH_KEY=r"input\.txt$",
    )
    try:
        put(clients["s3"], bucket, "pull/input.txt")
        wait_until(lambda: proxy.stalled, 30, "the download to start")
        worker.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "taking no new work" in worker.output(), 30, "the worker to hear the signal")
        proxy.heal()
        assert worker.stop(timeout=30) == 0
    finally:
        proxy.close()
    assert not started.exists(), "no handler starts once the worker is stopping"
    assert "the handler was not started" in worker.output()
    assert queue_counts(clients["sqs"], url) == (0, 1), "the message is kept, to come back"


def test_groups_of_a_batch_not_yet_started_when_sigterm_comes_are_not_started(clients, bucket, workers, tmp_path):
    sqs = clients["sqs"]
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    for folder in ("one/", "two/"):
        put(clients["s3"], bucket, f"{folder}input.txt")
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(s3_event(bucket, f"{folder}input.txt")))
    ledger, gate = tmp_path / "runs", tmp_path / "gate"
    handler = f'echo "$KEY_PREFIX" >> {ledger}; while [ ! -e {gate} ]; do sleep 0.1; done; touch "$ROOT_FOLDER/out"'
    worker = workers(url, ["/bin/sh", "-c", handler], SQS_VISIBILITY_TIMEOUT="60")
    wait_until(ledger.exists, 30, "the first group's handler")
    worker.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "taking no new work" in worker.output(), 30, "the worker to hear the signal")
    gate.touch()
    assert worker.stop(timeout=30) == 0
    (first,) = runs_of(ledger)
    assert f"{first}out" in keys(clients["s3"], bucket), "the running group finished within its grace"
    assert "not started: shutting down" in worker.output()
    assert queue_counts(sqs, url) == (0, 1), "the group not started keeps its message"
