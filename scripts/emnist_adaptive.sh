#!/usr/bin/env bash
# EMNIST character recognition (62 classes) as in "Adaptive Federated Optimization"
# (Reddi et al., ICLR 2021): the emnist_character row of scripts/benchmark_grid.sh, which
# holds the settings and best learning rates of every task (see its header). Kept as a
# shortcut for the commands documented before the grid existed; everything is the grid's:
#
#   bash scripts/emnist_adaptive.sh [--cache_dir=DIR] [--print] [--smoke] [OPTIMIZER ...] [RECIPE_FLAG ...]
#   = bash scripts/benchmark_grid.sh emnist_character [the same arguments]
#
# Outputs: <root_output_dir, default runs/benchmark_grid>/emnist_character-<optimizer>/.
set -euo pipefail
exec bash "$(dirname "$0")/benchmark_grid.sh" emnist_character "$@"
