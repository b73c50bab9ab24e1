"""The fast path against servers: SeaweedFS, which checks signatures (moto does not), over HTTP and
HTTPS; and faults injected in front of moto, each of which hands the object back to botocore."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
from unittest import mock

import botocore.credentials
import botocore.exceptions
import botocore.session
import pytest
import seaweedfs
from faulty_proxy import FaultyProxy

import bridge
from helpers import BRIDGE, put, read

KEYS = [
    "plain.txt",
    "with space/and  two spaces.txt",
    "plus+sign/a+b.txt",
    "percent%20not-a-space%2B%25.txt",
    "tilde~/~home.txt",
    "query?hash#amp&eq=semi;colon:quote'star*.txt",
    "unicodé/naïve/日本語.txt",
    "emoji/😀🎉👩‍👩‍👧.bin",
    "/".join(["é" * 127 + "x", "😀" * 63 + "abc", "l" * 255, "k" * 254, "z"]),  # 1,024 bytes
]
BUCKET = "fast-path"


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    with seaweedfs.running(tmp_path_factory.mktemp("weed")) as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture(params=["http", "https"])
def store(weed, request, monkeypatch):
    """An S3Store configured as users do it: the environment (AWS_CA_BUNDLE for the self-signed HTTPS)."""
    url = weed.http_url if request.param == "http" else weed.https_url
    for name, value in weed.environment(url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    store = bridge.S3Store(bridge.aws_session(None), 16)
    assert store.fast.enabled
    return store


def test_every_awkward_key_goes_both_ways_signed_right(store, tmp_path):
    source, target = tmp_path / "in", tmp_path / "out"
    for n, key in enumerate(KEYS):
        body = f"{n}: {key}".encode() * 50
        source.write_bytes(body)
        assert store.fast.put(BUCKET, key, str(source), "text/plain"), key
        stored = store.client.get_object(Bucket=BUCKET, Key=key)  # botocore finds it under exactly that key
        assert stored["Body"].read() == body and stored["ContentType"] == "text/plain"
        store.client.put_object(Bucket=BUCKET, Key=key, Body=body[::-1])
        assert store.fast.get(BUCKET, key, str(target)) == hashlib.sha256(body[::-1]).hexdigest(), key
        assert target.read_bytes() == body[::-1]
    (tmp_path / "empty").write_bytes(b"")
    assert store.fast.put(BUCKET, "empty", str(tmp_path / "empty"), None)
    assert store.fast.get(BUCKET, "empty", str(target)) == bridge.EMPTY_SHA256


def test_a_wrong_secret_is_refused_and_after_three_refusals_botocore_does_everything(
    weed, store, tmp_path, monkeypatch, caplog
):
    assert seaweedfs.wrong_secret_status(weed, store.client.meta.endpoint_url) == 403
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", weed.secret_key + "x")
    wrong = bridge.S3Store(bridge.aws_session(None), 16)
    (tmp_path / "f").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, bridge.log.name):
        for n in range(bridge.AUTH_FAILURES_BEFORE_OFF + 2):
            with pytest.raises(bridge.GroupError, match="SignatureDoesNotMatch"):  # botocore, doing it again, too
                wrong.upload(BUCKET, [(str(tmp_path / "f"), f"refused/{n}")])
    assert not wrong.fast.enabled and wrong.fast.auth_failures == bridge.AUTH_FAILURES_BEFORE_OFF
    assert len([r for r in caplog.records if "botocore does every request now" in r.getMessage()]) == 1
    assert "Contents" not in store.client.list_objects_v2(Bucket=BUCKET, Prefix="refused/")


def test_an_object_the_fast_path_alone_signed_wrong_is_done_by_botocore(store, tmp_path):
    store.fast.credentials = botocore.credentials.Credentials("AKIDSEAWEEDTEST", "not the secret")
    (tmp_path / "f").write_bytes(b"payload")
    store.upload(BUCKET, [(str(tmp_path / "f"), "fallback/put")])
    assert store.client.get_object(Bucket=BUCKET, Key="fallback/put")["Body"].read() == b"payload"
    listed = {"Key": "fallback/put", "Size": 7}
    assert store.download(BUCKET, [(listed, str(tmp_path / "g"))]) == [hashlib.sha256(b"payload").hexdigest()]
    assert store.fast.auth_failures == 2


def test_refreshed_credentials_sign_the_next_request(weed, store, tmp_path):
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    fresh = {"access_key": weed.access_key, "secret_key": weed.secret_key, "token": None}
    refresh = mock.Mock(return_value={**fresh, "expiry_time": (past + datetime.timedelta(hours=3)).isoformat()})
    credentials = botocore.credentials.RefreshableCredentials(
        weed.access_key, "stale-secret", None, past, refresh, "test"
    )
    store.fast.credentials = credentials
    (tmp_path / "f").write_bytes(b"fresh")
    assert store.fast.put(BUCKET, "refreshed", str(tmp_path / "f"), None)
    assert refresh.called and credentials.secret_key == weed.secret_key


def test_sixteen_threads_each_keep_a_connection_and_never_fall_back(store, tmp_path):
    (tmp_path / "f").write_bytes(b"z" * 4096)
    keys = [f"threads/{n:03d} é+~.txt" for n in range(400)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert all(pool.map(lambda key: store.fast.put(BUCKET, key, str(tmp_path / "f"), "text/plain"), keys))
        paths = [str(tmp_path / key.replace("/", "_")) for key in keys]
        digests = set(pool.map(lambda pair: store.fast.get(BUCKET, *pair), zip(keys, paths)))
    assert digests == {hashlib.sha256(b"z" * 4096).hexdigest()}


def test_a_whole_group_over_https_runs_on_a_server_that_checks_signatures(weed, tmp_path):
    client = weed.client(weed.https_url)
    client.put_object(Bucket=BUCKET, Key="group/in put+é.txt", Body=b"abc")
    env = {"PATH": os.environ["PATH"], **weed.environment(weed.https_url), "AWS_CONFIG_FILE": "/nonexistent"}
    handler = 'cd "$ROOT_FOLDER" && tr a-z A-Z < "in put+é.txt" > "out put+é.txt"'
    command = [*BRIDGE, "run", "--bucket", BUCKET, "--prefix", "group/", "/bin/sh", "-c", handler]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert client.get_object(Bucket=BUCKET, Key="group/out put+é.txt")["Body"].read() == b"ABC"


# --- faults in front of moto: each object is done again by botocore -------------------------


def fetch(store: bridge.S3Store, bucket: str, key: str, size: int, path) -> str:
    (digest,) = store.download(bucket, [({"Key": key, "Size": size}, str(path))])
    return digest


def by_fast_path(proxy: FaultyProxy) -> list[bool]:
    return [agent.endswith("fast-path") for agent in proxy.agents]


def test_a_body_cut_short_is_fetched_again_by_botocore_file_and_hash_anew(proxy, s3, bucket, tmp_path):
    data = bytes(range(256)) * 400
    put(s3, bucket, "cut/k", data)
    store = bridge.S3Store(bridge.aws_session(None), 4)
    proxy.cut_responses_after = len(data) // 2
    assert store.fast.get(bucket, "cut/k", str(tmp_path / "k")) is None
    proxy.heal()
    assert fetch(store, bucket, "cut/k", len(data), tmp_path / "k") == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "k").read_bytes() == data


@pytest.mark.parametrize("status", [301, 307, 400, 404, 500, 503])
def test_any_answer_but_200_hands_the_object_to_botocore(status, proxy, s3, bucket, tmp_path):
    put(s3, bucket, "st/k", b"data")
    store = bridge.S3Store(bridge.aws_session(None), 4)
    proxy.answer = lambda method, path: status if "fast-path" in proxy.agents[-1] else None
    assert fetch(store, bucket, "st/k", 4, tmp_path / "k") == hashlib.sha256(b"data").hexdigest()
    assert by_fast_path(proxy)[:2] == [True, False], "tried fast, then done by botocore"
    assert store.fast.enabled and store.fast.auth_failures == 0


def test_three_refusals_of_its_signature_switch_the_fast_path_off_with_one_warning(proxy, s3, bucket, tmp_path, caplog):
    for n in range(6):
        put(s3, bucket, f"auth/k{n}", b"x")
    store = bridge.S3Store(bridge.aws_session(None), 4)
    refused = (403, "SignatureDoesNotMatch")
    proxy.answer = lambda method, path: refused if "fast-path" in proxy.agents[-1] else None
    with caplog.at_level(logging.WARNING, bridge.log.name):
        for n in range(6):
            assert fetch(store, bucket, f"auth/k{n}", 1, tmp_path / "k") == hashlib.sha256(b"x").hexdigest()
    assert by_fast_path(proxy).count(True) == bridge.AUTH_FAILURES_BEFORE_OFF
    assert len([r for r in caplog.records if "botocore does every request now" in r.getMessage()]) == 1


@pytest.mark.parametrize("code", ["AccessDenied", "InvalidObjectState", "KMS.DisabledException"])
def test_refusals_of_the_callers_rights_never_switch_the_fast_path_off(code, proxy, s3, bucket, tmp_path):
    """A KMS key or a bucket policy that denies some objects says nothing about the fast path's signature."""
    for n in range(6):
        put(s3, bucket, f"denied/k{n}", b"x")
    store = bridge.S3Store(bridge.aws_session(None), 4)
    proxy.answer = lambda method, path: (403, code) if "fast-path" in proxy.agents[-1] else None
    for n in range(6):
        assert fetch(store, bucket, f"denied/k{n}", 1, tmp_path / "k") == hashlib.sha256(b"x").hexdigest()
    assert by_fast_path(proxy).count(True) == 6 and store.fast.enabled and store.fast.auth_failures == 0


