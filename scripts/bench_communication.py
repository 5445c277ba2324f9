"""Communication efficiency in the style of McMahan et al. (2017), Table 2: rounds to a target.

Trains the McMahan CNN on `mnist_digits` split with the pathological non-IID `shards`
partition (100 clients x 80 examples, at most 2 labels each; 10 clients per round) with
FedSGD, FedAvg for E (local epochs) in {1, 5} x B (local batch) in {10, 50}, and the
adaptive server optimizers FedAvgM, FedAdam and FedYogi (clients as FedAvg E=1 B=10), and
counts the rounds each needs to reach the target validation accuracy (evaluated every
round); the reported accuracy is the test set's, evaluated once at the round the run stops.
Tuning (`--tune`) also reads validation only: the test set never picks a learning rate.
The headline is the speed-up in rounds, FedSGD rounds / algorithm rounds: how many times
fewer communication rounds local training needs.

Every algorithm is a real recipe binary run as a subprocess (`recipes.fed_sgd`,
`recipes.fed_avg`, `recipes.fed_opt`), with a round budget; a run that misses the target
within it is reported as "not reached".

  python -m scripts.bench_communication                 # the benchmark (~1 h here under load)
  python -m scripts.bench_communication --smoke         # a tiny wiring check (tests)
  python -m scripts.bench_communication --tune --budget_scale=0.5 --rounds_per_eval=5  # the grid
  python -m scripts.bench_communication --only=fedsgd,fedavg_e1_b10
  python -m scripts.bench_communication --resume_run=runs/benchmarks/communication/<time>  # after a kill
  python -m scripts.bench_communication \
      --learning_rates_from=docs/benchmarks/communication/tuning/fedavg_b50/results.json,docs/benchmarks/communication/tuning/fedopt/results.json

Outputs (default docs/benchmarks/communication/): results.json, results.csv, table.md,
accuracy_vs_rounds.png; the runs themselves under runs/benchmarks/communication/.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from absl import flags

from core.errors import UserError
from recipes import cli
from scripts import bench_common

_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny settings (2 algorithms, 2 rounds, low target): a wiring check.')
_TUNE = flags.DEFINE_bool('tune', False, 'Run the learning-rate grid of every algorithm instead of the benchmark.')
_ONLY = flags.DEFINE_list('only', None, 'Run only these algorithm keys (see ALGORITHMS).')
_TARGET = flags.DEFINE_float('target_accuracy', 0.97, 'Validation accuracy to reach, in (0, 1].',
                             lower_bound=0.0, upper_bound=1.0)
_BUDGET_SCALE = flags.DEFINE_float('budget_scale', 1.0, 'Multiplies every round budget (> 0).',
                                   lower_bound=0.0)
_ROUNDS_PER_EVAL = flags.DEFINE_integer(
    'rounds_per_eval', 1, 'Evaluate every this many rounds (rounds to target are exact only at 1).',
    lower_bound=1)
_RATES_FROM = flags.DEFINE_list(
    'learning_rates_from', None,
    'Tuning results.json files (written by --tune), comma-separated: run each algorithm with '
    'the learning rate chosen there instead of the one in ALGORITHMS (a later file wins).')
_RESULTS_DIR = flags.DEFINE_string(
    'results_dir', str(bench_common.RESULTS_ROOT / 'communication'), 'Where results go.')
_RESUME_RUN = flags.DEFINE_string(
    'resume_run', None,
    'A runs directory of an interrupted benchmark (runs/benchmarks/communication/<time>): '
    'its finished runs are reused (same command, same clean commit, else refused), the '
    'rest run again in it.')
_RUNS_DIR = flags.DEFINE_string(
    'runs_dir', str(bench_common.RUNS_ROOT / 'communication'),
    'Parent of the recipe runs\' own outputs (checkpoints, TensorBoard, metrics).')

# The setting of McMahan et al.'s MNIST CNN experiments, scaled to the bundled 8,000 digits.
TASK_FLAGS = ('--task=mnist_digits', '--model=cnn', '--partition=shards', '--num_clients=100',
              '--clients_per_round=10', '--seed=0')
# synthetic splits with the --partition default (shards); the flag itself is mnist_digits-only.
SMOKE_TASK_FLAGS = ('--task=synthetic', '--num_clients=20',
                    '--clients_per_round=4', '--seed=0')
# One run per kind of binary: fed_sgd, and fed_opt (which builds its process with fed_avg's).
SMOKE_ALGORITHMS = ('fedsgd', 'fedadam')
SMOKE_ROUNDS = 2
SMOKE_TARGET = 0.5


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One row of the table: a recipe binary, its fixed flags and its tuned learning rate.

  Attributes:
    key: Short name (`--only`, file names).
    label: Name in the table and plot.
    module: The recipe binary.
    flags: Flags that define the algorithm (besides the task and the tuned rate).
    tuned: The learning-rate flag that was tuned (`client_learning_rate` or
      `server_learning_rate`).
    learning_rate: The chosen value of `tuned` (from `--tune` on this machine).
    grid: The values `--tune` tries; empty where a reference value was kept (see README).
    budget: Round budget.
    epochs: Local epochs E (None: FedSGD computes one gradient).
    batch: Local batch size B (None: the whole client dataset).
  """

  key: str
  label: str
  module: str
  flags: tuple[str, ...]
  tuned: str
  learning_rate: float
  grid: tuple[float, ...]
  budget: int
  epochs: int | None
  batch: int | None

  def command_flags(self, learning_rate: float | None = None) -> list[str]:
    rate = self.learning_rate if learning_rate is None else learning_rate
    return [*self.flags, f'--{self.tuned}={rate:g}']

  def learning_rates(self, learning_rate: float | None = None) -> str:
    """'client 0.05, server 0.01': the rates this algorithm runs with."""
    rates = {}
    for flag in self.command_flags(learning_rate):
      side, _, value = flag.removeprefix('--').partition('_learning_rate=')
      if value:
        rates[side] = value
    return ', '.join(f'{side} {value}' for side, value in sorted(rates.items()))


