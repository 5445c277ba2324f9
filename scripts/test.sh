#!/usr/bin/env bash
# The test command: sets up the pinned environment if needed, runs the suite, and fails if
# any TensorFlow Federated worker process outlived it. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
venv=${FEDRECIPES_VENV:-$root/.venv}
cd "$root"
status=0
# The slowest tests are listed at the end, to show where the suite spends its time.
"$venv/bin/python" -m pytest --durations=15 "$@" || status=$?
sleep 1
leaked=$(pgrep -f "$venv/.*worker_binary" || true)
if [ -n "$leaked" ]; then
  echo "test: TFF worker processes outlived the tests: $(echo $leaked)" >&2
  kill -9 $leaked 2>/dev/null || true
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
