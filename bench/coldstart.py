"""Lambda cold start of the bridge, next to the bare-botocore floor, in one run.

For each case, N runs, median and ratio to the floor:
- floor: `python3 -c` importing botocore.session and creating the S3 client
  (a normal install, the same credentials in the environment);
- init: exec of the bridge until its first GET .../invocation/next (the S3
  client is created before that request);
- first response: exec until the response to a one-object event.
The zipapp runs with an empty cache (fresh folder each run) and with a cache
prepared by `bootstrap --prepare`; bridge.py runs from the venv as a reference.

Usage: python bench/coldstart.py --endpoint URL [--runs N] [--zipapp dist/bootstrap] (bench/run.py runs it too)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from servers import CREDENTIALS  # noqa: E402

from runtime_api import RuntimeApiServer  # noqa: E402

FLOOR = "import botocore.session; botocore.session.get_session().create_client('s3')"


def floor(python: str, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-c", FLOOR], env=env, check=True)
    return time.perf_counter() - started


def bridge_start(command: list[str], env: dict, event: dict) -> tuple[float, float]:
    """Seconds from exec to the first `next` request, and to the first response."""
    api = RuntimeApiServer()
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**env, "AWS_LAMBDA_RUNTIME_API": api.address}, stderr=subprocess.DEVNULL)
    try:
        result = api.invoke("r1", event, timeout=120)
        if result[1] != "response":
            raise SystemExit(f"{command}: {result}")
        return api.first_next_at - started, api.last_result_at - started
    finally:
        process.kill()
        process.wait()
        api.close()


def table(rows: list[tuple[str, list[float], list[float] | None]], floor_median: float) -> str:
    lines = ["| case | init (exec → first next) | × floor | first response | × floor |", "|---|---|---|---|---|"]
    for name, init, response in rows:
        i = statistics.median(init)
        r = statistics.median(response) if response else None
        resp = f"{r * 1000:.0f} ms | {r / floor_median:.2f}" if r else "– | –"
        lines.append(f"| {name} | {i * 1000:.0f} ms | {i / floor_median:.2f} | {resp} |")
    return "\n".join(lines)


def wait_for_bucket(client, bucket: str) -> None:
    """Create the bucket, retrying while a just-started server warms up."""
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=bucket)
            return
        except Exception as exc:
            if "BucketAlreadyOwnedByYou" in str(exc) or "BucketAlreadyExists" in str(exc):
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def measure(endpoint: str, bucket: str, zipapp_path: str, runs: int = 7, python: str = sys.executable) -> str:
    """The cold-start table, every case interleaved run by run."""
    import boto3

    boto3.client("s3", endpoint_url=endpoint).put_object(Bucket=bucket, Key="cold/input.txt", Body=b"x")
    env = {"PATH": os.environ["PATH"], **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_LAMBDA_FUNCTION_NAME": "f"}
    event = {
        "Records": [
            {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": "cold/input.txt"}}}
        ]
    }
    work = Path(tempfile.mkdtemp(prefix="coldstart-"))
    shutil.copy2(zipapp_path, work / "bootstrap")
    zipapp = [python, "-I", "-S", str(work / "bootstrap"), "true"]
    subprocess.run(
        [python, str(work / "bootstrap"), "--prepare", str(work / "prepared")], check=True, capture_output=True
    )
    cases = {
        "zipapp, empty cache": lambda i: (zipapp, {"S3_EVENT_BRIDGE_CACHE": str(work / f"empty-{i}")}),
        "zipapp, prepared cache": lambda i: (zipapp, {"S3_EVENT_BRIDGE_CACHE": str(work / "prepared")}),
        "bridge.py (venv install)": lambda i: ([python, str(ROOT / "bridge.py"), "true"], {}),
    }
    floors, results = [], {name: ([], []) for name in cases}
    for i in range(runs):  # interleaved, so machine noise hits every case alike
        floors.append(floor(python, env))
        for name, case in cases.items():
            command, extra = case(i)
            init, response = bridge_start(command, {**env, **extra}, event)
            results[name][0].append(init)
            results[name][1].append(response)
    shutil.rmtree(work, ignore_errors=True)
    floor_median = statistics.median(floors)
    heading = f"floor (python -c: import botocore.session, create the S3 client): {floor_median * 1000:.0f} ms"
    heading += f", {runs} runs\n\n"
    return heading + table([(name, init, response) for name, (init, response) in results.items()], floor_median)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True, help="S3 endpoint URL")
    parser.add_argument("--bucket", default="coldstart")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--zipapp", default=str(ROOT / "dist" / "bootstrap"))
    args = parser.parse_args()
    import boto3

    wait_for_bucket(boto3.client("s3", endpoint_url=args.endpoint), args.bucket)
    print(measure(args.endpoint, args.bucket, args.zipapp, args.runs))


if __name__ == "__main__":
    main()
