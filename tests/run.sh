#!/usr/bin/env bash
# The one test command. On a fresh machine it makes its own virtual environment
# from pinned versions, lints, builds dist/bootstrap, and runs every test layer; the tests start and
# stop their own servers (moto, the cargo-lambda emulator) on 127.0.0.1.
# Extra arguments go to pytest (e.g. `bash tests/run.sh -k deadline`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${BRIDGE_TEST_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10) and "the tests need CPython 3.10+: set PYTHON")'
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" -r tests/requirements.txt
# cargo-lambda's ziglang dependency only serves cross-builds; the emulator needs none.
"${pip[@]}" --no-deps cargo-lambda==1.9.2
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
PYTHON="$venv/bin/python" bash build_zipapp.sh
# pytest exits 5 when it collects nothing; set -e turns that into a failure.
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest -p no:cacheprovider -rs tests "$@"
