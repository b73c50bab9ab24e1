#!/usr/bin/env bash
# Build dist/bootstrap: bridge.py and its pinned dependencies in one executable zipapp.
#
#   bash build_zipapp.sh [OUTPUT]              universal: any CPython 3.9+, any platform (dist/bootstrap)
#   bash build_zipapp.sh --python 3.12 --platform manylinux_2_28_x86_64 [OUTPUT]
#                                              targeted: one of each (dist/bootstrap-py3.12-manylinux_2_28_x86_64)
#
# Needs a CPython 3.9+ with pip ($PYTHON, default python3), and PyPI the first
# time: wheels are kept in ~/.cache/s3-event-bridge/wheels (or $BRIDGE_WHEELS)
# and every one is checked against requirements.lock's hashes. This file is
# both a shell script and the Python program it runs (the next line is a
# string to Python and `exec` to the shell), so that ruff reads all of it.
# fmt: off
''''exec "${PYTHON:-python3}" "$0" "$@" # '''
# fmt: on
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import zipapp
import zipfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
LOCK = os.path.join(HERE, "requirements.lock")
WHEELS = os.environ.get("BRIDGE_WHEELS") or os.path.expanduser("~/.cache/s3-event-bridge/wheels")
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
TAG = "cp%d%d" % sys.version_info[:2]
COMPILED = {compiled!r}  # the interpreters the archive has bytecode for
SOURCES = {sources!r}  # whether it has the sources too (lib/), for any other interpreter
if TAG not in COMPILED and not SOURCES:  # a targeted build
    sys.exit("s3-event-bridge: this bootstrap was built for %s only; this is %s" % (", ".join(COMPILED), TAG))
# Bytecode compiled at build time for this interpreter, where the build had it:
# imported straight from the archive. Otherwise bridge.py at the top is used.
sys.path.insert(0, os.path.join(ARCHIVE, "pyc", TAG))

import bridge  # noqa: E402

if __name__ == "__main__":
    sys.exit(bridge.main(bundle=bridge.Bundle(ARCHIVE, "{build_id}", TAG in COMPILED)))
