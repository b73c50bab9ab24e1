"""GROUP_BY=object against folder groups, through every transport, and Batch Operations exactly (moto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import bridge
from helpers import BRIDGE, keys, one, put, read, receive, sqs_event, unique, wait_until

#: A handler that records what it was given: the files under ROOT_FOLDER, TRIGGERS_FILE's keys, its
#: prefix and BATCH_USER_ARGUMENTS, in an output named after its first trigger.
RECORDER = [
    sys.executable,
    "-c",
    """
import json, os
root = os.environ["ROOT_FOLDER"]
files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)
triggers = json.load(open(os.environ["TRIGGERS_FILE"]))
name = "seen-" + (triggers[0].replace("/", "_") if triggers else "folder") + ".json"
seen = {"files": files, "triggers": triggers, "prefix": os.environ["KEY_PREFIX"],
        "job": os.environ.get("BATCH_USER_ARGUMENTS")}
json.dump(seen, open(os.path.join(root, name), "w"))
""",
]


@pytest.fixture
def target(s3):
    """Where outputs go: a bucket without notifications, so no output is an event."""
    name = unique("out")
    s3.create_bucket(Bucket=name)
    return name


def seen(s3, target: str) -> dict[str, dict]:
    """What each run recorded, by its output's key."""
    return {key: json.loads(read(s3, target, key)) for key in keys(s3, target) if "seen-" in key}


def fill(s3, bucket: str, names) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: put(s3, bucket, name, name), names))


def test_an_object_group_in_a_folder_of_hundreds_pulls_exactly_one(make_bridge, s3, bucket, target):
    fill(s3, bucket, [f"flat/p{n:03d}.csv" for n in range(300)])
    function = make_bridge(RECORDER, GROUP_BY="object", TARGET_BUCKET=target)
    ((group, report),) = function.run_groups(one(bucket, "flat/p150.csv")).items()
    assert (str(group), report.outcome) == (f"s3://{bucket}/flat/p150.csv", "succeeded")
    assert (report.listed, report.pulled_files, report.pulled_bytes) == (1, 1, len("flat/p150.csv"))
    assert seen(s3, target) == {
        "flat/seen-p150.csv.json": {"files": ["p150.csv"], "triggers": ["p150.csv"], "prefix": "flat/", "job": None}
    }
    assert keys(s3, target) == ["flat/seen-p150.csv.json"], "the triggers file is never uploaded"


def test_object_groups_keep_the_prefix_parent_dirs_up_and_merge_events_for_one_key(make_bridge, s3, bucket, target):
    fill(s3, bucket, ["a/x/1.csv", "a/x/2.csv", "a/y/3.csv"])
    function = make_bridge(RECORDER, GROUP_BY="object", PULL_PARENT_DIRS="1", TARGET_BUCKET=target)
    refs = [bridge.ObjectRef(bucket, key) for key in ("a/x/1.csv", "a/y/3.csv")]
    messages = [bridge.Message("m1", (refs[0],)), bridge.Message("m2", (refs[0], refs[1]))]
    reports = function.run_groups(messages)
    assert [(g.key, g.sources) for g in reports] == [("a/x/1.csv", ("m1", "m2")), ("a/y/3.csv", ("m2",))]
    records = seen(s3, target)
    assert records["a/seen-x_1.csv.json"]["files"] == ["x/1.csv"] and records["a/seen-x_1.csv.json"]["prefix"] == "a/"
    assert records["a/seen-y_3.csv.json"]["triggers"] == ["y/3.csv"]


def test_an_event_for_an_object_removed_since_is_acknowledged_without_a_run(make_bridge, s3, bucket, target):
    put(s3, bucket, "gone/other.csv")
    function = make_bridge(RECORDER, GROUP_BY="object", TARGET_BUCKET=target)
    assert function.process_messages(one(bucket, "gone/removed.csv")) == []
    ((_, report),) = function.run_groups(one(bucket, "gone/removed.csv")).items()
    assert (report.outcome, report.error) == ("skipped", "no such object: gone/removed.csv")
    assert report.handler_seconds is None and keys(s3, target) == []


