"""Contender: raw boto3, no bridge: list, download_file/upload_file with 16 threads, run the handler."""

import concurrent.futures
import os
import subprocess
import sys
import tempfile

import boto3
import botocore.config

bucket, prefix, handler = sys.argv[1], sys.argv[2], sys.argv[3:]
client = boto3.client("s3", config=botocore.config.Config(max_pool_connections=16))
keys = [
    o["Key"]
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for o in page.get("Contents", ())
]
with tempfile.TemporaryDirectory() as root, concurrent.futures.ThreadPoolExecutor(16) as pool:
    paths = {key: os.path.join(root, key[len(prefix) :]) for key in keys}
    for path in paths.values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
    list(pool.map(lambda key: client.download_file(bucket, key, paths[key]), keys))
    subprocess.run([*handler, root], check=True)
    list(pool.map(lambda key: client.upload_file(paths[key], bucket, key), keys))
