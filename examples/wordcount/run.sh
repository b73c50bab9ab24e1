#!/usr/bin/env bash
# Word count as a two-function pipeline, in local mode: a folder stands in for
# the bucket, so no AWS account is needed. Builds dist/bootstrap, runs the
# pipeline on a copy of examples/wordcount/bucket, and prints the result.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bash build_zipapp.sh >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r examples/wordcount/bucket "$work/bucket"
dist/bootstrap local --bucket-dir "$work/bucket" --all \
  --function examples/wordcount/map.env --function examples/wordcount/reduce.env 2>"$work/log" || {
  cat "$work/log" >&2
  exit 1
}
echo
echo "data/total.txt (top 5):"
head -n 5 "$work/bucket/data/total.txt"
