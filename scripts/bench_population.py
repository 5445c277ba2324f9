"""Population size: start-up time and peak memory of FedAvg with 10^3 to 10^6 clients.

Runs the recipe binary unchanged, as a user would:

  python -m recipes.fed_avg --task=synthetic --num_clients=N --clients_per_round=10 \
      --total_rounds=3 --seed=S

for N in 10^3, 10^4, 10^5, 10^6 (each `--repeats` times, the populations interleaved),
and measures every run from outside:

* start-up seconds: from launching the process to its "training on ..." line (imports,
  building the task and the learning process; the first round starts right after);
* peak memory: the Python process's peak resident set (`ru_maxrss` of the reaped child,
  exact) and its TFF worker's (VmHWM read from /proc every 50 ms until the run ends;
  VmHWM only grows, so the last read is the peak up to 50 ms before the end, when the
  worker is idle); their sum bounds the peak of both together;
* seconds per round (the run's metrics.csv) and the whole process's wall seconds.

Besides, in this process: seconds and bytes (tracemalloc peak) that
`tasks.create_task('synthetic', num_clients=N)` takes, the part of start-up that could
grow with N. The synthetic task generates each client's examples when it is sampled
(tasks/synthetic.py), so none of these should grow with N; before that change the issue
measured 0.86 GiB at 10^3 clients, 3.4 GiB at 10^4 and a process killed at 23 GiB at 10^5.

  python -m scripts.bench_population            # the benchmark (about 10 minutes on 2 cores)
  python -m scripts.bench_population --smoke    # 10^3 and 10^5 clients, 1 round (tests)

Outputs (default docs/benchmarks/population/): results.json, results.csv, table.md,
population.png.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, Sequence

from absl import flags

from core import outputs
from core import runtime
from core.errors import UserError
from recipes import cli
from scripts import bench_common
from scripts import bench_timing

bench_common.define_flags(
    'population', smoke_help='Tiny settings (10^3 and 10^5 clients, 1 round, 1 repeat): a wiring check.',
    rounds=3, rounds_help='Rounds per run (--total_rounds).')
_POPULATIONS = flags.DEFINE_list('populations', ['1000', '10000', '100000', '1000000'],
                                 'Population sizes (--num_clients of the synthetic task) to measure.')
_CLIENTS_PER_ROUND = flags.DEFINE_integer('clients_per_round', 10, 'Clients sampled per round.', lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Runs per population.', lower_bound=1, upper_bound=100)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the task and of client sampling (--seed).', lower_bound=0)
_TIMEOUT = flags.DEFINE_float('timeout_seconds', 900, 'Limit per run.', lower_bound=1.0)

SMOKE_SETTINGS = {'populations': [1_000, 100_000], 'rounds': 1, 'repeats': 1}
_POLL_SECONDS = 0.05
_STARTED_MARKER = ': training on '


def validate_flags() -> None:
  """Checks that bounds cannot express (see recipes.cli.run)."""
  bench_common.validate_flags()
  populations = bench_common.positive_ints(_POPULATIONS.value, 'populations')
  if not flags.FLAGS.smoke and min(populations) < _CLIENTS_PER_ROUND.value:
    raise UserError(f'every population must hold at least --clients_per_round='
                    f'{_CLIENTS_PER_ROUND.value} clients, got {min(populations)}')


def _exited(pid: int) -> bool:
  """Whether child `pid` has exited, without reaping it (its rusage is read later)."""
  return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def measure_run(flags_: Sequence[str], *, timeout: float, what: str) -> dict[str, Any]:
  """Runs `python -m recipes.fed_avg flags_`; returns its start-up time and peak memory.

  Raises:
    UserError: If the run fails or exceeds `timeout` seconds.
  """
  command = [sys.executable, '-m', 'recipes.fed_avg', *flags_]
  started = time.perf_counter()
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=bench_common.ROOT, env=bench_common.subprocess_env(),
                             stdin=subprocess.DEVNULL)
  startup: list[float] = []
  stderr: list[str] = []

  def read_stdout() -> None:
    for line in process.stdout:
      if _STARTED_MARKER in line and not startup:
        startup.append(time.perf_counter() - started)

  readers = [threading.Thread(target=read_stdout, daemon=True),
             threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)]
  for reader in readers:
    reader.start()
  worker_peak_kib: dict[int, float] = {}
  try:
    while not _exited(process.pid):
      if time.perf_counter() - started > timeout:
        process.kill()
        raise UserError(f'{what} did not finish within {timeout:.0f} s')
      for pid in runtime.worker_pids(process.pid):
        try:
          worker_peak_kib[pid] = bench_timing.memory_mib(pid) * 1024
        except (OSError, ValueError):  # The worker ended between listing and reading.
          pass
      time.sleep(_POLL_SECONDS)
  finally:
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
      reader.join(timeout=10)
  seconds = time.perf_counter() - started
  if process.returncode != 0:
    lines = [l for l in ''.join(stderr).splitlines() if l.strip()]
    raise UserError(f'{what} failed with exit code {process.returncode}: '
                    f'{lines[-1] if lines else "(no output)"}')
  if len(worker_peak_kib) != 1:
    raise UserError(f'{what}: expected one TFF worker, saw {len(worker_peak_kib)}')
  python_mib = usage.ru_maxrss / 1024  # Linux reports KiB.
  worker_mib = next(iter(worker_peak_kib.values())) / 1024
  return {
      'startup_seconds': round(startup[0], 3) if startup else None,
      'process_seconds': round(seconds, 3),
      'python_peak_mib': round(python_mib, 1),
      'worker_peak_mib': round(worker_mib, 1),
      'peak_mib': round(python_mib + worker_mib, 1),
  }


def measure_task_creation(num_clients: int, seed: int) -> dict[str, Any]:
  """Seconds and traced Python allocations (peak) of creating the synthetic task here.

  Measured after one warm-up creation with the same settings, which traces the task's
  example generator once (a cost that does not depend on `num_clients`).
  """
  import tasks  # pylint: disable=g-import-not-at-top  # TF only when measuring.

  tasks.create_task('synthetic', num_clients=10, seed=seed)  # Warm up TF's first calls.
  tracemalloc.start()
  started = time.perf_counter()
  task = tasks.create_task('synthetic', num_clients=num_clients, seed=seed, partition='shards')
  seconds = time.perf_counter() - started
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  if len(task.train_data.client_ids) != num_clients:
    raise UserError(f'the synthetic task has {len(task.train_data.client_ids)} clients, not {num_clients}')
  return {'create_task_seconds': round(seconds, 4), 'create_task_peak_kib': round(peak / 1024, 1)}


def _one_run(population: int, repeat: int, settings: dict[str, Any], runs_dir: Path) -> dict[str, Any]:
  name = f'n{population}-r{repeat}'
  flags_ = ['--task=synthetic', f'--num_clients={population}',
            f'--clients_per_round={settings["clients_per_round"]}',
            f'--total_rounds={settings["rounds"]}', f'--rounds_per_eval={settings["rounds"]}',
            f'--seed={settings["seed"]}', '--progress=false',
            f'--root_output_dir={runs_dir}', f'--experiment_name={name}']
  measured = measure_run(flags_, timeout=settings['timeout_seconds'], what=f'fed_avg ({name})')
  out = runs_dir / name
  rows = outputs.read_csv(out / 'metrics.csv')
  round_seconds = [float(r['round_seconds']) for r in rows]
  return {
      'population': population, 'repeat': repeat, **measured,
      'rounds': len(rows),
      'median_round_seconds': round(bench_timing.spread(round_seconds)['median'], 3),
      'final_test_accuracy': float(rows[-1]['test_accuracy']) if rows[-1].get('test_accuracy') else None,
  }


def summarize(runs: Sequence[dict[str, Any]], populations: Sequence[int]) -> list[dict[str, Any]]:
  """Per population: median and quartiles of every measured figure, and the peak ratio."""
  keys = ('startup_seconds', 'process_seconds', 'median_round_seconds', 'python_peak_mib',
          'worker_peak_mib', 'peak_mib')
  rows = []
  for population in populations:
    mine = [r for r in runs if r['population'] == population]
    row: dict[str, Any] = {'population': population, 'runs': len(mine)}
    for key in keys:
      values = [r[key] for r in mine if r.get(key) is not None]
      if values:
        stats = bench_timing.spread(values)
        row.update({key: round(stats['median'], 3), f'{key}_p25': round(stats['p25'], 3),
                    f'{key}_p75': round(stats['p75'], 3), f'{key}_min': round(stats['min'], 3),
                    f'{key}_max': round(stats['max'], 3)})
    rows.append(row)
  smallest = rows[0]['peak_mib']
  for row in rows:
    row['peak_ratio_vs_smallest'] = round(row['peak_mib'] / smallest, 3)
  return rows


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
  if row.get(key) is None:
    return '-'
  if row['runs'] > 1 and f'{key}_p25' in row:
    return f'{row[key]:{fmt}} [{row[f"{key}_p25"]:{fmt}}-{row[f"{key}_p75"]:{fmt}}]'
  return f'{row[key]:{fmt}}'


def table(rows: Sequence[dict[str, Any]]) -> str:
  """Markdown: medians with [quartiles] over the repeats."""
  shown = [{
      'population': f'{row["population"]:,}',
      'runs': row['runs'],
      'create_task': f'{row["create_task_seconds"]:.3f} s, {row["create_task_peak_kib"]:.0f} KiB',
      'startup': _cell(row, 'startup_seconds', '.1f'),
      'round': _cell(row, 'median_round_seconds', '.2f'),
      'python': _cell(row, 'python_peak_mib', '.0f'),
      'worker': _cell(row, 'worker_peak_mib', '.0f'),
      'peak': _cell(row, 'peak_mib', '.0f'),
      'ratio': f'{row["peak_ratio_vs_smallest"]:.2f}x',
  } for row in rows]
  return bench_common.markdown_table(shown, [
      ('population', 'clients', ''), ('runs', 'runs', ''),
      ('create_task', 'create_task (in-process)', ''), ('startup', 'start-up s', ''),
      ('round', 's/round', ''), ('python', 'Python peak MiB', ''),
      ('worker', 'worker peak MiB', ''), ('peak', 'peak MiB (sum)', ''),
      ('ratio', 'peak vs smallest', '')])


def plot(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> None:
  """Peak memory and start-up seconds against the population (log axis), with quartiles."""
  xs = [r['population'] for r in rows]

  def series(ax, key: str, label: str, marker: str) -> None:
    ys = [r[key] for r in rows]
    low = [r[key] - r.get(f'{key}_p25', r[key]) for r in rows]
    high = [r.get(f'{key}_p75', r[key]) - r[key] for r in rows]
    ax.errorbar(xs, ys, yerr=[low, high], marker=marker, capsize=3, label=label)

  with bench_common.figure(path, title=title, columns=2, size=(11, 4.5)) as axes:
    memory, startup = axes[0]
    series(memory, 'peak_mib', 'Python + worker (sum of peaks)', 'o')
    series(memory, 'python_peak_mib', 'Python process', 's')
    series(memory, 'worker_peak_mib', 'TFF worker', '^')
    smallest = rows[0]['peak_mib']
    memory.axhline(2 * smallest, color='gray', linestyle='--', linewidth=1,
                   label=f'2x the {rows[0]["population"]:,}-client peak')
    memory.set_ylabel('peak resident memory, MiB')
    series(startup, 'startup_seconds', 'start-up (launch to first round)', 'o')
    series(startup, 'process_seconds', 'whole process', 's')
    startup.set_ylabel('seconds')
    for ax in (memory, startup):
      ax.set_ylim(bottom=0)
      ax.set_xscale('log')
      ax.set_xlabel('clients in the population')
      ax.grid(alpha=0.3, which='both')
      ax.legend(fontsize=7, loc='lower right')


def main(argv: Sequence[str]) -> None:
  del argv
  settings = bench_common.settings_from_flags({
      'recipe': 'fed_avg', 'task': 'synthetic', 'partition': 'shards (the default)',
      'model': 'tiny (the default)',
      'populations': bench_common.positive_ints(_POPULATIONS.value, 'populations'),
      'clients_per_round': _CLIENTS_PER_ROUND.value, 'rounds': flags.FLAGS.rounds,
      'repeats': _REPEATS.value, 'seed': _SEED.value, 'timeout_seconds': _TIMEOUT.value,
  }, SMOKE_SETTINGS)
  populations = sorted(set(settings['populations']))
  if min(populations) < settings['clients_per_round']:
    raise UserError(f'every population must hold at least {settings["clients_per_round"]} clients')
  settings['populations'] = populations
  runs_dir = bench_common.run_directory(bench_common.RUNS_ROOT / 'population')
  load = bench_common.LoadMonitor()

  runs = []
  # Interleaved (10^3, 10^4, ..., then again): a burst of load hits every population.
  for repeat in range(settings['repeats']):
    for population in populations:
      print(f'population: {population:,} clients, run {repeat + 1}/{settings["repeats"]}', flush=True)
      runs.append(_one_run(population, repeat, settings, runs_dir))
      load.sample()
  rows = summarize(runs, populations)
  for row in rows:
    row.update(measure_task_creation(row['population'], settings['seed']))

  title = (f'FedAvg on synthetic ({settings["clients_per_round"]} clients/round, '
           f'{settings["rounds"]} rounds, {settings["repeats"]} runs each; median and quartiles)')
  bench_common.publish(
      Path(flags.FLAGS.results_dir), benchmark='population', settings=settings, rows=rows,
      table=table(rows), title=title, load=load, extra={'runs': runs, 'runs_dir': str(runs_dir)},
      plot=lambda path: plot(rows, path, title=title), plot_name='population.png')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
