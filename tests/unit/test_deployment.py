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


def test_the_architecture_is_a_parameter_lambda_knows_and_the_function_uses(template):
    parameter = template["Parameters"]["Architecture"]
    assert set(parameter["AllowedValues"]) == {"arm64", "x86_64"} and parameter["Default"] in parameter["AllowedValues"]
    function = resources(template, "AWS::Lambda::Function")["Function"]
    assert function["Architectures"] == [{"Ref": "Architecture"}]


def test_the_dead_letter_queue_keeps_messages_longer_than_the_source_queue(template):
    """AWS: a standard queue's message keeps its first enqueue time in the DLQ, so the DLQ must keep longer."""
    queues = resources(template, "AWS::SQS::Queue")
    assert queues["DeadLetterQueue"]["MessageRetentionPeriod"] > queues["Queue"]["MessageRetentionPeriod"]


def test_logs_go_to_a_log_group_with_a_retention_as_json_lines_lambda_can_filter(template):
    (group,) = resources(template, "AWS::Logs::LogGroup").items()
    assert group[1]["RetentionInDays"] > 0
    logging = resources(template, "AWS::Lambda::Function")["Function"]["LoggingConfig"]
    assert logging["LogFormat"] == "JSON" and logging["LogGroup"] == {"Ref": group[0]}
    assert logging["ApplicationLogLevel"] == {"Ref": "LogLevel"}
    levels = template["Parameters"]["LogLevel"]["AllowedValues"]
    metrics = resources(template, "AWS::Lambda::Function")["Function"]["Environment"]["Variables"]["METRICS_NAMESPACE"]
    for level in bridge.LAMBDA_LEVELS:  # a level the template allows is one the bridge starts with
        environment = {"HANDLER_COMMAND": "x", "AWS_LAMBDA_LOG_FORMAT": "JSON", "METRICS_NAMESPACE": metrics}
        try:
            bridge.Config.from_env({**environment, "AWS_LAMBDA_LOG_LEVEL": level})
        except bridge.ConfigError:
            assert level not in levels
        else:
            assert level in levels


def test_a_batch_operations_job_has_a_role_that_may_invoke_the_function(template):
    role = resources(template, "AWS::IAM::Role")["BatchOperationsRole"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "batchoperations.s3.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    (invoke,) = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert {"Fn::GetAtt": ["Function", "Arn"]} in invoke["Resource"]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"s3:GetObject", "s3:PutObject"} <= actions, "read the manifest, write the report"


KEDA = ROOT / "examples" / "keda" / "worker.yaml"


@pytest.fixture(scope="module")
def worker():
    import yaml

    return {doc["kind"]: doc for doc in yaml.safe_load_all(KEDA.read_text(encoding="utf-8"))}


def test_the_keda_example_fits_the_schemas_of_kubernetes_and_keda(worker):
    """Core kinds against Kubernetes' own schemas (kubernetes-validate, strict), KEDA's against its CRD models
    (cloudcoil-models-keda), which must keep every field: one they drop is a field KEDA does not know."""
    import kubernetes_validate
    from cloudcoil.models.keda import v1alpha1

    assert set(worker) == {"ServiceAccount", "Deployment", "TriggerAuthentication", "ScaledObject"}
    for kind in ("ServiceAccount", "Deployment"):
        kubernetes_validate.validate(worker[kind], "1.31.0", strict=True)
    for kind in ("TriggerAuthentication", "ScaledObject"):
        model = getattr(v1alpha1, kind).model_validate(worker[kind])
        assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == worker[kind]


def test_the_keda_scaler_and_the_worker_get_credentials_from_one_iam_role(worker):
    account = worker["ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    pod = worker["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert worker["TriggerAuthentication"]["spec"]["podIdentity"] == {"provider": "aws", "identityOwner": "workload"}
    (trigger,) = worker["ScaledObject"]["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == worker["TriggerAuthentication"]["metadata"]["name"]
    (container,) = pod["containers"]
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    assert trigger["metadata"]["queueURLFromEnv"] == "SQS_QUEUE_URL" and env["SQS_QUEUE_URL"].startswith("https://sqs.")
    documented = {"queueURL", "queueURLFromEnv", "queueLength", "activationQueueLength", "awsRegion", "awsEndpoint"}
    assert set(trigger["metadata"]) <= documented | {"scaleOnInFlight", "scaleOnDelayed"}, (
        "KEDA 2.20's aws-sqs-queue keys"
    )
    assert "podIdentity.aws.irsa.enabled=true" in KEDA.read_text(), "the operator's own IRSA, which it assumes with"
    assert container["args"][0] == "consume"
    assert pod["terminationGracePeriodSeconds"] > bridge.SHUTDOWN_GRACE_SECONDS + bridge.KILL_GRACE_SECONDS + 1
