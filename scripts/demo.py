"""The README's main job: FedAvg on the embedded MNIST digits until 95% validation accuracy.

    python -m scripts.demo [extra recipe flags]     (what scripts/run_demo.sh runs)

100 non-IID clients holding two digit classes each (the `shards` split of McMahan et al.),
10 per round, 5 local epochs with batch 10. `DEMO_FLAGS` is the one definition of the job;
`scripts/bench_demo.py` times it over several seeds.
"""

from __future__ import annotations

import os
import sys

DEMO_FLAGS = (
    '--task=mnist_digits', '--partition=shards', '--num_clients=100', '--clients_per_round=10',
    '--client_epochs_per_round=5', '--client_batch_size=10', '--client_learning_rate=0.05',
    '--total_rounds=300', '--rounds_per_eval=5', '--target_accuracy=0.95',
)


def main() -> None:
  # Replaces this process: the recipe owns signals, exit codes and its TFF worker.
  args = [sys.executable, '-m', 'recipes.fed_avg', *DEMO_FLAGS, *sys.argv[1:]]
  os.execv(sys.executable, args)


if __name__ == '__main__':
  main()
