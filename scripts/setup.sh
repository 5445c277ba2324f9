#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment at .venv from the pinned lock file.
# Quick when nothing changed: a stamp records the hash of the lock file and setup.cfg.
#
# Why --no-deps: the lock is the complete, resolved environment (jaxlib overridden to 0.4.13,
# see scripts/lock.sh); re-resolving it against TFF's metadata would demand jaxlib==0.4.14,
# which the package index lacks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${FEDRECIPES_VENV:-$root/.venv}
stamp=$venv/.fedrecipes-stamp
want=$(cat "$root/requirements/lock.txt" "$root/setup.cfg" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

pick_python() {
  for candidate in ${PYTHON:-} python3.11 python3.10 python3.9 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] < (3, 12)))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}
python=$(pick_python) || {
  echo "setup: need Python 3.9-3.11 (TensorFlow Federated 0.87 does not support 3.12+); set PYTHON=/path/to/python3.11" >&2
  exit 1
}

echo "setup: creating the environment in $venv (about a minute the first time)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv==0.13.9
"$venv/bin/uv" pip install --quiet --compile-bytecode --python "$venv/bin/python" --no-deps -r "$root/requirements/lock.txt"
"$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --no-deps -e "$root"
"$venv/bin/python" -c 'import tensorflow_federated, tensorflow' 2>/dev/null || {
  echo "setup: the environment in $venv does not import tensorflow_federated; delete it and retry" >&2
  exit 1
}
echo "$want" > "$stamp"
echo "setup: ready" >&2
