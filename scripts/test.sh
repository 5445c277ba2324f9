#!/usr/bin/env bash
# The test command: sets up the pinned environment if needed, runs the suite, and fails if
# any TensorFlow Federated worker process outlived it. Extra arguments go to pytest;
# `--all` adds the heavy tests (tests/conftest.py; CI runs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
venv=${FEDRECIPES_VENV:-$root/.venv}
cd "$root"
status=0
# Two pytest workers (pytest-xdist) by default: one suite process spends most of its time
# waiting on one core (TensorFlow tracing, TFF's worker), so a second one uses the other.
# Each test file stays on one worker (--dist loadgroup, groups in tests/conftest.py): its
# module fixtures (trained runs, recipe hosts) are built once. FEDRECIPES_TEST_WORKERS=0
# runs everything in this one process.
# The slowest tests are listed at the end, to show where the suite spends its time.
workers=${FEDRECIPES_TEST_WORKERS:-2}
"$venv/bin/python" -m pytest -n "$workers" --dist loadgroup --durations=15 "$@" || status=$?
sleep 1
# Orphans only (tests/helpers.leaked_workers, the rule the tests use): a worker whose parent
# is a live Python process belongs to a run in progress, possibly another program using this
# virtualenv (a benchmark), which must not be killed.
leaked=$("$venv/bin/python" -c 'import sys; from tests import helpers; print(*helpers.leaked_workers(sys.argv[1]))' "$(cd "$venv" && pwd)/")
if [ -n "$leaked" ]; then
  echo "test: TFF worker processes outlived the tests: $(echo $leaked)" >&2
  kill -9 $leaked 2>/dev/null || true
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
