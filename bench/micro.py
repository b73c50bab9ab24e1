"""Client CPU per small GET and PUT: the bridge's S3Store with its fast path, without it, and a plain
botocore client, against the same server in one run (time.process_time(), one thread, 4 KiB objects).

Each request does the bridge's work around it: a GET is written to a file while hashed, a PUT is read
from a file. Variants are interleaved round by round; the table gives medians over rounds.

Usage: python bench/micro.py --endpoint URL [--rounds 7] [--requests 300]   (credentials from the environment)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import bridge  # noqa: E402

SIZE = 4096


class Plain:
    """A default botocore client doing the same work: the floor a user would start from."""

    def __init__(self) -> None:
        self.client = bridge.aws_session(None).create_client("s3")

    def download(self, bucket: str, items) -> None:
        for obj, path in items:
            body = self.client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
            bridge.write_hashing(body.iter_chunks(bridge.CHUNK), path)

    def upload(self, bucket: str, items) -> None:
        for path, key in items:
            with open(path, "rb") as body:
                self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/plain")


def cpu_ms_per_request(run, count: int) -> float:
    started = time.process_time()
    run()
    return (time.process_time() - started) * 1000 / count


def measure(endpoint: str, bucket: str, rounds: int = 7, requests: int = 300) -> str:
    """The markdown table; needs credentials in the environment."""
    os.environ["AWS_ENDPOINT_URL"] = endpoint  # where botocore's sessions, the bridge's among them, read it
    variants = {
        "plain botocore client, defaults": Plain(),
        "bridge, S3_EVENT_BRIDGE_FAST_PATH=0 (botocore, tuned)": bridge.S3Store(bridge.aws_session(None), 1, False),
        "bridge, fast path (the default)": bridge.S3Store(bridge.aws_session(None), 1, True),
    }
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-micro-") as work:
        source = Path(work) / "source"
        source.write_bytes(os.urandom(SIZE))
        keys = [f"micro/{n:04d} é+.txt" for n in range(requests)]
        puts = [(str(source), key) for key in keys]
        variants["bridge, fast path (the default)"].upload(bucket, puts)  # the objects the GETs read
        gets = [({"Key": key, "Size": SIZE}, f"{work}/got") for key in keys]
        for _ in range(rounds):
            for name, store in variants.items():
                results[name][0].append(cpu_ms_per_request(lambda s=store: s.download(bucket, gets), requests))
                results[name][1].append(cpu_ms_per_request(lambda s=store: s.upload(bucket, puts), requests))
    lines = ["| variant | CPU ms per GET | CPU ms per PUT |", "|---|---|---|"]
    for name, (get, put) in results.items():
        lines.append(f"| {name} | {statistics.median(get):.3f} | {statistics.median(put):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True, help="S3 endpoint URL")
    parser.add_argument("--bucket", default="bench")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print(measure(args.endpoint, args.bucket, args.rounds, args.requests))
