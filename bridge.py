"""s3-event-bridge: turn a file-in/file-out command into a reaction to S3 events.

S3 object events (direct, through SQS, SNS -> SQS or EventBridge) are grouped
by bucket and folder. For each group the folder is listed, an optional jq
filter decides whether to run, the matching objects are pulled into a
temporary folder, the handler command runs there, and every file it created
or changed is uploaded. See README.md for the whole contract.

Modes (sub-commands; the handler command is the arguments after them, or
HANDLER_COMMAND run with /bin/sh -c):

    bootstrap [lambda] CMD...            Lambda custom runtime (AWS_LAMBDA_RUNTIME_API)
    bootstrap run [--bucket B] [--prefix P] CMD...   one group, then exit
    bootstrap consume CMD...             long-running SQS worker (SQS_QUEUE_URL)
    bootstrap local --bucket-dir DIR [KEY...] [-- CMD...]   a folder is the bucket
    bootstrap backfill [--bucket B] [--prefix P]   notify SQS_QUEUE_URL of existing objects
    bootstrap --prepare DIR              (zipapp) unpack at image build time

Exit codes: 0 success, 1 failure, 2 configuration or usage error.

Audit map: the questions a reviewer asks first, each answered in one place.

1. Credentials are read only by botocore's session (aws_session: environment, profile, container
   or instance role), never by the bridge. They reach AWS (signed by botocore, or by `sign` on the
   fast path) and the handler, which acts as the function (handler_environment); never a log line,
   an error or a metric: those carry messages, keys, ids and counts (LogFormat, metric_fields).
   Config.from_env is the one reader of the environment; SETTINGS lists every variable.
2. What the handler inherits: its variables, handler_environment (the bridge's own less the
   Runtime API's address, plus its folder, bucket, prefix, triggers file, job arguments and the
   run's mark, under names _UNSAFE_NAMES does not refuse); everything else, spawn_handler (stdin
   /dev/null, stdout and stderr only, the bridge's working directory and umask, every signal at
   its default and unblocked, a session of its own, SIGKILL when the bridge dies).
3. Paths: section "Paths". A key becomes a path only through relative_path and placed_path, and
   never leaves the work folder; downloads write through write_hashing or s3transfer into placed
   paths, never through a link; what a handler left is read only by walk_tree (links never
   followed, mounts never crossed) and removed only by remove_tree; local mode writes a bucket's
   folder only through copy_into.
4. Uploads: Bridge._upload. Every regular file new or changed in the handler's folder since the
   pull (changed_files), to TARGET_BUCKET or else the group's bucket, under the group's prefix and
   its path in the folder. Which buckets an event may name at all: source_refusal.
5. Endpoints and TLS: section "AWS". botocore decides them for its clients (s3_client,
   sqs_client); the fast path goes only where botocore's endpoint ruleset sends a bucket's
   requests (resolve_target), only where fast_path_trust allows, trusting exactly botocore's CA
   bundle over TLS 1.2 or later (tls_context). The one other endpoint is the Lambda Runtime API,
   over plain HTTP at AWS_LAMBDA_RUNTIME_API (RuntimeApi).
6. SIGTERM: section "Shutdown". SHUTDOWN_POLICY gives each mode's grace, exit status when idle,
   and exit status when cut short; Supervisor applies it: nothing new starts, idle work is left
   at once, a running group gets the grace, then its handler's process group SIGTERM and SIGKILL,
   then the process exits; nothing unfinished is acknowledged.
"""

from __future__ import annotations

import codecs
import compileall
import concurrent.futures
import contextlib
import dataclasses
import datetime
import errno
import fcntl
import functools
import gc
import hashlib
import hmac
import http.client
import json
import logging
import mimetypes
import os
import platform
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__version__ = "0.1.0"

log = logging.getLogger("s3-event-bridge")


###############################################################################
# Errors
###############################################################################


class BridgeError(Exception):
    """Root of every error the bridge reports; `error_type` is what Lambda shows."""

    error_type = "Bridge.Error"


class ConfigError(BridgeError):
    """A setting or argument is wrong: found at start-up, stops the program."""

    error_type = "Bridge.ConfigError"


class EventError(BridgeError):
    """An incoming payload or message body is not an event the bridge reads."""

    error_type = "Bridge.EventError"


class GroupError(BridgeError):
    """One execution group failed: its messages must not be acknowledged.

    `outcome` is what its summary line says: failed, timed_out or shut_down.
    """

    error_type = "Bridge.GroupFailed"

    def __init__(self, message: str, outcome: str = "failed") -> None:
        super().__init__(message)
        self.outcome = outcome


class RuntimeApiError(BridgeError):
    """The Lambda Runtime API could not be reached or refused a request."""

    error_type = "Bridge.RuntimeApiError"


###############################################################################
# Bundle: what the zipapp carries that must be real files
###############################################################################

BUNDLE_CACHE_VARIABLE, _COMPLETE = "S3_EVENT_BRIDGE_CACHE", ".complete"

#: Set by the zipapp: puts the bundled jq build for this interpreter on sys.path, when a filter needs it.
jq_loader: Callable[[], str] | None = None


def _only_owner_writes(info: os.stat_result) -> bool:
    return stat.S_ISDIR(info.st_mode) and info.st_uid in (0, os.geteuid()) and not info.st_mode & 0o022


def _usable(folder: str) -> bool:
    """Complete, and not planted by another user (owned by us or root, writable by no one else)."""
    with contextlib.suppress(OSError):
        return os.path.isfile(os.path.join(folder, _COMPLETE)) and _only_owner_writes(os.lstat(folder))
    return False


def _trusted_folder(path: str) -> None:
    """Make path and its missing parents at mode 0755 whatever the umask
    (os.makedirs gives parents 0777 less the umask); refuse a folder that
    someone else could write in, since code is imported from it."""
    missing, parent = [], path
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o755)
    if not _only_owner_writes(os.lstat(path)):
        raise OSError(f"{path} is not a folder that only its owner (this user or root) can write")


def _in_first_usable(roots: Sequence[str], use: Callable[[str], str]) -> str:
    for root in roots[:-1]:
        try:
            return use(root)
        except OSError as exc:
            warning = f"{BUNDLE_CACHE_VARIABLE}: cannot use {root} ({exc}); unpacking into {roots[-1]}"
            print(f"s3-event-bridge: warning: {warning}", file=sys.stderr)
    return use(roots[-1])


def select_jq_build(
    builds: Iterable[str], python: tuple[int, int], machine: str, glibc: tuple[int, int] | None
) -> str | None:
    """Pick the jq build for an interpreter: `cp311-manylinux_2_26-x86_64` style names.

    glibc is the C library's version, or None on musl (Alpine).
    """
    for build in sorted(builds):
        tag, libc, arch = build.split("-")
        family, major, minor = libc.split("_")
        if tag != f"cp{python[0]}{python[1]}" or arch != machine:
            continue
        if family == "musllinux" and glibc is None:
            return build
        if family == "manylinux" and glibc is not None and glibc >= (int(major), int(minor)):
            return build
    return None


def running_glibc() -> tuple[int, int] | None:
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
        return (int(version.split(".")[0]), int(version.split(".")[1])) if name == "glibc" else None
    except (ValueError, OSError):  # musl has no CS_GNU_LIBC_VERSION: Python raises OSError EINVAL
        return None


