"""S3 Batch Operations in Lambda mode: AWS's payloads read, and one result per task with the right code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bridge

CASES = sorted((Path(__file__).parent.parent / "data" / "batch_operations").glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_every_task_of_a_batch_operations_payload_is_read(path):
    case = json.loads(path.read_text(encoding="utf-8"))
    assert bridge.is_batch_operations(case["payload"]) and not bridge.is_sqs_batch(case["payload"])
    messages = [bridge.parse_batch_task(task, "{}") for task in case["payload"]["tasks"]]
    assert [m.id for m in messages] == [t["id"] for t in case["tasks"]]
    for got, want in zip(messages, case["tasks"]):
        if "error" in want:
            assert want["error"] in got.error and got.refs == ()
        else:
            assert got.error is None and got.refs == (bridge.ObjectRef(*want["ref"]),)


def test_a_task_without_a_task_id_fails_the_invocation():
    with pytest.raises(bridge.EventError, match="taskId"):
        bridge.parse_batch_task({"s3Key": "a", "s3Bucket": "b"}, "{}")


HANDLER = 'case "$KEY_PREFIX" in bad/) exit 65;; flaky/) exit 1;; esac; touch "$ROOT_FOLDER/out.txt"'


def task(task_id: str, key: str) -> dict:
    return {"taskId": task_id, "s3Key": key, "s3VersionId": None, "s3Bucket": "bucket"}


def test_each_task_gets_the_result_code_its_group_deserves(tmp_path):
    for folder in ("ok", "skip", "bad", "flaky", "x"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "in.csv").write_text(folder)
    environ = {
        "HANDLER_COMMAND": HANDLER,
        "MATCH_KEY": r"\.csv$",
        "EXECUTION_FILTER_EXPR": 'all(.Key | startswith("skip/") | not)',
    }
    config = bridge.Config.from_env(environ)
    store = bridge.LocalStore({"bucket": str(tmp_path)})
    payload = {
        "invocationSchemaVersion": "2.0",
        "invocationId": "aW52",
        "job": {"id": "j", "userArguments": {}},
        "tasks": [
            task("ok1", "ok/in.csv"),
            task("ok2", "ok/in.csv"),
            task("skip", "skip/in.csv"),
            task("bad", "bad/in.csv"),
            task("flaky", "flaky/in.csv"),
            task("unmatched", "x/in.txt"),
            task("unsafe", "x/%00.csv"),
        ],
    }
    answer = bridge.handle_invocation(bridge.Bridge(config, store, environ), payload, None)
    assert {k: answer[k] for k in ("invocationSchemaVersion", "invocationId")} == {
        "invocationSchemaVersion": "2.0",
        "invocationId": "aW52",
    }
    assert answer["treatMissingKeysAs"] in ("TemporaryFailure", "PermanentFailure")
    results = {r["taskId"]: (r["resultCode"], r["resultString"]) for r in answer["results"]}
    assert list(results) == ["ok1", "ok2", "skip", "bad", "flaky", "unmatched", "unsafe"]
    assert results["ok1"] == results["ok2"] == ("Succeeded", "succeeded: 1 files uploaded")
    assert results["skip"] == ("Succeeded", "skipped: 0 files uploaded")
    assert results["bad"] == ("PermanentFailure", "handler exited with status 65")
    assert results["flaky"] == ("TemporaryFailure", "handler exited with status 1")
    assert results["unmatched"] == ("PermanentFailure", "the key does not match MATCH_KEY")
    assert results["unsafe"] == ("PermanentFailure", "the key is not a safe path")
    assert (tmp_path / "ok" / "out.txt").exists() and not (tmp_path / "x" / "out.txt").exists()
