"""The bridge as a Lambda bootstrap process, against real servers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bridge
import helpers
from helpers import (
    AWS_ENV,
    ROOT,
    UPPERCASE,
    keys,
    notifying_queue,
    put,
    read,
    receive,
    s3_event,
    sqs_event,
    stopped_within,
    wait_until,
)


def test_sqs_batch_through_the_emulator_uploads_and_reports_failures(emulator, start_function, s3, sqs, bucket):
    queue, _ = notifying_queue(s3, sqs, bucket)
    put(s3, bucket, "ok/input.txt", "fine")
    put(s3, bucket, "bad/input.txt", "boom")
    messages = receive(sqs, queue, 2)
    bad_id = next(m["MessageId"] for m in messages if "bad" in m["Body"])
    handler = [
        "/bin/sh",
        "-c",
        'test "$KEY_PREFIX" != bad/ && cd "$ROOT_FOLDER" && tr a-z A-Z < input.txt > output.txt',
    ]
    function = start_function(emulator.runtime_api, handler, MATCH_KEY=r"input\.txt$")
    status, body = emulator.invoke(sqs_event(messages))
    assert status == 200, (body, function.output())
    assert body == {"batchItemFailures": [{"itemIdentifier": bad_id}]}
    assert read(s3, bucket, "ok/output.txt") == b"FINE"
    assert "bad/output.txt" not in keys(s3, bucket)
    status, body = emulator.invoke(sqs_event(messages[:1] if messages[0]["MessageId"] != bad_id else messages[1:]))
    assert (status, body) == (200, {"batchItemFailures": []})


def test_a_failed_direct_invocation_is_an_invocation_error(emulator, start_function, s3, bucket):
    put(s3, bucket, "d/input.txt", "x")
    function = start_function(emulator.runtime_api, ["false"])
    status, body = emulator.invoke(s3_event(bucket, "d/input.txt"))
    assert status >= 400, function.output()
    assert body["errorType"] == "Bridge.GroupFailed"
    status, body = emulator.invoke({"not": "an event"})
    assert body["errorType"] == "Bridge.EventError"
    assert function.process.poll() is None, "one bad invocation must not end the runtime"


def test_a_bad_match_key_is_an_init_error_and_the_process_exits(runtime_api, start_function):
    function = start_function(runtime_api.address, ["true"], MATCH_KEY="input(")
    assert function.process.wait(30) != 0
    (error,) = runtime_api.init_errors
    assert error["type"] == "Bridge.ConfigError"
    assert error["body"]["errorMessage"].startswith("MATCH_KEY")
    assert runtime_api.next_requests == 0


def test_a_real_deadline_cuts_a_sleeping_handler(runtime_api, start_function, s3, bucket):
    put(s3, bucket, "slow/input.txt")
    start_function(runtime_api.address, ["/bin/sh", "-c", 'touch "$ROOT_FOLDER/partial"; exec sleep 60'])
    deadline_ms = int((time.time() + 3) * 1000)
    started = time.monotonic()
    request_id, kind, _, error_type = runtime_api.invoke(
        "r1", s3_event(bucket, "slow/input.txt"), {"Lambda-Runtime-Deadline-Ms": str(deadline_ms)}
    )
    assert (request_id, kind, error_type) == ("r1", "error", "Bridge.GroupFailed")
    assert time.monotonic() - started < 3 + stopped_within()
    assert keys(s3, bucket) == ["slow/input.txt"]


def test_trace_id_reaches_the_handler_and_logs_are_json_without_secrets(runtime_api, start_function, s3, bucket):
    put(s3, bucket, "t/input.txt")
    handler = ["/bin/sh", "-c", 'printf %s "$_X_AMZN_TRACE_ID" > "$ROOT_FOLDER/trace"']
    function = start_function(runtime_api.address, handler, AWS_LAMBDA_LOG_FORMAT="JSON")
    for n, trace in ((1, "Root=1-00000000-000000000000000000000001"), (2, "Root=1-2"), (3, "")):
        headers = {"Lambda-Runtime-Trace-Id": trace} if trace else {}
        result = runtime_api.invoke(f"r{n}", s3_event(bucket, "t/input.txt"), headers)
        assert result[:2] == (f"r{n}", "response")
        assert read(s3, bucket, "t/trace") == trace.encode(), "set for each invocation, cleared when absent"
    summaries = wait_until(lambda: _summaries(function.output()), 30, "summary lines")
    assert summaries[0]["bucket"] == bucket and summaries[0]["outcome"] == "succeeded"
    assert summaries[0]["requestId"] == "r1"
    assert AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in function.output()


def test_the_deadline_an_emulator_sends_is_ignored_not_obeyed(emulator, start_function, s3, bucket):
    put(s3, bucket, "e/input.txt", "abc")
    function = start_function(emulator.runtime_api, UPPERCASE)
    status, _ = emulator.invoke(s3_event(bucket, "e/input.txt"))
    assert status == 200, function.output()
    assert read(s3, bucket, "e/output.txt") == b"ABC"
    assert "implausible" in function.output()


def _summaries(output):
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if "outcome" in line] or None


def test_a_response_post_cut_once_is_retried_on_a_new_connection(runtime_api, start_function, s3, bucket):
    put(s3, bucket, "cut/input.txt")
    function = start_function(runtime_api.address, ["true"])
    runtime_api.drop_posts = 1
    assert runtime_api.invoke("r1", s3_event(bucket, "cut/input.txt"))[:2] == ("r1", "response")
    assert runtime_api.invoke("r2", s3_event(bucket, "cut/input.txt"))[:2] == ("r2", "response")
    assert function.process.poll() is None


def test_a_result_whose_answer_was_lost_is_not_posted_twice_and_the_runtime_goes_on(
    runtime_api, start_function, s3, bucket
):
    put(s3, bucket, "lost/input.txt")
    function = start_function(runtime_api.address, ["true"])
    runtime_api.lose_answers = 1
    assert runtime_api.invoke("r1", s3_event(bucket, "lost/input.txt"))[:2] == ("r1", "response")
    assert runtime_api.invoke("r2", s3_event(bucket, "lost/input.txt"))[:2] == ("r2", "response")
    assert function.process.poll() is None
    assert "the answer to the first attempt was lost" in function.output()


def test_a_result_that_cannot_be_posted_is_logged_and_the_runtime_goes_on(runtime_api, start_function, s3, bucket):
    put(s3, bucket, "gone/input.txt")
    function = start_function(runtime_api.address, ["true"])
    runtime_api.drop_posts = 2
    runtime_api.pending.put(("r1", s3_event(bucket, "gone/input.txt"), {}))
    assert runtime_api.invoke("r2", s3_event(bucket, "gone/input.txt"))[:2] == ("r2", "response")
    assert function.process.poll() is None
    assert "could not report invocation r1" in function.output()


def test_a_runtime_api_that_refuses_the_next_invocation_ends_the_process_so_lambda_restarts_it(
    runtime_api, start_function
):
    runtime_api.refuse_next = True
    function = start_function(runtime_api.address, ["true"])
    assert function.process.wait(30) == 1
    assert "GET /invocation/next answered 500" in function.output()


def test_sigterm_mid_invocation_ends_the_handler_reports_the_error_and_exits_non_zero(
    runtime_api, start_function, s3, bucket, tmp_path
):
    put(s3, bucket, "term/input.txt")
    started = tmp_path / "started"
    function = start_function(runtime_api.address, ["/bin/sh", "-c", f"echo $$ > {started}; exec sleep 300"])
    runtime_api.pending.put(("r1", s3_event(bucket, "term/input.txt"), {}))
    wait_until(started.exists, 30, "the handler to start")
    function.process.send_signal(signal.SIGTERM)
    assert function.process.wait(15) == 1
    request_id, kind, _, _ = runtime_api.results.get(timeout=5)
    assert (request_id, kind) == ("r1", "error")
    assert "handler ended by shutdown" in function.output()
    handler = Path(f"/proc/{int(started.read_text())}/stat")
    assert not handler.exists() or handler.read_text().rpartition(")")[2].split()[0] == "Z"


def test_a_malformed_runtime_api_address_is_a_configuration_error(program, aws_env):
    command, program_env = program
    env = {"PATH": "/usr/bin:/bin", **aws_env, **program_env, "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:abc"}
    result = subprocess.run([*command, "true"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "AWS_LAMBDA_RUNTIME_API" in result.stderr and "Traceback" not in result.stderr


BATCH_OPERATIONS = Path(__file__).resolve().parents[1] / "data" / "batch_operations"


@pytest.mark.parametrize(
    "fixture",
    ["request_1_0_s3_user_guide", "request_2_0", "several_tasks_one_folder_encoded_keys"],
)
def test_batch_operations_payloads_through_the_emulator_run_each_folder_once(
    fixture, emulator, start_function, s3, bucket, tmp_path
):
    case = json.loads((BATCH_OPERATIONS / f"{fixture}.json").read_text(encoding="utf-8"))
    for task in case["payload"]["tasks"]:  # the current version (a version is refused: tested apart)
        task["s3VersionId"] = None
    refs = [bridge.parse_batch_task(task, "{}").refs[0] for task in case["payload"]["tasks"]]
    payload = json.loads(json.dumps(case["payload"]).replace(refs[0].bucket, bucket))
    for ref in refs:
        put(s3, bucket, ref.key, "abc")
    ledger = tmp_path / "runs"
    handler = ["/bin/sh", "-c", f'echo "$KEY_PREFIX" >> {ledger}; touch "$ROOT_FOLDER/done"']
    function = start_function(emulator.runtime_api, handler)
    status, answer = emulator.invoke(payload)
    assert status == 200, (answer, function.output())
    assert answer["invocationId"] == payload["invocationId"]
    assert answer["invocationSchemaVersion"] == payload["invocationSchemaVersion"]
    assert [(r["taskId"], r["resultCode"]) for r in answer["results"]] == [
        (task["taskId"], "Succeeded") for task in payload["tasks"]
    ]
    folders = {bridge.key_prefix(ref.key, 0) for ref in refs}
    assert sorted(ledger.read_text().splitlines()) == sorted(folders), "each folder once, however many tasks"
    assert {f"{folder}done" for folder in folders} <= set(keys(s3, bucket))


def test_at_a_warn_filter_the_bridges_warnings_and_the_handlers_stderr_survive(runtime_api, start_function, s3, bucket):
    """Lambda's ApplicationLogLevel=WARN, applied to every line as Lambda documents it, keeps what matters."""
    put(s3, bucket, "w/input.txt")
    put(s3, bucket, "w/a//b.txt")  # no safe path: the bridge warns and does not pull it
    handler = ["/bin/sh", "-c", "echo working; echo 'Traceback: boom' >&2; echo 'ValueError: bad row' >&2; exit 1"]
    function = start_function(runtime_api.address, handler, AWS_LAMBDA_LOG_FORMAT="JSON", AWS_LAMBDA_LOG_LEVEL="INFO")
    message = {"messageId": "m-1", "body": json.dumps(s3_event(bucket, "w/input.txt")), "eventSource": "aws:sqs"}
    result = runtime_api.invoke("r1", {"Records": [message]})
    assert result[1] == "error", function.output()
    lines = wait_until(
        lambda: (
            [line for line in function.output().splitlines() if "outcome" in line] and function.output().splitlines()
        ),
        10,
        "the summary",
    )
    kept = [json.loads(line) for line in lines if helpers.lambda_keeps(line, "WARN")]
    assert all(line.startswith("{") for line in lines), "every line is JSON: Lambda reads its level"
    messages = [entry["message"] for entry in kept]
    assert any("not pulling" in m and "a//b.txt" in m for m in messages), "the bridge's warning"
    assert "Traceback: boom" in messages and "ValueError: bad row" in messages, "the handler's stderr"
    assert "working" not in messages, "stdout is INFO: Lambda drops it at WARN"
    (summary,) = [entry for entry in kept if "outcome" in entry]
    assert (summary["errorType"], summary["errorMessage"]) == ("Bridge.GroupFailed", "handler exited with status 1")
    assert all(entry.get("message_ids") == ["m-1"] for entry in kept if "invocation" not in entry["message"])


