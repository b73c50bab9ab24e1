"""Fixtures that wire real moto notifications and build bridges against moto."""

import json
import os
import tempfile

import pytest
from faulty_proxy import FaultyProxy

import bridge
from helpers import queue_arn, unique


@pytest.fixture(autouse=True)
def private_tmpdir(tmp_path, monkeypatch):
    """In-process bridges make their work folders here, so what a test finds there is its own."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def proxy(moto_url, monkeypatch, aws_env):
    """A fault-injecting proxy in front of moto; bridges and clients made afterwards go through it."""
    faulty = FaultyProxy(moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty.url)
    yield faulty
    faulty.close()


@pytest.fixture
def make_bridge(aws_env):
    def build(handler, **settings):
        environ = {**os.environ, **settings}
        config = bridge.Config.from_env(environ, handler)
        store = bridge.S3Store(bridge.aws_session(None), config.transfer_concurrency, config.fast_path)
        return bridge.Bridge(config, store, environ)

    return build


@pytest.fixture
def s3_to_sqs(clients, bucket):
    """A bucket whose created-object events go straight to a fresh queue."""
    sqs = clients["sqs"]
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    clients["s3"].put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn(sqs, url), "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    return bucket, url


@pytest.fixture
def s3_to_sns_to_sqs(clients, bucket):
    sqs, sns = clients["sqs"], clients["sns"]
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    topic = sns.create_topic(Name=unique("t"))["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, url))
    clients["s3"].put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]},
    )
    return bucket, url


@pytest.fixture
def s3_to_eventbridge_to_sqs(clients, bucket):
    sqs, events = clients["sqs"], clients["events"]
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    rule = unique("r")
    pattern = {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": {"bucket": {"name": [bucket]}}}
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": queue_arn(sqs, url)}])
    clients["s3"].put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    return bucket, url
