"""The benchmark: the bridge next to the plain alternatives, measured side by side in one run.

Cases (pull, append one byte to every file, push everything back):
200 x 1 MiB, 2,000 x 4 KiB, 1 x 1 GiB, each through
- the bridge: `dist/bootstrap run` (prepared cache), handler bench/append.py;
- awscli: a shell bootstrap doing `aws s3 cp --recursive` down, the handler, up;
- raw boto3: download_file/upload_file on 16 threads, no bridge;
- s5cmd (Go): the practical ceiling.
Then Lambda cold start (empty and prepared cache, next to the botocore floor)
and warm invocation overhead. Medians of --runs runs, interleaved.

Usage: bash bench/run.sh [--runs N] [--cases 200x1MiB,2000x4KiB,1x1GiB]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import botocore.config

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))
import coldstart  # noqa: E402
import micro  # noqa: E402
import seaweedfs  # noqa: E402
from servers import CREDENTIALS, Moto, environment  # noqa: E402

from runtime_api import RuntimeApiServer  # noqa: E402

KIB, MIB, GIB = 1024, 1024**2, 1024**3
CASES = {"200x1MiB": (200, MIB), "2000x4KiB": (2000, 4 * KIB), "1x1GiB": (1, GIB)}


def timed(command: list[str], env: dict) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (MB) and client CPU seconds (its own and its children's) of one process.

    The peak is the process's own VmHWM, read while it runs: ru_maxrss would also count the memory of
    this benchmark, from which it was forked.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        with contextlib.suppress(OSError, StopIteration, ValueError):
            lines = Path(f"/proc/{process.pid}/status").read_text().splitlines()
            peak = max(peak, int(next(line for line in lines if line.startswith("VmHWM:")).split()[1]))
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{command[:4]} failed: {process.stderr.read().decode()[-2000:]}")
    process.returncode = 0
    return elapsed, peak // 1024, usage.ru_utime + usage.ru_stime


def seed(client, bucket: str, prefix: str, count: int, size: int) -> str:
    """Put the case's objects; return the key of one of them, to check each contender by."""
    from concurrent.futures import ThreadPoolExecutor

    if size >= 64 * MIB:
        with tempfile.NamedTemporaryFile() as f:
            for _ in range(size // (64 * MIB)):
                f.write(os.urandom(64 * MIB))
            f.flush()
            client.upload_file(f.name, bucket, f"{prefix}blob-0")
        return f"{prefix}blob-0"
    body = os.urandom(size)
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: client.put_object(Bucket=bucket, Key=f"{prefix}d{i % 10}/f{i:05d}", Body=body), range(count)
            )
        )
    return f"{prefix}d0/f00000"


def contenders(tools: dict, url: str, bucket: str, prefix: str) -> dict[str, list[str]]:
    """The same job four ways; each pulls the prefix, runs append.py on it, pushes it back."""
    append = [sys.executable, str(BENCH / "append.py")]
    handler = " ".join(append)
    s3 = f"s3://{bucket}/{prefix}"
    aws = f"{tools['aws']} s3 cp --recursive --quiet"
    s5 = f"{tools['s5cmd']} --endpoint-url {url} cp"
    bridge = [sys.executable, "-I", "-S", tools["zipapp"], "run", "--bucket", bucket, "--prefix", prefix, *append]
    # set -e: a step that fails fails the contender (an `; rm` at the end would hide it).
    scratch = """set -e; d=$(mktemp -d); trap 'rm -rf "$d"' EXIT; """
    awscli = f'{scratch}{aws} {s3} "$d"; {handler} "$d"; {aws} "$d" {s3}'
    s5cmd = f"""{scratch}{s5} '{s3}*' "$d/" >/dev/null; {handler} "$d"; cd "$d"; {s5} '*' '{s3}' >/dev/null"""
    return {
        "bridge": bridge,
        "awscli": ["bash", "-c", awscli],
        "raw boto3": [sys.executable, str(BENCH / "raw_boto3.py"), bucket, prefix, *append],
        "s5cmd": ["bash", "-c", s5cmd],
    }


def pushed_back(client, bucket: str, key: str, size: int, who: str) -> int:
    """Check that the contender pushed its outputs (each run appends one byte); the new size."""
    now = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    if now != size + 1:
        raise SystemExit(f"{who} did not push its outputs: s3://{bucket}/{key} is {now} bytes, expected {size + 1}")
    return now


