#!/usr/bin/env bash
# Build dist/bootstrap (or the path given): bridge.py plus its pinned dependencies in one executable
# zipapp. Needs python3 (3.9+) with pip, and PyPI the first time (wheels are
# kept in ~/.cache/s3-event-bridge/wheels, or $BRIDGE_WHEELS, and every one is
# checked against requirements.lock's hashes).
#
# Deterministic: entries sorted, timestamps and modes fixed, so the same inputs
# give the same bytes. stdlib zipfile writes the sorted archive (zipapp before
# Python 3.13 adds files in directory order) and stdlib zipapp turns it into
# the executable with its shebang.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
exec "$PYTHON" - "$@" <<'PY'
import concurrent.futures
import glob
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipapp
import zipfile

LOCK = "requirements.lock"
WHEELS = os.environ.get("BRIDGE_WHEELS") or os.path.expanduser("~/.cache/s3-event-bridge/wheels")
OUTPUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join("dist", "bootstrap")
# botocore's models for the services the bridge calls (s3, sqs), and for the
# credential providers that call AWS themselves (sts: web identity/assume role;
# sso, sso-oidc: SSO profiles). Everything else is ~25 MB nobody loads.
SERVICES = {"s3", "sqs", "sts", "sso", "sso-oidc"}
JQ_PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14"]
JQ_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_28_aarch64", "musllinux_1_2_x86_64", "musllinux_1_2_aarch64"]
EPOCH = (1980, 1, 1, 0, 0, 0)

MAIN = '''\
"""Entry point of the s3-event-bridge zipapp (written by build_zipapp.sh)."""

import os
import sys

ARCHIVE = os.path.dirname(os.path.abspath(__file__))
# Bytecode compiled at build time for this interpreter, where the build had it:
# imported straight from the archive. Otherwise bridge.py at the top is used.
sys.path.insert(0, os.path.join(ARCHIVE, "pyc", "cp%d%d" % sys.version_info[:2]))

import bridge  # noqa: E402

if __name__ == "__main__":
    sys.exit(bridge.main(bundle=bridge.Bundle(ARCHIVE, "{build_id}")))
'''