@pytest.mark.parametrize("model", ["folder", "object"])
@pytest.mark.parametrize("envelope", ["s3_to_sqs", "s3_to_sns_to_sqs", "s3_to_eventbridge_to_sqs"])
def test_both_models_through_every_envelope_of_a_lambda_batch(model, envelope, request, make_bridge, s3, sqs, target):
    bucket, queue = request.getfixturevalue(envelope)
    for key in ("in/old.dat", "in/a.csv", "in/b.csv"):
        put(s3, bucket, key)
    messages = receive(sqs, queue, 3)
    function = make_bridge(RECORDER, GROUP_BY=model, MATCH_KEY=r"\.csv$", TARGET_BUCKET=target)
    assert bridge.handle_invocation(function, sqs_event(messages), None) == {"batchItemFailures": []}
    records = seen(s3, target)
    if model == "folder":
        ((key, record),) = records.items()
        assert record["files"] == ["a.csv", "b.csv", "old.dat"] and sorted(record["triggers"]) == ["a.csv", "b.csv"]
    else:
        assert {key: record["files"] for key, record in records.items()} == {
            "in/seen-a.csv.json": ["a.csv"],
            "in/seen-b.csv.json": ["b.csv"],
        }


# --- S3 Batch Operations, with AWS's payload shapes ---------------------------------------------


def batch(version: str, bucket: str, *tasks: tuple[str, str | None], arguments: dict | None = None) -> dict:
    """An invocation as AWS sends it: schema 1.0 names the bucket by ARN, 2.0 by name (with userArguments)."""
    job: dict = {"id": "f3cc4f60-61f6-4a2b-8a21-d07600c373ce"}
    if version == "2.0":
        job["userArguments"] = arguments or {}
    place = {"s3BucketArn": f"arn:aws:s3:::{bucket}"} if version == "1.0" else {"s3Bucket": bucket}
    return {
        "invocationSchemaVersion": version,
        "invocationId": "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo",
        "job": job,
        "tasks": [
            {"taskId": f"t{n}", "s3Key": key.replace(" ", "+"), "s3VersionId": version_id, **place}
            for n, (key, version_id) in enumerate(tasks)
        ],
    }


def results(answer: dict) -> dict[str, tuple[str, str]]:
    assert answer["treatMissingKeysAs"] == "TemporaryFailure"
    return {r["taskId"]: (r["resultCode"], r["resultString"]) for r in answer["results"]}


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_a_batch_task_with_group_by_object_pulls_its_one_object(version, make_bridge, s3, bucket, target):
    fill(s3, bucket, [f"many/{n:03d} x.csv" for n in range(200)])
    function = make_bridge(RECORDER, GROUP_BY="object", TARGET_BUCKET=target)
    payload = batch(version, bucket, ("many/042 x.csv", None), arguments={"mode": "backfill", "k": "v é"})
    assert results(bridge.handle_invocation(function, payload, None)) == {
        "t0": ("Succeeded", "succeeded: 1 files uploaded")
    }
    ((_, record),) = seen(s3, target).items()
    assert record["files"] == ["042 x.csv"]
    assert json.loads(record["job"]) == ({"mode": "backfill", "k": "v é"} if version == "2.0" else {})


@pytest.mark.parametrize("model", ["folder", "object"])
def test_a_batch_task_whose_object_does_not_exist_fails_for_good_and_runs_nothing(
    model, make_bridge, s3, bucket, target
):
    put(s3, bucket, "has/other.csv")
    function = make_bridge(RECORDER, GROUP_BY=model, TARGET_BUCKET=target)
    answer = bridge.handle_invocation(function, batch("2.0", bucket, ("has/missing.csv", None)), None)
    assert results(answer) == {"t0": ("PermanentFailure", f"no such object: s3://{bucket}/has/missing.csv")}
    assert keys(s3, target) == [], "no handler ran on what else is in the folder"


def test_in_a_folder_group_only_the_tasks_whose_objects_are_missing_fail(make_bridge, s3, bucket, target):
    put(s3, bucket, "mixed/here.csv")
    function = make_bridge(RECORDER, TARGET_BUCKET=target)
    payload = batch("1.0", bucket, ("mixed/here.csv", None), ("mixed/gone.csv", None))
    assert results(bridge.handle_invocation(function, payload, None)) == {
        "t0": ("Succeeded", "succeeded: 1 files uploaded"),
        "t1": ("PermanentFailure", f"no such object: s3://{bucket}/mixed/gone.csv"),
    }