def transfer_table(tools, url, env, client, bucket, runs, cases) -> list[str]:
    lines = [
        "| case | bridge | awscli | raw boto3 | s5cmd | bridge vs awscli | vs raw boto3 | vs s5cmd "
        "| client CPU s: bridge / awscli / raw boto3 / s5cmd | bridge peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name in cases:
        count, size = CASES[name]
        prefix = f"{name}/"
        sample = seed(client, bucket, prefix, count, size)
        commands = contenders(tools, url, bucket, prefix)
        length = client.head_object(Bucket=bucket, Key=sample)["ContentLength"]
        times = {who: [] for who in commands}
        cpu = {who: [] for who in commands}
        rss = []
        for _ in range(runs):
            for who, command in commands.items():
                seconds, peak, used = timed(command, {**env, "TMPDIR": tools["tmp"]})
                length = pushed_back(client, bucket, sample, length, who)
                times[who].append(seconds)
                cpu[who].append(used)
                if who == "bridge":
                    rss.append(peak)
        med = {who: statistics.median(t) for who, t in times.items()}
        cpus = " / ".join(f"{statistics.median(cpu[who]):.2f}" for who in commands)
        speed = {who: med[who] / med["bridge"] for who in med}  # > 1: the bridge is faster
        lines.append(
            f"| {count} x {size // KIB if size < MIB else size // MIB} {'KiB' if size < MIB else 'MiB'} "
            f"| {med['bridge']:.2f} s | {med['awscli']:.2f} s | {med['raw boto3']:.2f} s | {med['s5cmd']:.2f} s "
            f"| {speed['awscli']:.2f}x | {speed['raw boto3']:.2f}x | {speed['s5cmd']:.2f}x | {cpus} | {max(rss)} MB |"
        )
        print(lines[-1], flush=True)
    return lines


def warm_invocations(tools: dict, url: str, env: dict, client, bucket: str, count: int = 60) -> tuple[float, float]:
    """Median ms of a warm one-object invocation (`true` handler), and of its S3 requests alone."""
    client.put_object(Bucket=bucket, Key="warm/input.txt", Body=b"x")
    event = {
        "Records": [
            {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": "warm/input.txt"}}}
        ]
    }
    api = RuntimeApiServer()
    command = [sys.executable, "-I", "-S", tools["zipapp"], "true"]
    process = subprocess.Popen(
        command,
        env={**env, "AWS_LAMBDA_RUNTIME_API": api.address, "S3_EVENT_BRIDGE_CACHE": tools["cache"]},
        stderr=subprocess.DEVNULL,
    )
    samples = []
    try:
        for i in range(count):
            started = time.perf_counter()
            assert api.invoke(f"w{i}", event)[1] == "response"
            samples.append(time.perf_counter() - started)
    finally:
        process.kill()
        process.wait()
        api.close()
    requests = []
    for _ in range(count):
        started = time.perf_counter()
        client.list_objects_v2(Bucket=bucket, Prefix="warm/")
        client.get_object(Bucket=bucket, Key="warm/input.txt")["Body"].read()
        requests.append(time.perf_counter() - started)
    return statistics.median(samples[5:]) * 1000, statistics.median(requests[5:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--zipapp", default=str(ROOT / "dist" / "bootstrap"))
    parser.add_argument("--aws", required=True, help="the awscli `aws` program")
    parser.add_argument("--s5cmd", required=True)
    parser.add_argument("--weed", required=True)
    parser.add_argument("--moto-server", required=True)
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)  # the servers here accept these; nothing else is used
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    tools = {
        "aws": os.path.abspath(args.aws),  # the s5cmd contender runs its upload from its scratch folder
        "s5cmd": os.path.abspath(args.s5cmd),
        "zipapp": str(work / "bootstrap"),
        "cache": str(work / "cache"),
        "tmp": str(work / "tmp"),
    }
    os.makedirs(tools["tmp"])
    shutil.copy2(args.zipapp, tools["zipapp"])
    subprocess.run([sys.executable, tools["zipapp"], "--prepare", tools["cache"]], check=True, capture_output=True)
    seaweed, moto = seaweedfs.start(weed=args.weed), Moto(args.moto_server)
    try:
        env = {**environment(seaweed.http_url), "S3_EVENT_BRIDGE_CACHE": tools["cache"]}
        client = boto3.client(
            "s3",
            endpoint_url=seaweed.http_url,
            config=botocore.config.Config(max_pool_connections=16, retries={"mode": "standard"}),
        )
        bucket = "bench"
        coldstart.wait_for_bucket(client, bucket)
        print(f"# s3-event-bridge benchmark, {time.strftime('%Y-%m-%d')}")
        machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
        print(f"machine: {machine}; python {platform.python_version()}")
        print(f"S3 server: SeaweedFS (weed mini) on 127.0.0.1, sharing the cores; medians of {args.runs} runs")
        print(f"zipapp: {os.path.getsize(args.zipapp) / 1e6:.1f} MB\n")
        print("## Client CPU per small request (4 KiB, one thread)\n")
        print(micro.measure(seaweed.http_url, bucket) + "\n")
        print("## Transfers: pull, append one byte to every file, push\n")
        print("Ratios are speed ratios (their time / bridge time): above 1.00x the bridge is faster.\n")
        transfer_table(tools, seaweed.http_url, env, client, bucket, args.runs, args.cases.split(","))
        print("\n## Lambda cold start (SeaweedFS)\n")
        print(coldstart.measure(seaweed.http_url, bucket, args.zipapp, runs=max(5, args.runs)))
        print("\n## Warm invocation, one object, `true` handler\n")
        print("| S3 server | invocation | its S3 requests alone | overhead |\n|---|---|---|---|")
        for server_name, url in (("moto", moto.url), ("SeaweedFS", seaweed.http_url)):
            c = boto3.client("s3", endpoint_url=url)
            coldstart.wait_for_bucket(c, bucket)
            total, requests = warm_invocations(tools, url, {**environment(url)}, c, bucket)
            print(f"| {server_name} | {total:.1f} ms | {requests:.1f} ms | {total - requests:.1f} ms |")
    finally:
        seaweedfs.stop(seaweed)
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