def _fedavg(epochs: int, batch: int, learning_rate: float, grid: tuple[float, ...],
            budget: int) -> Algorithm:
  return Algorithm(
      key=f'fedavg_e{epochs}_b{batch}', label=f'FedAvg E={epochs} B={batch}',
      module='recipes.fed_avg',
      flags=(f'--client_epochs_per_round={epochs}', f'--client_batch_size={batch}'),
      tuned='client_learning_rate', learning_rate=learning_rate, grid=grid, budget=budget,
      epochs=epochs, batch=batch)


# Adaptive server optimizers on FedAvg E=1 B=10 clients (client lr as that row), so their
# rows differ from it only in the server step.
_FEDOPT_CLIENTS = ('--client_epochs_per_round=1', '--client_batch_size=10',
                   '--client_learning_rate=0.05')


def _fedopt(key: str, label: str, server_flags: tuple[str, ...], learning_rate: float,
            grid: tuple[float, ...]) -> Algorithm:
  return Algorithm(
      key=key, label=label, module='recipes.fed_opt', flags=(*_FEDOPT_CLIENTS, *server_flags),
      tuned='server_learning_rate', learning_rate=learning_rate, grid=grid, budget=400,
      epochs=1, batch=10)


# Learning rates. FedSGD 0.2 and FedAvg B=10 0.05 are the rates of the reference runs in
# the project notes (raw TFF, same task: 275 / 225 / 130 rounds), kept without a grid. The
# rows without a reference were tuned with `--tune` over two values each (README: grid,
# budgets and results): B=50 takes 5x fewer local steps than B=10, so larger client rates;
# the server rates bracket those of Reddi et al. (2021) for FedAvgM and FedAdam/FedYogi.
ALGORITHMS = (
    Algorithm(key='fedsgd', label='FedSGD', module='recipes.fed_sgd', flags=(),
              tuned='server_learning_rate', learning_rate=0.2, grid=(),
              budget=1000, epochs=None, batch=None),
    _fedavg(1, 10, 0.05, (), budget=500),
    _fedavg(1, 50, 0.2, (0.1, 0.2), budget=800),
    _fedavg(5, 10, 0.05, (), budget=400),
    _fedavg(5, 50, 0.1, (0.1, 0.2), budget=500),
    _fedopt('fedavgm', 'FedAvgM (server momentum 0.9)',
            ('--server_optimizer=sgdm', '--server_momentum=0.9'), 0.3, (0.1, 0.3)),
    _fedopt('fedadam', 'FedAdam', ('--server_optimizer=adam', '--server_epsilon=1e-4'),
            0.01, (0.003, 0.01)),
    _fedopt('fedyogi', 'FedYogi', ('--server_optimizer=yogi', '--server_epsilon=1e-4'),
            0.01, (0.003, 0.01)),
)
_BY_KEY = {a.key: a for a in ALGORITHMS}