def test_a_connection_the_server_closed_while_idle_is_renewed_not_failed(proxy, s3, bucket, tmp_path):
    put(s3, bucket, "idle/k", b"data")
    store = bridge.S3Store(bridge.aws_session(None), 1)
    proxy.close_each = True
    for _ in range(3):
        assert store.fast.get(bucket, "idle/k", str(tmp_path / "k")) == hashlib.sha256(b"data").hexdigest()
    assert by_fast_path(proxy) == [True, True, True]


def test_a_body_over_the_limit_never_leaves_on_the_fast_path(proxy, bucket, s3, tmp_path):
    store = bridge.S3Store(bridge.aws_session(None), 4)
    (tmp_path / "big").write_bytes(b"x" * (store.fast.max_bytes + 1))
    store.upload(bucket, [(str(tmp_path / "big"), "big/k")])
    assert by_fast_path(proxy) == [False]
    assert read(s3, bucket, "big/k") == b"x" * (store.fast.max_bytes + 1)


def test_the_fast_path_is_what_moves_small_objects_through_a_group(proxy, make_bridge, s3, bucket):
    put(s3, bucket, "grp/input.txt", "abc")
    handler = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && tr a-z A-Z < input.txt > output.txt']
    assert (
        make_bridge(handler).process_messages([bridge.Message("m", (bridge.ObjectRef(bucket, "grp/input.txt"),))]) == []
    )
    served = [(method, agent.endswith("fast-path")) for (method, _, _), agent in zip(proxy.served, proxy.agents)]
    assert ("GET", True) in served and ("PUT", True) in served and read(s3, bucket, "grp/output.txt") == b"ABC"
    off = make_bridge(handler, S3_EVENT_BRIDGE_FAST_PATH="0")
    proxy.agents.clear()
    assert off.process_messages([bridge.Message("m", (bridge.ObjectRef(bucket, "grp/input.txt"),))]) == []
    assert not any(by_fast_path(proxy))


