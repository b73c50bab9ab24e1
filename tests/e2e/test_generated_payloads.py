"""Generated payloads through the real runtime loop: it never dies, and reports exactly the right messages.

About 1,500 payloads a run: 400 SQS batches of 2-4 bodies, and 300 direct payloads.

One bridge.py process serves every example. The oracle: a group fails when its
bucket does not exist (or is not a valid name) or its prefix starts with
`fail/` (the handler refuses those); a message fails when its body is
unreadable or it fed a failed group; when every message of a batch fails, the
invocation fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import garbage_bodies, valid_events, wrong_shapes

import bridge
from helpers import ROOT, unique
from runtime_api import RuntimeApiServer

GOOD = unique("gen")
BUCKETS = st.sampled_from([GOOD, GOOD, "missing-" + GOOD, "Bad Name!"])
HANDLER = ["/bin/sh", "-c", 'case "$KEY_PREFIX" in fail/*) exit 1;; esac']
SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


def group_fails(bucket: str, key: str) -> bool:
    return bucket != GOOD or bridge.key_prefix(key, 0).startswith("fail/")


@pytest.fixture(scope="module")
def loop(clients, aws_env, tmp_path_factory):
    clients["s3"].create_bucket(Bucket=GOOD)
    api = RuntimeApiServer()
    log_path = tmp_path_factory.mktemp("generated") / "function.log"
    env = {
        "PATH": os.environ["PATH"],
        **aws_env,
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_LOG_LEVEL": "ERROR",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(ROOT / "bridge.py"), *HANDLER], env=env, stdout=log, stderr=log)
    counter = iter(range(10**9))

    def invoke(payload):
        assert process.poll() is None, log_path.read_text()[-3000:]
        return api.invoke(f"r{next(counter)}", payload, timeout=60)

    yield invoke
    assert process.poll() is None, "the runtime loop died"
    process.terminate()
    process.wait(10)
    api.close()


bodies = st.one_of(
    valid_events(BUCKETS).map(lambda pair: (json.dumps(pair[0]), pair[1])),
    garbage_bodies(BUCKETS).map(lambda body: (body, None)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=SUPPRESSED)
@given(st.lists(bodies, min_size=2, max_size=4))
def test_a_generated_sqs_batch_reports_exactly_the_messages_that_must_not_be_acknowledged(loop, batch):
    records = [{"messageId": f"m{i}", "body": body, "eventSource": "aws:sqs"} for i, (body, _) in enumerate(batch)]
    must_fail = {
        f"m{i}" for i, (_, named) in enumerate(batch) if named is None or any(group_fails(*ref) for ref in named)
    }
    _, kind, answer, error_type = loop({"Records": records})
    if len(must_fail) == len(batch):
        assert (kind, error_type) == ("error", "Bridge.GroupFailed"), answer
    else:
        assert kind == "response", answer
        assert {item["itemIdentifier"] for item in answer["batchItemFailures"]} == must_fail


@settings(max_examples=300, deadline=None, suppress_health_check=SUPPRESSED)
@given(st.one_of(valid_events(BUCKETS), wrong_shapes.map(lambda payload: (payload, None))))
def test_a_generated_direct_payload_fails_exactly_when_it_must(loop, pair):
    payload, named = pair
    _, kind, answer, error_type = loop(payload)
    if named is None:
        assert (kind, error_type) in (("error", "Bridge.EventError"), ("response", None)), answer
        if kind == "response":
            assert answer == {"batchItemFailures": []} or answer == {"status": "succeeded"}
    elif any(group_fails(*ref) for ref in named):
        assert (kind, error_type) == ("error", "Bridge.GroupFailed"), answer
    else:
        assert (kind, answer) == ("response", {"status": "succeeded"})
