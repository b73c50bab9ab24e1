"""The fast path, offline: it signs byte for byte as botocore does, goes where botocore goes,
and leaves to botocore every bucket, client and setting it is not certainly right for."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from unittest import mock

import botocore
import botocore.config
import botocore.credentials
import botocore.httpsession
import botocore.session
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

import bridge


def long_key() -> str:
    """1,024 bytes of UTF-8 (S3's limit), in segments of at most 255 bytes."""
    key = "/".join(["é" * 127 + "x", "😀" * 63 + "abc", "l" * 255, "k" * 254, "z"])
    assert len(key.encode()) == 1024
    return key


KEYS = [
    "plain.txt",
    "with space/and  two spaces.txt",
    "plus+sign/a+b.txt",
    "percent%20not-a-space%2B%25.txt",
    "%",
    "tilde~/~home.txt",
    "query?hash#amp&eq=semi;colon:quote'star*.txt",
    "sub-delims!$(),@[]^`{|}.txt",
    "unicodé/naïve/日本語.txt",
    "emoji/😀🎉👩‍👩‍👧.bin",
    " leading and trailing ",
    long_key(),
]
WHEN = datetime.datetime(2026, 11, 30, 12, 34, 56)
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+session/token=="


def botocore_headers(method: str, url: str, body: bytes, credentials, region: str, extra: dict) -> dict:
    """What botocore's own S3 signer sets for this request at WHEN."""
    request = AWSRequest(method, url, dict(extra), body)
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        S3SigV4Auth(credentials, "s3", region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("token", [None, TOKEN], ids=["keys", "session-token"])
@pytest.mark.parametrize("base", ["https://plain.s3.eu-west-1.amazonaws.com", "http://127.0.0.1:9000/my.dotted"])
@pytest.mark.parametrize("owner", [None, "111122223333"], ids=["any-owner", "expected-owner"])
def test_the_signed_headers_are_botocores_byte_for_byte(key, method, token, base, owner):
    credentials = botocore.credentials.Credentials("AKIDEXAMPLE", "wJalr/XUtnFEMI+K7MDENG=bPxRfiCY", token)
    body = f"body of {key}".encode() if method == "PUT" else b""
    extra = {"Content-Type": "text/plain"} if method == "PUT" else {}
    if owner:
        extra["X-Amz-Expected-Bucket-Owner"] = owner
    url = f"{base}/{bridge.key_path(key)}"
    _, _, host, path = url.split("/", 3)
    frozen = credentials.get_frozen_credentials()
    ours = bridge.sign(
        method, host, f"/{path}", hashlib.sha256(body).hexdigest(), frozen, "eu-west-1", "20261130T123456Z", extra
    )
    theirs = botocore_headers(method, url, body, credentials, "eu-west-1", extra)
    assert ours.pop("Host") == host
    assert {k: v.encode() for k, v in ours.items()} == {k: v.encode() for k, v in theirs.items()}


def test_the_path_is_encoded_once_and_never_normalised():
    assert bridge.key_path("a b+c%d~e/é") == "a%20b%2Bc%25d~e/%C3%A9"
    assert bridge.key_path("a//./b") == "a//./b"
    credentials = botocore.credentials.Credentials("AKID", "SECRET")
    frozen = credentials.get_frozen_credentials()
    once = bridge.sign("GET", "h", "/b/a%20b", bridge.EMPTY_SHA256, frozen, "r", "20261130T123456Z", {})
    twice = bridge.sign("GET", "h", "/b/a%2520b", bridge.EMPTY_SHA256, frozen, "r", "20261130T123456Z", {})
    theirs = botocore_headers("GET", "http://h/b/a%20b", b"", credentials, "r", {})
    assert once["Authorization"] == theirs["Authorization"] != twice["Authorization"]


@pytest.fixture
def offline(monkeypatch):
    """(session, client) for region eu-west-1 with no profile, endpoint or proxy from this machine."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", "AWS_PROFILE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")

    def make(endpoint_url=None, **settings):
        session = botocore.session.Session()
        session.set_credentials("AKIDEXAMPLE", "secret")
        config = botocore.config.Config(**settings)
        return session, session.create_client("s3", region_name="eu-west-1", endpoint_url=endpoint_url, config=config)

    return make


class Sent(Exception):
    """Raised from before-send: the request went no further than this process."""


def botocore_url(client, operation: str, bucket: str, key: str) -> str:
    """The URL botocore's client sends for this call."""
    seen = []

    def catch(request, **_):
        seen.append(request.url)
        raise Sent

    client.meta.events.register_first(f"before-send.s3.{operation}", catch)
    try:
        with pytest.raises(Sent):
            body = {"Body": b"x"} if operation == "PutObject" else {}
            getattr(client, botocore.xform_name(operation))(Bucket=bucket, Key=key, **body)
    finally:
        client.meta.events.unregister(f"before-send.s3.{operation}", catch)
    return seen[0]


def fast_url(client, operation: str, bucket: str, key: str) -> str:
    target = bridge.resolve_target(client, bucket, operation)
    return f"{target.scheme}://{target.host_header}{target.base_path}/{bridge.key_path(key)}"


@pytest.mark.parametrize(
    "bucket, host, base",
    [
        ("plain-bucket", "plain-bucket.s3.eu-west-1.amazonaws.com", ""),
        ("my.dotted.bucket", "s3.eu-west-1.amazonaws.com", "/my.dotted.bucket"),  # no TLS host label: path-style
    ],
)
def test_a_real_regions_urls_are_botocores_for_dotted_and_undotted_buckets(offline, bucket, host, base):
    _, client = offline()
    for operation in ("GetObject", "PutObject"):
        assert bridge.resolve_target(client, bucket, operation) == bridge.Target(
            "https", host, None, host, base, "eu-west-1"
        )
        for key in KEYS:
            assert fast_url(client, operation, bucket, key) == botocore_url(client, operation, bucket, key)


@pytest.mark.parametrize(
    "endpoint_url",
    ["http://127.0.0.1:9000", "https://s3.example.test:9443", "http://localhost:8333/base/", "https://[::1]:9000"],
)
@pytest.mark.parametrize("bucket", ["plain-bucket", "my.dotted.bucket"])
def test_custom_endpoint_urls_are_botocores(offline, endpoint_url, bucket):
    _, client = offline(endpoint_url)
    for key in KEYS:
        assert fast_url(client, "GetObject", bucket, key) == botocore_url(client, "GetObject", bucket, key)


def test_the_addressing_style_and_access_point_arns_are_followed(offline):
    _, path_style = offline(s3={"addressing_style": "path"})
    assert fast_url(path_style, "GetObject", "plain-bucket", "k") == "https://s3.eu-west-1.amazonaws.com/plain-bucket/k"
    _, client = offline()
    arn = "arn:aws:s3:eu-west-1:123456789012:accesspoint/myendpoint"
    assert fast_url(client, "GetObject", arn, "a b") == botocore_url(client, "GetObject", arn, "a b")


@pytest.mark.parametrize(
    "bucket",
    [
        "mybucket--euw1-az1--x-s3",  # S3 Express: sigv4-s3express
        "arn:aws:s3::123456789012:accesspoint/mfzwi23gnjvgw.mrap",  # multi-region access point: SigV4A
        "arn:aws:s3-object-lambda:eu-west-1:123456789012:accesspoint/banner",  # signing name s3-object-lambda
        "arn:aws:s3-outposts:eu-west-1:123456789012:outpost/op-01234567890123456/accesspoint/reports",
    ],
)
def test_buckets_signed_otherwise_stay_on_botocore(offline, bucket):
    _, client = offline()
    assert bridge.resolve_target(client, bucket, "GetObject") is None


def test_an_unsigned_client_stays_on_botocore(offline):
    _, client = offline(signature_version=botocore.UNSIGNED)
    assert bridge.resolve_target(client, "plain-bucket", "GetObject") is None


def test_a_proxy_a_client_certificate_no_credentials_or_the_switch_keep_everything_on_botocore(offline, monkeypatch):
    session, client = offline()
    assert bridge.FastPath(session, client, 16, True, None).enabled
    assert not bridge.FastPath(session, client, 16, False, None).enabled
    monkeypatch.setenv("NO_PROXY", "example.com")
    assert bridge.FastPath(session, client, 16, True, None).enabled, "NO_PROXY alone configures no proxy"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert not bridge.FastPath(session, client, 16, True, None).enabled
    monkeypatch.delenv("HTTPS_PROXY")
    for settings in ({"proxies": {"https": "http://proxy.test:3128"}}, {"client_cert": "/some/cert.pem"}):
        assert not bridge.FastPath(*offline(**settings), 16, True, None).enabled
    anonymous = botocore.session.Session()
    with mock.patch.object(anonymous, "get_credentials", return_value=None):
        assert not bridge.FastPath(anonymous, client, 16, True, None).enabled
    assert not bridge.Config.from_env({"HANDLER_COMMAND": "x", "S3_EVENT_BRIDGE_FAST_PATH": " Off "}).fast_path
    with pytest.raises(bridge.ConfigError, match="S3_EVENT_BRIDGE_FAST_PATH"):
        bridge.Config.from_env({"HANDLER_COMMAND": "x", "S3_EVENT_BRIDGE_FAST_PATH": "sometimes"})


def test_the_endpoint_ruleset_runs_once_per_bucket_not_once_per_key(offline):
    session, client = offline()
    ruleset = client._ruleset_resolver._provider.ruleset
    with mock.patch.object(ruleset, "evaluate", wraps=ruleset.evaluate) as counted:
        for n in range(20):
            botocore_url(client, "GetObject", "plain-bucket", f"key-{n}")
    assert counted.call_count == 20
    assert bridge.cache_endpoints_per_bucket(session, client)
    with mock.patch.object(ruleset, "evaluate", wraps=ruleset.evaluate) as counted:
        urls = [botocore_url(client, "GetObject", "plain-bucket", f"other-{n}") for n in range(20)]
        botocore_url(client, "GetObject", "my.dotted.bucket", "k")
    assert counted.call_count == 2
    assert urls[3] == "https://plain-bucket.s3.eu-west-1.amazonaws.com/other-3"


@pytest.mark.parametrize("read", [{"ref": "Key"}, "https://{Bucket}.example/{Key}", "{Prefix#x}"])
def test_the_endpoint_cache_is_not_used_if_the_ruleset_reads_a_key(offline, read):
    session, client = offline()
    loader = session.get_component("data_loader")
    real = loader.load_service_model("s3", "endpoint-rule-set-1")
    changed = {**real, "rules": [*real["rules"], {"conditions": [], "endpoint": {"url": read}}]}
    with mock.patch.object(loader, "load_service_model", return_value=changed):
        assert not bridge.cache_endpoints_per_bucket(session, client)
    assert "resolve_endpoint" not in vars(client._ruleset_resolver._provider)


def test_the_user_agent_is_fixed_at_start_up(offline):
    session, _ = offline()
    store = bridge.S3Store(session, 4)
    seen = []

    def catch(request, **_):
        seen.append(request.headers["User-Agent"])
        raise Sent

    store.client.meta.events.register_first("before-send.s3.GetObject", catch)
    with pytest.raises(Sent):
        store.client.get_object(Bucket="b", Key="k")
    assert seen[0].decode().startswith(f"s3-event-bridge/{bridge.__version__} botocore/")


def test_bodies_held_in_memory_stay_under_32_mib_whatever_the_concurrency(offline):
    session, client = offline()
    assert bridge.FastPath(session, client, 16, True, None).max_bytes == 2 * 1024 * 1024
    assert bridge.FastPath(session, client, 64, True, None).max_bytes * 64 == 32 * 1024 * 1024


@pytest.mark.parametrize(
    "variables", [(), ("AWS_CA_BUNDLE",), ("REQUESTS_CA_BUNDLE",), ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE")]
)
def test_https_trusts_what_botocore_trusts(offline, monkeypatch, tmp_path, variables):
    for name in variables:
        bundle = tmp_path / f"{name}.pem"
        bundle.write_bytes(Path(botocore.httpsession.DEFAULT_CA_BUNDLE).read_bytes())
        monkeypatch.setenv(name, str(bundle))
    session, client = offline("https://127.0.0.1:9000")
    fast = bridge.FastPath(session, client, 16, True, None)
    assert fast.ca_file == botocore.httpsession.get_cert_path(client._endpoint.http_session._verify)
    assert fast.ca_file.endswith(f"{variables[0]}.pem" if variables else "cacert.pem")