# --- exactly as safe as botocore, and never less available ----------------------------------------


def test_the_fast_path_trusts_exactly_botocores_cas_not_the_systems(weed, tmp_path, monkeypatch):
    """The server's certificate is in the system's trust (SSL_CERT_FILE), not in AWS_CA_BUNDLE: botocore
    refuses it, so the fast path must too, and store nothing."""
    other_ca, _ = seaweedfs.make_certificate(tmp_path)
    for name, value in weed.environment(weed.https_url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("SSL_CERT_FILE", weed.ca_file)
    monkeypatch.setenv("AWS_CA_BUNDLE", other_ca)
    weed.client().put_object(Bucket=BUCKET, Key="trust/k", Body=b"from a server botocore does not trust")
    store = bridge.S3Store(bridge.aws_session(None), 4)
    assert store.fast.get(BUCKET, "trust/k", str(tmp_path / "got")) is None
    assert not (tmp_path / "got").exists() or (tmp_path / "got").read_bytes() == b""
    with pytest.raises(botocore.exceptions.SSLError):
        store.client.get_object(Bucket=BUCKET, Key="trust/k")
    context = store.fast.tls
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [c["subject"] for c in ca_certs(other_ca)]


def ca_certs(path: str) -> list[dict]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=path)
    return context.get_ca_certs()


