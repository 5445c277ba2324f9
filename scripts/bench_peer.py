"""fedrecipes next to a peer: the same FedAvg experiment with Flower's simulation engine.

Runs, one after the other in this one invocation, `python -m recipes.fed_avg` and
`scripts/bench_flower.py` (in the Flower environment) on the same experiment: McMahan's
CNN on `mnist_digits`, 100 IID clients x 70 examples, 10 clients per round, local SGD
(E=1, B=10, learning rate 0.05), the example-weighted mean on the server, the same rounds;
then reports seconds per round of each and their ratio, and both final test accuracies.

Seconds per round are the training rounds alone (sampling, sending the model, local
training, aggregation), without evaluation or start-up; the mean leaves out round 1, which
pays one-off costs on both sides (tracing; Ray starting its workers). Whole-process wall
times, start-up included, are reported too. `--repeats=2` runs the pair twice in
alternating order, so a burst of load from other processes hits both sides alike.

  bash scripts/setup_flower.sh                  # once: the Flower environment (.venv-flower)
  python -m scripts.bench_peer                  # the comparison (~10-20 min)
  python -m scripts.bench_peer --smoke --repeats=1   # tiny settings (tests)

Outputs (default docs/benchmarks/peer/): results.json, results.csv, table.md,
accuracy_vs_rounds.png, seconds_per_round.png.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from absl import flags

from core.errors import UserError
from recipes import cli
from scripts import bench_common

_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny settings (2 clients per round, 2 rounds): a wiring check.')
_ROUNDS = flags.DEFINE_integer('total_rounds', 50, 'Rounds of each system (>= 2).', lower_bound=2)
_ROUNDS_PER_EVAL = flags.DEFINE_integer('rounds_per_eval', 10, 'Evaluate on the test set every this many rounds.',
                                        lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Runs of each system, alternating which goes first.',
                                lower_bound=1)
_CPUS_PER_CLIENT = flags.DEFINE_float(
    'num_cpus_per_client', 1.0, 'Flower: Ray CPUs per client (1 = as many concurrent clients as cores).',
    lower_bound=0.0)
_FLOWER_PYTHON = flags.DEFINE_string('flower_python', str(bench_common.FLOWER_PYTHON), 'Python of the Flower environment.')
_RESULTS_DIR = flags.DEFINE_string('results_dir', str(bench_common.RESULTS_ROOT / 'peer'), 'Where results go.')
_RUNS_DIR = flags.DEFINE_string('runs_dir', str(bench_common.RUNS_ROOT / 'peer'), 'Parent of the runs\' own outputs.')

EXPERIMENT = {
    'num_clients': 100, 'partition': 'iid', 'seed': 0, 'clients_per_round': 10,
    'client_learning_rate': 0.05, 'client_batch_size': 10, 'client_epochs_per_round': 1,
}
SMOKE_EXPERIMENT = {**EXPERIMENT, 'clients_per_round': 2}
SMOKE_ROUNDS = 2
TARGET_SPEEDUP = 2.0
ACCURACY_TOLERANCE = 0.01  # "Equal accuracy": final test accuracies this close.

COLUMNS: list[bench_common.Column] = [
    ('system', 'system', ''),
    ('repeat', 'run', ''),
    ('seconds_per_round', 's / round (rounds 2+)', '.3f'),
    ('seconds_per_round_all', 's / round (all)', '.3f'),
    ('first_round_seconds', 'round 1 s', '.1f'),
    ('process_seconds', 'process s', '.0f'),
    ('final_test_accuracy', 'final acc', '.4f'),
]


def _experiment_flags(experiment: dict[str, Any], rounds: int) -> list[str]:
  return [f'--{name}={value}' for name, value in experiment.items()] + [
      f'--total_rounds={rounds}', f'--rounds_per_eval={_ROUNDS_PER_EVAL.value if not _SMOKE.value else 1}']


def _steady_mean(seconds: list[float]) -> float:
  return statistics.fmean(seconds[1:] if len(seconds) > 1 else seconds)


def _run_fedrecipes(experiment: dict[str, Any], rounds: int, runs_dir: Path, repeat: int) -> dict[str, Any]:
  run = bench_common.run_recipe(
      'recipes.fed_avg',
      ['--task=mnist_digits', '--model=cnn', *_experiment_flags(experiment, rounds),
       f'--rounds_per_checkpoint={rounds}'],
      runs_dir=runs_dir, name=f'fedrecipes-{repeat}')
  seconds = [float(r['round_seconds']) for r in run['rows']]
  rounds_evaluated, accuracies = bench_common.curve(run['rows'])
  return _row('fedrecipes (TFF 0.87)', repeat, seconds, rounds_evaluated, accuracies,
              run['process_seconds'])


def _run_flower(experiment: dict[str, Any], rounds: int, runs_dir: Path, repeat: int) -> dict[str, Any]:
  output = runs_dir / f'flower-{repeat}.json'
  _, process_seconds = bench_common.run_command(
      [_FLOWER_PYTHON.value, '-m', 'scripts.bench_flower', *_experiment_flags(experiment, rounds),
       f'--num_cpus_per_client={_CPUS_PER_CLIENT.value:g}', f'--output={output}'],
      timeout=3600, what='scripts.bench_flower (Flower environment)')
  result = json.loads(output.read_text())
  row = _row(f'Flower {result["versions"]["flwr"]} (Ray)', repeat, result['round_seconds'],
             result['curve_rounds'], result['curve_test_accuracy'], process_seconds)
  row['versions'] = result['versions']
  return row


def _row(system: str, repeat: int, seconds: list[float], rounds_evaluated: list[int],
         accuracies: list[float], process_seconds: float) -> dict[str, Any]:
  return {
      'system': system, 'repeat': repeat,
      'seconds_per_round': round(_steady_mean(seconds), 4),
      'seconds_per_round_all': round(statistics.fmean(seconds), 4),
      'first_round_seconds': round(seconds[0], 3),
      'process_seconds': round(process_seconds, 1),
      'final_test_accuracy': accuracies[-1],
      'round_seconds': seconds,
      'curve_rounds': rounds_evaluated, 'curve_test_accuracy': accuracies,
  }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Means over the repeats; the target: >= 2x fewer seconds per round at equal accuracy.

  "Equal accuracy" means final test accuracies within one percentage point.
  """
  ours = [r for r in rows if r['system'].startswith('fedrecipes')]
  peer = [r for r in rows if not r['system'].startswith('fedrecipes')]

  def mean(group: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(r[key] for r in group)

  speedup = mean(peer, 'seconds_per_round') / mean(ours, 'seconds_per_round')
  difference = mean(ours, 'final_test_accuracy') - mean(peer, 'final_test_accuracy')
  return {
      'fedrecipes_seconds_per_round': round(mean(ours, 'seconds_per_round'), 4),
      'flower_seconds_per_round': round(mean(peer, 'seconds_per_round'), 4),
      'speedup_flower_over_fedrecipes': round(speedup, 2),
      'fedrecipes_final_test_accuracy': round(mean(ours, 'final_test_accuracy'), 4),
      'flower_final_test_accuracy': round(mean(peer, 'final_test_accuracy'), 4),
      'accuracy_difference': round(difference, 4),
      'target_speedup': TARGET_SPEEDUP,
      'target_met': speedup >= TARGET_SPEEDUP and abs(difference) <= ACCURACY_TOLERANCE,
  }


def _verdict(summary: dict[str, Any]) -> str:
  speedup = summary['speedup_flower_over_fedrecipes']
  return (f'Flower s/round / fedrecipes s/round = {speedup:.2f} (target >= {TARGET_SPEEDUP:g} at '
          f'equal accuracy: {"met" if summary["target_met"] else "not met"}); final test accuracy '
          f'fedrecipes {summary["fedrecipes_final_test_accuracy"]:.4f}, '
          f'Flower {summary["flower_final_test_accuracy"]:.4f}')


def validate_flags() -> None:
  """Single-flag checks beyond the bounds, right after parsing."""
  if _CPUS_PER_CLIENT.value <= 0:
    raise UserError(f'--num_cpus_per_client must be positive, got {_CPUS_PER_CLIENT.value}')
  for name in ('flower_python', 'results_dir', 'runs_dir'):
    if not flags.FLAGS[name].value.strip():
      raise UserError(f'--{name} must not be empty')


def main(argv: list[str]) -> None:
  del argv
  if not Path(_FLOWER_PYTHON.value).exists():
    raise UserError(f'the Flower environment is missing ({_FLOWER_PYTHON.value}); create it with '
                    'bash scripts/setup_flower.sh')
  experiment = SMOKE_EXPERIMENT if _SMOKE.value else EXPERIMENT
  rounds = SMOKE_ROUNDS if _SMOKE.value else _ROUNDS.value
  if rounds < 2:
    raise UserError('--total_rounds must be at least 2 (round 1 is left out of the mean)')
  runs_dir = bench_common.run_directory(Path(_RUNS_DIR.value))
  results_dir = Path(_RESULTS_DIR.value)
  if _SMOKE.value and not _RESULTS_DIR.present:
    results_dir = runs_dir / 'results'  # A smoke run must not replace the committed results.

  load = bench_common.LoadMonitor()
  runners = [_run_fedrecipes, _run_flower]
  rows = []
  for repeat in range(1, _REPEATS.value + 1):
    for runner in runners if repeat % 2 else reversed(runners):
      rows.append(runner(experiment, rounds, runs_dir, repeat))
      print(f'  {rows[-1]["system"]} (run {repeat}): {rows[-1]["seconds_per_round"]:.3f} s per round, '
            f'final accuracy {rows[-1]["final_test_accuracy"]:.4f}', flush=True)
      load.sample()

  summary = _summary(rows)
  table = bench_common.markdown_table(rows, COLUMNS)
  verdict = _verdict(summary)
  title = (f'{experiment["num_clients"]} IID clients, {experiment["clients_per_round"]} per round, '
           f'CNN, E={experiment["client_epochs_per_round"]} B={experiment["client_batch_size"]}')
  label = lambda r: f'{r["system"]} run {r["repeat"]}'  # noqa: E731
  accuracy_plot = bench_common.plot_accuracy_vs_rounds(
      {label(r): (r['curve_rounds'], r['curve_test_accuracy']) for r in rows},
      results_dir / 'accuracy_vs_rounds.png', title=f'Test accuracy: {title}')
  seconds_plot = bench_common.plot_lines(
      {label(r): (list(range(1, len(r['round_seconds']) + 1)), r['round_seconds']) for r in rows},
      results_dir / 'seconds_per_round.png', title=f'Seconds per training round\n{title}',
      ylabel='seconds (log scale: round 1 pays start-up)', log_y=True)
  paths = bench_common.write_results(
      results_dir, benchmark='peer', rows=rows, table=table + '\n\n' + verdict, load=load,
      settings={**experiment, 'total_rounds': rounds, 'repeats': _REPEATS.value,
                'flower_num_cpus_per_client': _CPUS_PER_CLIENT.value, 'smoke': _SMOKE.value},
      extra={'summary': summary})
  print(f'\nfedrecipes vs Flower ({title}, {rounds} rounds):\n')
  print(table)
  print('\n' + verdict)
  print(f'results: {paths["json"]}, {paths["csv"]}, {accuracy_plot}, {seconds_plot}')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
