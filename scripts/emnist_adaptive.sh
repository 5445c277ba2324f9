#!/usr/bin/env bash
# EMNIST character recognition (62 classes) as in "Adaptive Federated Optimization"
# (Reddi et al., ICLR 2021): model cnn_dropout, 10 clients per round, local batch 20,
# 1 local epoch, 1500 rounds, and the paper's best learning rates (log10 client / server):
#
#   FedAvg      -1   /  0                    recipes.fed_avg (server SGD)
#   FedAvgM     -1.5 / -0.5, momentum 0.9    recipes.fed_opt --server_optimizer=sgdm
#   FedAdam     -1.5 / -2.5, epsilon 1e-4    recipes.fed_opt --server_optimizer=adam
#   FedYogi     -1.5 / -2.5, epsilon 1e-4    recipes.fed_opt --server_optimizer=yogi
#   FedAdagrad  -1.5 / -1,   epsilon 1e-2    recipes.fed_opt --server_optimizer=adagrad
#
# Needs emnist_all.sqlite (TFF's federated EMNIST, 3,400 writers) in the cache dir; without
# it each recipe stops with one line saying where to get it. Nothing is downloaded.
#
# Usage:
#   bash scripts/emnist_adaptive.sh [--cache_dir=DIR] [OPTIMIZER ...] [RECIPE_FLAG ...]
#   bash scripts/emnist_adaptive.sh --smoke --cache_dir=DIR [OPTIMIZER ...]
#
#   OPTIMIZER      fedavg fedavgm fedadam fedyogi fedadagrad (default: all five, in turn)
#   --cache_dir    directory holding emnist_all.sqlite (default ~/.tff)
#   --smoke        2 rounds of 2 clients each: a wiring check, e.g. on the small file that
#                  tests/emnist_sqlite.py writes (outputs in runs/emnist_adaptive-smoke/)
#   RECIPE_FLAG    any other --flag goes to every recipe, e.g. --root_output_dir=DIR,
#                  --resume (continue interrupted runs), --rounds_per_eval=100
#
# Outputs: <root_output_dir, default runs/emnist_adaptive>/emnist-<optimizer>/ (metrics.csv,
# summary.json, TensorBoard, checkpoints). One run is ~1500 rounds of 10 writers; on two CPU
# cores expect hours per optimizer, so run them one at a time and use --resume after a stop.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${FEDRECIPES_VENV:-$root/.venv}/bin/python
cd "$root"

smoke=false
optimizers=()
user_flags=()
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=true ;;
    fedavg|fedavgm|fedadam|fedyogi|fedadagrad) optimizers+=("$arg") ;;
    --*) user_flags+=("$arg") ;;
    *) echo "emnist_adaptive.sh: error: unknown optimizer '$arg' (choose fedavg fedavgm fedadam fedyogi fedadagrad)" >&2
       exit 2 ;;
  esac
done
[ ${#optimizers[@]} -gt 0 ] || optimizers=(fedavg fedavgm fedadam fedyogi fedadagrad)
# The user's flags come last, so theirs win (absl keeps the last value of a repeated flag).
# A smoke run gets a fresh directory each time: recipes refuse to overwrite a run.
output_dir=runs/emnist_adaptive
$smoke && output_dir=runs/emnist_adaptive-smoke/$(date +%Y%m%d-%H%M%S)
recipe_flags=(--root_output_dir="$output_dir" ${user_flags[@]+"${user_flags[@]}"})

# The paper's setting, shared by every optimizer.
common=(--task=emnist_character --model=cnn_dropout --clients_per_round=10
        --client_batch_size=20 --client_epochs_per_round=1 --total_rounds=1500
        --rounds_per_eval=50)
if $smoke; then
  # Tiny rounds on top of the published setting (the small test database has 4 writers).
  common+=(--total_rounds=2 --clients_per_round=2 --rounds_per_eval=1 --progress=false)
fi

run() {  # run OPTIMIZER MODULE FLAG...
  local name=$1 module=$2
  shift 2
  echo "emnist_adaptive: $name: $module $*" >&2
  "$python" -m "$module" "${common[@]}" "$@" --experiment_name="emnist-$name" "${recipe_flags[@]}"
}

for optimizer in "${optimizers[@]}"; do
  case "$optimizer" in
    # log10 lr: client -1, server 0.
    fedavg) run fedavg recipes.fed_avg --client_learning_rate=0.1 \
        --server_optimizer=sgd --server_learning_rate=1.0 ;;
    # log10 lr: client -1.5, server -0.5; server momentum 0.9.
    fedavgm) run fedavgm recipes.fed_opt --client_learning_rate=0.0316227766 \
        --server_optimizer=sgdm --server_learning_rate=0.316227766 --server_momentum=0.9 ;;
    # log10 lr: client -1.5, server -2.5; epsilon 1e-4 (beta_1 0.9, beta_2 0.99).
    fedadam) run fedadam recipes.fed_opt --client_learning_rate=0.0316227766 \
        --server_optimizer=adam --server_learning_rate=0.00316227766 --server_epsilon=1e-4 ;;
    # log10 lr: client -1.5, server -2.5; epsilon 1e-4 (beta_1 0.9, beta_2 0.99).
    fedyogi) run fedyogi recipes.fed_opt --client_learning_rate=0.0316227766 \
        --server_optimizer=yogi --server_learning_rate=0.00316227766 --server_epsilon=1e-4 ;;
    # log10 lr: client -1.5, server -1; epsilon 1e-2.
    fedadagrad) run fedadagrad recipes.fed_opt --client_learning_rate=0.0316227766 \
        --server_optimizer=adagrad --server_learning_rate=0.1 --server_epsilon=1e-2 ;;
  esac
done
