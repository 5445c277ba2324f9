"""Times the README's main job (scripts/demo.py) over several seeds.

    python -m scripts.bench_demo                 # seeds 0, 1, 2 (about 3 x 3 minutes idle)
    python -m scripts.bench_demo --smoke         # 2 rounds on the synthetic task (tests)

Each seed runs the real binary as a subprocess; the table gives the rounds to 95%
validation accuracy, the test accuracy at that round, the training seconds (rounds and
evaluations, from the run's metrics.csv) and the whole process' seconds (start-up
included), with the median and quartiles over seeds. Results: docs/benchmarks/demo/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from absl import flags

from core.errors import UserError
from recipes import cli
from scripts import bench_common
from scripts import bench_timing
from scripts import demo

_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds to run (non-negative integers).')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Two rounds on the synthetic task: a wiring check.')
_RESULTS_DIR = flags.DEFINE_string('results_dir', str(bench_common.RESULTS_ROOT / 'demo'),
                                   'Where results go.')

SMOKE_FLAGS = ('--task=synthetic', '--num_clients=20', '--clients_per_round=4',
               '--total_rounds=2', '--rounds_per_eval=1')
COLUMNS = [('seed', 'seed', ''), ('rounds_to_target', 'rounds to 95% validation', ''),
           ('test_accuracy', 'test accuracy there', '.4f'),
           ('train_seconds', 'training s', '.0f'), ('process_seconds', 'process s', '.0f')]


def _seeds() -> list[int]:
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise UserError(f'--seeds must be non-negative integers, got {",".join(_SEEDS.value)}') from None
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise UserError('--seeds must be distinct non-negative integers')
  return seeds


def validate_flags() -> None:
  """Single-flag checks, right after parsing."""
  _seeds()
  if not _RESULTS_DIR.value.strip():
    raise UserError('--results_dir must not be empty')


def main(argv: Sequence[str]) -> None:
  del argv
  seeds = _seeds()
  job_flags = SMOKE_FLAGS if _SMOKE.value else demo.DEMO_FLAGS
  runs_dir = bench_common.run_directory(bench_common.RUNS_ROOT / 'demo')
  results_dir = runs_dir / 'results' if _SMOKE.value and not _RESULTS_DIR.present else Path(
      _RESULTS_DIR.value)
  load = bench_common.LoadMonitor()
  rows: list[dict[str, Any]] = []
  for seed in seeds:
    run = bench_common.run_recipe('recipes.fed_avg', [*job_flags, f'--seed={seed}'],
                                  runs_dir=runs_dir, name=f'seed{seed}')
    summary = run['summary']
    rows.append({
        'seed': seed,
        'status': summary['status'],
        'rounds_to_target': summary['target_reached_round'],
        'rounds_run': summary['rounds_completed'],
        'test_accuracy': summary['final_test_accuracy'],
        'validation_accuracy': summary['final_validation_accuracy'],
        'train_seconds': sum(float(r['round_seconds']) for r in run['rows']),
        'process_seconds': run['process_seconds'],
    })
    load.sample()
    print(f'seed {seed}: {summary["status"]} after {summary["rounds_completed"]} rounds, '
          f'{run["process_seconds"]:.0f} s', flush=True)
  stats = {key: bench_timing.spread([float(r[key]) for r in rows if r[key] is not None])
           for key in ('rounds_to_target', 'test_accuracy', 'train_seconds', 'process_seconds')
           if any(r[key] is not None for r in rows)}
  table = bench_common.markdown_table(rows, COLUMNS)
  bench_common.write_results(results_dir, benchmark='demo',
                             settings={'flags': list(job_flags), 'seeds': seeds}, rows=rows,
                             table=table, load=load, extra={'statistics': stats})
  print(table)
  print(f'results: {results_dir}/results.json')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
