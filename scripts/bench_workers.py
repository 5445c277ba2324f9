"""Several TFF workers: seconds per round and peak memory per worker, for 1, 2, 3 workers.

For every (number of workers, clients per round) this starts fresh workers with
`scripts/start_worker.py`'s command on localhost ports (`scripts/local_workers.py`),
points TFF at them the way the recipes' `--tff_worker=a,b,...` does
(`core.tff_workers.use_workers`: one worker runs everything, several split each
round's clients), and times FedAvg rounds of the recipes'
plumbing (`bench_harness.recipe_process`, `training_loop.ClientDatasets`, `process.next`,
timed by `bench_harness.alternate_rounds`) on the same sampled clients. Per
configuration it records the wall seconds of each round, the CPU seconds of this driver
process and of every worker, and every worker's peak resident memory (VmHWM; fresh
workers per configuration, so the peak is this configuration's).

The task is small on purpose (synthetic images, the `tiny` model, 16 examples per
client), so that 1000 clients per round fit the time: the per-client costs (datasets,
serialization, the merge) are what grows with the cohort. All workers share this
machine's cores, so no speed-up is expected here; the numbers feed the scaling model in
the README ("Running on more machines").

  python -m scripts.bench_workers                 # 1, 2, 3 workers x 10, 100, 1000 clients
  python -m scripts.bench_workers --smoke         # a tiny wiring check (tests)

Outputs (default docs/benchmarks/workers/): results.json, results.csv, table.md, workers.png.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any, Sequence

from absl import flags
import numpy as np

import tasks
from core import runtime
from core import tff_workers
from core.errors import UserError
from recipes import cli
from recipes import training_loop
from scripts import bench_common
from scripts import bench_harness
from scripts import bench_timing
from scripts import local_workers

tff = bench_harness.tff

bench_harness.define_flags(
    'workers', smoke_help='Tiny settings (2 configurations, 1 round each): a wiring check.',
    rounds=3, warmup_rounds=1,
    num_clients=1000, num_clients_help='Synthetic clients (16 examples each).', model='tiny',
    clients_per_round=None, batch_size=None)
_WORKER_COUNTS = flags.DEFINE_list('worker_counts', ['1', '2', '3'], 'Numbers of workers to compare.')
_CLIENTS = flags.DEFINE_list('clients_per_round_sweep', ['10', '100', '1000'], 'Clients per round to sweep.')

SMOKE_SETTINGS = {'worker_counts': [1, 2], 'clients_per_round': [4], 'num_clients': 8,
                  'rounds': 1, 'warmup_rounds': 1}


def validate_flags() -> None:
  """Checks what the flags' bounds cannot express."""
  bench_common.validate_flags()
  bench_common.positive_ints(_WORKER_COUNTS.value, 'worker_counts')
  clients = bench_common.positive_ints(_CLIENTS.value, 'clients_per_round_sweep')
  if max(clients) > flags.FLAGS.num_clients:
    raise UserError(f'--clients_per_round_sweep goes up to {max(clients)}, more than '
                    f'--num_clients={flags.FLAGS.num_clients}')