COLUMNS: list[bench_common.Column] = [
    ('algorithm', 'algorithm', ''),
    ('E', 'E', ''),
    ('B', 'B', ''),
    ('learning_rates', 'learning rates', ''),
    ('rounds_to_target', 'rounds to target', ''),
    ('speedup_vs_fedsgd', 'FedSGD rounds / rounds', '.2f'),
    ('train_seconds', 'train + eval s', '.0f'),
    ('seconds_per_round', 's / round', '.2f'),
    ('final_test_accuracy', 'test acc (at stop)', '.4f'),
]


def _selected() -> list[Algorithm]:
  keys = _ONLY.value or (SMOKE_ALGORITHMS if _SMOKE.value else [a.key for a in ALGORITHMS])
  unknown = [k for k in keys if k not in _BY_KEY]
  if unknown:
    raise UserError(f'--only: unknown algorithm {", ".join(unknown)}; choose from {", ".join(_BY_KEY)}')
  return [_BY_KEY[k] for k in keys]


def _run(algorithm: Algorithm, runs_dir: Path, learning_rate: float | None = None,
         name: str | None = None) -> dict[str, Any]:
  """Runs one algorithm; returns its result row (with the validation-accuracy curve)."""
  if _SMOKE.value:
    task_flags, budget, target = SMOKE_TASK_FLAGS, SMOKE_ROUNDS, SMOKE_TARGET
  else:
    task_flags = TASK_FLAGS
    budget, target = max(1, round(algorithm.budget * _BUDGET_SCALE.value)), _TARGET.value
  rate = algorithm.learning_rate if learning_rate is None else learning_rate
  run = bench_common.run_recipe(
      algorithm.module,
      [*task_flags, *algorithm.command_flags(rate), f'--total_rounds={budget}',
       f'--target_accuracy={target}', f'--rounds_per_eval={_ROUNDS_PER_EVAL.value}',
       # Checkpoints are not needed here; writing them every 10 rounds costs time.
       f'--rounds_per_checkpoint={budget}'],
      runs_dir=runs_dir, name=name or algorithm.key, reuse=_RESUME_RUN.value is not None)
  row = result_row(algorithm, run, rate, budget, target)
  reached = row['rounds_to_target'] is not None
  print(f'  {algorithm.label:32s} lr {rate:<6g} '
        f'{"reached at round " + str(row["rounds_to_target"]) if reached else "not reached in " + str(budget) + " rounds"}'
        f' (final accuracy {row["final_test_accuracy"]:.4f}, {row["train_seconds"]:.0f} s)', flush=True)
  return row


