"""StackOverflow's population: start-up time and peak memory against the number of users.

StackOverflow has 342,477 training users. TFF's `SqlClientData` reads each user's
examples lazily (one SQL query when the user is sampled) and keeps only the sorted list
of user ids; the project's sampling (a pure function of seed and round) and its client
dataset cache (bounded, tasks are lazy) keep it so. This measures whether anything still
grows with the population: for each population N it writes a StackOverflow-schema fixture
with N training users (tests/benchmark_fixtures.py, in TFF's exact schema, with an index
on the client column), then runs the recipe binary as a user would,

  python -m recipes.fed_avg --task=stackoverflow_tag --cache_dir=FIXTURE \
      --clients_per_round=10 --total_rounds=3 ...

and measures from outside (scripts/bench_population.measure_run): start-up seconds
(launch to the "training on" line: imports, opening the database, reading N user ids,
building the task and the process), the Python process's and the TFF worker's peak
resident memory, and seconds per round. In this process it also times
`tasks.create_task` and traces its Python allocations (tracemalloc peak).

  python -m scripts.bench_suite_population                  # 1,000 and 100,000 users, 3 runs each
  python -m scripts.bench_suite_population --smoke          # 100 and 2,000 users, 1 run (tests)

Outputs (default docs/benchmarks/suite_population/): results.json (command, commit,
machine, load averages, every run), results.csv, table.md, population.png.
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Sequence

from absl import flags

from core import outputs
from core.errors import UserError
from recipes import cli
from scripts import bench_common
from scripts import bench_population
from scripts import bench_timing

# The flags are bench_population's (imported above, which defines them: --smoke, --rounds,
# --results_dir from bench_common, and --populations, --clients_per_round, --repeats,
# --timeout_seconds; its --seed goes unused), with this benchmark's defaults, plus --task.
_TASK = flags.DEFINE_enum('task', 'stackoverflow_tag', ['stackoverflow_tag', 'stackoverflow_word'],
                          'The StackOverflow task to run.')
FLAGS = flags.FLAGS
FLAGS.set_default('populations', ['1000', '100000'])
FLAGS.set_default('results_dir', str(bench_common.RESULTS_ROOT / 'suite_population'))

SMOKE_SETTINGS = {'populations': [100, 2_000], 'rounds': 1, 'repeats': 1}


def validate_flags() -> None:
  """Checks that bounds cannot express (see recipes.cli.run)."""
  bench_common.validate_flags()
  populations = bench_common.positive_ints(FLAGS.populations, 'populations')
  if not FLAGS.smoke and min(populations) < FLAGS.clients_per_round:
    raise UserError(f'every population must hold at least --clients_per_round='
                    f'{FLAGS.clients_per_round} users, got {min(populations)}')


def write_fixture(directory: Path, users: int) -> tuple[Path, float]:
  """Writes a StackOverflow-schema cache dir with `users` training users; returns it and seconds."""
  from tests import benchmark_fixtures  # pylint: disable=g-import-not-at-top  # TF only here.
  started = time.perf_counter()
  benchmark_fixtures.write_stackoverflow(directory, train_users=users, index=True)
  return directory, time.perf_counter() - started


def measure_task_creation(task: str, cache_dir: Path) -> dict[str, Any]:
  """Seconds and traced Python allocations (peak) of creating the task here, after a warm-up."""
  import tasks  # pylint: disable=g-import-not-at-top  # TF only when measuring.

  tasks.create_task(task, cache_dir=str(cache_dir))  # Warm up TF's and TFF's first calls.
  tracemalloc.start()
  started = time.perf_counter()
  created = tasks.create_task(task, cache_dir=str(cache_dir))
  seconds = time.perf_counter() - started
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return {'create_task_seconds': round(seconds, 4), 'create_task_peak_kib': round(peak / 1024, 1),
          'users_read': len(created.train_data.client_ids)}


def _one_run(population: int, repeat: int, cache_dir: Path, settings: dict[str, Any],
             runs_dir: Path) -> dict[str, Any]:
  name = f'n{population}-r{repeat}'
  flags_ = [f'--task={settings["task"]}', f'--cache_dir={cache_dir}',
            f'--clients_per_round={settings["clients_per_round"]}',
            f'--total_rounds={settings["rounds"]}', f'--rounds_per_eval={settings["rounds"]}',
            '--num_validation_examples=100', '--num_test_examples=100', '--progress=false',
            f'--root_output_dir={runs_dir}', f'--experiment_name={name}']
  measured = bench_population.measure_run(flags_, timeout=settings['timeout_seconds'],
                                          what=f'fed_avg ({name})')
  rows = outputs.read_csv(runs_dir / name / 'metrics.csv')
  round_seconds = [float(r['round_seconds']) for r in rows]
  return {'population': population, 'repeat': repeat, **measured, 'rounds': len(rows),
          'median_round_seconds': round(bench_timing.spread(round_seconds)['median'], 3)}


def main(argv: Sequence[str]) -> None:
  del argv
  settings = bench_common.settings_from_flags({
      'recipe': 'fed_avg', 'task': _TASK.value,
      'fixture': 'tests/benchmark_fixtures.write_stackoverflow (6 questions per user, indexed)',
      'populations': bench_common.positive_ints(FLAGS.populations, 'populations'),
      'clients_per_round': FLAGS.clients_per_round, 'rounds': FLAGS.rounds,
      'repeats': FLAGS.repeats, 'timeout_seconds': FLAGS.timeout_seconds,
  }, SMOKE_SETTINGS)
  populations = sorted(set(settings['populations']))
  settings['populations'] = populations
  runs_dir = bench_common.run_directory(bench_common.RUNS_ROOT / 'suite_population')
  load = bench_common.LoadMonitor()
  with tempfile.TemporaryDirectory() as scratch:
    fixtures = {}
    fixture_seconds = {}
    for population in populations:
      fixtures[population], fixture_seconds[population] = write_fixture(
          Path(scratch) / f'n{population}', population)
      print(f'fixture: {population:,} users written in {fixture_seconds[population]:.1f} s',
            flush=True)
    runs = []
    # Interleaved: a burst of load hits every population.
    for repeat in range(settings['repeats']):
      for population in populations:
        print(f'population: {population:,} users, run {repeat + 1}/{settings["repeats"]}', flush=True)
        runs.append(_one_run(population, repeat, fixtures[population], settings, runs_dir))
        load.sample()
    rows = bench_population.summarize(runs, populations)
    for row in rows:
      row.update(measure_task_creation(settings['task'], fixtures[row['population']]))
      row['fixture_seconds'] = round(fixture_seconds[row['population']], 2)
  title = (f'FedAvg on {settings["task"]}, generated StackOverflow fixtures '
           f'({settings["clients_per_round"]} users/round, {settings["rounds"]} rounds, '
           f'{settings["repeats"]} runs each; median and quartiles)')
  bench_common.publish(
      Path(FLAGS.results_dir), benchmark='suite_population', settings=settings, rows=rows,
      table=bench_population.table(rows), title=title, load=load,
      extra={'runs': runs, 'runs_dir': str(runs_dir)},
      plot=lambda path: bench_population.plot(rows, path, title=title), plot_name='population.png')

if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