@pytest.mark.parametrize("model", ["folder", "object"])
def test_a_batch_task_for_a_folder_marker_is_what_the_same_key_in_an_event_is(model, make_bridge, s3, bucket, target):
    put(s3, bucket, "made/", b"")  # what the console's "Create folder" makes
    put(s3, bucket, "made/x.csv")
    function = make_bridge(RECORDER, GROUP_BY=model, TARGET_BUCKET=target)
    answer = results(bridge.handle_invocation(function, batch("2.0", bucket, ("made/", None)), None))
    by_event = function.run_groups(one(bucket, "made/"))
    ((_, report),) = by_event.items()
    if model == "folder":
        assert answer == {"t0": ("Succeeded", "succeeded: 1 files uploaded")} and report.outcome == "succeeded"
        assert seen(s3, target)["made/seen-folder.json"]["files"] == ["x.csv"]
    else:
        assert answer["t0"][0] == "Succeeded" and answer["t0"][1].startswith("skipped: a folder marker")
        assert report.outcome == "skipped" and keys(s3, target) == []


def test_a_batch_task_naming_an_object_version_is_refused_for_good(make_bridge, s3, bucket, target):
    put(s3, bucket, "v/a.csv")
    function = make_bridge(RECORDER, GROUP_BY="object", TARGET_BUCKET=target)
    answer = results(
        bridge.handle_invocation(function, batch("1.0", bucket, ("v/a.csv", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")), None)
    )
    assert answer["t0"][0] == "PermanentFailure" and "object versions are not supported" in answer["t0"][1]
    assert keys(s3, target) == [], "never another version than the one named"


# --- run, consume and backfill as processes ------------------------------------------------------


def bridge_process(aws_env, mode: str, *args: str, **settings) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], **aws_env, **settings}
    return subprocess.run([*BRIDGE, mode, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("model, files", [("object", ["a.csv"]), ("folder", ["a.csv", "b.csv"])])
def test_run_with_a_key_runs_the_group_its_event_would_make(model, files, aws_env, s3, bucket, target):
    fill(s3, bucket, ["r/a.csv", "r/b.csv"])
    ran = bridge_process(
        aws_env, "run", "--bucket", bucket, "--key", "r/a.csv", "--", *RECORDER, GROUP_BY=model, TARGET_BUCKET=target
    )
    assert ran.returncode == 0, ran.stderr
    assert seen(s3, target) == {
        "r/seen-a.csv.json": {"files": files, "triggers": ["a.csv"], "prefix": "r/", "job": None}
    }


def test_run_with_group_by_object_needs_a_key(aws_env, bucket):
    ran = bridge_process(aws_env, "run", "--bucket", bucket, "--prefix", "r/", "--", "true", GROUP_BY="object")
    assert ran.returncode == 2 and "--key" in ran.stderr


def test_consume_with_group_by_object_runs_each_object_of_a_folder_once(aws_env, s3, sqs, s3_to_sqs, target, tmp_path):
    bucket, queue = s3_to_sqs
    fill(s3, bucket, ["c/1.csv", "c/2.csv", "c/3.csv"])
    env = {"PATH": os.environ["PATH"], **aws_env, "GROUP_BY": "object", "TARGET_BUCKET": target}
    env.update(SQS_QUEUE_URL=queue, SQS_WAIT_TIME_SECONDS="1", SQS_MAX_NUMBER_OF_MESSAGES="10")
    with open(tmp_path / "log", "wb") as log:
        worker = subprocess.Popen([*BRIDGE, "consume", *RECORDER], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: len(seen(s3, target)) == 3, 60, "three runs")
        finally:
            worker.terminate()
            worker.wait(30)
    assert {key: record["files"] for key, record in seen(s3, target).items()} == {
        f"c/seen-{n}.csv.json": [f"{n}.csv"] for n in (1, 2, 3)
    }


def test_backfill_with_group_by_object_sends_one_message_per_object(aws_env, s3, sqs, bucket):
    fill(s3, bucket, ["f/1.csv", "f/2.csv", "f/x/3.csv", "g/4.csv"])
    queue = sqs.create_queue(QueueName=unique("backfill"))["QueueUrl"]
    ran = bridge_process(aws_env, "backfill", "--bucket", bucket, SQS_QUEUE_URL=queue, GROUP_BY="object")
    assert ran.returncode == 0, ran.stderr
    assert "sent 4 messages (one per object), 0 not sent" in ran.stdout
    bodies = [m["Body"] for m in receive(sqs, queue, 4, skip_test_event=False)]
    assert sorted(ref.key for body in bodies for ref in bridge.parse_body(body)) == [
        "f/1.csv",
        "f/2.csv",
        "f/x/3.csv",
        "g/4.csv",
    ]
