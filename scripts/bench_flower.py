"""FedAvg on `mnist_digits` with Flower's simulation engine: the peer of scripts/bench_peer.py.

Runs in the Flower environment, never in the project's (Flower 1.42 needs protobuf 6, which
TensorFlow 2.14 and so TFF 0.87 cannot load):

  bash scripts/setup_flower.sh
  .venv-flower/bin/python -m scripts.bench_flower --total_rounds=50 --output=/tmp/flower.json

The experiment (data, split, model, client training, server averaging) is defined in
`scripts/flower_peer.py`. The clients are 100 virtual SuperNodes of Flower's Ray backend;
Ray gets every core and each client `--num_cpus_per_client` of them (so with 2 cores and 1
CPU per client, two clients train at a time). Writes settings, seconds per round, the
test-accuracy curve and versions to `--output` as JSON.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path

from absl import flags

from core import outputs
from core.errors import UserError
from recipes import cli
from scripts import bench_common

_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 100, 'Clients (Flower SuperNodes).', lower_bound=1)
_PARTITION = flags.DEFINE_enum('partition', 'iid', ['iid', 'shards'], 'Split, as fedrecipes --partition.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the split (the same seed gives fedrecipes\' clients).',
                             lower_bound=0, upper_bound=2**31 - 1)
_CLIENTS_PER_ROUND = flags.DEFINE_integer('clients_per_round', 10, 'Clients sampled per round.',
                                          lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float('client_learning_rate', 0.05, 'Client SGD learning rate (> 0).',
                                     lower_bound=0.0)
_BATCH_SIZE = flags.DEFINE_integer('client_batch_size', 10, 'Local batch size.', lower_bound=1)
_EPOCHS = flags.DEFINE_integer('client_epochs_per_round', 1, 'Local epochs per round.', lower_bound=1)
_ROUNDS = flags.DEFINE_integer('total_rounds', 50, 'Rounds.', lower_bound=1)
_ROUNDS_PER_EVAL = flags.DEFINE_integer(
    'rounds_per_eval', 10, 'Evaluate on the test set every this many rounds (and at the end).',
    lower_bound=1)
_CPUS_PER_CLIENT = flags.DEFINE_float(
    'num_cpus_per_client', 1.0, 'Ray CPUs per client (concurrent clients = cores / this; > 0).',
    lower_bound=0.0)
_REBUILD_MODEL = flags.DEFINE_bool(
    'rebuild_model', False, 'Build and compile a new Keras model in every client call, as '
    'Flower\'s TensorFlow example does (default: one model per Ray worker, reused).')
_OUTPUT = flags.DEFINE_string('output', None, 'JSON file to write.', required=True)


def validate_flags() -> None:
  """Single-flag checks beyond the bounds, right after parsing."""
  if _LEARNING_RATE.value <= 0 or _CPUS_PER_CLIENT.value <= 0:
    raise UserError('--client_learning_rate and --num_cpus_per_client must be positive')
  if not _OUTPUT.value.strip():
    raise UserError('--output must not be empty')


def main(argv: list[str]) -> None:
  del argv
  if _CLIENTS_PER_ROUND.value > _NUM_CLIENTS.value:
    raise UserError(f'--clients_per_round={_CLIENTS_PER_ROUND.value} exceeds --num_clients={_NUM_CLIENTS.value}')
  try:
    import flwr  # pylint: disable=g-import-not-at-top
    import keras  # pylint: disable=g-import-not-at-top
    import ray  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from flwr.simulation import run_simulation  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f'{e}; run this with the Flower environment: bash scripts/setup_flower.sh, '
                    'then .venv-flower/bin/python -m scripts.bench_flower') from e
  from scripts import flower_peer  # pylint: disable=g-import-not-at-top

  # The Ray workers that run the clients must import scripts.flower_peer; they inherit
  # this environment.
  os.environ['PYTHONPATH'] = bench_common.subprocess_env()['PYTHONPATH']
  logging.getLogger('flwr').setLevel(logging.WARNING)
  random.seed(_SEED.value)  # Flower samples the clients of a round with `random`.
  settings = {
      'num_clients': _NUM_CLIENTS.value, 'partition': _PARTITION.value, 'seed': _SEED.value,
      'clients_per_round': _CLIENTS_PER_ROUND.value,
      'client_learning_rate': _LEARNING_RATE.value, 'client_batch_size': _BATCH_SIZE.value,
      'client_epochs_per_round': _EPOCHS.value, 'total_rounds': _ROUNDS.value,
      'rounds_per_eval': _ROUNDS_PER_EVAL.value, 'rebuild_model': _REBUILD_MODEL.value,
  }
  cores = os.cpu_count() or 1
  backend_config = {
      'client_resources': {'num_cpus': _CPUS_PER_CLIENT.value, 'num_gpus': 0.0},
      'init_args': {'num_cpus': cores},
  }
  record: dict = {}
  started = time.perf_counter()
  run_simulation(
      server_app=flower_peer.make_server_app(settings, record),
      client_app=flower_peer.client_app,
      num_supernodes=_NUM_CLIENTS.value,
      backend_name='ray',
      backend_config=backend_config,
  )
  wall_seconds = time.perf_counter() - started
  if len(record.get('round_seconds', {})) != _ROUNDS.value or not record.get('test_accuracy'):
    raise UserError(f'the Flower simulation did not complete its {_ROUNDS.value} rounds '
                    f'(recorded {len(record.get("round_seconds", {}))}); see its log above')
  rounds = sorted(record['round_seconds'])
  evaluated = sorted(record['test_accuracy'])
  result = {
      'system': 'flower',
      'settings': settings,
      'backend': {'name': 'ray', **backend_config},
      'versions': {'flwr': flwr.__version__, 'ray': ray.__version__,
                   'tensorflow': tf.__version__, 'keras': keras.__version__},
      'round_seconds': [record['round_seconds'][r] for r in rounds],
      'curve_rounds': evaluated,
      'curve_test_accuracy': [record['test_accuracy'][r] for r in evaluated],
      'final_test_accuracy': record['test_accuracy'][evaluated[-1]],
      'final_test_loss': record['test_loss'][evaluated[-1]],
      'wall_seconds': wall_seconds,
  }
  outputs.write_json(Path(_OUTPUT.value), result)
  print(f'flower: {_ROUNDS.value} rounds, mean {sum(result["round_seconds"]) / len(rounds):.3f} s '
        f'per round, final test accuracy {result["final_test_accuracy"]:.4f}; {_OUTPUT.value}')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