def test_a_handler_cut_by_its_deadline_has_its_seconds_and_outcome_in_the_summary_and_metrics(
    runtime_api, start_function, s3, bucket
):
    put(s3, bucket, "late/input.txt")
    settings = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "METRICS_NAMESPACE": "Tests", "HANDLER_TIMEOUT": "1"}
    function = start_function(runtime_api.address, ["sleep", "60"], **settings)
    result = runtime_api.invoke("r1", s3_event(bucket, "late/input.txt"))
    assert result[1] == "error"
    (summary,) = wait_until(lambda: _summaries(function.output()), 30, "the summary")
    assert summary["outcome"] == "timed_out" and summary["handler_seconds"] >= 1
    assert (summary["groups_failed"], summary["groups_timed_out"], summary["groups_succeeded"]) == (1, 1, 0)
    names = [metric["Name"] for metric in summary["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "handler_seconds" in names and "groups_timed_out" in names


def test_group_by_object_through_the_emulator_runs_each_object_of_a_folder_alone(
    emulator, start_function, s3, sqs, bucket
):
    queue, _ = notifying_queue(s3, sqs, bucket)
    for key in ("img/a.jpg", "img/b.jpg"):
        put(s3, bucket, key, key)
    messages = receive(sqs, queue, 2)
    handler = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && names=$(ls) && echo "$names" > "$names.list"']
    function = start_function(emulator.runtime_api, handler, GROUP_BY="object")
    status, body = emulator.invoke(sqs_event(messages))
    assert (status, body) == (200, {"batchItemFailures": []}), function.output()
    assert read(s3, bucket, "img/a.jpg.list") == b"a.jpg\n" and read(s3, bucket, "img/b.jpg.list") == b"b.jpg\n"


INSPECT = """
import json, os, signal
root = os.environ["ROOT_FOLDER"]
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
seen = {
    "names": sorted(os.environ),
    "fds": [fd for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")],
    "stdin": os.readlink("/proc/self/fd/0"),
    "cwd": os.getcwd(),
    "umask": os.umask(0),
    "session_leader": os.getsid(0) == os.getppid(),
}
open(os.path.join(root, "seen.json"), "w").write(json.dumps(seen))
"""


def test_the_handler_inherits_what_the_readme_lists_and_never_the_runtime_api(runtime_api, start_function, s3, bucket):
    put(s3, bucket, "env/input.txt")
    shell = f'grep -E "^Sig(Ign|Blk)" /proc/$$/status > "$ROOT_FOLDER/signals"; {sys.executable} -I -c "$INSPECT"'
    function = start_function(runtime_api.address, ["/bin/sh", "-c", shell], INSPECT=INSPECT)
    result = runtime_api.invoke("r1", s3_event(bucket, "env/input.txt"))
    assert result[1] == "response", function.output()
    seen = json.loads(read(s3, bucket, "env/seen.json"))
    assert "AWS_LAMBDA_RUNTIME_API" not in seen["names"], "a handler could take the next invocation away"
    expected = {
        "ROOT_FOLDER",
        "BUCKET",
        "KEY_PREFIX",
        "TRIGGERS_FILE",
        bridge.HANDLER_MARK,
        "AWS_ACCESS_KEY_ID",
        "INSPECT",
    }
    assert expected <= set(seen["names"]) and "BATCH_USER_ARGUMENTS" not in seen["names"]
    assert seen["fds"] == [0, 1, 2] and seen["stdin"] == "/dev/null", "no descriptor of the bridge's"
    assert seen["cwd"] == str(ROOT) and seen["session_leader"], "the bridge's folder; a session of its own"
    umask = os.umask(0o022)
    os.umask(umask)
    assert seen["umask"] == umask, "the bridge's umask"
    assert read(s3, bucket, "env/signals") == b"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