@dataclass(frozen=True)
class Bundle:
    """The zipapp this process runs from.

    botocore reads its models and CA bundle with `open`, and a compiled jq
    module cannot be imported from a zip, so the packages are unpacked once
    per build (the id is a hash of the contents) into a cache folder; jq only
    when a filter is configured, and only the build for this interpreter.
    """

    archive: str
    build_id: str
    compiled: bool = False  # whether the archive has bytecode for this interpreter (__main__.py knows)

    def activate(self, cache_root: str) -> str:
        """Make the bundled packages importable; return the folder of botocore's files.

        The archive holds bytecode compiled at build time for each CPython the
        build had (`pyc/cp3XY/`, put on sys.path by __main__.py), imported
        straight from the archive: then only the files botocore opens are
        unpacked. Any other interpreter gets the sources unpacked (`lib/`).
        """
        home = os.path.join(cache_root, self.build_id)
        _trusted_folder(cache_root)
        if not self.compiled:
            sys.path.insert(0, self.unpack("lib/", os.path.join(home, "lib")))
        return self.unpack("files/", os.path.join(home, "files"))

    def load_jq(self, cache_root: str) -> str:
        """Unpack this interpreter's jq build and put it on sys.path; return its folder.

        An interpreter with no build gets an ImportError that lists the builds
        inside, which the filter's configuration error passes on.
        """
        builds, python = self.jq_builds(), sys.version_info[:2]
        build = select_jq_build(builds, python, platform.machine(), running_glibc())
        if build is None:
            here = f"CPython {python[0]}.{python[1]} on {platform.machine()} ({'glibc' if running_glibc() else 'musl'})"
            raise ImportError(f"this bootstrap has no jq build for {here}; builds inside: {', '.join(builds)}")
        folder = self.unpack(f"jq/{build}/", os.path.join(cache_root, self.build_id, f"jq-{build}"))
        sys.path.insert(0, folder)
        return folder

    def jq_builds(self) -> list[str]:
        with zipfile.ZipFile(self.archive) as archive:
            return sorted({n.split("/")[1] for n in archive.namelist() if n.startswith("jq/") and n.count("/") > 1})

    def unpack(self, member_prefix: str, dest: str) -> str:
        """Unpack members into dest once, safely when processes race to do it.

        A folder counts only with its completion marker, written last inside
        a private folder that is then renamed into place under a lock, so a
        killed or corrupted unpacking is replaced, never used.
        """
        if _usable(dest):
            return dest
        parent, name = os.path.split(dest)
        _trusted_folder(parent)
        lock = os.open(os.path.join(parent, f".{name}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        umask = os.umask(0o022)  # whatever the caller's: nothing unpacked may be writable by others
        try:
            if os.fstat(lock).st_uid not in (0, os.geteuid()):
                raise OSError(f"{parent}/.{name}.lock belongs to another user")
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _usable(dest):
                self._unpack_under_lock(member_prefix, dest)
        finally:
            os.umask(umask)
            os.close(lock)
        return dest

    def _unpack_under_lock(self, member_prefix: str, dest: str) -> None:
        parent, name = os.path.split(dest)
        for leftover in os.listdir(parent):
            if leftover.startswith((f".{name}.unpacking-", f".{name}.discarded-")) or leftover == name:
                doomed = f"{parent}/.{leftover}.discarded-{os.getpid()}"
                os.rename(os.path.join(parent, leftover), doomed)
                shutil.rmtree(doomed, ignore_errors=True)
        work = tempfile.mkdtemp(prefix=f".{name}.unpacking-", dir=parent)
        with zipfile.ZipFile(self.archive) as archive:
            for info in archive.infolist():
                if info.filename.startswith(member_prefix) and not info.is_dir():
                    path = os.path.join(work, info.filename[len(member_prefix) :])
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with archive.open(info) as source, open(path, "wb") as target:
                        shutil.copyfileobj(source, target)
                    os.chmod(path, (info.external_attr >> 16) & 0o755 or 0o644)
        open(os.path.join(work, _COMPLETE), "w").close()  # last: the folder is whole
        os.chmod(work, 0o755)
        os.rename(work, dest)


def activate_bundle(bundle: Bundle, configured: str | None) -> str:
    """Activate the bundle in S3_EVENT_BRIDGE_CACHE, else in a folder private to this user.

    A configured cache that cannot be used (a read-only image prepared by
    another build, or without this interpreter's jq build; a folder others
    can write) gives way to the private one, with a warning: Lambda's /tmp
    is always writable.
    """
    global jq_loader
    roots = [os.path.abspath(configured)] if configured else []
    roots.append(os.path.join(tempfile.gettempdir(), f"s3eb-cache-{os.geteuid()}"))
    jq_loader = functools.lru_cache(maxsize=None)(functools.partial(_in_first_usable, roots, bundle.load_jq))
    return _in_first_usable(roots, bundle.activate)


def prepare_bundle(bundle: Bundle, cache_root: str) -> int:
    """Unpack and byte-compile at image build time, so a cold start unpacks nothing."""
    home = os.path.dirname(bundle.activate(os.path.abspath(cache_root)))
    if os.path.isdir(os.path.join(home, "lib")):
        compileall.compile_dir(os.path.join(home, "lib"), quiet=1, workers=0)
    try:
        bundle.load_jq(os.path.abspath(cache_root))
    except ImportError as exc:
        print(f"note: {exc}", file=sys.stderr)
    print(f"prepared {home}; run with {BUNDLE_CACHE_VARIABLE}={os.path.abspath(cache_root)}")
    return 0


###############################################################################
# Regexes: the regex crate's syntax, read by Python's re
###############################################################################


#: The regex crate's ASCII classes, as the inside of a Python character class.
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": r"\x00-\x7f", "blank": r"\t ", "cntrl": r"\x00-\x1f\x7f",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "punct": r"!-/:-@\[-`{-~", "space": r"\t-\r ",
    "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}  # fmt: skip
_SPACE = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"  #: the crate's \s (Unicode White_Space)
_ESCAPE = re.compile(r"\\(x\{([0-9A-Fa-f]{1,8})\}|x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|.)", re.S)
_COUNTED = re.compile(r"\{[0-9]+(,[0-9]*)?\}")
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")
_POSIX_CLASS = re.compile(r"\[:([a-z]+):\]")
_CLASS_IN_RANGE = "a range cannot start or end with a class like \\s or [:alpha:] (the crate refuses it)"

#: Where Python's case folding differs from the crate's (Unicode 16 simple folding) in a CPython
#: 3.9-3.13, as the crate itself showed (tests/data/regexes.json): runs (first, last, offset) of
#: case pairs c <-> c + offset that Python's Unicode may not know, and I/i, which Python also
#: folds with dotted I (U+0130) and dotless i (U+0131), which the crate folds to nothing else.
_FOLD_RUNS = (
    (0x49, 0x49, 0x20), (0x130, 0x131, 0), (0x19B, 0x19B, 0xA641), (0x264, 0x264, 0xA567), (0x1C89, 0x1C89, 1),
    (0x2C2F, 0x2C2F, 0x30), (0xA7C0, 0xA7C0, 1), (0xA7CC, 0xA7CC, 1), (0xA7D0, 0xA7D0, 1), (0xA7D6, 0xA7D6, 1),
    (0xA7D8, 0xA7D8, 1), (0xA7DA, 0xA7DA, 1), (0x10570, 0x1057A, 0x27), (0x1057C, 0x1058A, 0x27),
    (0x1058C, 0x10592, 0x27), (0x10594, 0x10595, 0x27), (0x10D50, 0x10D65, 0x20),
)  # fmt: skip
#: Each of those characters: the crate's fold group of it.
CRATE_FOLDS = {
    chr(code + side): chr(code) + chr(code + offset) if offset else chr(code)
    for first, last, offset in _FOLD_RUNS
    for code in range(first, last + 1)
    for side in {0, offset}
}


class _RegexTranslation:
    r"""One pass over a regex-crate pattern, writing the Python pattern that means the same.

    Translated: `$` (end of text, not before a final newline), `\z`, `\s`,
    `\x{..}`, POSIX classes, named groups `(?<n>..)`, a leading `]` in a
    class, and under `(?i)` the characters Python folds otherwise
    (CRATE_FOLDS). Refused: Unicode classes, `\<`, `\>` and `\b{..}`, class
    set operations and nesting, a range from or to a class, flags Python
    lacks (x, U, R, -u), flags in mid-pattern, a repetition of a repetition,
    and a `{` that is no repetition written without spaces.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern, self.at, self.out = pattern, 0, []
        self.scopes = [""]  # per open group, its flags among m (`$` ends a line) and i (case folded)
        self.repeated = 0  # 1 after a repetition, 2 after its lazy `?`

    def translate(self) -> str:
        while self.at < len(self.pattern):
            char = self.pattern[self.at]
            if char in "*+?{":
                self._repetition(char)
                continue
            self.repeated = 0
            if char == "\\":
                self.out.append(self._escape()[0])
            elif char == "[":
                self._character_class()
            elif char == "(":
                self._group()
            else:
                if char == ")" and len(self.scopes) > 1:
                    self.scopes.pop()
                end = "$" if "m" in self.scopes[-1] else r"\Z"
                self.out.append(end if char == "$" else char if char in ".^|)" else self._literal(char, char))
                self.at += 1
        return "".join(self.out)

    def _literal(self, char: str, text: str) -> str:
        """A literal character; under (?i), one Python folds otherwise spelled as the crate's fold
        group, and one beyond U+FFFF as a range (Python forgets its case in a class or an alternation)."""
        if "i" not in self.scopes[-1]:
            return text
        if char in CRATE_FOLDS:
            return f"(?-i:[{CRATE_FOLDS[char]}])"
        return f"[{text}-{text}]" if ord(char) > 0xFFFF else text

    def _repetition(self, char: str) -> None:
        if char == "?" and self.repeated == 1:
            self.repeated = 2
        elif self.repeated:
            raise ValueError("a repetition of a repetition (a++, a{2}{3}) reads differently in Python: use a group")
        else:
            self.repeated = 1
        counted = _COUNTED.match(self.pattern, self.at) if char == "{" else None
        if char == "{" and not counted:
            raise ValueError("a { that is no repetition like {2} or {2,5} (without spaces) must be escaped as \\{")
        self.out.append(counted.group(0) if counted else char)
        self.at = counted.end() if counted else self.at + 1

    def _escape(self, in_class: bool = False) -> tuple[str, str | None]:
        """An escape's Python text, and the character it stands for (None for a class like \\s)."""
        escape = _ESCAPE.match(self.pattern, self.at)
        if not escape:
            raise ValueError("the pattern ends with a lone backslash")
        self.at, name, code = escape.end(), escape.group(1), next(filter(None, escape.groups()[1:]), None)
        if name in ("p", "P", "<", ">") or (name == "b" and self.pattern.startswith("{", self.at)):
            raise ValueError(f"\\{name} (a Unicode class or a word boundary other than \\b) is not supported")
        if name == "Z" or name == "0" or (name.isdigit() and self.pattern[self.at : self.at + 1].isdigit()):
            raise ValueError(
                "\\Z, \\0 and escapes of several digits (octal to Python) are not supported: the crate refuses them"
            )
        if code or not name.isalnum():  # one character: \x{1F600}, \u00e9, \.
            char, text = (chr(int(code, 16)), f"\\U{int(code, 16):08x}") if code else (name, escape.group(0))
            return (text if in_class else self._literal(char, text)), char
        if name in "sS":
            if in_class and name == "S":
                raise ValueError("\\S inside a character class is not supported")
            return (_SPACE if in_class else f"[{'^' * (name == 'S')}{_SPACE}]"), None
        if name == "z":
            return r"\Z", None
        return escape.group(0), None if name in "dDwWbBAZ" else name  # \t, \n ...: the same in both

    def _character_class(self) -> None:
        """A class, as items (text, kind, character): kinds `item`, `class` (\\s, [:alpha:]...),
        `range` (a - between two items) and `first` (a leading ], which never starts a range)."""
        pattern, self.at = self.pattern, self.at + 1
        negated = pattern.startswith("^", self.at)
        self.at += negated
        items: list[tuple[str, str, str | None]] = []
        if pattern.startswith("]", self.at):
            items.append(("\\]", "first", None))
            self.at += 1
        while self.at < len(pattern) and pattern[self.at] != "]":
            char, last = pattern[self.at], items[-1][1] if items else ""
            if pattern.startswith(("&&", "--", "~~"), self.at):
                raise ValueError("character class set operations (&&, --, ~~) are not supported")
            if char == "-" and last in ("item", "class") and not pattern.startswith("-]", self.at):
                if last == "class":
                    raise ValueError(_CLASS_IN_RANGE)
                items.append(("-", "range", None))
                self.at += 1
                continue
            if char == "\\":
                text, value = self._escape(in_class=True)
            elif char == "[":
                named = _POSIX_CLASS.match(pattern, self.at)
                if not named or named.group(1) not in _POSIX_CLASSES:
                    raise ValueError("nested or negated classes inside a character class are not supported")
                text, value, self.at = _POSIX_CLASSES[named.group(1)], None, named.end()
            else:  # `|` and `^` escaped (Python warns that `||` may one day be a set operation)
                text, value, self.at = re.escape(char) if char in "|^-[" else char, char, self.at + 1
            if value is None and last == "range":
                raise ValueError(_CLASS_IN_RANGE)
            items.append((text, "item" if value is not None else "class", value))
        closed = self.at < len(pattern)
        self.at += closed
        self.out.append(self._class_text(items, negated, closed))

    def _class_text(self, items: list[tuple[str, str, str | None]], negated: bool, closed: bool) -> str:
        """The class in Python; under (?i) corrected where Python folds otherwise than the crate,
        which matches a character when its fold group meets the class taken literally (then
        negates): Python's own folding, less the characters it would add, plus those it lacks."""
        ignorecase, parts = "i" in self.scopes[-1], []
        for n, (text, kind, value) in enumerate(items):
            alone = "range" not in (items[n - 1][1] if n else "", items[n + 1][1] if n + 1 < len(items) else "")
            big = ignorecase and kind == "item" and alone and value is not None and ord(value) > 0xFFFF
            parts.append(f"{text}-{text}" if big else text)  # Python forgets the case of such a lone one
        body = "".join(parts)
        text = f"[{'^' * negated}{body}{']' * closed}"
        if not (ignorecase and closed):
            return text
        literal, folded, extra, missing = re.compile(f"[{body}]"), re.compile(f"(?i:{text})"), "", ""
        for char, group in CRATE_FOLDS.items():
            crate = any(literal.fullmatch(c) for c in group) != negated
            python = bool(folded.fullmatch(char))
            extra, missing = extra + char * (python > crate), missing + char * (crate > python)
        text = f"(?!(?-i:[{extra}])){text}" if extra else text
        return f"(?:{text}|(?-i:[{missing}]))" if missing else f"(?:{text})" if extra else text

    def _group(self) -> None:
        pattern, at = self.pattern, self.at
        flags = _FLAGS.match(pattern, at)
        if pattern.startswith("(?", at) and not (flags or pattern.startswith(("(?=", "(?!", "(?<", "(?P"), at)):
            raise ValueError("of the groups (?...), only flags, names and look-arounds are supported")
        if flags and flags.group(0) == "(?)":
            raise ValueError("(?) sets no flag")
        if flags:
            self.out.append(self._flags(*flags.groups()))
        else:
            named = pattern.startswith("(?<", at) and not pattern.startswith(("(?<=", "(?<!"), at)
            self.out.append("(?P<" if named else "(")
            self.scopes.append(self.scopes[-1])
        self.at = flags.end() if flags else at + (3 if named else 1)

    def _flags(self, on: str, off: str | None, end: str) -> str:
        """`(?flags)` (only at the start: Python reads it for the whole pattern) or `(?flags:...)`."""
        unknown = set(on) - set("imsu") | set(off or "") - set("ims")
        if unknown:
            raise ValueError(f"the flags {''.join(sorted(unknown))} are not supported (only i, m, s and u)")
        if end == ")" and (self.at or self.out):
            raise ValueError("inline flags like (?i) only at the start of the pattern: use (?i:...) for a part")
        scope = "".join(sorted((set(self.scopes[-1]) | set(on) & set("im")) - set(off or "")))
        on = on.replace("u", "")
        if end == ")":
            self.scopes[0] = scope
            return f"(?{on})" if on else ""  # off flags are off already at the start
        self.scopes.append(scope)
        return f"(?{on}-{off}:" if off else f"(?{on}:"


def compile_regex(pattern: str, variable: str) -> re.Pattern:
    """Compile a regex written for Rust's regex crate (the seed's syntax) into a Python pattern.

    Whatever `re` reads differently is translated, or refused with an error
    naming the variable: never a silently different meaning.
    """
    try:
        return re.compile(_RegexTranslation(pattern).translate())
    except (re.error, ValueError, OverflowError, RecursionError) as exc:
        shown = pattern if len(pattern) <= 80 else f"{pattern[:77]}..."
        raise ConfigError(f"{variable}: cannot use the regex {shown!r}: {exc}") from None


###############################################################################
# Configuration: every variable the bridge reads, in one table
###############################################################################

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Lambda's log levels (AWS_LAMBDA_LOG_LEVEL, and the `level` of JSON lines) as Python's; TRACE is DEBUG here.
LAMBDA_LEVELS = {"TRACE": 10, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "FATAL": 50}
#: Names that ROOT_FOLDER_VAR, BUCKET_VAR and KEY_PREFIX_VAR may not take: they change how programs are
#: found, loaded or run, where they read configuration or trust, or are AWS's and the bridge's own (an
#: event's bucket or prefix, or a folder of the bucket's objects, must never land in them). No such list
#: is complete: name a variable only your handler reads.
_UNSAFE_NAMES = re.compile(
    r"PATH|CDPATH|HOME|SHELL|IFS|ENV|BASH_ENV|SHELLOPTS|BASHOPTS|PS4|TMPDIR|CLASSPATH|GCONV_PATH|LOCPATH|NLSPATH"
    r"|HOSTALIASES|LOCALDOMAIN|RES_OPTIONS|RESOLV_HOST_CONF|TZ|TZDIR|GETCONF_DIR|NIS_PATH|ZDOTDIR|EDITOR|VISUAL|PAGER"
    r"|OPENSSL_CONF|PHPRC|SSL_CERT_FILE|SSL_CERT_DIR|CURL_CA_BUNDLE|REQUESTS_CA_BUNDLE|LESSOPEN|LESSCLOSE|GOFLAGS"
    r"|(HTTPS?|FTP|ALL|NO)_PROXY|TRIGGERS_FILE|BATCH_USER_ARGUMENTS|(LD_|DYLD_|NODE_|JAVA_|_JAVA_|JDK_|MALLOC_|GLIBC_"
    r"|AWS_|LAMBDA_|_X_AMZN_|S3_EVENT_BRIDGE_|PYTHON|PERL|RUBY|XDG_|GIT_|LUA_|GEM_|BUNDLE_|DOTNET_|CORECLR_|COMPLUS_"
    r"|NPM_CONFIG_|PIP_|CONDA_|R_)\w*",
    re.IGNORECASE,
)
_NAMESPACE = r"(?!AWS/)[A-Za-z0-9 ._/#:-]{1,255}"  # a CloudWatch namespace that is not AWS's


def compile_filter(expression: str, variable: str) -> Any:
    """Compile the jq execution filter so a bad expression stops start-up."""
    # jq is a compiled extension that only users of a filter need; importing it
    # here keeps start-up lean and lets an interpreter without a jq build run
    # every configuration that has no filter.
    try:
        if jq_loader is not None:
            jq_loader()
        import jq
    except (ImportError, OSError) as exc:
        raise ConfigError(f"{variable}: the jq module cannot be loaded here: {exc}") from None
    try:
        return jq.compile(expression)
    except ValueError as exc:
        raise ConfigError(f"{variable}: invalid jq expression: {exc}") from None


def _filter_file(path: str, name: str) -> Any:
    try:
        with open(path, encoding="utf-8") as source:
            return compile_filter(source.read(), name)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc}") from None


def _number(kind: type, low: float = 1, high: float = float("inf")) -> Callable[[str, str], Any]:
    def parse(raw: str, name: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}: {raw} is outside {low:g}..{high:g}")
        return value

    return parse


def _choice(*choices: str, pattern: str = "", what: str = "") -> Callable[[str, str], str]:
    """One of choices, in any case (lowered); or, given a pattern, any text it matches whole."""

    def parse(raw: str, name: str) -> str:
        if pattern and not re.fullmatch(pattern, raw):
            raise ConfigError(f"{name}: {raw!r} is not {what}")
        if choices and raw.lower() not in choices:
            raise ConfigError(f"{name}: expected {' or '.join(choices)}, got {raw!r}")
        return raw.lower() if choices else raw

    return parse


def _variable_name(value: str, name: str) -> str:
    if not _ENV_NAME.match(value):
        raise ConfigError(f"{name}: {value!r} is not a valid environment variable name")
    if _UNSAFE_NAMES.fullmatch(value):
        raise ConfigError(f"{name}: {value} changes how programs are found, loaded or run, or is AWS's or the bridge's")
    return value


def lambda_level(text: str) -> str:
    """A level by Lambda's name for it: Python's WARNING is WARN, its CRITICAL is FATAL."""
    return text.strip().upper().replace("WARNING", "WARN").replace("CRITICAL", "FATAL")


def _level(raw: str, name: str) -> int:
    level = lambda_level(raw)
    if level not in LAMBDA_LEVELS:
        raise ConfigError(f"{name}: {level!r} is not one of {', '.join(LAMBDA_LEVELS)}")
    return LAMBDA_LEVELS[level]


def _switch(raw: str, name: str) -> bool:
    """On unless set to 0, false, no or off."""
    return _choice("on", "1", "true", "yes", "off", "0", "false", "no")(raw, name) in ("on", "1", "true", "yes")


def _log_json(raw: str, name: str) -> bool:
    return _choice("text", "json")(raw, name) == "json"


def _shell(raw: str, _: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", raw)


def _text(raw: str, _: str) -> str:
    return raw


def _names(raw: str, _: str) -> frozenset[str]:
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _regexes(raw: str, name: str) -> tuple[re.Pattern, ...]:
    return tuple(compile_regex(pattern.strip(), name) for pattern in raw.split(",") if pattern.strip())


_ALL, _RUN, _S3 = "", "lambda run consume local", "lambda run consume"  # modes: all; those running handlers; on S3

#: Every variable the bridge reads (endpoints, region and credentials are botocore's own), each once, at
#: start-up, in the modes that use it (which its --help lists): (variable, Config field, parser of its
#: stripped text, its value when unset (none: ""), modes, meaning). Two variables of one field: set one.
SETTINGS = (
    ("HANDLER_COMMAND", "handler", _shell, "", _RUN, "the handler, run by /bin/sh -c (a command after the mode wins)"),
    ("MATCH_KEY", "match_key", compile_regex, "", _ALL, "regex (Rust syntax) a decoded key must match (unset: any)"),
    ("GROUP_BY", "group_by", _choice("folder", "object"), "folder", _ALL,
     "folder: a group pulls the key's folder; object: only the object"),
    ("PULL_PARENT_DIRS", "pull_parent_dirs", _number(int, -float("inf")), "0", _ALL,
     "the group's prefix: the key's folder, this many levels up"),
    ("PULL_MATCH_KEYS", "pull_match_keys", _regexes, "", _RUN, "comma-separated regexes: objects to pull (unset: all)"),
    ("EXECUTION_FILTER_EXPR", "execution_filter", compile_filter, "", _RUN,
     "jq on the listed objects; a first output of false skips"),
    ("EXECUTION_FILTER_FILE", "execution_filter", _filter_file, "", _RUN, "a file holding that jq expression"),
    ("TARGET_BUCKET", "target_bucket", _text, "", _S3, "where outputs are uploaded (unset: the group's bucket)"),
    ("SOURCE_BUCKETS", "source_buckets", _names, "", _ALL, "comma-separated: buckets events may name (unset: any)"),
    ("EXPECTED_BUCKET_OWNER", "expected_bucket_owner", _choice(pattern="[0-9]{12}", what="a 12-digit AWS account id"),
     "", f"{_S3} backfill", "account id every S3 request expects as bucket owner"),
    ("ROOT_FOLDER_VAR", "root_folder_var", _variable_name, "ROOT_FOLDER", _RUN,
     "the variable that gives the handler its folder"),
    ("BUCKET_VAR", "bucket_var", _variable_name, "BUCKET", f"{_RUN} backfill",
     "the variable that gives the handler (and run, backfill) the bucket"),
    ("KEY_PREFIX_VAR", "key_prefix_var", _variable_name, "KEY_PREFIX", f"{_RUN} backfill",
     "the variable that gives the handler (and run, backfill) the prefix"),
    ("HANDLER_TIMEOUT", "handler_timeout", _number(float, 0.001), "", _RUN,
     "seconds the handler may run (unset: no limit; Lambda: its deadline)"),
    ("TRANSFER_CONCURRENCY", "transfer_concurrency", _number(int, 1, 1000), "16", _S3,
     "concurrent S3 transfers within a group, 1-1000"),
    ("SQS_QUEUE_URL", "sqs_queue_url", _text, "", "consume backfill", "queue read by consume, sent to by backfill"),
    ("SQS_VISIBILITY_TIMEOUT", "sqs_visibility_timeout", _number(int, 1, 43200), "120", "consume",
     "seconds a received message stays invisible; extended"),
    ("SQS_MAX_NUMBER_OF_MESSAGES", "sqs_max_messages", _number(int, 1, 10), "10", "consume",
     "messages per receive, processed as one batch"),
    ("SQS_WAIT_TIME_SECONDS", "sqs_wait_seconds", _number(int, 0, 20), "20", "consume", "long-poll wait, 0-20"),
    ("AWS_LAMBDA_LOG_LEVEL", "log_level", _level, "INFO", _ALL, "TRACE, DEBUG, INFO, WARN, ERROR or FATAL"),
    ("AWS_LAMBDA_LOG_FORMAT", "log_json", _log_json, "Text", _ALL, "Text or JSON"),
    ("METRICS_NAMESPACE", "metrics_namespace", _choice(pattern=_NAMESPACE, what="a CloudWatch namespace of your own"),
     "", _RUN, "with JSON logs: each group's summary is a CloudWatch metric record"),
    ("AWS_LAMBDA_FUNCTION_NAME", "function_name", _text, "s3-event-bridge", _RUN, "the metrics' function dimension"),
    ("S3_EVENT_BRIDGE_FAST_PATH", "fast_path", _switch, "on", _S3, "off: every S3 request goes through botocore"),
    ("S3_EVENT_BRIDGE_CACHE", None, None, "$TMPDIR/s3eb-cache-UID", _ALL, "zipapp: where its packages are unpacked"),
    ("AWS_LAMBDA_RUNTIME_API", None, None, "", "lambda", "Runtime API host:port; set by Lambda, it means lambda mode"),
)  # fmt: skip


def _from_env(cls: type, environ: Mapping[str, str], argv: Sequence[str] = (), mode: str = "lambda") -> Any:
    """Read every setting the mode uses (and no other), once: a bad value stops start-up,
    naming its variable. The handler command is argv, else HANDLER_COMMAND."""
    values: dict[str, Any] = {}
    set_by: dict[str, str] = {}  # field -> the variable that set it
    for variable, name, parse, default, modes, _ in SETTINGS:
        if name is None or (modes and mode not in modes.split()):
            continue
        raw = environ.get(variable, "").strip()
        if raw and name in set_by:
            raise ConfigError(f"{set_by[name]} and {variable} are both set; keep one")
        if raw or name not in set_by:
            values[name] = parse(raw or default, variable) if raw or default else None
            set_by.update({name: variable} if raw else {})
    if mode in _RUN.split():
        values["handler"] = tuple(argv) or values["handler"]
        if not values["handler"]:
            raise ConfigError("HANDLER_COMMAND: no handler command (set it, or give the command as arguments)")
    named = [values[name] for name in ("root_folder_var", "bucket_var", "key_prefix_var") if values.get(name)]
    if len(set(named)) < len(named):
        raise ConfigError("ROOT_FOLDER_VAR, BUCKET_VAR and KEY_PREFIX_VAR must name different variables")
    if values.get("metrics_namespace") and not values["log_json"]:
        raise ConfigError("METRICS_NAMESPACE: metrics ride on JSON log lines; set AWS_LAMBDA_LOG_FORMAT=JSON")
    if values.get("metrics_namespace") and values["log_level"] > LAMBDA_LEVELS["INFO"]:  # Lambda's filter drops them
        raise ConfigError("METRICS_NAMESPACE: metrics ride on INFO lines, which AWS_LAMBDA_LOG_LEVEL filters out")
    if values.get("bucket_var"):
        values["bucket"] = environ.get(values["bucket_var"]) or None
        values["key_prefix"] = environ.get(values["key_prefix_var"], "")
    return cls(**{name: values.get(name) for name in cls.__dataclass_fields__})


#: Every setting: a field for each SETTINGS row (two variables may fill one), and the bucket and prefix
#: the variables BUCKET_VAR and KEY_PREFIX_VAR name (for run and backfill). Config.from_env reads them.
Config = dataclasses.make_dataclass(
    "Config",
    [*dict.fromkeys(name for _, name, *_ in SETTINGS if name), "bucket", "key_prefix"],
    frozen=True,
    namespace={"from_env": classmethod(_from_env), "__doc__": "Every setting, read once at start-up (see SETTINGS)."},
)


def source_refusal(config: Config, bucket: str) -> str | None:
    """Why an event may not name this bucket (it is not one of SOURCE_BUCKETS), or None."""
    if config.source_buckets and bucket not in config.source_buckets:
        return f"SOURCE_BUCKETS: s3://{bucket} is not one of them"
    return None


###############################################################################
# Logging
###############################################################################


def utc_timestamp(seconds: float) -> str:
    """ISO 8601 in UTC with milliseconds, as S3 and CloudWatch write times: 2026-11-30T12:34:56.789Z."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


#: Lambda's level names: its log filter (ApplicationLogLevel) counts any other name as INFO.
LEVEL_NAMES = {0: "TRACE", **{number: name for name, number in LAMBDA_LEVELS.items()}}


def level_name(levelno: int) -> str:
    return LEVEL_NAMES[min(levelno // 10 * 10, logging.CRITICAL)]


class LogFormat(logging.Formatter):
    """One line per record, text or JSON, carrying the invocation's request id and the
    work under way (`work`: the SQS message ids or Batch Operations task ids of the group).

    Extra fields (`extra={"fields": {...}}`) become `key=value` pairs in text and
    keys in JSON, so the per-group summary is searchable in CloudWatch either way.
    JSON lines are shaped as AWS's own runtime client writes them: Lambda's level
    names, and an exception's `errorType`, `errorMessage` and `stackTrace`
    (`extra={"error": exc}` gives the first two for an error that is no crash).
    """

    request_id = ""
    work: dict[str, list[str]] = {}

    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        stamp, fields = utc_timestamp(record.created), {**self.work, **getattr(record, "fields", {})}
        message, error = record.getMessage(), record.exc_info[1] if record.exc_info else getattr(record, "error", None)
        if not self.as_json:
            pairs = "".join(f" {key}={json.dumps(value, default=str)}" for key, value in fields.items())
            trace = "\n" + self.formatException(record.exc_info) if record.exc_info else ""
            # Lambda turns "\r" back into line breaks inside one CloudWatch event.
            return f"[{level_name(record.levelno)}]\t{stamp}\t{self.request_id}\t{message}{trace}{pairs}".replace(
                "\n", "\r"
            )
        failure = {"stackTrace": traceback.format_tb(record.exc_info[2])} if record.exc_info else {}
        if error is not None:
            failure.update(errorType=getattr(error, "error_type", type(error).__name__), errorMessage=str(error))
        return json_line(record.levelno, stamp, message, record.name, fields, failure)


def json_line(level: int, stamp: str, message: str, logger: str, fields: Mapping, failure: Mapping = {}) -> str:
    """A JSON log line, its keys in the order AWS's runtime client writes them."""
    entry = {"timestamp": stamp, "level": level_name(level), "message": message}
    entry.update(logger=logger, **failure)
    if LogFormat.request_id:
        entry["requestId"] = LogFormat.request_id
    return json.dumps({**entry, **fields}, default=str, ensure_ascii=False)


def setup_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormat(config.log_json))
    log.handlers[:] = [handler]
    log.setLevel(config.log_level)
    log.propagate = False


#: What a handler writes, as records of their own in JSON mode (see relay_output).
handler_log = log.getChild("handler")
#: A longer line of a handler's output is relayed in pieces of this many characters: in
#: JSON (at most 6 bytes each) a piece stays under the 256 KB of a CloudWatch event.
HANDLER_LINE_MAX = 32 * 1024
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _own_record(line: str, work: Mapping[str, Any], stamp: str) -> tuple[int, str] | None:
    """A handler's own JSON line with a level Lambda knows (Python's names too): its level, and the
    line with what Lambda's filter also needs (an RFC 3339 timestamp) and the work's ids added."""
    try:
        own = json.loads(line)
        name = lambda_level(own["level"])
    except Exception:  # not such a line: relayed as text
        return None
    if name not in LAMBDA_LEVELS:
        return None
    if not _RFC3339.fullmatch(str(own.get("timestamp"))):
        own["timestamp"] = stamp
    extra = {"requestId": LogFormat.request_id, **work} if LogFormat.request_id else work
    return LAMBDA_LEVELS[name], json.dumps({**extra, **own, "level": name}, ensure_ascii=False, default=str)


def _relay_lines(lines: Sequence[str], level: int, work: Mapping[str, Any], stream: str) -> None:
    """Write lines of a handler's as JSON records, all at once under the log's lock."""
    stamp, out, fields = utc_timestamp(time.time()), [], {**work, "stream": stream}
    for line in lines:
        own = _own_record(line.strip(), work, stamp) if line.lstrip().startswith("{") else None
        if own is None and handler_log.isEnabledFor(level):
            out.append(json_line(level, stamp, line, handler_log.name, fields))
        elif own is not None and handler_log.isEnabledFor(own[0]):
            out.append(own[1])
    for handler in log.handlers if out else ():
        with handler.lock:
            handler.stream.write("\n".join(out) + "\n")
            handler.stream.flush()


def _relay(stream: Any, name: str, work: Mapping[str, Any]) -> None:
    """Each line the handler writes, as it comes: its own JSON record with a level kept at its own
    level, else a record of its own, stdout at INFO and stderr at ERROR (so that a WARN or ERROR
    filter keeps a handler's traceback). What one read brings is written at once; the stream is
    decoded as a stream, so that no piece boundary cuts a character."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    level, pending = logging.INFO if name == "stdout" else logging.ERROR, ""
    with stream:
        while True:
            chunk = os.read(stream.fileno(), 1 << 16)
            *lines, pending = (pending + decoder.decode(chunk, final=not chunk)).split("\n")
            if not chunk and pending:
                lines.append(pending)
                pending = ""
            lines = [
                line[at : at + HANDLER_LINE_MAX] for line in lines for at in range(0, len(line) or 1, HANDLER_LINE_MAX)
            ]
            while len(pending) > HANDLER_LINE_MAX:  # a line still coming: its pieces so far
                lines.append(pending[:HANDLER_LINE_MAX])
                pending = pending[HANDLER_LINE_MAX:]
            with contextlib.suppress(Exception):  # whatever a line holds, the pipe is read to its end
                _relay_lines(lines, level, work, name)
            if not chunk:
                return


def relay_output(process: subprocess.Popen) -> list[threading.Thread]:
    """Relay a handler's stdout and stderr on threads of their own, so that its pipes are always
    drained. The ids of the work are those of when the handler started, whatever group runs when
    a line comes."""
    threads = [
        threading.Thread(target=_relay, args=(stream, name, dict(LogFormat.work)), daemon=True)
        for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr"))
    ]
    for thread in threads:
        thread.start()
    return threads


###############################################################################
# Events
###############################################################################


@dataclass(frozen=True)
class ObjectRef:
    """One created object named by an event, its key already decoded."""

    bucket: str
    key: str


@dataclass(frozen=True)
class Message:
    """One unit of acknowledgement: an SQS message, a whole direct payload, or a Batch Operations task.

    `job` is a task's job arguments (its userArguments as JSON, `{}` in schema 1.0): a task names an
    object that must exist, and its handler is given them.
    """

    id: str
    refs: tuple[ObjectRef, ...] = ()
    error: str | None = None
    job: str | None = None


def decode_key(raw: str, bucket: str) -> str:
    """Undo the form-URL encoding S3 notifications apply to keys (`+` is a space)."""
    try:
        return urllib.parse.unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        raise EventError(f"s3://{bucket}/{raw}: key is not valid UTF-8 once decoded") from None


def _created(bucket: Any, key: Any, encoded: bool = True) -> list[ObjectRef]:
    if not isinstance(bucket, str) or not isinstance(key, str):
        raise EventError("bucket name and object key must be strings")
    return [ObjectRef(bucket, decode_key(key, bucket) if encoded else key)]


def is_sqs_batch(payload: Any) -> bool:
    records = payload.get("Records") if isinstance(payload, dict) else None
    first = records[0] if isinstance(records, list) and records else None
    return isinstance(first, dict) and first.get("eventSource") == "aws:sqs"


def is_batch_operations(payload: Any) -> bool:
    return isinstance(payload, dict) and "invocationSchemaVersion" in payload and "tasks" in payload


def parse_batch_task(task: Any, job: str) -> Message:
    """One S3 Batch Operations task (schema 1.0: s3BucketArn; 2.0: s3Bucket) as a message named by its taskId.

    Its key is URL-encoded, as in notifications. A task that names no usable
    object spoils only itself; so does one that names an object version: the
    bridge pulls current objects only, and must never process another version.
    """
    task_id = task.get("taskId") if isinstance(task, dict) else None
    if not isinstance(task_id, str):
        raise EventError("a Batch Operations task has no taskId; cannot report its result")
    bucket = task.get("s3Bucket") or str(task.get("s3BucketArn", "")).rpartition(":")[2]
    key, version = task.get("s3Key"), task.get("s3VersionId")
    if not isinstance(bucket, str) or not bucket or "/" in bucket or not isinstance(key, str):
        return Message(task_id, error="the task names no bucket and key")
    if version:
        return Message(task_id, error=f"object versions are not supported (s3VersionId {str(version)[:64]!r})")
    try:
        return Message(task_id, (ObjectRef(bucket, decode_key(key, bucket)),), job=job)
    except EventError as exc:
        return Message(task_id, error=str(exc))


def _s3_record(record: dict) -> list[ObjectRef]:
    if record.get("EventSource") == "aws:sns":
        return parse_body(record["Sns"]["Message"])
    if "s3" not in record:
        raise EventError("record has neither an s3 nor an Sns section")
    if not str(record.get("eventName", "")).startswith("ObjectCreated"):
        return []
    return _created(record["s3"]["bucket"]["name"], record["s3"]["object"]["key"])


def parse_event(event: Any) -> list[ObjectRef]:
    """Read every envelope the bridge accepts down to the objects it names.

    Only created objects count: removals, tag changes and S3's test event are
    read and acknowledged without work, so a notification rule wider than
    needed never runs the handler twice.
    """
    try:
        if not isinstance(event, dict):
            raise EventError("event is not a JSON object")
        if event.get("Event") == "s3:TestEvent":
            return []
        if event.get("Type") == "Notification" and "Message" in event:
            return parse_body(event["Message"])
        if isinstance(event.get("Records"), list):
            return [ref for record in event["Records"] for ref in _s3_record(record)]
        if event.get("source") == "aws.s3" and "detail" in event:  # EventBridge: the key is not encoded
            if event.get("detail-type") != "Object Created":
                return []
            return _created(event["detail"]["bucket"]["name"], event["detail"]["object"]["key"], encoded=False)
        raise EventError("not an S3, SNS or EventBridge S3 event")
    except (KeyError, TypeError, AttributeError) as exc:
        raise EventError(f"malformed event: missing or wrong {exc}") from None


def parse_body(body: Any) -> list[ObjectRef]:
    """Parse a JSON text (an SQS body or an SNS message) into object references."""
    if not isinstance(body, str):
        raise EventError("message body is not a string")
    try:
        return parse_event(json.loads(body))
    except (ValueError, RecursionError) as exc:
        raise EventError(f"body is not JSON: {exc}") from None


def parse_sqs_record(record: Any) -> Message:
    """Read one SQS record; a bad body spoils only its own message."""
    message_id = record.get("messageId") if isinstance(record, dict) else None
    if not isinstance(message_id, str):
        raise EventError("an SQS record has no messageId; cannot report it as failed")
    try:
        return Message(message_id, tuple(parse_body(record.get("body"))))
    except EventError as exc:
        return Message(message_id, error=str(exc))


###############################################################################
# Grouping
###############################################################################


@dataclass(frozen=True)
class Group:
    """One execution: a bucket, a folder prefix, the messages that asked for it and the keys that
    triggered it; with GROUP_BY=object, its one object (`key`); for Batch Operations, the job's arguments."""

    bucket: str
    prefix: str
    sources: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    key: str | None = None
    job: str | None = None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix if self.key is None else self.key}"


def key_prefix(key: str, parent_dirs: int) -> str:
    """The folder pulled for a key: its own, or `parent_dirs` levels above it."""
    folders = key.split("/")[:-1]
    if parent_dirs < 0 or parent_dirs > len(folders):
        return ""
    return "".join(f"{name}/" for name in folders[: len(folders) - parent_dirs])


def group_messages(messages: Iterable[Message], config: Config) -> list[Group]:
    """Collect matching references into groups (a folder, or with GROUP_BY=object one object),
    remembering which messages fed each and which keys triggered it, in order of arrival."""
    groups: dict[tuple, tuple[dict[str, None], dict[str, None]]] = {}
    for message in messages:
        for ref in message.refs:
            if config.match_key and not config.match_key.search(ref.key):
                continue
            one = ref.key if config.group_by == "object" else None
            ident = (ref.bucket, key_prefix(ref.key, config.pull_parent_dirs), one, message.job)
            sources, triggers = groups.setdefault(ident, ({}, {}))
            sources[message.id] = triggers[ref.key] = None
    return [Group(b, p, tuple(s), tuple(t), key, job) for (b, p, key, job), (s, t) in groups.items()]


###############################################################################
# Paths: every path the bridge writes or removes
###############################################################################

# What the module's audit map (3) names; a work folder (WorkFolder) is locked
# while in use, and swept only when no process holds it.


def relative_path(key: str, prefix: str) -> str | None:
    """Where a key lands inside the work folder, or None when it would not be safe.

    Keys may hold anything; a path may not leave the folder, so `..`, `.`,
    empty segments, a leading `/` and NUL are refused rather than normalised
    (normalising would upload the outputs under a different key).
    """
    rest = key[len(prefix) :] if key.startswith(prefix) else None
    if not rest or "\0" in rest or rest.startswith("/"):
        return None
    segments = (rest[:-1] if rest.endswith("/") else rest).split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return None
    return rest


def placement_refusal(relative: str, files: set[str], folders: set[str], name_max: int) -> str | None:
    """Why a relative path cannot be placed beside those placed before it; None: it is placed now.

    Decided in memory, in listing order, so the first listed wins a clash
    (`a` and `a/b`: a file where a folder must be, or the reverse), and the
    files need not exist before the downloads, which create them in parallel.
    """
    path = relative.rstrip("/")
    parents = {path[:i] for i, char in enumerate(path) if char == "/"}
    if any(len(os.fsencode(segment)) > name_max for segment in path.split("/")):
        return "it cannot be placed (File name too long)"
    if parents & files or path in files or (path in folders and not relative.endswith("/")):
        return "it cannot be placed (a file where a folder must be, or the reverse)"
    folders.update(parents)
    (folders if relative.endswith("/") else files).add(path)
    return None


def placed_path(root: str, relative: str) -> str:
    """The path of a placed relative path under root, its folders made (a folder marker's own too)."""
    path = os.path.join(root, *relative.rstrip("/").split("/"))
    os.makedirs(path if relative.endswith("/") else os.path.dirname(path), exist_ok=True)
    return path


CHUNK, _DIRECTORY, PARTIAL_SUFFIX = 1 << 20, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, ".s3eb-partial"
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW  # a file written, never through a link


def write_hashing(chunks: Iterable[bytes], path: str) -> str:
    """Write a stream to a file, returning its sha256: one pass over the bytes."""
    digest = hashlib.sha256()
    with open(os.open(path, _NEW_FILE, 0o644), "wb") as target:
        for chunk in chunks:
            target.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str, algorithm: str = "sha256") -> str:
    """Digest of a regular file, opened without following a link swapped in."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _refuse_mounts(root: str) -> None:
    """Raise for a mount point under root, bind mounts of the same filesystem included (where /proc says)."""
    top = os.path.realpath(root) + "/"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            points = [line.split()[4] for line in mounts]
    except OSError:  # no /proc: the walk's own check of devices is what is left
        return
    for point in points:
        point = re.sub(r"\\([0-7]{3})", lambda escaped: chr(int(escaped.group(1), 8)), point)
        if point.startswith(top):
            raise OSError(errno.EXDEV, "a mount point: not crossed", point)


def _open_up(info: os.stat_result, name: str, fd: int | None = None) -> None:
    """Give the owner read and search on its folder, or read on its file, where it lacks them.

    Only for what this (non-root) user owns: root needs no such help, and a
    link swapped in after the lstat could then only lead to this user's own
    files, which the same user could change anyway.
    """
    wanted = 0o700 if stat.S_ISDIR(info.st_mode) else 0o400 if stat.S_ISREG(info.st_mode) else 0
    if info.st_mode & wanted != wanted and os.geteuid() != 0 and info.st_uid == os.geteuid():
        os.chmod(name, stat.S_IMODE(info.st_mode) | wanted, dir_fd=fd)


def _lstat_opening_up(fd: int, name: str, device: int | None) -> os.stat_result:
    """The entry's lstat; in the bridge's own tree (device given) opened up, and never on another device."""
    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    if device is not None:
        _open_up(info, name, fd)
        if stat.S_ISDIR(info.st_mode) and info.st_dev != device:
            raise OSError(errno.EXDEV, "a mount point: not crossed")
    return info


def _enter(fd: int, name: str) -> int:
    child = os.open(name, _DIRECTORY, dir_fd=fd)
    os.close(fd)
    return child


def _climb(fd: int, parent: os.stat_result, folder: str) -> int:
    up = os.open("..", _DIRECTORY, dir_fd=fd)
    if not os.path.samestat(os.fstat(up), parent):
        os.close(up)
        raise OSError(f"{folder} was moved out of its folder while it was being read")
    os.close(fd)
    return up


def walk_tree(root: str, own: bool = False) -> Iterator[tuple[int, str, str, os.stat_result]]:
    """Every entry under root, each folder after its contents: (fd of its folder, name, path, lstat).

    Iterative, one folder open at a time, climbing back through `..` (checked
    to be the folder it came from): no recursion, PATH_MAX or open-file limit
    bounds the depth. Links are never followed. An entry that vanishes is
    skipped; any other error is raised with its path. The bridge's `own` tree
    (what a handler left) is opened up where the handler closed it, and a
    mount point in it is an error: it would reach into another filesystem.
    """
    if own:
        _refuse_mounts(root)
    fd = os.open(root, _DIRECTORY)
    levels = [(os.listdir(fd), "", os.fstat(fd))]
    device = levels[0][2].st_dev if own else None
    try:
        while levels:
            names, folder, info = levels[-1]
            if not names:
                levels.pop()
                if levels:
                    fd = _climb(fd, levels[-1][2], f"{root}/{folder}")
                    yield fd, folder.rpartition("/")[2], folder, info
                continue
            name = names.pop()
            path = f"{folder}/{name}" if folder else name
            try:
                entry = _lstat_opening_up(fd, name, device)
                if stat.S_ISDIR(entry.st_mode):
                    fd = _enter(fd, name)
                    levels.append((os.listdir(fd), path, os.fstat(fd)))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, f"{root}/{path}") from None
            if not stat.S_ISDIR(entry.st_mode):
                yield fd, name, path, entry
    finally:
        os.close(fd)


def remove_tree(path: str) -> None:
    """Remove path whatever it holds: a link is removed, never followed, and
    folders a handler left at mode 000 are opened up first."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
        return
    _open_up(info, path)
    for fd, name, _, entry in walk_tree(path, own=True):
        (os.rmdir if stat.S_ISDIR(entry.st_mode) else os.unlink)(name, dir_fd=fd)
    os.rmdir(path)


def copy_into(top: str, relative: str, source: str) -> None:
    """Copy source to top/relative, appearing whole (a rename), as an S3 object would; its folders
    are made one by one and never through a link, so it cannot land outside top."""
    *folders, name = relative.split("/")
    fd = os.open(top, _DIRECTORY)
    try:
        for folder in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o777, dir_fd=fd)
            child = os.open(folder, _DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        partial = os.open(name + PARTIAL_SUFFIX, _NEW_FILE, 0o644, dir_fd=fd)
        with open(source, "rb") as reader, open(partial, "wb") as writer:
            shutil.copyfileobj(reader, writer, CHUNK)
        os.replace(name + PARTIAL_SUFFIX, name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


WORK_PREFIX = "s3eb-work-"


def _still_at(path: str, fd: int) -> bool:
    try:
        return os.path.samestat(os.lstat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class WorkFolder:
    """A folder of the bridge's own, under an exclusive flock while in use.

    The handler works in `root` inside it, so nothing it does to its own
    folder touches the lock, which tells another process's start-up sweep
    that the folder is live (across PID namespaces, unlike a PID).
    """

    path: str
    fd: int

    @property
    def root(self) -> str:
        return os.path.join(self.path, "root")

    def write_triggers(self, group: Group) -> str:
        """A JSON array of the keys that triggered the group, relative to `root` (those that are safe
        paths), beside `root` so that it is never uploaded; its path. A file, not a variable: a batch
        may name thousands of keys, more than an environment can hold."""
        relative = [path for path in (relative_path(key, group.prefix) for key in group.triggers) if path]
        fd = os.open("triggers.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=self.fd)
        with open(fd, "w", encoding="utf-8") as target:
            json.dump(relative, target, ensure_ascii=False)
        return os.path.join(self.path, "triggers.json")

    def reclaim(self) -> None:
        """After the handler: check it is still the folder locked, and give back the permissions the handler took."""
        with contextlib.suppress(FileNotFoundError):
            if _still_at(self.path, self.fd):
                os.fchmod(self.fd, 0o700)
                info = os.stat("root", dir_fd=self.fd, follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    _open_up(info, "root", self.fd)
                    return
        raise GroupError("the handler moved, removed or replaced its work folder; nothing uploaded")

    def remove(self) -> None:
        """Remove it whatever it holds, also where the handler moved it; a failure is logged (the next start sweeps)."""
        try:
            if not _still_at(self.path, self.fd):  # found through its descriptor, if /proc is there
                moved = os.readlink(f"/proc/self/fd/{self.fd}")
                if _still_at(moved, self.fd):
                    log.warning("the handler moved its work folder to %s; removing it there", moved)
                    remove_tree(moved)
            remove_tree(self.path)  # what stands there now: a link is removed, never followed
        except OSError as exc:
            log.warning("could not remove work folder %s: %s", self.path, exc)
        finally:
            os.close(self.fd)


def make_work_folder(parent: str | None = None) -> WorkFolder:
    """A new locked work folder with an empty `root`; one that cannot be made fails the group.

    A sweep can catch a folder between mkdtemp and flock, but it removes a
    folder only while holding its lock: so the folder is checked once
    locked, and made anew if it went. To a sweep, making and locking are
    then one step.
    """
    try:
        while True:
            path = tempfile.mkdtemp(prefix=WORK_PREFIX, dir=parent)
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(path, _DIRECTORY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if _still_at(path, fd):
                        os.mkdir(os.path.join(path, "root"), 0o700)
                        return WorkFolder(path, fd)
                except BaseException:
                    os.close(fd)
                    raise
                os.close(fd)
    except OSError as exc:
        raise GroupError(f"cannot make a work folder in {parent or tempfile.gettempdir()}: {exc}") from None


def _remove_if_stale(path: str) -> None:
    if os.path.islink(path):
        os.unlink(path)
        return
    fd = os.open(path, _DIRECTORY)
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise OSError(errno.EPERM, "another user's: left to that user's own next start")
        with contextlib.suppress(BlockingIOError):  # a live process holds it
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log.info("removing leftover work folder %s", path)
            remove_tree(path)
    finally:
        os.close(fd)


def remove_stale_work_folders(parent: str | None = None) -> None:
    """Remove the folders of killed earlier runs, never one a live process holds, and never raise.

    A folder that went, or that this user cannot open (another user's, in a
    shared /tmp), is skipped with a log line.
    """
    parent = parent or tempfile.gettempdir()
    try:
        names = [name for name in os.listdir(parent) if name.startswith(WORK_PREFIX)]
    except OSError as exc:
        log.warning("cannot look for leftover work folders in %s: %s", parent, exc)
        return
    for name in names:
        try:
            _remove_if_stale(os.path.join(parent, name))
        except OSError as exc:
            log.info("leaving %s: %s", os.path.join(parent, name), exc)


###############################################################################
# AWS: credentials, endpoints and TLS
###############################################################################

# The audit map's (1) and (5). botocore, here and wherever else it is used, is
# imported only when a mode that talks to AWS starts (local mode never does): it is
# most of the start-up time. boto3 itself is not needed: the bridge uses plain clients.

#: Parameters S3's endpoint ruleset declares but, as checked at start-up, never reads.
UNREAD_ENDPOINT_PARAMETERS = ("Key", "Prefix", "CopySource")


def aws_session(botocore_files: str | None) -> Any:
    """A botocore session; from the zipapp, pointed at its unpacked models and CA bundle.

    Set on the session, not in the environment, so a handler's own boto3
    never sees the bridge's pruned models. A CA bundle the user configured
    (AWS_CA_BUNDLE, profile) still wins.
    """
    import botocore.session

    session = botocore.session.get_session()
    if botocore_files:
        paths = [session.get_config_variable("data_path"), os.path.join(botocore_files, "data")]
        session.set_config_variable("data_path", os.pathsep.join(p for p in paths if p))
        if not session.get_config_variable("ca_bundle"):
            session.set_config_variable("ca_bundle", os.path.join(botocore_files, "cacert.pem"))
    return session


def _expect_owner(owner: str, params: dict, model: Any, **_: Any) -> None:
    if "ExpectedBucketOwner" in model.input_shape.members:
        params.setdefault("ExpectedBucketOwner", owner)


def s3_client(session: Any, concurrency: int, owner: str | None) -> Any:
    """S3, with botocore's standard retries and a pool of `concurrency` connections.

    Client-side parameter validation costs ~10% of a small request's CPU; the
    bridge builds every request itself, and S3 validates them anyway. A fixed
    user agent spares botocore building its own twice per request. With an
    owner (EXPECTED_BUCKET_OWNER), every request that can carry it does: S3
    refuses it when another account owns the bucket. "Expect: 100-continue"
    costs each small upload a round trip: kept for multipart parts only,
    where sparing a rejected 8 MiB body is worth one.
    """
    import botocore.config
    import botocore.handlers

    agent = f"s3-event-bridge/{__version__} botocore/{botocore.__version__} python/{platform.python_version()}"
    config = botocore.config.Config(
        max_pool_connections=concurrency, retries={"mode": "standard"}, parameter_validation=False, user_agent=agent
    )
    client = session.create_client("s3", config=config)
    cache_endpoints_per_bucket(session, client)
    if owner:
        client.meta.events.register("before-parameter-build.s3", functools.partial(_expect_owner, owner))
    client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
    client.meta.events.register("before-call.s3.UploadPart", botocore.handlers.add_expect_header)
    return client


def sqs_client(session: Any, attempts: int | None = None) -> Any:
    """SQS, with botocore's standard retries; backfill's with none (attempts=1): a send whose answer
    was lost may have arrived, and must never be repeated."""
    import botocore.config

    retries = {"mode": "standard", **({"total_max_attempts": attempts} if attempts else {})}
    return session.create_client("sqs", config=botocore.config.Config(retries=retries))


def _resolve_without_keys(resolve: Callable[..., Any], **parameters: Any) -> Any:
    for name in UNREAD_ENDPOINT_PARAMETERS:
        parameters.pop(name, None)
    return resolve(**parameters)


def cache_endpoints_per_bucket(session: Any, client: Any) -> bool:
    """Keep the object key out of botocore's endpoint cache, so the ruleset runs once per bucket.

    botocore caches resolved endpoints by every parameter, the key among
    them: each new key evaluates ~64 rule functions again. Done only where
    the private attribute exists and S3's ruleset really never reads those
    parameters (checked in its data); otherwise nothing changes.
    """
    provider = getattr(getattr(client, "_ruleset_resolver", None), "_provider", None)
    resolve = getattr(provider, "resolve_endpoint", None)
    rules = session.get_component("data_loader").load_service_model("s3", "endpoint-rule-set-1").get("rules")
    names = "|".join(UNREAD_ENDPOINT_PARAMETERS)
    if resolve is None or re.search(rf'"ref": "(?:{names})"|\{{(?:{names})[}}#]', json.dumps(rules)):
        return False
    provider.resolve_endpoint = functools.partial(_resolve_without_keys, resolve)
    return True


def fast_path_trust(client: Any, credentials: Any) -> tuple[bool, str | None]:
    """Whether the fast path may be taken beside this client, and the CA bundle it then trusts
    (None: verify=False).

    Only where botocore itself would send plain requests: credentials to sign
    with, no client certificate, no proxy (configured, or in the environment),
    the endpoint ruleset to resolve with, and HTTPS verified as botocore
    verifies it (its value, from AWS_CA_BUNDLE, the profile, REQUESTS_CA_BUNDLE
    or its own bundle).
    """
    import urllib.request  # botocore imports it anyway

    import botocore.httpsession

    config = client.meta.config
    verify = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None), "_verify", None)
    trusted = credentials is not None and verify is not None and hasattr(client, "_ruleset_resolver")
    trusted = trusted and not (config.client_cert or config.proxies or set(urllib.request.getproxies()) - {"no"})
    return trusted, botocore.httpsession.get_cert_path(verify) if verify else None


def tls_context(ca_file: str | None) -> Any:
    """Trust exactly what botocore trusts (its CA bundle, never the system's) over
    TLS 1.2 or later, as its urllib3 does; or, with verify=False, nothing, as botocore."""
    import ssl  # here, where HTTPS needs it: a Python built without it still runs local mode

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks hostnames; trusts no CA yet
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is None:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    else:  # a file, as botocore reads it: a folder fails here as it fails there
        context.load_verify_locations(cafile=ca_file)
    return context


@dataclass(frozen=True)
class Target:
    """Where a bucket's requests go, as botocore's endpoint ruleset resolved it."""

    scheme: str
    host: str  # what the socket connects to
    port: int | None
    host_header: str  # what is signed and sent: no default port, IPv6 in brackets
    base_path: str  # "/bucket" when path-style, "" when virtual-hosted
    region: str  # the signing region


def resolve_target(client: Any, bucket: str, operation: str) -> Target | None:
    """The bucket's endpoint if botocore would sign its requests with plain SigV4 for "s3", else None.

    These are the calls botocore's own region redirector makes, so the
    client's settings apply (region, endpoint URL, FIPS, dual-stack,
    addressing style) and so do the regions it learned from redirects.
    Everything else stays on botocore: S3 Express, multi-region access points
    (SigV4A), Object Lambda, Outposts, unsigned clients, and any answer with
    extra headers or properties.
    """
    resolver = client._ruleset_resolver
    context = {"client_region": client.meta.region_name, "client_config": client.meta.config}
    try:
        model = client.meta.service_model.operation_model(operation)
        endpoint = resolver.construct_endpoint(model, {"Bucket": bucket}, context)
        schemes = endpoint.properties.get("authSchemes") or []
        auth_type, signing = resolver.auth_schemes_to_signing_ctx(schemes)
    except Exception:  # whatever botocore has to say about this bucket, it says it itself
        return None
    plain = [s for s in schemes if s.get("name") == "sigv4" and s.get("signingName") == "s3"]
    url = urllib.parse.urlsplit(endpoint.url)
    certainly_right = (
        set(endpoint.properties) == {"authSchemes"}
        and not endpoint.headers
        and auth_type in ("v4", "s3v4")
        and plain
        and signing.get("signing_name") == "s3"
        and signing.get("region") == plain[0].get("signingRegion")
        and url.scheme in ("http", "https")
        and url.hostname
        and not (url.username or url.query or url.fragment)
    )
    if not certainly_right:
        return None
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    host_header = host if url.port in (None, {"http": 80, "https": 443}[url.scheme]) else f"{host}:{url.port}"
    return Target(url.scheme, url.hostname, url.port, host_header, url.path.rstrip("/"), signing["region"])


def key_path(key: str) -> str:
    """The key as S3 wants it in a path, and signs it: UTF-8, %-encoded once (not twice, as
    other services do), never normalised (`a//b` and `./` stay)."""
    return urllib.parse.quote(key.encode(), safe="/~")


def sign(
    method: str, host: str, path: str, payload: str, credentials: Any, region: str, when: str, extra: Mapping[str, str]
) -> dict:
    """SigV4 headers for an S3 request without a query string: signed are host,
    x-amz-content-sha256 (the payload's real sha256), x-amz-date, x-amz-security-token
    (temporary credentials) and the extra headers given (content-type,
    x-amz-expected-bucket-owner), all in sorted order. `credentials` are botocore's, frozen."""
    headers = {"Host": host, "X-Amz-Content-SHA256": payload, "X-Amz-Date": when, **extra}
    if credentials.token:
        headers["X-Amz-Security-Token"] = credentials.token
    headers = dict(sorted(headers.items(), key=lambda header: header[0].lower()))
    names = ";".join(name.lower() for name in headers)
    canonical = "".join(f"{name.lower()}:{' '.join(value.split())}\n" for name, value in headers.items())
    request = f"{method}\n{path}\n\n{canonical}\n{names}\n{payload}"
    scope = f"{when[:8]}/{region}/s3/aws4_request"
    text = f"AWS4-HMAC-SHA256\n{when}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
    key = f"AWS4{credentials.secret_key}".encode()
    for part in (when[:8], region, "s3", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    signature = hmac.new(key, text.encode(), "sha256").hexdigest()
    credential = f"{credentials.access_key}/{scope}"
    headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={names}, Signature={signature}"
    return headers


###############################################################################
# S3's fast path: single-request GET and PUT with the standard library
###############################################################################

FAST_PATH_MAX_BYTES, FAST_PATH_BUFFERS = 2 * 1024 * 1024, 32 * 1024 * 1024
#: Hosts whose idle connections the fast path keeps, the most recently used: botocore's pool keeps 10.
FAST_PATH_HOSTS = 10
AUTH_FAILURES_BEFORE_OFF = 3
#: S3's error codes that mean the fast path's own signature was refused (not the caller's rights).
SIGNATURE_REFUSALS = (b"SignatureDoesNotMatch", b"AuthorizationHeaderMalformed", b"RequestTimeTooSkewed")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class FastPath:
    """Single-request GET and PUT of small objects without botocore's request machinery.

    botocore spends ~1 ms of CPU on each small request; this path, ~0.3 ms:
    keep-alive http.client connections, SigV4 signed here, credentials from
    botocore (frozen per request, so refreshed ones work), the endpoint
    resolved by botocore's ruleset once per bucket. It is taken only where
    certainly right (fast_path_trust, resolve_target), and it is exactly as
    safe as botocore: it trusts exactly botocore's CAs (tls_context), and keeps
    at most as many connections (`concurrency` idle ones for each of
    FAST_PATH_HOSTS hosts). `get` and `put` return None or False for
    anything else: a connection that cannot be made, any answer but a clean
    200; the caller then does that object again through botocore, with its
    retries, redirects and error types. Three refusals of its signature switch
    it off for the process, with one warning.

    A PUT holds its body to sign its sha256 (S3 then verifies what it stores),
    so bodies are capped: 2 MiB, and 32 MiB across the transfer threads.
    """

    def __init__(self, session: Any, client: Any, concurrency: int, enabled: bool, owner: str | None) -> None:
        import botocore.handlers

        self.client, self.credentials, config = client, session.get_credentials(), client.meta.config
        trusted, self.ca_file = fast_path_trust(client, self.credentials)
        self.enabled = enabled and trusted
        self.concurrency, self.max_bytes = concurrency, min(FAST_PATH_MAX_BYTES, FAST_PATH_BUFFERS // concurrency)
        self.timeouts, self.user_agent = (config.connect_timeout, config.read_timeout), f"{config.user_agent} fast-path"
        self.owner = {"X-Amz-Expected-Bucket-Owner": owner} if owner else {}
        self.targets: dict[tuple[str, str], Target | None] = {}
        self.idle: dict[tuple, list[http.client.HTTPConnection]] = {}  # by host, the most recently used last
        self.lock, self.auth_failures = threading.Lock(), 0
        self.add_recursion_header = botocore.handlers.add_recursion_detection_header  # Lambda's loop detection

    @functools.cached_property
    def tls(self) -> Any:
        """Made for the first HTTPS connection: the CA bundle is parsed once, and never for HTTP."""
        return tls_context(self.ca_file)

    def get(self, bucket: str, key: str, path: str) -> str | None:
        """Download into path; the file's sha256, or None when botocore must do it."""
        sent = self._send(bucket, "GetObject", "GET", key, b"", None)
        if sent is None:
            return None
        try:
            digest = write_hashing(iter(lambda: sent[2].read(CHUNK), b""), path)
            whole = sent[2].chunked or str(os.path.getsize(path)) == sent[2].getheader("Content-Length")
        except (OSError, http.client.HTTPException):
            whole = False
        return digest if self._release(sent, whole) else None  # read() ends a cut body quietly: the count tells

    def put(self, bucket: str, key: str, path: str, content_type: str | None) -> bool:
        """Upload path under key; False when botocore must do it (the same bytes again: safe)."""
        with open(path, "rb") as source:
            body = source.read(self.max_bytes + 1)
        sent = self._send(bucket, "PutObject", "PUT", key, body, content_type) if len(body) <= self.max_bytes else None
        if sent is None:
            return False
        try:
            sent[2].read()
        except (OSError, http.client.HTTPException):
            return self._release(sent, False)
        return self._release(sent, True)

    def _send(self, bucket: str, operation: str, method: str, key: str, body: bytes, kind: str | None) -> Any:
        """One signed request: (target, connection, response) if S3 answered 200, else None."""
        target = self._target(bucket, operation)
        if target is None:
            return None
        path, when = f"{target.base_path}/{key_path(key)}", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        frozen = self.credentials.get_frozen_credentials()
        extra = {**self.owner, **({"Content-Type": kind} if kind else {})}
        headers = sign(method, target.host_header, path, payload, frozen, target.region, when, extra)
        headers["User-Agent"] = self.user_agent
        self.add_recursion_header({"headers": headers})
        for reuse in (True, False):  # a kept-alive connection the server closed meanwhile: once more on a new one
            connection, reused = None, False
            try:
                connection, reused = self._connection(target, reuse)
                connection.request(method, path, body or None, headers)
                response = connection.getresponse()
                if response.status == 200:
                    return target, connection, response
                self._refused(bucket, response.status, response.read(65536))
                reused = False
            except Exception:  # any other failure (refused, DNS, TLS, a cut answer): botocore's to do
                pass
            if connection is not None:
                connection.close()
            if not reused:
                return None
        return None

    def _target(self, bucket: str, operation: str) -> Target | None:
        if not self.enabled:
            return None
        with self.lock:
            if (bucket, operation) in self.targets:
                return self.targets[bucket, operation]
        target = resolve_target(self.client, bucket, operation)
        with self.lock:
            self.targets[bucket, operation] = target
        return target

    def _connection(self, target: Target, reuse: bool) -> tuple[http.client.HTTPConnection, bool]:
        """An idle keep-alive connection to the target's host, or a new one; and whether it was
        idle. One the server closed while idle (readable: EOF or stray bytes) is dropped; poll,
        unlike select, takes a descriptor of any number."""
        host = (target.scheme, target.host, target.port)
        with self.lock:
            idle = self.idle.pop(host, []) if reuse else []
            connection = idle.pop() if idle else None
            if idle:
                self.idle[host] = idle  # now the most recently used
        if connection is not None and connection.sock is not None:
            poller = select.poll()
            poller.register(connection.sock, select.POLLIN)
            if not poller.poll(0):
                return connection, True
            connection.close()
        if target.scheme == "https":
            connection = http.client.HTTPSConnection(target.host, target.port, context=self.tls, blocksize=CHUNK)
        else:
            connection = http.client.HTTPConnection(target.host, target.port, blocksize=CHUNK)
        connection.timeout = self.timeouts[0]
        connection.connect()
        connection.sock.settimeout(self.timeouts[1])
        return connection, False

    def _release(self, sent: tuple[Target, http.client.HTTPConnection, Any], whole: bool) -> bool:
        """Keep a connection whose answer was read whole, within the pool's bounds; close any other. Whether whole."""
        target, connection, _ = sent
        doomed = [connection]
        with self.lock:
            if whole and connection.sock is not None:
                idle = self.idle.setdefault((target.scheme, target.host, target.port), [])
                if len(idle) < self.concurrency:
                    idle.append(doomed.pop())
            while len(self.idle) > FAST_PATH_HOSTS:  # the least recently used host's
                doomed.extend(self.idle.pop(next(iter(self.idle))))
        for stale in doomed:
            stale.close()
        return whole

    def _refused(self, bucket: str, status: int, body: bytes) -> None:
        """A non-200 answer: resolve the bucket again next time (botocore may learn a
        redirect's region meanwhile); count the refusals of the signature itself (not a
        403 of the caller's rights: a bucket policy, a KMS key; nor a malformed authorization
        naming a <Region>: signed for another region, which botocore redirects)."""
        code = re.search(rb"<Code>([A-Za-z]+)</Code>", body) if b"<Region>" not in body else None
        with self.lock:
            for operation in ("GetObject", "PutObject"):
                self.targets.pop((bucket, operation), None)
            self.auth_failures += bool(code and code.group(1) in SIGNATURE_REFUSALS)
            if self.enabled and self.auth_failures >= AUTH_FAILURES_BEFORE_OFF:
                self.enabled = False
                log.warning("S3 refused %d fast-path signatures: botocore does every request now", self.auth_failures)


###############################################################################
# Object stores: S3 through botocore, and a folder standing in for a bucket
###############################################################################

MULTIPART_THRESHOLD = 8 * 1024 * 1024


class LocalStore:
    """Folders standing in for buckets, so a pipeline runs with no AWS at all.

    Keys are paths under a bucket's folder with `/` separators; the filter sees
    the same object shape as on S3 (ETag is the quoted MD5 of the content).
    Links are not objects, and a file that vanishes while the folder is read
    (an editor saving by rename) is simply not listed. Every written key is
    remembered, because in local mode the bridge itself plays S3's
    notifications.
    """

    def __init__(self, folders: Mapping[str, str]) -> None:
        self.folders = dict(folders)
        self.written: list[ObjectRef] = []

    def path(self, bucket: str, key: str) -> str:
        return os.path.join(self.folders[bucket], *key.split("/"))

    def scan(self, bucket: str) -> dict[str, os.stat_result]:
        """Every object of the bucket, in S3's listing order (UTF-8 bytes), with its lstat."""
        found = {
            path: info
            for _, name, path, info in walk_tree(self.folders[bucket])
            if stat.S_ISREG(info.st_mode) and not name.endswith(PARTIAL_SUFFIX)
        }
        return {key: found[key] for key in sorted(found, key=lambda key: key.encode())}

    def list_objects(self, bucket: str, prefix: str, first: bool = False) -> list[dict]:
        listed = (self._object(bucket, key) for key in self.scan(bucket) if key.startswith(prefix))
        return [obj for obj in listed if obj][: 1 if first else None]

    def _object(self, bucket: str, key: str) -> dict | None:
        path = self.path(bucket, key)
        try:
            etag, info = file_digest(path, "md5"), os.stat(path)
        except FileNotFoundError:
            return None
        return {
            "Key": key,
            "LastModified": utc_timestamp(int(info.st_mtime)),
            "ETag": f'"{etag}"',
            "Size": info.st_size,
            "StorageClass": "STANDARD",
        }

    def download(self, bucket: str, items: Sequence[tuple[dict, str]]) -> list[str]:
        digests = []
        for obj, path in items:
            with open(self.path(bucket, obj["Key"]), "rb") as source:
                digests.append(write_hashing(iter(lambda: source.read(CHUNK), b""), path))
        return digests

    def upload(self, bucket: str, items: Sequence[tuple[str, str]]) -> None:
        """Copy outputs in (copy_into): each appears whole, and never outside the bucket's folder."""
        for source, key in items:
            copy_into(self.folders[bucket], key, source)
            self.written.append(ObjectRef(bucket, key))


def _object_shape(item: dict) -> dict:
    """The Object API shape the filter sees: dates as ISO 8601 UTC strings."""
    shaped = dict(item)
    if isinstance(item.get("LastModified"), datetime.datetime):
        shaped["LastModified"] = utc_timestamp(item["LastModified"].timestamp())
    return shaped


def _results(futures: Sequence[tuple[str, Any]], bucket: str, verb: str) -> list[Any]:
    """Wait for every transfer, so none still writes once the group ends;
    report the first failure by its s3:// name."""
    results, failure = [], None
    for key, future in futures:
        try:
            results.append(future.result())
        except Exception as exc:  # any transfer error fails the group the same way
            failure = failure or GroupError(f"{verb} of s3://{bucket}/{key} failed: {exc}")
    if failure:
        raise failure
    return results


class S3Store:
    """S3 through botocore: listing, and concurrent streaming transfers.

    Objects under the multipart threshold move in one plain request each, on
    a thread pool: for small objects s3transfer's machinery costs more than
    the request itself, and they are hashed as they arrive. Larger ones use
    s3transfer's multipart transfers (hashed once written). One client and
    pool live for the whole process, so connections are reused.
    """

    def __init__(self, session: Any, concurrency: int, fast_path: bool = True, owner: str | None = None) -> None:
        self.client = s3_client(session, concurrency, owner)
        self.fast = FastPath(session, self.client, concurrency, fast_path, owner)
        self.concurrency, self.pool = concurrency, concurrent.futures.ThreadPoolExecutor(concurrency)
        self._manager: Any = None
        self._manager_lock = threading.Lock()

    @property
    def manager(self) -> Any:
        """s3transfer, loaded for the first object large enough for multipart.

        Pool threads may ask at once: the lock keeps it to one manager.
        """
        with self._manager_lock:
            if self._manager is None:
                from s3transfer.manager import TransferConfig, TransferManager

                # A bounded write queue (64 x 256 KiB): s3transfer's default of 1000
                # chunks let a fast network buffer 256 MB ahead of the disk.
                config = TransferConfig(
                    multipart_threshold=MULTIPART_THRESHOLD,
                    max_request_concurrency=self.concurrency,
                    max_io_queue_size=64,
                )
                self._manager = TransferManager(self.client, config)
            return self._manager

    def list_objects(self, bucket: str, prefix: str, first: bool = False) -> list[dict]:
        """Every object under the prefix; or only the first (an object group: its key is its own first match)."""
        if first:
            page = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
            return [_object_shape(item) for item in page.get("Contents", ())]
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [_object_shape(item) for page in pages for item in page.get("Contents", ())]

    def download(self, bucket: str, items: Sequence[tuple[dict, str]]) -> list[str]:
        """Fetch (object, path) pairs; return each file's sha256."""
        futures = [(obj["Key"], self.pool.submit(self._download, bucket, obj, path)) for obj, path in items]
        return _results(futures, bucket, "download")

    def _download(self, bucket: str, obj: dict, path: str) -> str:
        if obj["Size"] >= MULTIPART_THRESHOLD:
            # The listed size and ETag spare s3transfer a HEAD request, and its ranged GETs carry
            # If-Match with that ETag: the parts are all of the object listed, never of two versions.
            # (A subscriber is any object with on_queued.)
            def listed(future: Any, **_: Any) -> None:
                future.meta.provide_transfer_size(obj["Size"])
                future.meta.provide_object_etag(obj["ETag"])

            self.manager.download(
                bucket, obj["Key"], path, subscribers=[types.SimpleNamespace(on_queued=listed)]
            ).result()
            return file_digest(path)
        digest = self.fast.get(bucket, obj["Key"], path) if obj["Size"] <= self.fast.max_bytes else None
        if digest is not None:
            return digest
        body = self.client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
        return write_hashing(body.iter_chunks(CHUNK), path)

    def upload(self, bucket: str, items: Sequence[tuple[str, str]]) -> None:
        """Send (path, key) pairs with a guessed Content-Type."""
        _results([(key, self.pool.submit(self._upload, bucket, path, key)) for path, key in items], bucket, "upload")

    def _upload(self, bucket: str, path: str, key: str) -> None:
        guessed, size = mimetypes.guess_type(key)[0], os.path.getsize(path)
        extra = {"ContentType": guessed} if guessed else {}
        if size >= MULTIPART_THRESHOLD:
            self.manager.upload(path, bucket, key, extra_args=extra).result()
            return
        if size <= self.fast.max_bytes and self.fast.put(bucket, key, path, extra.get("ContentType")):
            return
        with open(path, "rb") as body:
            self.client.put_object(Bucket=bucket, Key=key, Body=body, **extra)


###############################################################################
# Execution filter
###############################################################################


_NO_OUTPUT = object()


def filter_verdict(program: Any, objects: list[dict]) -> Any:
    """The filter's first output, or _NO_OUTPUT; a jq runtime error fails the group."""
    if program is None:
        return _NO_OUTPUT
    try:
        return next(iter(program.input_value(objects)), _NO_OUTPUT)
    except ValueError as exc:
        raise GroupError(f"execution filter failed: {exc}") from None


###############################################################################
# Snapshots
###############################################################################


def regular_files(root: str) -> dict[str, tuple[str, int]]:
    """Every regular file under root: posix relative path -> (path, size).

    Links and special files are never followed or read: a handler may leave
    them behind, but only regular files inside the folder are outputs. The
    bridge gives itself permission to read what the handler left (it owns it).
    """
    found = {}
    for _, _, relative, info in walk_tree(root, own=True):
        if stat.S_ISREG(info.st_mode):
            found[relative] = (os.path.join(root, *relative.split("/")), info.st_size)
        elif not stat.S_ISDIR(info.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            log.warning("not uploading %s: it is %s", relative, kind)
    return found


def changed_files(root: str, pulled: Mapping[str, tuple[int, str]]) -> list[str]:
    """Regular files that are new or changed since the pull, in a stable order.

    `pulled` maps each pulled file to its (size, sha256). Only a pulled file
    that kept its size is read and hashed: a new file, or one whose size
    differs, has changed without reading a byte of it. Any error reading the
    folder fails the group: an output must never be silently left out.
    """
    changed = []
    try:
        for relative, (path, size) in regular_files(root).items():
            before = pulled.get(relative)
            if before is None or before[0] != size or before[1] != file_digest(path):
                changed.append(relative)
    except OSError as exc:
        raise GroupError(f"cannot read the work folder after the handler: {exc}") from None
    return sorted(changed)


###############################################################################
# Handler: what it inherits, how it starts, how it and what it left end
###############################################################################

KILL_GRACE_SECONDS, PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 3.0, 1, 36
#: The variable that marks a handler's processes (a random value per run): as PID 1, whose orphans
#: arrive from anywhere, the bridge ends only the leftovers that carry it (or the handler's session).
HANDLER_MARK = "S3_EVENT_BRIDGE_HANDLER"
#: What the bridge never passes on from its own environment: the Runtime API's address, and what
#: it sets itself for each handler.
HANDLER_SET = frozenset({"AWS_LAMBDA_RUNTIME_API", "TRIGGERS_FILE", "BATCH_USER_ARGUMENTS", HANDLER_MARK})


def handler_environment(config: Config, environ: Mapping[str, str], group: Group, work: WorkFolder) -> dict[str, str]:
    """The one place that decides what the handler's environment holds: the bridge's own
    (its AWS credentials included: a handler may call AWS as the function), less the Runtime
    API's address (so that a tool it runs does not find the API by its variable); plus its
    folder, the group's bucket and prefix, the file of the keys that triggered it, a Batch
    Operations job's arguments, and the mark that tells its processes from any other's."""
    return {
        **{name: value for name, value in environ.items() if name not in HANDLER_SET},
        config.root_folder_var: work.root,
        config.bucket_var: group.bucket,
        config.key_prefix_var: group.prefix,
        "TRIGGERS_FILE": work.write_triggers(group),
        HANDLER_MARK: os.urandom(8).hex(),
        **({"BATCH_USER_ARGUMENTS": group.job} if group.job is not None else {}),
    }


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """Linux's prctl, loaded once (before any fork); None elsewhere."""
    try:
        import ctypes  # a minimal Python may lack it: then this is best effort

        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


def become_subreaper() -> bool:
    """Linux: let orphaned descendants of handlers be re-parented here, so they can be ended."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _in_the_child(parent: int) -> Callable[[], None]:
    """What the handler's process does between fork and exec: every signal at its default
    disposition and unblocked (whatever the bridge inherited: nohup ignores SIGHUP), SIGKILL
    when the bridge dies (SIGKILL, the OOM killer), or an end at once if it already has."""
    prctl, ignored = _prctl(), [n for n in signal.valid_signals() if signal.getsignal(n) == signal.SIG_IGN]

    def child() -> None:
        for signum in ignored:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if prctl is not None and (prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent):
            os._exit(127)

    return child


def spawn_handler(command: Sequence[str], env: Mapping[str, str], relay: bool) -> subprocess.Popen:
    """Start the handler in a session and process group of its own, with stdin from /dev/null,
    no descriptor of the bridge's but stdout and stderr (pipes, with `relay`), every signal at its
    default and unblocked, the bridge's working directory and umask, and SIGKILL should the
    bridge die (_in_the_child)."""
    pipe = subprocess.PIPE if relay else None
    try:
        return subprocess.Popen(
            list(command),
            env=dict(env),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=pipe,
            stderr=pipe,
            preexec_fn=_in_the_child(os.getpid()),  # system calls only: no lock a fork could leave held
        )
    except (OSError, ValueError) as exc:
        raise GroupError(f"handler {command[0]!r} could not start: {exc}") from None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _end_group(process: subprocess.Popen) -> None:
    """SIGTERM to the handler's group, then SIGKILL if it is not gone after KILL_GRACE_SECONDS."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()


def _children() -> Iterator[tuple[int, bytes, int, int]]:
    """This process's children, from /proc (none without it): pid, state, process group, session."""
    with contextlib.suppress(OSError):
        for name in [name for name in os.listdir("/proc") if name.isdigit()]:
            try:
                with open(f"/proc/{name}/stat", "rb") as status:
                    state, ppid, pgrp, sid = status.read().rpartition(b")")[2].split()[:4]
            except OSError:
                continue
            if int(ppid) == os.getpid():
                yield int(name), state, int(pgrp), int(sid)


def _is_stray(pid: int, pgrp: int, sid: int, session: int, mark: bytes | None) -> bool:
    """A child outside this process's group: a handler's leftover. With a mark (as PID 1), only
    one in the handler's session or whose environment carries the mark."""
    if pgrp == os.getpgrp():
        return False
    if mark is None or sid == session:
        return True
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return mark in environ.read().split(b"\0")
    except OSError:
        return False


def end_strays(session: int, mark: bytes | None) -> None:
    """Kill and reap what a handler left outside its process group (re-parented here); as PID 1
    (a mark given), also reap every other child that has exited, orphans of anyone's: never kill those.

    One this user may not signal (another user's, in this PID namespace) is
    spared, and reaped only if it has already exited.
    """
    spared: set[int] = set()
    while strays := [p for p, _, g, s in _children() if p not in spared and _is_stray(p, g, s, session, mark)]:
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except PermissionError:
                spared.add(pid)
            except ProcessLookupError:
                pass
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG if pid in spared else 0)
    with contextlib.suppress(ChildProcessError):
        while mark is not None and os.waitpid(-1, os.WNOHANG)[0]:
            pass


###############################################################################
# Shutdown: signals, and each mode's policy
###############################################################################

EXIT_MARGIN_SECONDS, STOP_SIGNALS, SHUTDOWN_GRACE_SECONDS = 1.0, (signal.SIGTERM, signal.SIGINT), 20.0
#: What a signal does in each mode: (seconds a running group may still take to finish, exit status
#: when the mode was idle, exit status when a running group had to be left unfinished). Only the
#: SQS worker gives a group time: its messages would otherwise come back only after their
#: visibility timeout. A worker stopped by a signal exits 0, as a container orchestrator expects.
SHUTDOWN_POLICY = {
    "lambda": (0.0, 1, 1),
    "run": (0.0, 1, 1),
    "consume": (SHUTDOWN_GRACE_SECONDS, 0, 0),
    "local": (0.0, 0, 1),
    "backfill": (0.0, 1, 1),
}


def _wake_only(signum: int, frame: Any) -> None:
    """The Python-level handler: set_wakeup_fd has already written the signal's number."""


def _work_thread(work: Callable[[], int], status: list[int], waker: int) -> None:
    try:
        status.append(work())
    except Exception:  # the main thread must hear of the end whatever happened
        log.exception("unexpected error")
        status.append(1)
    finally:
        os.write(waker, b"\0")


def _work_done(wake: int, seconds: float) -> bool:
    """Wait up to `seconds` for the work thread's end (a 0 byte); signal numbers are skipped."""
    deadline = time.monotonic() + seconds
    while select.select([wake], [], [], max(0.0, deadline - time.monotonic()))[0]:
        if 0 in os.read(wake, 65536):
            return True
    return False


class Supervisor:
    """The process's lifecycle in one place: the running handler, and what a signal stops.

    Work runs on a thread (`supervise`); the main thread waits for it to end or for
    SIGTERM/SIGINT, whose handler only wakes it (listened for from the very
    start, so a signal during start-up is not lost). Once a signal is seen
    nothing new starts: work and handlers start under `lock`, which the
    decision also takes, so none slips in after it. Idle work (waiting for
    messages) is left at once. Busy work gets the mode's grace
    (SHUTDOWN_POLICY), then the handler's process group gets SIGTERM,
    KILL_GRACE_SECONDS later SIGKILL, and the process ends
    EXIT_MARGIN_SECONDS after that whatever still runs (a transfer cannot be
    cut short otherwise). A handler ended this way has failed, whatever its
    exit status. Unfinished work is never acknowledged.

    As a `subreaper` (the program, not a library caller), the process makes
    itself a child subreaper (Linux): a handler's descendants that left its
    process group are re-parented here, and are killed and reaped when the
    handler ends. As PID 1 of a container, this also reaps orphaned zombies.
    """

    def __init__(self, subreaper: bool = False) -> None:
        self.subreaper = subreaper and (become_subreaper() or os.getpid() == 1)
        self.signum, self.busy, self.handler_group, self.handler_ended = 0, False, None, False
        self.relays: list[threading.Thread] = []
        self.session, self.mark = 0, ""
        self.lock = threading.Lock()
        self.wake = self.waker = -1

    @property
    def stopping(self) -> bool:
        return bool(self.signum)

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """Hear SIGTERM and SIGINT from now on (the wakeup fd records them), and no longer
        afterwards; as PID 1, SIGCHLD too. Start-up runs without garbage collection: it builds
        ~65,000 objects that live as long as the process (botocore's models, rules, handlers)
        and frees next to none, yet collections walked them all (25-40 ms of CPU, one landing
        in the first invocation); `supervise` freezes them and collects again."""
        gc.disable()
        self.wake, self.waker = os.pipe()
        os.set_blocking(self.waker, False)
        heard = (*STOP_SIGNALS, signal.SIGCHLD) if self.subreaper and os.getpid() == 1 else STOP_SIGNALS
        previous = {signum: signal.signal(signum, _wake_only) for signum in heard}
        if signal.SIGCHLD not in previous:  # an inherited SIG_IGN would reap handlers before their status is read
            previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        previous_fd = signal.set_wakeup_fd(self.waker)
        try:
            yield
        finally:
            signal.alarm(0)
            gc.enable()
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def starting_work(self) -> Iterator[bool]:
        """Mark the work thread busy for a stretch of work; yields whether it may start (False once
        stopping, and then it must start nothing)."""
        with self.lock:
            self.busy = not self.signum
        try:
            yield self.busy
        finally:
            with self.lock:
                self.busy = False

    def start_handler(self, command: Sequence[str], env: Mapping[str, str], relay: bool) -> subprocess.Popen:
        """Start the handler (spawn_handler), unless stopping; with `relay`, its lines are logged
        as records of their own."""
        with self.lock:
            if self.signum:
                raise GroupError("shutting down: the handler was not started", "shut_down")
            process = spawn_handler(command, env, relay)
            self.handler_group, self.handler_ended = process.pid, False
            self.session, self.mark = process.pid, env.get(HANDLER_MARK, "")
        try:
            self.relays = relay_output(process) if relay else []
        except RuntimeError as exc:  # no thread to drain its pipes: it must not run unread
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            with self.lock:
                self.handler_group = None
            raise GroupError(f"handler's output cannot be relayed: {exc}") from None
        return process

    def wait_handler(self, process: subprocess.Popen, timeout: float | None) -> int:
        """The handler's exit status (negative: the signal that ended it).

        On timeout its group gets SIGTERM, then SIGKILL after
        KILL_GRACE_SECONDS, and GroupError is raised. Whatever the handler
        left running is killed when it ends.
        """
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_group(process)
            raise GroupError(f"handler timed out after {timeout:.1f}s", "timed_out") from None
        finally:
            with self.lock:
                self.handler_group = None
            _signal_group(process.pid, signal.SIGKILL)
            self._end_strays()
            until = time.monotonic() + KILL_GRACE_SECONDS  # its last lines; a stray holding the pipe is not awaited
            for relay in self.relays:
                relay.join(max(0.0, until - time.monotonic()))
        if self.handler_ended:
            raise GroupError(f"handler ended by shutdown (its exit status {status} does not count)", "shut_down")
        return status

    def _end_strays(self) -> None:
        """End the last handler's leftovers; as PID 1, where the orphans of any process arrive,
        only those of its session or carrying its mark."""
        if self.subreaper:
            end_strays(self.session, f"{HANDLER_MARK}={self.mark}".encode() if os.getpid() == 1 else None)

    def supervise(self, work: Callable[[], int], mode: str) -> int:
        """Run work on a thread; its exit status, or the mode's when a signal ended it (SHUTDOWN_POLICY)."""
        grace, idle_status, cut_status = SHUTDOWN_POLICY[mode]
        gc.freeze()  # what start-up built: see listening
        gc.enable()
        status: list[int] = []
        threading.Thread(target=_work_thread, args=(work, status, self.waker), daemon=True).start()
        # All that waits is read at once: a flood of SIGCHLD (as PID 1) never fills the pipe and drops a SIGTERM.
        while (event := next((e for e in os.read(self.wake, 65536) if e != signal.SIGCHLD), None)) is None:
            with self.lock:  # start_handler forks under it: a handler's exit status is always its own wait's
                for pid, state, _, _ in _children():
                    if state == b"Z" and pid != self.handler_group:  # an orphan of anyone's
                        with contextlib.suppress(ChildProcessError):
                            os.waitpid(pid, os.WNOHANG)
        if event:
            self._stop(event, grace, cut_status)
        return status[0] if status else idle_status

    def _stop(self, signum: int, grace: float, cut_status: int) -> None:
        # A deadline the kernel keeps, even should this thread never run again
        # (a jq filter holding the interpreter, a blocked stderr): SIGALRM ends the process.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(grace + KILL_GRACE_SECONDS + EXIT_MARGIN_SECONDS) + 2)
        with self.lock:
            self.signum, idle = signum, not self.busy
        if idle:
            log.info("signal %d: stopping", signum)
            return
        log.warning("signal %d: taking no new work; the running group has %.0fs to finish", signum, grace)
        for seconds, end_with in ((grace, signal.SIGTERM), (KILL_GRACE_SECONDS, signal.SIGKILL)):
            if _work_done(self.wake, seconds):
                return
            with self.lock:
                if self.handler_group is not None:
                    self.handler_ended = True
                    _signal_group(self.handler_group, end_with)
        if not _work_done(self.wake, EXIT_MARGIN_SECONDS):
            try:
                log.error("stopping now, with the running group unfinished: its messages are not acknowledged")
                self._end_strays()
            finally:
                os._exit(cut_status)


###############################################################################
# Pipeline: one execution group
###############################################################################

UPLOAD_RESERVE_FRACTION, UPLOAD_RESERVE_MAX_SECONDS = 0.2, 30.0
#: The summary line's numbers that become CloudWatch metrics, with their units.
METRICS = {
    "groups_succeeded": "Count",
    "groups_failed": "Count",  # every failure, timeouts and shutdowns included
    "groups_timed_out": "Count",
    "groups_skipped": "Count",
    "handler_seconds": "Seconds",
    "pulled_files": "Count",
    "pulled_bytes": "Bytes",
    "uploaded_files": "Count",
    "uploaded_bytes": "Bytes",
}


def handler_time_limit(timeout: float | None, deadline: float | None) -> float | None:
    """The handler's limit: HANDLER_TIMEOUT or the deadline less an upload reserve."""
    if deadline is None:
        return timeout
    remaining = deadline - time.time()
    budget = max(0.001, remaining - min(UPLOAD_RESERVE_MAX_SECONDS, remaining * UPLOAD_RESERVE_FRACTION))
    return budget if timeout is None else min(timeout, budget)


@dataclass
class GroupReport:
    """What one group did; logged as one summary line. Its outcome is succeeded, skipped,
    failed, timed_out or shut_down: every one but the first two fails its messages."""

    group: Group
    listed: int = 0
    filter: str = "none"
    pulled_files: int = 0
    pulled_bytes: int = 0
    exit_status: int | None = None
    handler_seconds: float | None = None  # None: no handler started
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    outcome: str = "failed"
    error: str = ""
    missing: tuple[str, ...] = ()  # triggering keys the listing no longer has

    @property
    def ok(self) -> bool:
        return self.outcome in ("succeeded", "skipped")


def metric_fields(report: GroupReport, namespace: str, function: str) -> dict:
    """What makes a group's JSON summary line a CloudWatch Embedded Metric Format record.

    The metrics are the line's own numbers, with one dimension, `function`
    (the Lambda function's name): never the bucket or the prefix, whose
    many values would each be a metric of their own. Handler seconds
    wherever a handler started, also one ended by a timeout or a shutdown.
    """
    ran = report.handler_seconds is not None
    metrics = [{"Name": name, "Unit": unit} for name, unit in METRICS.items() if ran or name != "handler_seconds"]
    directive = {"Namespace": namespace, "Dimensions": [["function"]], "Metrics": metrics}
    return {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [directive]},
        "function": function,
        "groups_succeeded": int(report.outcome == "succeeded"),
        "groups_failed": int(not report.ok),
        "groups_timed_out": int(report.outcome == "timed_out"),
        "groups_skipped": int(report.outcome == "skipped"),
    }


@dataclass
class Bridge:
    """The configured pipeline, with its I/O passed in so tests can swap it."""

    config: Config
    store: Any
    environ: Mapping[str, str]
    supervisor: Supervisor = field(default_factory=Supervisor)

    def process(self, group: Group, deadline: float | None = None) -> GroupReport:
        """Run one group through every step; no exception of any kind leaves it.

        The handler works in `root` inside a locked work folder of the
        bridge's own, so whatever it does to its folder cannot touch the lock.
        """
        report = GroupReport(group)
        try:
            if refused := source_refusal(self.config, group.bucket):
                raise ConfigError(f"{refused}; nothing was run")
            work = make_work_folder()
            try:
                self._steps(group, report, work, deadline)
            finally:
                work.remove()
        except BridgeError as exc:
            report.outcome, report.error = getattr(exc, "outcome", "failed"), str(exc)
        except Exception as exc:  # a fault in one group must not take the others with it
            log.exception("unexpected error in group %s", group)
            report.outcome, report.error = "failed", f"{type(exc).__name__}: {exc}"
        self._log(report)
        return report

    def _steps(self, group: Group, report: GroupReport, work: WorkFolder, deadline: float | None) -> None:
        config = self.config
        if group.key is not None and group.key.endswith("/"):
            report.outcome, report.error = "skipped", "a folder marker: GROUP_BY=object has no object to pull"
            return
        objects = self._list(group, report)
        if report.missing and len(report.missing) == len(group.triggers) and (group.key or group.job) is not None:
            report.outcome, report.error = "skipped", f"no such object: {', '.join(report.missing)[:200]}"
            return
        verdict = filter_verdict(config.execution_filter, objects)
        report.filter = "none" if verdict is _NO_OUTPUT else json.dumps(verdict)[:80]
        if verdict is False:
            report.outcome = "skipped"
            return
        pulled = self._pull(group, objects, work.root, report)
        limit = handler_time_limit(config.handler_timeout, deadline)
        env = handler_environment(config, self.environ, group, work)
        process = self.supervisor.start_handler(config.handler, env, relay=config.log_json)
        started = time.monotonic()
        try:
            status = report.exit_status = self.supervisor.wait_handler(process, limit)
        finally:
            report.handler_seconds = round(time.monotonic() - started, 3)
        if status != 0:
            how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            raise GroupError(f"handler {how}")
        self._upload(group, work, pulled, report)
        report.outcome = "succeeded"

    def _list(self, group: Group, report: GroupReport) -> list[dict]:
        """The group's folder listed (all pages), or its one object's listing entry; the
        triggering keys not there (removed since) go in the report."""
        if group.key is None:
            objects = self.store.list_objects(group.bucket, group.prefix)
        else:
            objects = [o for o in self.store.list_objects(group.bucket, group.key, first=True) if o["Key"] == group.key]
        listed = {obj["Key"] for obj in objects}
        report.listed, report.missing = len(objects), tuple(key for key in group.triggers if key not in listed)
        return objects

    def _pull(self, group: Group, objects: list[dict], root: str, report: GroupReport) -> dict[str, tuple[int, str]]:
        """Pull the matching objects; return each pulled file's (size, sha256)."""
        items = self._placed(group, objects, root)
        needed, free = sum(obj["Size"] for obj, _, _ in items), shutil.disk_usage(root).free
        if needed > free:
            raise GroupError(f"{group} needs {needed} bytes but {root} has {free} bytes free")
        digests = self.store.download(group.bucket, [(obj, path) for obj, path, _ in items])
        report.pulled_files, report.pulled_bytes = len(items), needed
        return {relative: (os.lstat(path).st_size, digest) for (_, path, relative), digest in zip(items, digests)}

    def _placed(self, group: Group, objects: list[dict], root: str) -> list[tuple[dict, str, str]]:
        """The matching objects' (object, path, relative path), their folders made; each refused one is logged."""
        patterns, files, folders = self.config.pull_match_keys, set(), set()
        name_max, items = os.pathconf(root, "PC_NAME_MAX"), []
        for obj in objects:
            key = obj["Key"]
            relative = relative_path(key, group.prefix)
            if (patterns and not any(p.search(key) for p in patterns)) or (relative is None and key == group.prefix):
                continue
            why = placement_refusal(relative, files, folders, name_max) if relative else "its key is not a safe path"
            try:
                path = placed_path(root, relative) if why is None else ""
            except OSError as exc:
                why = f"it cannot be placed ({exc.strerror})"
            if why is not None and group.key is not None:  # the group's one object: nothing to run on
                raise GroupError(f"cannot pull s3://{group.bucket}/{key}: {why}")
            if why is not None:
                log.warning("not pulling s3://%s/%s: %s", group.bucket, key, why)
            elif not relative.endswith("/"):
                items.append((obj, path, relative))
        return items

    def _upload(self, group: Group, work: WorkFolder, pulled: Mapping[str, Any], report: GroupReport) -> None:
        """The one place that decides what is uploaded, and where: every regular file in the
        handler's folder that is new or changed since the pull (changed_files; never a link or
        a special file), under the group's prefix and its path there, to TARGET_BUCKET or else
        the group's own bucket. Nothing, if the handler moved or replaced its folder."""
        work.reclaim()
        changed = changed_files(work.root, pulled)
        items = [(os.path.join(work.root, *relative.split("/")), group.prefix + relative) for relative in changed]
        report.uploaded_bytes = sum(os.lstat(path).st_size for path, _ in items)
        self.store.upload(self.config.target_bucket or group.bucket, items)
        report.uploaded_files = len(items)

    def _log(self, report: GroupReport) -> None:
        numbers = {name: value for name, value in vars(report).items() if name not in ("group", "error", "missing")}
        fields = {"bucket": report.group.bucket, "prefix": report.group.prefix, **numbers}
        if self.config.metrics_namespace:
            fields.update(metric_fields(report, self.config.metrics_namespace, self.config.function_name))
        failure = {} if report.ok else {"error": GroupError(report.error, report.outcome)}
        reason = f": {report.error}" if report.error else ""
        level = logging.INFO if report.ok else logging.ERROR
        log.log(level, "group %s %s%s", report.group, report.outcome, reason, extra={"fields": fields, **failure})

    def process_messages(self, messages: Sequence[Message], deadline: float | None = None) -> list[str]:
        """Process every group the messages name; return the ids not to acknowledge."""
        failed = []
        for message in messages:
            if message.error is not None:
                error = EventError(message.error)
                log.error("message %s cannot be read: %s", message.id or "(direct)", error, extra={"error": error})
                failed.append(message.id)
        for group, report in self.run_groups(messages, deadline).items():
            if not report.ok:
                failed.extend(i for i in group.sources if i not in failed)
        return failed

    def run_groups(
        self, messages: Sequence[Message], deadline: float | None = None, ids: str = "message_ids"
    ) -> dict[Group, GroupReport]:
        """Each group the messages name, in order, with its report; once stopping, none starts.

        Every line logged while a group runs carries its messages' ids under `ids`.
        """
        reports = {}
        for group in group_messages(messages, self.config):
            LogFormat.work = {ids: list(group.sources)} if any(group.sources) else {}
            try:
                if self.supervisor.stopping:
                    reports[group] = GroupReport(group, outcome="shut_down", error="not started: shutting down")
                    self._log(reports[group])
                else:
                    reports[group] = self.process(group, deadline)
            finally:
                LogFormat.work = {}
        return reports


###############################################################################
# Transport: the Lambda Runtime API
###############################################################################


API_VERSION, PLAUSIBLE_DEADLINE_SECONDS = "2018-06-01", 24 * 3600
#: A handler exit status that says its input can never be processed (sysexits.h EX_DATAERR):
#: Batch Operations then marks the task PermanentFailure instead of retrying it.
PERMANENT_EXIT_STATUS = 65


def _error_payload(error: BaseException) -> tuple[dict, dict]:
    kind = getattr(error, "error_type", f"Runtime.{type(error).__name__}")
    payload = {"errorType": kind, "errorMessage": str(error), "stackTrace": traceback.format_tb(error.__traceback__)}
    return payload, {"Lambda-Runtime-Function-Error-Type": kind}


class RuntimeApi:
    """A stdlib client of the Lambda Runtime API over one kept-alive connection.

    Lambda gives `host:port`; emulators may give a URL with a path prefix.
    """

    def __init__(self, address: str) -> None:
        parts = urllib.parse.urlsplit(address if "://" in address else f"http://{address}")
        try:
            self.host, port = parts.hostname, parts.port
        except ValueError:
            self.host, port = None, None
        exact = address == address.strip() and not parts.netloc.endswith(":") and port != 0
        if not self.host or parts.scheme != "http" or not exact:
            raise ConfigError(f"AWS_LAMBDA_RUNTIME_API: cannot read {address!r} as host:port (plain HTTP)")
        self.port = port or 80
        self.base = f"{parts.path.rstrip('/')}/{API_VERSION}/runtime"
        self.connection = http.client.HTTPConnection(self.host, self.port)

    def _request(self, method: str, path: str, body: Any = None, headers: Any = None) -> tuple[int, Any, bytes, bool]:
        """(status, headers, body, whether it was sent twice): a request whose
        connection broke (a dropped kept-alive connection, or an answer lost)
        is sent once more on a new one."""
        data = None if body is None else json.dumps(body).encode()
        for again in (False, True):
            try:
                return (*self._send(method, path, data, headers), again)
            except (http.client.HTTPException, OSError) as exc:
                self.connection.close()
                error = exc
        raise RuntimeApiError(f"{method} {path} failed: {error!r}") from None

    def _send(self, method: str, path: str, data: bytes | None, headers: Any) -> tuple[int, Any, bytes]:
        self.connection.request(method, self.base + path, body=data, headers=dict(headers or {}))
        response = self.connection.getresponse()
        return response.status, response.headers, response.read()

    def _post(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> None:
        """POST; a 4xx answer to a second attempt means the first one arrived
        and only its answer was lost, so the post is done."""
        status, _, answer, again = self._request("POST", path, body, headers)
        if again and 400 <= status < 500:
            log.warning("POST %s: the answer to the first attempt was lost, and it was recorded", path)
        elif status >= 300:
            raise RuntimeApiError(f"POST {path} answered {status}: {answer[:200]!r}")

    def next_invocation(self) -> tuple[str, Mapping[str, str], bytes]:
        status, headers, body, _ = self._request("GET", "/invocation/next")
        if status != 200:
            raise RuntimeApiError(f"GET /invocation/next answered {status}: {body[:200]!r}")
        return headers.get("Lambda-Runtime-Aws-Request-Id", ""), headers, body

    def respond(self, request_id: str, result: Any) -> None:
        self._post(f"/invocation/{request_id}/response", result)

    def fail(self, request_id: str, error: BaseException) -> None:
        self._post(f"/invocation/{request_id}/error", *_error_payload(error))

    def init_error(self, error: BaseException) -> None:
        self._post("/init/error", *_error_payload(error))


def invocation_deadline(header: str | None, now: float) -> float | None:
    """The deadline in epoch seconds, or None when the header is not a real epoch time.

    Emulators send values like `600000`; obeying that would time every
    handler out at once, so it is ignored with a warning.
    """
    try:
        deadline = int(header or "") / 1000
    except ValueError:
        return None
    if abs(deadline - now) > PLAUSIBLE_DEADLINE_SECONDS:
        log.warning("ignoring implausible Lambda-Runtime-Deadline-Ms %s", header)
        return None
    return deadline


def _refusal(message: Message, config: Config) -> str | None:
    """Why a task can never be processed, or None."""
    if message.error is not None:
        return message.error
    key = message.refs[0].key
    if refused := source_refusal(config, message.refs[0].bucket):
        return refused
    if config.match_key and not config.match_key.search(key):
        return "the key does not match MATCH_KEY"
    prefix = key_prefix(key, config.pull_parent_dirs)
    if relative_path(key, prefix) is None and key != prefix:  # a folder marker is its own group's prefix
        return "the key is not a safe path"
    return None


def _task_result(message: Message, refusal: str | None, report: GroupReport | None) -> dict:
    if refusal is not None or report is None:
        code, text = "PermanentFailure", refusal
    elif message.refs[0].key in report.missing:  # retrying cannot bring it back
        code, text = "PermanentFailure", f"no such object: s3://{message.refs[0].bucket}/{message.refs[0].key}"
    elif report.ok:
        code, text = "Succeeded", f"{report.outcome}: {report.error or f'{report.uploaded_files} files uploaded'}"
    else:
        permanent = report.exit_status == PERMANENT_EXIT_STATUS
        code, text = "PermanentFailure" if permanent else "TemporaryFailure", report.error
    return {"taskId": message.id, "resultCode": code, "resultString": text}


def handle_batch_operations(bridge: Bridge, payload: dict, deadline: float | None) -> dict:
    """An S3 Batch Operations invocation: each task is an object reference, grouped and run as an event's.

    Each task gets a result: Succeeded (its group succeeded or was skipped),
    PermanentFailure (no usable object, an object version, a key MATCH_KEY
    rejects or that is no safe path, an object that does not exist, or a
    handler exit status of 65), else TemporaryFailure, which Batch
    Operations retries. Tasks without a result are none of these: they are
    retried (treatMissingKeysAs), which only a bug could cause.
    """
    try:
        job = json.dumps((payload.get("job") or {}).get("userArguments") or {})
        messages = [parse_batch_task(task, job) for task in payload["tasks"]]
        answer = {key: payload[key] for key in ("invocationSchemaVersion", "invocationId")}
    except (KeyError, TypeError, AttributeError) as exc:
        raise EventError(f"malformed Batch Operations invocation: missing or wrong {exc}") from None
    refused = {message.id: _refusal(message, bridge.config) for message in messages}
    runnable = [message for message in messages if refused[message.id] is None]
    ran = bridge.run_groups(runnable, deadline, ids="task_ids")
    reports = {i: report for group, report in ran.items() for i in group.sources}
    results = [_task_result(m, refused[m.id], reports.get(m.id)) for m in messages]
    return {**answer, "treatMissingKeysAs": "TemporaryFailure", "results": results}


def handle_invocation(bridge: Bridge, payload: Any, deadline: float | None) -> dict:
    """Process one Lambda payload; raise BridgeError for an invocation error."""
    if is_batch_operations(payload):
        return handle_batch_operations(bridge, payload, deadline)
    if is_sqs_batch(payload):
        messages = [parse_sqs_record(record) for record in payload["Records"]]
        failed = bridge.process_messages(messages, deadline)
        if len(failed) == len(messages):
            raise GroupError(f"every message failed: {', '.join(failed)}")
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
    failed = bridge.process_messages([Message("", tuple(parse_event(payload)))], deadline)
    if failed:
        raise GroupError("one or more groups failed (see the log)")
    return {"status": "succeeded"}


def _outcome(bridge: Bridge, body: bytes, deadline: float | None) -> tuple[Any, BaseException | None]:
    """The invocation's result, or the error to report for it."""
    try:
        payload = json.loads(body or b"null")
    except (ValueError, RecursionError) as exc:
        return None, EventError(f"payload is not JSON: {exc}")
    try:
        return handle_invocation(bridge, payload, deadline), None
    except BridgeError as exc:
        log.error("invocation failed: %s", exc, extra={"error": exc})
        return None, exc
    except Exception as exc:  # a bug must fail this invocation, not the runtime
        log.exception("invocation failed")
        return None, exc


def _answer(api: RuntimeApi, request_id: str, result: Any, error: BaseException | None) -> None:
    try:
        if error is None:
            api.respond(request_id, result)
        else:
            api.fail(request_id, error)
    except RuntimeApiError as exc:
        log.error("could not report invocation %s: %s", request_id, exc)


def serve_lambda(bridge: Bridge, api: RuntimeApi, environ: Any) -> int:
    """Poll for invocations until a signal; a failed GET of the next one ends
    the loop (exit 1) so Lambda starts a new environment. A failed POST is
    logged: Lambda times that invocation out, and its messages come back."""
    supervisor = bridge.supervisor
    while not supervisor.stopping:
        try:
            request_id, headers, body = api.next_invocation()
        except RuntimeApiError as exc:
            log.error("stopping: %s", exc)
            return 1
        LogFormat.request_id = request_id
        trace_id = headers.get("Lambda-Runtime-Trace-Id")
        if trace_id:
            environ["_X_AMZN_TRACE_ID"] = trace_id
        else:
            environ.pop("_X_AMZN_TRACE_ID", None)
        deadline = invocation_deadline(headers.get("Lambda-Runtime-Deadline-Ms"), time.time())
        with supervisor.starting_work() as allowed:
            if not allowed:
                _answer(api, request_id, None, BridgeError("shutting down: the invocation was not started"))
                break
            _answer(api, request_id, *_outcome(bridge, body, deadline))
        LogFormat.request_id = ""  # what is logged between invocations belongs to none
    return 1


###############################################################################
# Transport: one-shot run, SQS worker
###############################################################################

RECEIVE_BACKOFF_MAX_SECONDS = 60.0


def run_once(bridge: Bridge, group: Group) -> int:
    """`run`: one group, exit status 0 on success or skip, 1 on failure."""
    with bridge.supervisor.starting_work() as allowed:
        return 0 if allowed and bridge.process(group).ok else 1


def _keep_invisible(sqs: Any, queue_url: str, handles: Sequence[str], visibility: int, done: threading.Event) -> None:
    """Until done, every third of the visibility timeout, extend every message in hand, so that
    a job longer than the timeout is not delivered to another worker."""
    entries = [{"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": visibility} for n, h in enumerate(handles)]
    while not done.wait(max(1.0, visibility / 3)):
        try:
            answer = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except Exception as exc:  # a missed beat is retried at the next one
            log.warning("could not extend message visibility: %s", exc)
            continue
        for failure in answer.get("Failed", []):
            log.warning("could not extend visibility of entry %s: %s", failure["Id"], failure.get("Message"))


def delete_messages(sqs: Any, queue_url: str, handles: Mapping[str, str]) -> None:
    """Delete acknowledged messages (at most 10, one receive's worth).

    A message whose delete failed is delivered again later: at least once.
    """
    ids = list(handles)
    if not ids:
        return
    entries = [{"Id": str(n), "ReceiptHandle": handles[message_id]} for n, message_id in enumerate(ids)]
    try:
        failures = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
    except Exception as exc:  # the messages come back after their visibility timeout
        log.error("deleting %d messages failed: %s", len(ids), exc)
        return
    for failure in failures:
        log.error("message %s was not deleted: %s", ids[int(failure["Id"])], failure.get("Message"))


def _process_received(bridge: Bridge, sqs: Any, received: Sequence[dict]) -> None:
    """One receive's messages as one batch, kept invisible while they run; those that succeeded deleted."""
    config, done = bridge.config, threading.Event()
    handles = {m["MessageId"]: m["ReceiptHandle"] for m in received}
    messages = [parse_sqs_record({"messageId": m["MessageId"], "body": m.get("Body")}) for m in received]
    beat = (sqs, config.sqs_queue_url, list(handles.values()), config.sqs_visibility_timeout, done)
    heartbeat = threading.Thread(target=_keep_invisible, args=beat, daemon=True)
    heartbeat.start()
    try:
        failed = bridge.process_messages(messages)
    finally:
        done.set()
        heartbeat.join()
    delete_messages(sqs, config.sqs_queue_url, {i: h for i, h in handles.items() if i not in failed})


def serve_sqs(bridge: Bridge, sqs: Any) -> int:
    """`consume`: long-poll the queue and process each batch as Lambda would, until a signal."""
    config, supervisor, backoff = bridge.config, bridge.supervisor, 1.0
    log.info("consuming %s", config.sqs_queue_url)
    while not supervisor.stopping:
        try:
            answer = sqs.receive_message(
                QueueUrl=config.sqs_queue_url,
                MaxNumberOfMessages=config.sqs_max_messages,
                WaitTimeSeconds=config.sqs_wait_seconds,
                VisibilityTimeout=config.sqs_visibility_timeout,
            )
        except Exception as exc:  # the queue may come back: back off, then retry
            log.warning("receiving from %s failed: %s; retrying in %.0fs", config.sqs_queue_url, exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, RECEIVE_BACKOFF_MAX_SECONDS)
            continue
        backoff = 1.0
        with supervisor.starting_work() as allowed:
            if answer.get("Messages") and allowed:
                _process_received(bridge, sqs, answer["Messages"])
    log.info("stopped")
    return 0


###############################################################################
# Transport: backfill
###############################################################################


#: Attempts at sending a batch; a backfilled notification's s3.configurationId, and its principal.
BACKFILL_ATTEMPTS, BACKFILL_ID = 3, "s3-event-bridge-backfill"


def _may_have_arrived(error: Exception) -> bool:
    """Whether a failed call may have reached the service: unless no connection was made, or
    it answered 4xx (a whole call refused, throttled: nothing of it was done), it may have."""
    import botocore.exceptions

    if isinstance(error, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)):
        return False
    status = (getattr(error, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return not 400 <= status < 500


def notification_body(bucket: str, obj: dict, region: str, listing: Mapping[str, Any]) -> str:
    """The notification S3 would have sent a queue when the listed object was created, with every
    field of S3's own that can be known here: the request and host ids are those of the listing
    that found it, the owner its owner's; the caller and its address are the backfill's (no IP is
    known: 0.0.0.0); a sequencer and a version id cannot be known, and are left out."""
    owner = {"principalId": (obj.get("Owner") or {}).get("ID", "")}
    s3 = {
        "s3SchemaVersion": "1.0",
        "configurationId": BACKFILL_ID,
        "bucket": {"name": bucket, "ownerIdentity": owner, "arn": f"arn:aws:s3:::{bucket}"},
        "object": {
            "key": urllib.parse.quote_plus(obj["Key"], safe="/"),
            "size": obj["Size"],
            "eTag": obj["ETag"].strip('"'),
        },
    }
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": obj["LastModified"],
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": BACKFILL_ID},
        "requestParameters": {"sourceIPAddress": "0.0.0.0"},
        "responseElements": {"x-amz-request-id": listing.get("RequestId", ""), "x-amz-id-2": listing.get("HostId", "")},
        "s3": s3,
    }
    return json.dumps({"Records": [record]})


@dataclass
class Backfill:
    """`backfill`: what is already in the bucket, sent to the queue as S3 would have notified it.

    One message per group: a folder group (GROUP_BY=folder) pulls its whole
    folder, so one object of the folder is enough, and the folder is never
    sent twice in a run; with GROUP_BY=object, one message per object.
    """

    sqs: Any
    config: Config
    interactive: bool
    listed: int = 0
    matched: int = 0
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)

    def notify(self, pages: Iterable[dict], bucket: str, region: str) -> int:
        batch: list[tuple[str, str]] = []
        for item in self._notifications(pages, bucket, region):
            batch.append(item)
            if len(batch) == 10:
                self._send(batch)
                batch = []
        self._send(batch)
        return 1 if self.failed or self.unknown else 0

    def _notifications(self, pages: Iterable[dict], bucket: str, region: str) -> Iterator[tuple[str, str]]:
        """(key, message body) for each message to send; a listing that fails ends them, as a failure."""
        config, groups = self.config, set()
        try:
            for page in pages:
                for obj in map(_object_shape, page.get("Contents", ())):
                    self.listed += 1
                    if config.match_key and not config.match_key.search(obj["Key"]):
                        continue
                    self.matched += 1
                    group = key_prefix(obj["Key"], config.pull_parent_dirs)
                    if config.group_by == "object" or group not in groups:
                        groups.add(group)
                        yield obj["Key"], notification_body(bucket, obj, region, page["ResponseMetadata"])
        except Exception as exc:  # the listing failed: say so; what was sent stays sent
            log.error("listing s3://%s failed after %d objects: %s", bucket, self.listed, exc)
            self.failed.append(f"the rest of s3://{bucket}")

    def _send(self, batch: list[tuple[str, str]]) -> None:
        """Send up to 10 messages, at most once each. Entries SQS refused are sent again, and so
        is a call that never reached SQS (no connection made, or a 4xx answer)."""
        pending, why = {str(n): item for n, item in enumerate(batch)}, {}
        for attempt in range(BACKFILL_ATTEMPTS):
            if not pending:
                break
            time.sleep(attempt)
            why = self._attempt(pending)
            pending = {n: pending[n] for n in why}
        for n, (key, _) in pending.items():
            log.error("not sent: the message for %s: %s", key, why[n])
            self.failed.append(key)
        if self.interactive:
            with contextlib.suppress(OSError):
                print(
                    f"\rlisted {self.listed:,} objects, sent {self.sent:,} messages",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

    def _attempt(self, pending: Mapping[str, tuple[str, str]]) -> dict[str, str]:
        """One SendMessageBatch call: the entries to send again, with why. A call that may have
        reached SQS (its answer lost, a 5xx, or the process stopped during it), and an entry its
        answer does not name, are never sent again: those count as unknown."""
        self.in_flight = [key for key, _ in pending.values()]
        try:
            entries = [{"Id": n, "MessageBody": body} for n, (_, body) in pending.items()]
            answer = self.sqs.send_message_batch(QueueUrl=self.config.sqs_queue_url, Entries=entries)
        except Exception as exc:
            if not _may_have_arrived(exc):
                self.in_flight = []
                return dict.fromkeys(pending, f"the call failed before reaching SQS: {exc}")
            log.error("sending %d messages: %s; they may have arrived, and are not sent again", len(pending), exc)
            answer = {}
        self.in_flight, sent = [], {entry.get("Id") for entry in answer.get("Successful", ())} & set(pending)
        why = {f["Id"]: f.get("Message", f.get("Code")) for f in answer.get("Failed", ()) if f.get("Id") in pending}
        self.sent += len(sent)
        for n in set(pending) - sent - set(why):
            log.info("the message for %s: unknown whether it arrived; not sent again", pending[n][0])
            self.unknown.append(pending[n][0])
        return why

    def summary(self) -> str:
        unknown = len(self.unknown) + len(self.in_flight)  # in flight: the process stopped during the call
        counts = f"listed {self.listed} objects, {self.matched} matching MATCH_KEY; sent {self.sent} messages"
        unknown_text = f", {unknown} unknown (they may have arrived; not sent again)" if unknown else ""
        per = "object" if self.config.group_by == "object" else "group"
        return f"{counts} (one per {per}), {len(self.failed)} not sent{unknown_text}"


###############################################################################
# Transport: local mode
###############################################################################

WATCH_INTERVAL_SECONDS = 1.0


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines, as `docker run --env-file` reads them (no quote processing)."""
    try:
        with open(path, encoding="utf-8") as source:
            lines = source.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"--function {path}: {exc}") from None
    values = {}
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            name, equals, value = line.partition("=")
            if not equals or not _ENV_NAME.match(name.strip()) or "\0" in value:
                raise ConfigError(f"--function {path}:{number}: expected KEY=VALUE (and no NUL)")
            values[name.strip()] = value
    return values


@dataclass
class Tally:
    """What one function did over a local run, for the closing summary."""

    succeeded: int = 0
    skipped: int = 0
    failed: int = 0
    files_written: int = 0

    def add(self, report: GroupReport) -> None:
        self.succeeded += report.outcome == "succeeded"
        self.skipped += report.outcome == "skipped"
        self.failed += not report.ok
        self.files_written += report.uploaded_files


@dataclass
class LocalMode:
    """A folder as the bucket; the bridge plays S3's notifications itself.

    Each event goes to every function whose MATCH_KEY matches it; outputs
    written back into the bucket are the next round's events.
    """

    functions: Sequence[tuple[str, Bridge]]
    store: LocalStore
    bucket: str
    max_rounds: int
    supervisor: Supervisor
    rounds: int = 0
    tallies: dict[str, Tally] = field(default_factory=dict)

    def serve(self, keys: Sequence[str], watch: bool) -> int:
        """The work thread: the keys and all they cause, then (watch) whatever appears; its exit status."""
        try:
            if self._cascade_unless_stopping(keys) is not None and watch:
                log.info("watching %s", self.store.folders[self.bucket])
                self.watch()
        except BridgeError as exc:
            log.error("%s", exc)
            return 1
        return 1 if self.failed else 0

    def cascade(self, keys: Sequence[str]) -> set[str]:
        """Process the keys, then every output they cause, round after round; return the keys written."""
        written: set[str] = set()
        for _ in range(self.max_rounds):
            if not keys or self.supervisor.stopping:
                return written
            self.rounds += 1
            self.store.written.clear()
            messages = [Message(key, (ObjectRef(self.bucket, key),)) for key in keys]
            for name, bridge in self.functions:
                for report in bridge.run_groups(messages, ids="event_keys").values():
                    self.tallies.setdefault(name, Tally()).add(report)
            keys = list(dict.fromkeys(ref.key for ref in self.store.written if ref.bucket == self.bucket))
            written.update(keys)
        if keys:
            shown = ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else "")
            raise BridgeError(f"stopped after {self.max_rounds} rounds; these keys kept triggering work: {shown}")
        return written

    def _cascade_unless_stopping(self, keys: Sequence[str]) -> set[str] | None:
        """cascade() as the supervisor's busy work; None once stopping, when nothing may start."""
        with self.supervisor.starting_work() as allowed:
            return self.cascade(keys) if allowed else None

    def watch(self) -> None:
        """Poll the folder; a new or changed file is an event once it stops changing.

        A file processed is done in the state it was read in, an output in the
        state it was written in: one that changes while a round runs (arrives,
        or is saved again) is an event of a later round. A folder that cannot
        be read is reported and read again at the next poll.
        """
        previous = self._stats()
        done = dict(previous)
        while not self.supervisor.stopping:
            time.sleep(WATCH_INTERVAL_SECONDS)
            try:
                current = self._stats()
                ready = [key for key, seen in current.items() if seen != done.get(key) and seen == previous.get(key)]
                previous = current
                written = self._cascade_unless_stopping(ready) if ready else set()
                if written is None:
                    return
                done.update((key, current[key]) for key in ready)
                if written:
                    previous = self._stats()
                    done.update((key, previous[key]) for key in written if key in previous)
            except OSError as exc:
                log.warning("cannot read the bucket folder: %s", exc)

    def _stats(self) -> dict[str, tuple[int, int]]:
        return {key: (info.st_size, info.st_mtime_ns) for key, info in self.store.scan(self.bucket).items()}

    def summary(self) -> str:
        rows = [("function", "succeeded", "skipped", "failed", "files written")]
        for name, _ in self.functions:
            rows.append((name, *map(str, dataclasses.astuple(self.tallies.get(name, Tally())))))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = [
            "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in rows
        ]
        return "\n".join([f"rounds: {self.rounds}", *lines])

    @property
    def failed(self) -> bool:
        return any(tally.failed for tally in self.tallies.values())


###############################################################################
# Entry point
###############################################################################


#: What each mode does, for `--help` and for the mode's own help.
MODE_HELP = {
    "lambda": "Lambda runtime (the default with AWS_LAMBDA_RUNTIME_API)",
    "run": "process one group (bucket and prefix), then exit",
    "consume": "long-running worker on SQS_QUEUE_URL; run many to scale out",
    "local": "a folder stands in for the bucket; the command follows --",
    "backfill": "notify SQS_QUEUE_URL of what is already in the bucket",
}


def _variables_read(mode: str) -> str:
    """The epilog of a mode's --help: the variables it reads, with their defaults."""
    rows = [
        (f"{name}={default}" if default else name, text)
        for name, _, _, default, modes, text in SETTINGS
        if mode in modes.split() or not modes
    ]
    width = max(len(left) for left, _ in rows)
    return "environment (name=default):\n" + "\n".join(f"  {left.ljust(width)}  {text}" for left, text in rows)


def _argument_parser(build: str) -> Any:
    import argparse  # only off the Lambda path: see parse_arguments

    parser = argparse.ArgumentParser(prog="bootstrap", description="Run a file-in/file-out command on S3 events.")
    parser.add_argument("--prepare", metavar="DIR", help="zipapp only: unpack into DIR at image build time")
    parser.add_argument("--version", action="version", version=f"s3-event-bridge {__version__} ({build})")
    modes = parser.add_subparsers(dest="mode", title="modes", metavar="MODE")
    commands = {
        mode: modes.add_parser(
            mode,
            help=text,
            description=text,
            epilog=_variables_read(mode),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for mode, text in MODE_HELP.items()
    }
    for mode in ("run", "backfill"):
        commands[mode].add_argument("--bucket", help="default: the variable named by BUCKET_VAR")
        commands[mode].add_argument("--prefix", help="default: the variable named by KEY_PREFIX_VAR")
    commands["run"].add_argument("--key", help="the group this key's event makes (GROUP_BY=object: needed)")
    local = commands["local"]
    local.add_argument("--bucket-dir", required=True, help="the folder that is the bucket")
    local.add_argument("--target-dir", help="write outputs here instead (they trigger nothing)")
    local.add_argument("--function", action="append", default=[], metavar="FILE.env", help="a function (repeatable)")
    local.add_argument("--all", action="store_true", help="every file in the bucket is an event")
    local.add_argument("--watch", action="store_true", help="keep polling the folder for new or changed files")
    local.add_argument("--max-rounds", type=int, default=20, help="rounds of chained events before giving up")
    local.add_argument("keys", nargs="*", metavar="KEY", help="created-object events")
    for mode in ("lambda", "run", "consume"):
        commands[mode].add_argument("command", nargs=argparse.REMAINDER, help="handler command (exec form)")
    return parser


def parse_arguments(argv: Sequence[str], in_lambda: bool, build: str) -> Any:
    """Sub-command, its options, and the handler command (exec form) after them.

    With no sub-command, AWS_LAMBDA_RUNTIME_API set means `lambda`, so an
    image can keep its handler in CMD; that path has nothing to parse, and
    leaving argparse unloaded keeps it off every cold start. In `local`, the
    command follows `--` because the arguments before it are keys.
    """
    argv = list(argv)
    if in_lambda and (not argv or argv[0] not in (*MODE_HELP, "-h", "--help", "--prepare", "--version")):
        return types.SimpleNamespace(mode="lambda", command=argv, prepare=None)
    command: list[str] = []
    if argv[:1] == ["local"] and "--" in argv:
        argv, command = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = _argument_parser(build)
    args = parser.parse_args(argv)
    if args.mode != "local":
        command = [part for i, part in enumerate(getattr(args, "command", None) or []) if i or part != "--"]
    if args.mode is None and args.prepare is None:
        parser.error("a mode is required (or set AWS_LAMBDA_RUNTIME_API)")
    return types.SimpleNamespace(**{**vars(args), "command": command})


def _startup_failed(exc: Exception) -> int:
    """Print why start-up failed; the exit status (2: a configuration error)."""
    if isinstance(exc, ConfigError):
        print(f"s3-event-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    print(f"s3-event-bridge: start-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def _bucket_and_prefix(args: Any, config: Config) -> tuple[str, str]:
    bucket = args.bucket or config.bucket
    if not bucket:
        raise ConfigError(f"{args.mode}: no bucket (give --bucket or set {config.bucket_var})")
    return bucket, config.key_prefix if args.prefix is None else args.prefix


def _run_group(args: Any, config: Config) -> Group:
    """`run`: the group of --key as its event would make it, or the folder --prefix (GROUP_BY=folder)."""
    bucket, prefix = _bucket_and_prefix(args, config)
    if args.key is not None and args.prefix is not None:
        raise ConfigError("run: give --key or --prefix, not both")
    if args.key is None and config.group_by == "object":
        raise ConfigError("run: GROUP_BY=object runs one object: give --key")
    if args.key is None:
        return Group(bucket, prefix, ("run",))
    message = Message("run", (ObjectRef(bucket, args.key),))
    return group_messages([message], dataclasses.replace(config, match_key=None))[0]


#: What a mode runs on the work thread, and what turns the status it ends with into the exit status
#: (printing the mode's summary first, where it has one; `int`: the status as it is).
Work = tuple[Callable[[], int], Callable[[int], int]]


def _backfill(args: Any, config: Config, session: Any) -> Work:
    """Stopped by a signal, it stops at once: what was sent stays sent, and a second run sends it again."""
    bucket, prefix = _bucket_and_prefix(args, config)
    if refused := source_refusal(config, bucket):
        raise ConfigError(refused)
    s3 = s3_client(session, 1, config.expected_bucket_owner)  # one listing: one connection
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, FetchOwner=True)
    backfill = Backfill(sqs_client(session, attempts=1), config, sys.stderr.isatty())

    def summarised(status: int) -> int:
        print(("\n" if backfill.interactive else "") + backfill.summary())
        return status

    return functools.partial(backfill.notify, pages, bucket, s3.meta.region_name), summarised


def _local(args: Any, environ: Any, supervisor: Supervisor) -> Work:
    bucket_dir = os.path.abspath(args.bucket_dir)
    if not os.path.isdir(bucket_dir):
        raise ConfigError(f"--bucket-dir: {args.bucket_dir} is not a folder")
    bucket, target = os.path.basename(bucket_dir) or "bucket", None
    folders = {bucket: bucket_dir}
    if args.target_dir:
        target = f"{bucket}-target"
        folders[target] = os.path.abspath(args.target_dir)
        os.makedirs(folders[target], exist_ok=True)
    store = LocalStore(folders)
    sources = [(os.path.basename(f), {**environ, **read_env_file(f)}) for f in args.function] or [("handler", environ)]
    functions = []
    for name, env in sources:
        config = dataclasses.replace(Config.from_env(env, args.command, "local"), target_bucket=target)
        functions.append((name, Bridge(config, store, env, supervisor)))
    setup_logging(functions[0][1].config)
    listed = store.scan(bucket)  # regular files reached without a link: the objects there are
    keys = list(listed) if args.all else args.keys
    unsafe = [key for key in keys if relative_path(key, "") is None]
    if unsafe:
        raise ConfigError(f"not a safe key (it would leave {bucket_dir}): {', '.join(unsafe)}")
    missing = [key for key in keys if key not in listed]
    if missing:
        raise ConfigError(f"no such key in {bucket_dir}: {', '.join(missing)}")
    remove_stale_work_folders()
    local = LocalMode(functions, store, bucket, args.max_rounds, supervisor)

    def summarised(status: int) -> int:
        print(local.summary())
        return max(status, int(local.failed))

    return functools.partial(local.serve, keys, args.watch), summarised


def _start(args: Any, environ: Any, botocore_files: str | None, supervisor: Supervisor, api: RuntimeApi | None) -> Work:
    """Set the mode up: every setting read and checked, before any work starts."""
    if args.mode == "local":
        return _local(args, environ, supervisor)
    config = Config.from_env(environ, args.command, args.mode)
    setup_logging(config)
    if args.mode in ("consume", "backfill") and not config.sqs_queue_url:
        raise ConfigError(f"SQS_QUEUE_URL: {args.mode} needs the queue to read from (consume) or send to (backfill)")
    group = _run_group(args, config) if args.mode == "run" else None
    session = aws_session(botocore_files)
    if args.mode == "backfill":
        return _backfill(args, config, session)
    remove_stale_work_folders()
    store = S3Store(session, config.transfer_concurrency, config.fast_path, config.expected_bucket_owner)
    bridge = Bridge(config, store, environ, supervisor)
    if args.mode == "lambda":
        return functools.partial(serve_lambda, bridge, api, environ), int
    if args.mode == "run":
        return functools.partial(run_once, bridge, group), int
    return functools.partial(serve_sqs, bridge, sqs_client(session)), int


def main(argv: Sequence[str] | None = None, environ: Any = None, bundle: Bundle | None = None) -> int:
    """Exit status: 0 success, 1 failure, 2 configuration or usage error."""
    environ = os.environ if environ is None else environ
    supervisor = Supervisor(subreaper=True)
    with supervisor.listening():  # first: a signal during start-up is not lost (PID 1 ignores unhandled ones)
        try:
            build = f"build {bundle.build_id}" if bundle else "bridge.py"
            in_lambda = bool(environ.get("AWS_LAMBDA_RUNTIME_API"))
            args = parse_arguments(sys.argv[1:] if argv is None else argv, in_lambda, build)
        except SystemExit as exc:  # argparse has printed the usage
            return int(exc.code or 0)
        if args.prepare:
            if bundle is None:
                print("--prepare only applies to the zipapp (dist/bootstrap)", file=sys.stderr)
                return 2
            return prepare_bundle(bundle, args.prepare)
        api = None
        try:
            api = RuntimeApi(environ.get("AWS_LAMBDA_RUNTIME_API", "")) if args.mode == "lambda" else None
            botocore_files = activate_bundle(bundle, environ.get(BUNDLE_CACHE_VARIABLE)) if bundle else None
            work, finish = _start(args, environ, botocore_files, supervisor, api)
        except Exception as exc:  # start-up failed: say why in one line; to Lambda, an init error
            with contextlib.suppress(RuntimeApiError):
                if api is not None:
                    api.init_error(exc)
            return _startup_failed(exc)
        return finish(supervisor.supervise(work, args.mode))


if __name__ == "__main__":
    sys.exit(main())