def result_row(algorithm: Algorithm, run: dict[str, Any], rate: float, budget: int,
               target: float) -> dict[str, Any]:
  """One table row (and the validation-accuracy curve) from what `bench_common.run_recipe` read."""
  summary = run['summary']
  rounds, accuracies = bench_common.curve(run['rows'], 'validation_accuracy')
  return {
      'key': algorithm.key,
      'algorithm': algorithm.label,
      'recipe': algorithm.module,
      'E': algorithm.epochs if algorithm.epochs is not None else '1 step',
      'B': algorithm.batch if algorithm.batch is not None else 'all',
      'tuned_flag': algorithm.tuned,
      'learning_rate': rate,
      'learning_rates': algorithm.learning_rates(rate),
      'round_budget': budget,
      'target_accuracy': target,
      'rounds_to_target': summary['target_reached_round'],
      'rounds_run': summary['rounds_completed'],
      'status': summary['status'],
      'final_test_accuracy': summary['final_test_accuracy'],
      'best_validation_accuracy': summary['best_validation_accuracy'],
      'train_seconds': summary['wall_seconds_this_run'],
      'seconds_per_round': summary['mean_round_seconds_this_run'],
      # None when --resume_run read the finished run back (its own seconds are above).
      'process_seconds': (round(run['process_seconds'], 1)
                          if run['process_seconds'] is not None else None),
      'reused_from_interrupted_run': run['reused'],
      'flags': ' '.join(algorithm.command_flags(rate)),
      'curve_rounds': rounds,
      'curve_validation_accuracy': accuracies,
  }


def _shown(row: dict[str, Any]) -> dict[str, Any]:
  """The row as the table shows it: a missed target says so, with the rounds run."""
  if row['rounds_to_target'] is not None:
    return row
  return {**row, 'rounds_to_target': f'not reached in {row["rounds_run"]}'}


def _add_speedups(rows: list[dict[str, Any]]) -> None:
  """Adds FedSGD rounds / rounds; a miss on either side leaves it None (noted in the table)."""
  fedsgd = next((r for r in rows if r['key'] == 'fedsgd'), None)
  for row in rows:
    row['speedup_vs_fedsgd'] = None
    if fedsgd and fedsgd['rounds_to_target'] and row['rounds_to_target']:
      row['speedup_vs_fedsgd'] = round(fedsgd['rounds_to_target'] / row['rounds_to_target'], 2)


def chosen_learning_rates(path: Path) -> dict[str, float]:
  """{algorithm key: learning rate} chosen in a tuning results.json."""
  try:
    record = json.loads(path.read_text())
    return {row['key']: float(row['learning_rate']) for row in record['results'] if row['chosen']}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f'--learning_rates_from={path}: not a tuning results.json ({e})') from None


def _benchmark(algorithms: list[Algorithm], results_dir: Path, runs_dir: Path) -> None:
  load = bench_common.LoadMonitor()
  rates = {}
  for path in _RATES_FROM.value or ():
    rates.update(chosen_learning_rates(Path(path)))
  rows = []
  for algorithm in algorithms:
    rows.append(_run(algorithm, runs_dir, rates.get(algorithm.key)))
    load.sample()
  _add_speedups(rows)
  target = rows[0]['target_accuracy']
  table = bench_common.markdown_table([_shown(r) for r in rows], COLUMNS)
  plot = bench_common.plot_accuracy_vs_rounds(
      {r['algorithm']: (r['curve_rounds'], r['curve_validation_accuracy']) for r in rows},
      results_dir / 'accuracy_vs_rounds.png',
      title=f'{"synthetic (smoke)" if _SMOKE.value else "mnist_digits, shards non-IID, CNN"}: '
            f'validation accuracy vs rounds (target {target:g})',
      target=target)
  settings = {
      'task_flags': list(SMOKE_TASK_FLAGS if _SMOKE.value else TASK_FLAGS),
      'target_accuracy': target, 'rounds_per_eval': _ROUNDS_PER_EVAL.value,
      'smoke': _SMOKE.value, 'learning_rates_from': _RATES_FROM.value,
      'learning_rates_chosen': rates, 'resume_run': _RESUME_RUN.value,
  }
  paths = bench_common.write_results(
      results_dir, benchmark='communication', settings=settings, rows=rows, table=table,
      load=load, extra={'runs_dir': str(runs_dir)})
  print(f'\nRounds to {target:g} validation accuracy; final accuracy on the test set '
        f'({" ".join(settings["task_flags"])}):\n')
  print(table)
  print(f'\nresults: {paths["json"]}, {paths["csv"]}, {plot}')


