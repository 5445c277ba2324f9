#!/usr/bin/env bash
# Creates (or refreshes) .venv-flower, the separate environment of the Flower peer benchmark
# (scripts/bench_flower.py, driven by scripts/bench_peer.py), from requirements/flower.txt.
# Separate because flwr[simulation]==1.42.0 needs protobuf 6 and TensorFlow 2.18+, while the
# project (TFF 0.87) is pinned to TensorFlow 2.14 and protobuf 4.
#
#   bash scripts/setup_flower.sh          # install from the lock (about a minute)
#   bash scripts/setup_flower.sh --lock   # re-resolve requirements/flower.in into the lock
#
# Quick when nothing changed: a stamp records the hash of the lock file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${FEDRECIPES_FLOWER_VENV:-$root/.venv-flower}
lock=$root/requirements/flower.txt
# uv comes with the project environment.
bash "$root/scripts/setup.sh"
uv=$root/.venv/bin/uv

if [ "${1:-}" = "--lock" ]; then
  "$uv" pip compile "$root/requirements/flower.in" --python-version 3.11 -o "$lock"
  exit 0
fi

stamp=$venv/.fedrecipes-stamp
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi
echo "setup_flower: creating the Flower environment in $venv (about a minute the first time)" >&2
# Only interpreters already on the machine: uv must not try to download one.
[ -x "$venv/bin/python" ] ||
  "$uv" venv --quiet --python-preference only-system --python '>=3.10,<3.13' "$venv"
# --compile-bytecode: the Ray workers import TensorFlow afresh; .pyc files save them ~10 s each.
"$uv" pip install --quiet --compile-bytecode --python "$venv/bin/python" -r "$lock"
versions=$("$venv/bin/python" -c 'import flwr, tensorflow; print("flwr", flwr.__version__, "tensorflow", tensorflow.__version__)' 2>/dev/null) || {
  echo "setup_flower: the environment in $venv does not import flwr and tensorflow; delete it and retry" >&2
  exit 1
}
echo "$want" > "$stamp"
echo "setup_flower: ready ($versions)" >&2