'''


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="build_zipapp.sh", description="Build the s3-event-bridge zipapp.")
    parser.add_argument("output", nargs="?", help="default: dist/bootstrap, or dist/bootstrap-TARGET when targeted")
    parser.add_argument("--python", metavar="X.Y", help="targeted: only this CPython (bytecode and jq build)")
    parser.add_argument("--platform", metavar="TAG", help="targeted: only this platform's jq build, as pip names it")
    parser.add_argument("--compile-tree", nargs=2, metavar=("SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python and args.python not in JQ_PYTHONS:
        parser.error(f"--python: the builds serve CPython {', '.join(JQ_PYTHONS)}; got {args.python!r}")
    if args.output is None:  # a targeted build never lands on the universal file unless asked to
        target = "-".join(part for part in (args.python and f"py{args.python}", args.platform) if part)
        args.output = os.path.join(HERE, "dist", f"bootstrap-{target}" if target else "bootstrap")
    return args


def requirements() -> dict[str, tuple[str, list[str]]]:
    """name -> (pin line, hashes) from the lock file."""
    with open(LOCK) as lock:
        text = re.sub(r"\\\n\s*", " ", lock.read())
    pins = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            pin, *hashes = line.split()
            pins[pin.split("==")[0]] = (pin, [h.split(":", 1)[1] for h in hashes])
    return pins


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def download(pin: str, hashes: list[str], extra: tuple[str, ...] = ()) -> None:
    """One wheel, from the wheel cache when a file with a listed hash is there."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(f"{pin} " + " ".join(f"--hash=sha256:{h}" for h in hashes) + "\n")
    pip = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps"]
    command = [*pip, "--only-binary=:all:", "--require-hashes", "-d", WHEELS, "-r", req.name, *extra]
    try:
        offline = subprocess.run([*command, "--no-index", "--find-links", WHEELS], capture_output=True)
        if offline.returncode != 0:
            online = subprocess.run(command, capture_output=True, text=True)
            if online.returncode != 0:
                raise SystemExit(f"pip download {pin} {' '.join(extra)} failed:\n{online.stderr}")
    finally:
        os.unlink(req.name)


def keep(name: str) -> bool:
    """Prune botocore's data to the services used; drop boto3's resource models and caches."""
    parts = name.split("/")
    if "__pycache__" in parts or name.endswith(".pyc") or parts[:2] == ["boto3", "data"]:
        return False
    if parts[:2] == ["botocore", "data"] and len(parts) > 3:
        return parts[2] in SERVICES
    return True


def jq_folder(wheel: str) -> str:
    """cp311-manylinux_2_26-x86_64 from jq-1.13.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl."""
    _, _, python, _, platforms = os.path.basename(wheel)[:-4].split("-")
    first = platforms.split(".")[0]
    for arch in ("x86_64", "aarch64"):
        if first.endswith("_" + arch):
            return f"{python}-{first[: -len(arch) - 1]}-{arch}"
    raise SystemExit(f"unexpected jq wheel {wheel}")


def jq_wanted(folder: str, python: str | None, platform: str | None) -> bool:
    """Whether a jq build serves the target: its interpreter, and a platform the target's libc can load."""
    tag, libc, arch = folder.split("-")
    if python and tag != "cp" + python.replace(".", ""):
        return False
    if not platform:
        return True
    wanted = re.fullmatch(r"(manylinux|musllinux)_(\d+)_(\d+)_(x86_64|aarch64)", platform)
    family, major, minor = libc.split("_")
    if not wanted or wanted.group(1) != family or wanted.group(4) != arch:
        return False
    return (int(wanted.group(2)), int(wanted.group(3))) >= (int(major), int(minor))


def fetch_wheels(pins: dict, python: str | None, platform: str | None) -> list[str]:
    """Every locked wheel the build needs (a targeted one: one jq), downloaded only when the cache lacks it."""
    os.makedirs(WHEELS, exist_ok=True)
    wanted = {h for _, hashes in pins.values() for h in hashes}

    def present() -> dict[str, str]:
        names = [n for n in os.listdir(WHEELS) if n.endswith(".whl")]
        return {os.path.join(WHEELS, n): sha256(os.path.join(WHEELS, n)) for n in names}

    def complete(found: dict[str, str]) -> bool:
        """The cache holds every wheel the build needs: a targeted one needs one jq build only."""
        others = {h for name, (_, hashes) in pins.items() if name != "jq" for h in hashes}
        if not others <= set(found.values()):
            return False
        jq = [path for path, digest in found.items() if digest in pins["jq"][1]]
        if python or platform:
            return any(jq_wanted(jq_folder(path), python, platform) for path in jq)
        return set(pins["jq"][1]) <= set(found.values())

    if not complete(present()):
        jobs = [(pin, hashes, ()) for name, (pin, hashes) in pins.items() if name != "jq"]
        pin, hashes = pins["jq"]
        for version in [python] if python else JQ_PYTHONS:
            abi = "cp" + version.replace(".", "")
            for target in [platform] if platform else JQ_PLATFORMS:
                extra = ("--python-version", version, "--implementation", "cp", "--abi", abi, "--platform", target)
                jobs.append((pin, hashes, extra))
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(download, *job) for job in jobs]:
                future.result()
    return sorted(path for path, digest in present().items() if digest in wanted)


def stage(wheels: list[str], python: str | None, platform: str | None) -> dict[str, bytes]:
    """archive path -> bytes, every file that goes into the zipapp."""
    with open(os.path.join(HERE, "bridge.py"), "rb") as source:
        files = {"bridge.py": source.read()}
    for wheel in wheels:
        is_jq = os.path.basename(wheel).startswith("jq-")
        if is_jq and not jq_wanted(jq_folder(wheel), python, platform):
            continue
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
    if not any(name.startswith("jq/") for name in files):
        raise SystemExit(f"no jq build serves --python {python} --platform {platform}: see JQ_PLATFORMS")
    return files


def compile_tree(source: str, target: str) -> None:
    """Run by each interpreter on this very file: sourceless, hash-stamped bytecode of every module."""
    for folder, _, names in os.walk(source):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, source)
                py_compile.compile(
                    path,
                    cfile=os.path.join(target, relative[:-3] + ".pyc"),
                    dfile=relative,
                    doraise=True,
                    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
                )


def interpreters() -> dict[int, str]:
    """minor version -> a CPython 3.9+ of this machine (pyenv's, then PATH's)."""
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = {}
    for minor in range(9, 20):
        candidates = [*sorted(glob.glob(f"{pyenv}/versions/3.{minor}.*/bin/python3.{minor}"))]
        candidates.append(shutil.which(f"python3.{minor}") or "false")
        for candidate in candidates:
            probe = [candidate, "-c", "import sys; print(sys.version_info[1])"]
            answer = subprocess.run(probe, capture_output=True, text=True)
            if answer.returncode == 0 and answer.stdout.strip() == str(minor):
                found[minor] = candidate
                break
    return found


def compile_trees(files: dict[str, bytes], python: str | None) -> list[str]:
    """pyc/cp3XY/ for each interpreter this machine has (or the one asked for); return their tags.

    zipimport loads these straight from the archive: the interpreters the build
    had start without unpacking or compiling any code.
    """
    found = interpreters()
    minors = [int(python.split(".")[1])] if python else sorted(found)
    tags = []
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, "src")
        for name, data in files.items():
            if name == "bridge.py" or (name.startswith("lib/") and name.endswith(".py")):
                path = os.path.join(source, name[4:] if name.startswith("lib/") else name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
        for minor in minors:
            if minor not in found:
                print(f"note: CPython 3.{minor} is not on this machine: no bytecode for it", file=sys.stderr)
                continue
            target = os.path.join(work, f"cp3{minor}")
            # A fixed hash seed: frozenset constants are marshalled in hash order.
            env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"}
            command = [found[minor], "-s", os.path.abspath(__file__), "--compile-tree", source, target]
            subprocess.run(command, check=True, env=env)
            for folder, _, names in os.walk(target):
                for name in names:
                    path = os.path.join(folder, name)
                    with open(path, "rb") as f:
                        files[f"pyc/cp3{minor}/" + os.path.relpath(path, target)] = f.read()
            tags.append(f"cp3{minor}")
    return tags


def build_id(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def write(files: dict[str, bytes], output: str) -> None:
    """Sorted entries with fixed times and modes: the same inputs give the same bytes.

    stdlib zipfile writes the archive (zipapp before Python 3.13 adds files in
    directory order), and stdlib zipapp makes it executable with its shebang.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = (0o100755 if name.endswith(".so") else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[name])
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    buffer.seek(0)
    zipapp.create_archive(buffer, output, interpreter="/usr/bin/env python3")
    os.chmod(output, 0o755)


def main() -> None:
    args = parse_arguments()
    if args.compile_tree:
        compile_tree(*args.compile_tree)
        return
    files = stage(fetch_wheels(requirements(), args.python, args.platform), args.python, args.platform)
    tags = compile_trees(files, args.python)
    sources = not (args.python and tags)
    if not sources:  # the one interpreter it serves has its bytecode: the sources would never be read
        files = {name: data for name, data in files.items() if not name.startswith("lib/")}
    identity = build_id(files)
    files["__main__.py"] = MAIN.format(build_id=identity, compiled=tuple(tags), sources=sources).encode()
    write(files, args.output)
    jq = sorted({name.split("/")[1] for name in files if name.startswith("jq/")})
    size = os.path.getsize(args.output)
    print(f"{args.output}: build {identity}, {len(files)} files, {size / 1e6:.1f} MB, sha256 {sha256(args.output)}")
    print(f"  bytecode: {', '.join(tags) or 'none (sources are unpacked and compiled at first start)'}")
    print(f"  jq builds: {len(jq)}{'' if len(jq) > 4 else ': ' + ', '.join(jq)}")


if __name__ == "__main__":
    main()