def requirements():
    """name -> (pin line, hashes) from the lock file."""
    text = re.sub(r"\\\n\s*", " ", open(LOCK).read())
    pins = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            pin, *hashes = line.split()
            pins[pin.split("==")[0]] = (pin, [h.split(":", 1)[1] for h in hashes])
    return pins


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def download(pin, hashes, extra=()):
    """One wheel, from build/wheels when a file with a listed hash is there."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(f"{pin} " + " ".join(f"--hash=sha256:{h}" for h in hashes) + "\n")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--require-hashes", "-d", WHEELS, "-r", req.name, *extra]
    try:
        offline = subprocess.run([*cmd, "--no-index", "--find-links", WHEELS], capture_output=True)
        if offline.returncode != 0:
            online = subprocess.run(cmd, capture_output=True, text=True)
            if online.returncode != 0:
                raise SystemExit(f"pip download {pin} {' '.join(extra)} failed:\n{online.stderr}")
    finally:
        os.unlink(req.name)


def fetch_wheels(pins):
    """The locked wheels, downloaded only when build/wheels lacks one."""
    os.makedirs(WHEELS, exist_ok=True)
    wanted = {h for _, hashes in pins.values() for h in hashes}

    def present():
        return {os.path.join(WHEELS, n): sha256(os.path.join(WHEELS, n)) for n in os.listdir(WHEELS) if n.endswith(".whl")}

    if not wanted <= set(present().values()):
        jobs = [(pin, hashes, ()) for name, (pin, hashes) in pins.items() if name != "jq"]
        pin, hashes = pins["jq"]
        for version in JQ_PYTHONS:
            abi = "cp" + version.replace(".", "")
            for platform in JQ_PLATFORMS:
                extra = ("--python-version", version, "--implementation", "cp", "--abi", abi, "--platform", platform)
                jobs.append((pin, hashes, extra))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(download, *job) for job in jobs]:
                future.result()
    return sorted(path for path, digest in present().items() if digest in wanted)


def keep(name):
    """Prune botocore's data to the services used; drop boto3's resource models and caches."""
    parts = name.split("/")
    if "__pycache__" in parts or name.endswith(".pyc") or parts[:2] == ["boto3", "data"]:
        return False
    if parts[:2] == ["botocore", "data"] and len(parts) > 3:
        return parts[2] in SERVICES
    return True


def jq_folder(wheel):
    """cp311-manylinux_2_26-x86_64 from jq-1.13.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl."""
    _, _, python, _, platforms = os.path.basename(wheel)[:-4].split("-")
    first = platforms.split(".")[0]
    for arch in ("x86_64", "aarch64"):
        if first.endswith("_" + arch):
            return f"{python}-{first[: -len(arch) - 1]}-{arch}"
    raise SystemExit(f"unexpected jq wheel {wheel}")


def stage(wheels):
    """archive path -> bytes, every file that goes into the zipapp."""
    files = {"bridge.py": open("bridge.py", "rb").read()}
    for wheel in wheels:
        is_jq = os.path.basename(wheel).startswith("jq-")
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                name = info.filename
                if info.is_dir() or not keep(name):
                    continue
                if is_jq:
                    base = os.path.basename(name)
                    if name.endswith(".so") or base == "LICENSE":
                        files[f"jq/{jq_folder(wheel)}/{base}"] = z.read(info)
                elif name.startswith("botocore/data/"):
                    files["files/data/" + name[len("botocore/data/") :]] = z.read(info)
                elif name == "botocore/cacert.pem":
                    files["files/cacert.pem"] = z.read(info)
                else:
                    files["lib/" + name] = z.read(info)
    return files


COMPILE = """
import os, py_compile, sys
source, target = sys.argv[1], sys.argv[2]
for folder, _, names in os.walk(source):
    for name in names:
        if name.endswith(".py"):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, source)
            py_compile.compile(path, cfile=os.path.join(target, relative[:-3] + ".pyc"), dfile=relative, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def interpreters():
    """minor version -> a CPython 3.9+ of this machine (pyenv's, then PATH's)."""
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = {}
    for minor in range(9, 20):
        for candidate in [*sorted(glob.glob(f"{pyenv}/versions/3.{minor}.*/bin/python3.{minor}")), shutil.which(f"python3.{minor}")]:
            probe = subprocess.run([candidate or "false", "-c", "import sys; print(sys.version_info[1])"], capture_output=True, text=True)
            if probe.returncode == 0 and probe.stdout.strip() == str(minor):
                found[minor] = candidate
                break
    return found


def compile_trees(files):
    """pyc/cp3XY/: sourceless, hash-stamped bytecode of every module, per interpreter.

    zipimport loads these straight from the archive: the interpreters the build
    had start without unpacking or compiling any code.
    """
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, "src")
        for name, data in files.items():
            if name == "bridge.py" or (name.startswith("lib/") and name.endswith(".py")):
                path = os.path.join(source, name[4:] if name.startswith("lib/") else name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
        for minor, python in sorted(interpreters().items()):
            target = os.path.join(work, f"cp3{minor}")
            # A fixed hash seed: frozenset constants are marshalled in hash order.
            env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"}
            subprocess.run([python, "-s", "-c", COMPILE, source, target], check=True, env=env)
            for folder, _, names in os.walk(target):
                for name in names:
                    path = os.path.join(folder, name)
                    with open(path, "rb") as f:
                        files[f"pyc/cp3{minor}/" + os.path.relpath(path, target)] = f.read()


def build_id(files):
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def write(files, output):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = (0o100755 if name.endswith(".so") else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[name])
    os.makedirs(os.path.dirname(output), exist_ok=True)
    buffer.seek(0)
    zipapp.create_archive(buffer, output, interpreter="/usr/bin/env python3")
    os.chmod(output, 0o755)


pins = requirements()
files = stage(fetch_wheels(pins))
compile_trees(files)
identity = build_id(files)
files["__main__.py"] = MAIN.format(build_id=identity).encode()
write(files, OUTPUT)
size = os.path.getsize(OUTPUT)
print(f"{OUTPUT}: build {identity}, {len(files)} files, {size / 1e6:.1f} MB, sha256 {sha256(OUTPUT)}")
PY
