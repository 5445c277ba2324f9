#!/usr/bin/env bash
# The main job: sets up the pinned environment if needed, then trains FederatedAveraging on the
# embedded MNIST digits (100 non-IID clients, 2 labels each; 10 per round) until 95% validation
# accuracy (scripts/demo.py holds its flags). Extra arguments are passed to the recipe (e.g. --total_rounds=50).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
cd "$root"
exec "${FEDRECIPES_VENV:-$root/.venv}/bin/python" -m scripts.demo "$@"
