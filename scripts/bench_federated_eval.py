"""Does FedAvg serve every client? Per-client accuracy beside the centralized one.

    python -m scripts.bench_federated_eval            # shards and iid, 60 rounds each
    python -m scripts.bench_federated_eval --smoke    # 2 rounds on the synthetic task (tests)

Runs `recipes.fed_avg` on `mnist_digits` split `shards` (two digit classes per client) and,
for contrast, `iid`, with federated evaluation (`--federated_eval_clients`): at every
evaluation TFF's `build_fed_eval` evaluates the server model on sampled clients' own
held-out examples. The table puts the centralized validation accuracy next to the mean,
p10, median, p90 and worst of the per-client accuracies, and the test accuracy after the
last round. Results: docs/benchmarks/federated_eval/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from absl import flags

from core.errors import UserError
from recipes import cli
from scripts import bench_common

_SMOKE = flags.DEFINE_bool('smoke', False, 'Two rounds on the synthetic task: a wiring check.')
_ROUNDS = flags.DEFINE_integer('total_rounds', 60, 'Rounds of each run.', lower_bound=1)
_EVAL_CLIENTS = flags.DEFINE_integer('federated_eval_clients', 30,
                                     'Clients evaluated at every evaluation.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of every run.', lower_bound=0,
                             upper_bound=2**31 - 1)
_RESULTS_DIR = flags.DEFINE_string(
    'results_dir', str(bench_common.RESULTS_ROOT / 'federated_eval'), 'Where results go.')

COMMON = ('--task=mnist_digits', '--model=cnn', '--num_clients=100', '--clients_per_round=10',
          '--client_epochs_per_round=1', '--client_batch_size=10', '--client_learning_rate=0.05',
          '--rounds_per_eval=10')
SPLITS = ('shards', 'iid')
SMOKE_FLAGS = ('--task=synthetic', '--num_clients=20', '--clients_per_round=4',
               '--rounds_per_eval=1')
STATS = ('mean', 'p10', 'p50', 'p90', 'min')
COLUMNS = [('partition', 'partition', ''), ('rounds', 'rounds', ''),
           ('validation_accuracy', 'centralized validation acc', '.4f'),
           *[(f'fed_eval_accuracy_{s}', f'per-client {s}', '.4f') for s in STATS],
           ('fed_eval_clients', 'clients evaluated', ''),
           ('test_accuracy', 'test acc (end)', '.4f')]


def validate_flags() -> None:
  """Single-flag checks beyond the bounds, right after parsing."""
  if not _RESULTS_DIR.value.strip():
    raise UserError('--results_dir must not be empty')


def main(argv: Sequence[str]) -> None:
  del argv
  runs_dir = bench_common.run_directory(bench_common.RUNS_ROOT / 'federated_eval')
  results_dir = (runs_dir / 'results' if _SMOKE.value and not _RESULTS_DIR.present
                 else Path(_RESULTS_DIR.value))
  rounds = 2 if _SMOKE.value else _ROUNDS.value
  load = bench_common.LoadMonitor()
  rows: list[dict[str, Any]] = []
  for split in SPLITS:
    job = (*SMOKE_FLAGS, f'--partition={split}') if _SMOKE.value else (*COMMON, f'--partition={split}')
    run = bench_common.run_recipe(
        'recipes.fed_avg', [*job, f'--total_rounds={rounds}', f'--seed={_SEED.value}',
                            f'--federated_eval_clients={_EVAL_CLIENTS.value if not _SMOKE.value else 5}'],
        runs_dir=runs_dir, name=split)
    last = run['rows'][-1]
    row = {'partition': split, 'rounds': rounds,
           'validation_accuracy': float(last['validation_accuracy']),
           'test_accuracy': float(last['test_accuracy']),
           'fed_eval_clients': int(float(last['fed_eval_clients']))}
    row.update({f'fed_eval_accuracy_{s}': float(last[f'fed_eval_accuracy_{s}']) for s in STATS})
    row['curve_rounds'], row['curve_validation_accuracy'] = bench_common.curve(
        run['rows'], 'validation_accuracy')
    row['curve_fed_eval_p10'] = bench_common.curve(run['rows'], 'fed_eval_accuracy_p10')[1]
    row['curve_fed_eval_min'] = bench_common.curve(run['rows'], 'fed_eval_accuracy_min')[1]
    rows.append(row)
    load.sample()
  table = bench_common.markdown_table(rows, COLUMNS)
  bench_common.write_results(
      results_dir, benchmark='federated_eval',
      settings={'flags': list(SMOKE_FLAGS if _SMOKE.value else COMMON), 'rounds': rounds,
                'seed': _SEED.value, 'federated_eval_clients': _EVAL_CLIENTS.value},
      rows=rows, table=table, load=load)
  print(table)
  print(f'results: {results_dir}/results.json')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
