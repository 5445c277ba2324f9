#!/usr/bin/env bash
# Starts N TFF workers with Docker Compose and runs a recipe across them:
#
#   deploy/compose/run.sh N python -m recipes.fed_avg [flags...]
#
# adds --tff_worker=fedrecipes-worker-1:8000,...,fedrecipes-worker-N:8000 and
# --root_output_dir=/runs (deploy/compose/runs on the host, or $FEDRECIPES_RUNS) to the
# recipe's flags. The workers keep running for the next run; stop them with
#   docker compose -f deploy/compose/compose.yaml down
# DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N python -m recipes.<recipe> [flags...]   (N = number of workers, >= 1)" >&2
  exit 2
fi
workers=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
compose=(docker compose -f "$here/compose.yaml")
addresses=$(for i in $(seq 1 "$workers"); do printf 'fedrecipes-worker-%d:8000,' "$i"; done)
addresses=${addresses%,}
export FEDRECIPES_UID=${FEDRECIPES_UID:-$(id -u)} FEDRECIPES_GID=${FEDRECIPES_GID:-$(id -g)}
mkdir -p "${FEDRECIPES_RUNS:-$here/runs}"
run() { if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi; }
run "${compose[@]}" up -d --wait --scale worker="$workers" worker
run "${compose[@]}" run --rm driver "$@" --tff_worker="$addresses" --root_output_dir=/runs