def measure(settings: dict[str, Any], task: tasks.Task, process: Any, initial_weights: Any,
            count: int, clients: int, load: bench_common.LoadMonitor) -> dict[str, Any]:
  """Times rounds of `process` with `clients` per round on `count` fresh workers."""
  with local_workers.started(count) as workers:
    # Datasets built before the clock starts, as the recipes cache them.
    recipes = bench_harness.FederatedContender(
        'recipes', process, training_loop.ClientDatasets(task), initial_weights=initial_weights,
        context=tff_workers.use_workers([w.address for w in workers], connect_timeout_seconds=60),
        untimed_datasets=True)
    recipes.start()
    recipes.worker_pids = tuple(w.pid for w in workers)
    times = bench_harness.alternate_rounds(
        [recipes], list(task.train_data.client_ids), clients_per_round=clients,
        rounds=settings['rounds'], warmup_rounds=settings['warmup_rounds'], load=load)[recipes.name]
    peaks = [bench_timing.memory_mib(w.pid) for w in workers]
    # Back to TFF's default context before these workers stop.
    tff.backends.native.set_sync_local_cpp_execution_context(
        max_concurrent_computation_calls=runtime.available_cores())
  loss = float(recipes.output.metrics['client_work']['train']['loss'])
  walls = [t.wall for t in times]
  seconds = bench_timing.spread(walls)
  row = {
      'workers': count,
      'clients_per_round': clients,
      'seconds_per_round_median': seconds['median'],
      'seconds_per_round_p25': seconds['p25'],
      'seconds_per_round_p75': seconds['p75'],
      'seconds_text': bench_timing.fmt_spread(seconds, '.3f'),
      'driver_cpu_seconds_median': float(np.median([t.cpu for t in times])),
      'workers_cpu_seconds_median': float(np.median([t.worker_cpu for t in times])),
      'worker_peak_mib': [round(p, 1) for p in peaks],
      'worker_peak_mib_max': round(max(peaks), 1),
      'worker_peak_mib_mean': round(float(np.mean(peaks)), 1),
      'driver_rss_mib': round(bench_timing.memory_mib(field='VmRSS'), 1),
      'last_train_loss': loss,
      'per_round_seconds': walls,
      'load_1min': round(os.getloadavg()[0], 2),
  }
  print(f'{count} worker(s), {clients} clients/round: {row["seconds_text"]} s/round, worker peak '
        f'{row["worker_peak_mib"]} MiB, driver CPU {row["driver_cpu_seconds_median"]:.2f} s, '
        f'workers CPU {row["workers_cpu_seconds_median"]:.2f} s (load {row["load_1min"]})',
        flush=True)
  return row


def plot(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> None:
  """Seconds per round and the largest worker's peak memory against clients per round."""
  counts = sorted({r['workers'] for r in rows})
  with bench_common.figure(path, title=title, columns=2, size=(12, 4.5)) as axes:
    for ax, key, label in ((axes[0][0], 'seconds_per_round_median', 'seconds per round (median)'),
                           (axes[0][1], 'worker_peak_mib_max', 'peak memory of the largest worker (MiB)')):
      for n in counts:
        mine = [r for r in rows if r['workers'] == n]
        ax.plot([r['clients_per_round'] for r in mine], [r[key] for r in mine], marker='o',
                label=f'{n} worker{"s" if n > 1 else ""}')
      ax.set_xscale('log')
      ax.set_xlabel('clients per round')
      ax.set_ylabel(label)
      ax.grid(alpha=0.3, which='both')
      ax.legend(fontsize=8)


COLUMNS = [
    ('workers', 'workers', ''),
    ('clients_per_round', 'clients/round', ''),
    ('seconds_text', 's/round: median [quartiles]', ''),
    ('driver_cpu_seconds_median', 'driver CPU s/round', '.2f'),
    ('workers_cpu_seconds_median', 'workers CPU s/round (sum)', '.2f'),
    ('worker_peak_mib', 'peak MiB per worker', ''),
    ('load_1min', 'load (1 min)', '.1f'),
]


def main(argv: Sequence[str]) -> None:
  del argv
  settings = bench_common.settings_from_flags({
      'task': 'synthetic', 'model': flags.FLAGS.model, 'num_clients': flags.FLAGS.num_clients,
      'worker_counts': bench_common.positive_ints(_WORKER_COUNTS.value, 'worker_counts'),
      'clients_per_round': bench_common.positive_ints(_CLIENTS.value, 'clients_per_round_sweep'),
      'rounds': flags.FLAGS.rounds, 'warmup_rounds': flags.FLAGS.warmup_rounds, 'batch_size': 16,
  }, SMOKE_SETTINGS, partition='iid', client_epochs=1, examples_per_client=16,
      cores=runtime.available_cores())
  load = bench_common.LoadMonitor()
  task = bench_harness.create_task(settings)
  process = bench_harness.recipe_process(task, learning_rate=0.1)
  initial_weights = training_loop.initial_model_weights(task)
  rows = []
  for clients in settings['clients_per_round']:
    for count in settings['worker_counts']:
      rows.append(measure(settings, task, process, initial_weights, count, clients, load))
      gc.collect()
  title = (f'FedAvg on 1-{max(settings["worker_counts"])} localhost TFF workers sharing '
           f'{settings["cores"]} cores; synthetic task, model {settings["model"]}')
  bench_common.publish(
      Path(flags.FLAGS.results_dir), benchmark='workers', settings=settings, rows=rows,
      table=bench_common.markdown_table(rows, COLUMNS), title=title, load=load,
      plot=lambda path: plot(rows, path, title=title), plot_name='workers.png')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
