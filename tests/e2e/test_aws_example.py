"""The AWS example as shipped: the template, the image the Dockerfile builds, and its handler, run together.

The Dockerfile's steps are replayed without Docker, each stage in a folder standing in for its root
filesystem; the template's notification filter, environment and logging settings are applied to moto;
the function then serves the SQS event that moto's own notification produced, through a Runtime API.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import urllib.parse
import zipfile
from pathlib import Path

import pytest
from cfnlint.decode import decode

from helpers import ROOT, interpreter, keys, read, receive, sqs_event, unique
from runtime_api import RuntimeApiServer

EXAMPLE = ROOT / "examples" / "aws"


def dockerfile_steps(path: Path):
    """(instruction, argument) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, argument = line.strip().partition(" ")
            yield instruction.upper(), argument.strip()


class Image:
    """A multi-stage Dockerfile's steps, each stage in a folder standing in for its root filesystem."""

    def __init__(self, folder: Path, python: str):
        self.folder, self.python = folder, python
        self.stages: dict[str, Path] = {}
        self.root = self.workdir = folder
        self.env: dict[str, str] = {}
        self.entrypoint: list[str] = []

    def inside(self, path: str, root: Path | None = None) -> Path:
        return (root or self.root) / path.lstrip("/")

    def step(self, instruction: str, argument: str) -> None:
        actions = {"FROM": self.start, "WORKDIR": self.change_folder, "COPY": self.copy, "RUN": self.run}
        actions.update(ENV=self.set_variable, ENTRYPOINT=self.set_entrypoint)
        actions[instruction](argument)

    def start(self, argument: str) -> None:
        self.root = self.workdir = self.folder / f"stage{len(self.stages)}"
        self.root.mkdir(parents=True)
        words = argument.split()
        self.stages[words[-1] if len(words) == 3 else str(len(self.stages))] = self.root
        self.env = {"PATH": f"{Path(self.python).parent}:/usr/bin:/bin"}  # python:3.12-slim's python3

    def change_folder(self, argument: str) -> None:
        self.workdir = self.inside(argument)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def copy(self, argument: str) -> None:
        *sources, target = argument.split()
        origin = ROOT
        if sources[0].startswith("--from="):
            origin = self.stages[sources.pop(0).split("=", 1)[1]]
        for source in sources:
            destination = self.inside(target) if target.startswith("/") else self.workdir / target
            if target.endswith("/"):
                destination = destination / Path(source).name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.inside(source, origin) if origin is not ROOT else ROOT / source, destination)

    def run(self, argument: str) -> None:
        program, *args = shlex.split(argument)
        if program == "bootstrap":  # the bridge's own step: its absolute paths are inside the image
            command = [self.python, str(self.inside("/usr/bin/bootstrap"))]
            command += [str(self.inside(a)) if a.startswith("/") else a for a in args]
        else:
            command = ["bash", "-c", argument]
        subprocess.run(command, cwd=self.workdir, env=self.env, check=True, capture_output=True, timeout=300)

    def set_variable(self, argument: str) -> None:
        name, _, value = argument.partition("=")
        value = shlex.split(value)[0]
        self.env[name] = str(self.inside(value)) if value.startswith("/") else value

    def set_entrypoint(self, argument: str) -> None:
        self.entrypoint = json.loads(argument)


def resolve(value, refs: dict):
    """A template value with its `Ref`s replaced (the only intrinsic the function's settings use)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return refs[value["Ref"]]
    return value


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The Dockerfile's stages replayed: a targeted bootstrap built, the handler copied, the cache prepared."""
    python = interpreter(12)
    if python is None:
        pytest.skip("CPython 3.12 (the image's python) is not installed on this machine")
    built = Image(tmp_path_factory.mktemp("image"), python)
    for instruction, argument in dockerfile_steps(ROOT / "Dockerfile"):
        built.step(instruction, argument)
    return built


def test_the_image_holds_one_small_bootstrap_for_its_interpreter_and_platform(image):
    bootstrap = image.inside(image.entrypoint[0])
    assert image.entrypoint == ["/usr/bin/bootstrap"] and bootstrap.stat().st_size < 4_000_000
    with zipfile.ZipFile(bootstrap) as z:
        trees = {n.split("/")[1] for n in z.namelist() if n.startswith(("pyc/", "jq/"))}
    assert trees == {"cp312", f"cp312-manylinux_2_26-{os.uname().machine}"}


