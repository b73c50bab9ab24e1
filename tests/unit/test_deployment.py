"""The deployment examples: the CloudFormation template is valid and has the documented production shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode import decode

import bridge
from helpers import ROOT

TEMPLATE = ROOT / "examples" / "aws" / "template.yaml"


@pytest.fixture(scope="module")
def template():
    decoded, problems = decode(str(TEMPLATE))
    assert problems == []
    return decoded


def resources(template, kind: str) -> dict:
    return {name: r.get("Properties", {}) for name, r in template["Resources"].items() if r["Type"] == kind}


def test_the_template_passes_cfn_lint():
    linted = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--include-checks", "I", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
    )
    assert (linted.returncode, linted.stdout) == (0, "")


def test_failed_messages_are_reported_per_item_and_end_in_a_dead_letter_queue(template):
    (mapping,) = resources(template, "AWS::Lambda::EventSourceMapping").values()
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = resources(template, "AWS::SQS::Queue")["Queue"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert int(queue["RedrivePolicy"]["maxReceiveCount"]) >= 1


def test_the_visibility_timeout_is_at_least_six_times_the_function_timeout(template):
    timeouts = template["Parameters"]["FunctionTimeout"]["AllowedValues"]
    visibility = template["Mappings"]["VisibilityTimeout"]
    assert resources(template, "AWS::Lambda::Function")["Function"]["Timeout"] == {"Ref": "FunctionTimeout"}
    for seconds in timeouts:
        assert visibility[seconds]["Seconds"] >= 6 * int(seconds)


def test_the_function_cannot_trigger_itself(template):
    """Only keys matching the notification filter and MATCH_KEY start work; outputs go to a bucket without
    notifications."""
    buckets = resources(template, "AWS::S3::Bucket")
    (notification,) = buckets["InputBucket"]["NotificationConfiguration"]["QueueConfigurations"]
    rules = {rule["Name"]: rule["Value"] for rule in notification["Filter"]["S3Key"]["Rules"]}
    variables = resources(template, "AWS::Lambda::Function")["Function"]["Environment"]["Variables"]
    match_key = bridge.compile_regex(variables["MATCH_KEY"], "MATCH_KEY")
    for key in ("incoming/a.csv", "incoming/x/y.csv", "other/a.csv", "incoming/a.csv.out"):
        by_filter = key.startswith(rules["prefix"]) and key.endswith(rules["suffix"])
        assert bool(match_key.search(key)) == by_filter, key
    assert variables["TARGET_BUCKET"] == {"Ref": "OutputBucket"}
    assert "NotificationConfiguration" not in buckets["OutputBucket"]


def test_uploads_a_stopped_function_left_unfinished_are_aborted(template):
    (rule,) = resources(template, "AWS::S3::Bucket")["OutputBucket"]["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
