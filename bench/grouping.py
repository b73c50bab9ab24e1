"""GROUP_BY=folder against GROUP_BY=object on the job the issue names: a flat folder of 1,000 objects
(4 KiB each) and 100 events, as ten Lambda batches of ten SQS messages.

Both models run the same per-object handler (an output for each key in TRIGGERS_FILE) in the same run,
interleaved, through a counting proxy in front of SeaweedFS (which checks signatures): S3 requests as
the server saw them, bytes moved as the bridge reported them, and wall time. Medians of --runs.

Usage: .venv/bin/python bench/grouping.py [--runs 3]   (after bash tests/run.sh has made .venv)
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import seaweedfs  # noqa: E402
from faulty_proxy import FaultyProxy  # noqa: E402

import bridge  # noqa: E402

OBJECTS, EVENTS, BATCH, SIZE = 1000, 100, 10, 4096
#: A per-object job: an output for each key that triggered the run (python3 -I -S: ~15 ms to start).
HANDLER = (
    'cd "$ROOT_FOLDER" && python3 -I -S -c "import json, sys;'
    " [open(k + '.out', 'w').write(k) for k in json.load(open(sys.argv[1]))]\" \"$TRIGGERS_FILE\""
)


def one_run(model: str, proxy: FaultyProxy, bucket: str, out: str) -> dict:
    """Ten invocations of ten messages each; the requests the proxy served and the bytes the reports name."""
    environ = {**os.environ, "GROUP_BY": model, "TARGET_BUCKET": out, "HANDLER_COMMAND": HANDLER}
    config = bridge.Config.from_env(environ)
    function = bridge.Bridge(config, bridge.S3Store(bridge.aws_session(None), 16), environ)
    with proxy.lock:
        proxy.served.clear()
    keys = [f"flat/o{n:04d}.csv" for n in range(0, OBJECTS, OBJECTS // EVENTS)]
    moved, started = 0, time.perf_counter()
    for first in range(0, EVENTS, BATCH):
        messages = [bridge.Message(f"m{n}", (bridge.ObjectRef(bucket, keys[n]),)) for n in range(first, first + BATCH)]
        for report in function.run_groups(messages).values():
            assert report.ok, report.error
            moved += report.pulled_bytes + report.uploaded_bytes
    seconds = time.perf_counter() - started
    kinds = collections.Counter(
        "list" if method == "GET" and "list-type" in path else method for method, path, _ in proxy.served
    )
    return {"seconds": seconds, "bytes": moved, **kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = seaweedfs.start()
    proxy = FaultyProxy(server.http_url, keep_host=True)
    try:
        os.environ.update({**server.environment(proxy.url), "AWS_LAMBDA_LOG_LEVEL": "ERROR"})
        os.environ.pop("AWS_CA_BUNDLE")
        tempfile.tempdir = tempfile.mkdtemp(prefix="bench-grouping-")
        client = server.client()
        bucket, out = "grouping-in", "grouping-out"
        for name in (bucket, out):
            client.create_bucket(Bucket=name)
        body = os.urandom(SIZE)
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda n: client.put_object(Bucket=bucket, Key=f"flat/o{n:04d}.csv", Body=body), range(OBJECTS)
                )
            )
        bridge.setup_logging(bridge.Config.from_env({**os.environ, "HANDLER_COMMAND": "true"}))
        runs: dict[str, list[dict]] = {"folder": [], "object": []}
        for _ in range(args.runs):
            for model in runs:
                runs[model].append(one_run(model, proxy, bucket, out))
        batches = f"{EVENTS // BATCH} batches of {BATCH}"
        print(f"{OBJECTS} objects of {SIZE // 1024} KiB in one folder, {EVENTS} events in {batches}")
        print(f"SeaweedFS behind a counting proxy on 127.0.0.1; medians of {args.runs} runs\n")
        print("| GROUP_BY | lists | GETs | PUTs | bytes moved | time |\n|---|---|---|---|---|---|")
        for model, measured in runs.items():
            median = {
                name: statistics.median(run.get(name, 0) for run in measured)
                for name in ("list", "GET", "PUT", "bytes", "seconds")
            }
            print(
                f"| `{model}` | {median['list']:.0f} | {median['GET']:.0f} | {median['PUT']:.0f} "
                f"| {median['bytes'] / 1e6:.1f} MB | {median['seconds']:.1f} s |"
            )
    finally:
        proxy.close()
        seaweedfs.stop(server)


if __name__ == "__main__":
    main()