def test_the_template_the_image_and_the_handler_turn_an_incoming_csv_into_json_lines(image, aws_env, s3, sqs, tmp_path):
    template, problems = decode(str(EXAMPLE / "template.yaml"))
    assert problems == []
    resources = {name: r.get("Properties", {}) for name, r in template["Resources"].items()}
    refs = {name: p.get("Default") for name, p in template["Parameters"].items()}
    refs.update(InputBucket=unique("in"), OutputBucket=unique("out"))
    for name in ("InputBucket", "OutputBucket"):
        s3.create_bucket(Bucket=refs[name])
    s3.put_object(Bucket=refs["InputBucket"], Key="incoming/earlier.csv", Body=b"a,b\n1,2\n")  # no event: no run
    queue_url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    (rule,) = resources["InputBucket"]["NotificationConfiguration"]["QueueConfigurations"]
    filters = [{"Name": r["Name"], "Value": r["Value"]} for r in rule["Filter"]["S3Key"]["Rules"]]
    notification = {"QueueArn": arn, "Events": [rule["Event"]], "Filter": {"Key": {"FilterRules": filters}}}
    s3.put_bucket_notification_configuration(
        Bucket=refs["InputBucket"], NotificationConfiguration={"QueueConfigurations": [notification]}
    )
    for key in ("incoming/notes.txt", "other/sample.csv", "incoming/sample.csv"):  # the filter passes the last only
        s3.put_object(Bucket=refs["InputBucket"], Key=key, Body=(EXAMPLE / "sample.csv").read_bytes())
    messages = receive(sqs, queue_url, 1)
    (record,) = json.loads(messages[0]["Body"])["Records"]
    assert urllib.parse.unquote_plus(record["s3"]["object"]["key"]) == "incoming/sample.csv"

    function = resources["Function"]
    settings = {name: resolve(value, refs) for name, value in function["Environment"]["Variables"].items()}
    logging = function["LoggingConfig"]  # Lambda turns these into the runtime's variables
    settings.update(
        AWS_LAMBDA_LOG_FORMAT=logging["LogFormat"], AWS_LAMBDA_LOG_LEVEL=resolve(logging["ApplicationLogLevel"], refs)
    )
    api = RuntimeApiServer()
    env = {**image.env, **aws_env, **settings, "AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_RUNTIME_API": api.address}
    cache = Path(image.env["S3_EVENT_BRIDGE_CACHE"])
    prepared = sorted(str(p) for p in cache.rglob("*"))
    command = [image.python, "-I", "-S", str(image.inside(image.entrypoint[0]))]
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen(command, cwd=image.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            result = api.invoke("r1", sqs_event(messages), timeout=60)
            first = keys(s3, refs["OutputBucket"])
            s3.delete_object(Bucket=refs["OutputBucket"], Key="incoming/sample.jsonl")
            documented = (EXAMPLE / "event.json").read_text().replace("INPUT_BUCKET", refs["InputBucket"])
            again = api.invoke("r2", json.loads(documented), timeout=60)  # the README's local-invoke event
        finally:
            process.terminate()
            process.wait(10)
            api.close()
    lines = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert result[1:3] == again[1:3] == ("response", {"batchItemFailures": []}), lines
    assert first == keys(s3, refs["OutputBucket"]) == ["incoming/sample.jsonl"]
    rows = [json.loads(line) for line in read(s3, refs["OutputBucket"], "incoming/sample.jsonl").splitlines()]
    assert rows == [
        {"order": "1001", "customer": "Ada", "amount": "12.50"},
        {"order": "1002", "customer": "Grace", "amount": "7.25"},
    ]
    summary = next(line for line in lines if "outcome" in line)
    assert summary["outcome"] == "succeeded" and summary["message_ids"] == [messages[0]["MessageId"]]
    assert summary["_aws"]["CloudWatchMetrics"][0]["Namespace"] == settings["METRICS_NAMESPACE"]
    said = next(line for line in lines if line.get("stream") == "stdout")
    assert (said["message"], said["level"]) == ("sample.csv: 2 rows", "INFO")
    assert sorted(str(p) for p in cache.rglob("*")) == prepared, "a prepared cold start unpacks and compiles nothing"