def _tune(algorithms: list[Algorithm], results_dir: Path, runs_dir: Path) -> None:
  """Runs each algorithm's grid; the best rate reaches the target in the fewest rounds."""
  load = bench_common.LoadMonitor()
  rows = []
  for algorithm in algorithms:
    for rate in algorithm.grid:  # An empty grid keeps its reference rate untuned.
      rows.append(_run(algorithm, runs_dir, rate, name=f'{algorithm.key}-lr{rate:g}'))
      load.sample()
  best = {}
  for row in rows:
    # Fewest rounds to the target; among misses, the best accuracy.
    score = (row['rounds_to_target'] is None, row['rounds_to_target'] or 0,
             -row['best_validation_accuracy'])
    if row['key'] not in best or score < best[row['key']][0]:
      best[row['key']] = (score, row['learning_rate'])
  for row in rows:
    row['chosen'] = best[row['key']][1] == row['learning_rate']
  columns = [c for c in COLUMNS if c[0] not in ('speedup_vs_fedsgd',)]
  columns.insert(4, ('best_validation_accuracy', 'best validation acc', '.4f'))
  columns.append(('chosen', 'chosen', ''))
  table = bench_common.markdown_table([_shown(r) for r in rows], columns)
  paths = bench_common.write_results(
      results_dir / 'tuning', benchmark='communication-tuning',
      settings={'task_flags': list(TASK_FLAGS), 'target_accuracy': _TARGET.value,
                'budget_scale': _BUDGET_SCALE.value, 'rounds_per_eval': _ROUNDS_PER_EVAL.value},
      rows=rows, table=table, load=load)
  print('\nLearning-rate grid:\n')
  print(table)
  print('\nchosen: ' + ', '.join(f'{k} {v[1]:g}' for k, v in best.items()))
  print(f'results: {paths["json"]}')


def validate_flags() -> None:
  """Single-flag checks beyond the bounds, right after parsing."""
  if _TARGET.value <= 0 or _BUDGET_SCALE.value <= 0:
    raise UserError('--target_accuracy and --budget_scale must be positive')
  for name in ('results_dir', 'runs_dir'):
    if not flags.FLAGS[name].value.strip():
      raise UserError(f'--{name} must not be empty')
  if _RESUME_RUN.value is not None and not (_RESUME_RUN.value.strip() and Path(_RESUME_RUN.value).is_dir()):
    raise UserError(f'--resume_run: {_RESUME_RUN.value} is not a directory')
  for path in _RATES_FROM.value or ():
    if not Path(path).is_file():
      raise UserError(f'--learning_rates_from: {path} is not a file')
  if _ONLY.value:
    known = {a.key for a in ALGORITHMS}
    unknown = sorted(set(_ONLY.value) - known)
    if unknown:
      raise UserError(f'unknown --only={",".join(unknown)}; choose from {", ".join(sorted(known))}')


def main(argv: list[str]) -> None:
  del argv
  if _SMOKE.value and _TUNE.value:
    raise UserError('--smoke and --tune do not combine')
  algorithms = _selected()
  if _RESUME_RUN.value:
    runs_dir = Path(_RESUME_RUN.value)
  else:
    runs_dir = bench_common.run_directory(Path(_RUNS_DIR.value))
  results_dir = Path(_RESULTS_DIR.value)
  if _SMOKE.value and not _RESULTS_DIR.present:
    results_dir = runs_dir / 'results'  # A smoke run must not replace the committed results.
  (_tune if _TUNE.value else _benchmark)(algorithms, results_dir, runs_dir)


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
