#!/usr/bin/env bash
# The main job: sets up the pinned environment if needed, then trains FederatedAveraging on the
# embedded MNIST digits (100 non-IID clients, 2 labels each; 10 per round) until 95% test
# accuracy. Extra arguments are passed to the recipe (e.g. --total_rounds=50).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
cd "$root"
exec "${FEDRECIPES_VENV:-$root/.venv}/bin/python" -m recipes.fed_avg \
  --task=mnist_digits --partition=shards --num_clients=100 --clients_per_round=10 \
  --client_epochs_per_round=5 --client_batch_size=10 --client_learning_rate=0.05 \
  --total_rounds=300 --rounds_per_eval=5 --target_accuracy=0.95 "$@"