#: Keep-alive HTTP servers on many ports, in a process of their own (so that this process's sockets are the
#: client's alone): each answers any GET with 200 and a 4-byte body. Prints the ports, serves until stdin closes.
SERVERS = """
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"body")

servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(int(sys.argv[1]))]
for server in servers:
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
print(json.dumps([s.server_address[1] for s in servers]), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def hosts():
    """Ports of 80 keep-alive servers, one per host the fast path may talk to."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVERS, "80"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield json.loads(process.stdout.readline())
    finally:
        process.stdin.close()
        process.wait(10)


def sockets() -> int:
    """This process's open sockets (the descriptor listdir itself used is gone by the readlink)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sum(link.startswith("socket:") for link in links)


def aimed(fast: bridge.FastPath, ports: list[int]) -> None:
    """Bucket bN goes to the Nth server, as botocore's ruleset would send a bucket to its own host."""
    targets = {
        f"b{n}": bridge.Target("http", "127.0.0.1", port, f"127.0.0.1:{port}", "", "us-east-1")
        for n, port in enumerate(ports)
    }
    fast._target = lambda bucket, operation: targets[bucket]


def test_connections_stay_bounded_however_many_buckets_a_worker_sees(aws_env, hosts, tmp_path):
    """80 buckets (each its own host under virtual-hosted addressing) at 16 threads: at most botocore's
    bound stays open, 16 idle connections for each of the 10 most recently used hosts."""
    before = sockets()
    store = bridge.S3Store(bridge.aws_session(None), 16)
    aimed(store.fast, hosts)

    def fetch_all(thread: int) -> list[str | None]:
        return [store.fast.get(f"b{n}", "k", str(tmp_path / f"{thread}-{n}")) for n in range(80) for _ in range(2)]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        digests = [d for got in pool.map(fetch_all, range(16)) for d in got]
    assert set(digests) == {hashlib.sha256(b"body").hexdigest()}, "every request answered, none handed over"
    idle = sum(len(connections) for connections in store.fast.idle.values())
    assert len(store.fast.idle) <= bridge.FAST_PATH_HOSTS and idle <= bridge.FAST_PATH_HOSTS * 16
    assert sockets() - before <= bridge.FAST_PATH_HOSTS * 16 + 1  # botocore's client holds none yet


def test_an_idle_connection_is_checked_whatever_its_descriptor_number(aws_env, hosts, tmp_path):
    """select() cannot take a descriptor at or above 1024; the check of an idle connection must not use it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"this machine allows {hard} open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        store = bridge.S3Store(bridge.aws_session(None), 1)
        aimed(store.fast, hosts)
        for _ in range(3):
            assert store.fast.get("b0", "k", str(tmp_path / "k")) == hashlib.sha256(b"body").hexdigest()
        (connection,) = store.fast.idle[("http", "127.0.0.1", hosts[0])]
        assert connection.sock.fileno() >= 1024
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_connection_that_cannot_be_made_hands_the_object_to_botocore(aws_env, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = bridge.S3Store(bridge.aws_session(None), 1)
    aimed(store.fast, [port])
    assert store.fast.get("b0", "k", str(tmp_path / "k")) is None
    assert not store.fast.put("b0", "k", __file__, None)
