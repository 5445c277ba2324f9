"""Several TFF workers: seconds per round and peak memory per worker, for 1, 2, 3 workers.

For every (number of workers, clients per round) this starts fresh workers with
`scripts/start_worker.py`'s command on localhost ports, points TFF at them the way the
recipes' `--tff_worker=a,b,...` does (`core.tff_workers.use_workers`: one worker runs
everything, several split each round's clients), and times FedAvg rounds of the recipes'
plumbing (`experiment.Setup`, `training_loop.ClientDatasets`, `process.next`) on the same
sampled clients. Per configuration it records the wall seconds of each round, the CPU
seconds of this driver process and of every worker, and every worker's peak resident
memory (VmHWM; fresh workers per configuration, so the peak is this configuration's).

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
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from absl import flags
import numpy as np
import portpicker

import tasks
from core import runtime
from core import tff_workers
from core.errors import UserError
from recipes import cli
from recipes import experiment
from recipes import training_loop
from scripts import bench_common
from scripts import bench_timing

tff = runtime.import_tff()

_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny settings (2 configurations, 1 round each): a wiring check.')
_WORKER_COUNTS = flags.DEFINE_list('worker_counts', ['1', '2', '3'], 'Numbers of workers to compare.')
_CLIENTS = flags.DEFINE_list('clients_per_round_sweep', ['10', '100', '1000'], 'Clients per round to sweep.')
_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 1000, 'Synthetic clients (16 examples each).',
                                    lower_bound=1)
_MODEL = flags.DEFINE_enum('model', 'tiny', list(tasks.models.MODELS), 'Model.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed rounds per configuration.', lower_bound=1)
_WARMUP_ROUNDS = flags.DEFINE_integer('warmup_rounds', 1, 'Untimed rounds first (compilation).',
                                      lower_bound=0)
_RESULTS_DIR = flags.DEFINE_string(
    'results_dir', str(bench_common.RESULTS_ROOT / 'workers'), 'Where results go.')

SMOKE_SETTINGS = {'worker_counts': [1, 2], 'clients_per_round': [4], 'num_clients': 8,
                  'rounds': 1, 'warmup_rounds': 1}


def _positive_ints(values: Sequence[str], flag: str) -> list[int]:
  try:
    numbers = [int(v) for v in values]
  except ValueError:
    raise UserError(f'--{flag} must be a list of positive integers, got {",".join(values)}') from None
  if not numbers or min(numbers) < 1:
    raise UserError(f'--{flag} must be a list of positive integers, got {",".join(values)}')
  return numbers


def validate_flags() -> None:
  """Checks what the flags' bounds cannot express."""
  _positive_ints(_WORKER_COUNTS.value, 'worker_counts')
  clients = _positive_ints(_CLIENTS.value, 'clients_per_round_sweep')
  if max(clients) > _NUM_CLIENTS.value:
    raise UserError(f'--clients_per_round_sweep goes up to {max(clients)}, more than '
                    f'--num_clients={_NUM_CLIENTS.value}')
  if not _RESULTS_DIR.value:
    raise UserError('--results_dir must name a directory')


class Workers:
  """`count` workers started as `scripts/start_worker.py` starts one; stopped on exit."""

  def __init__(self, count: int) -> None:
    self.processes = []
    self.addresses = []
    for _ in range(count):
      port = portpicker.pick_unused_port()
      self.processes.append(subprocess.Popen(
          runtime.worker_command(port, runtime.available_cores()), stdin=subprocess.DEVNULL,
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)))
      self.addresses.append(f'localhost:{port}')

  def __enter__(self) -> 'Workers':
    return self

  def __exit__(self, *exc: Any) -> None:
    for process in self.processes:
      process.send_signal(signal.SIGINT)
    for process in self.processes:
      try:
        process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure(settings: dict[str, Any], task: tasks.Task, process: Any, initial_weights: Any,
            count: int, clients: int, load: bench_common.LoadMonitor) -> dict[str, Any]:
  """Times rounds of `process` with `clients` per round on `count` fresh workers."""
  client_ids = list(task.train_data.client_ids)
  datasets = training_loop.ClientDatasets(task)
  with Workers(count) as workers:
    tff_workers.use_workers(workers.addresses, connect_timeout_seconds=60)
    pids = [p.pid for p in workers.processes]
    state = process.set_model_weights(process.initialize(), initial_weights)
    walls, driver_cpu, worker_cpu = [], [], []
    for round_num in range(1, settings['warmup_rounds'] + settings['rounds'] + 1):
      sampled = training_loop.sample_clients(client_ids, clients, 0, round_num)
      data = datasets(sampled)  # Built before the clock starts, as the recipes cache them.
      before = [bench_timing.cpu_seconds(p) for p in pids]
      output, timing = bench_timing.timed(lambda: process.next(state, data))
      state = output.state
      if round_num > settings['warmup_rounds']:
        walls.append(timing.wall)
        driver_cpu.append(timing.cpu)
        worker_cpu.append(sum(bench_timing.cpu_seconds(p) - b for p, b in zip(pids, before)))
      load.sample()
    peaks = [bench_timing.memory_mib(p) for p in pids]
    # Back to TFF's default context before these workers stop.
    tff.backends.native.set_sync_local_cpp_execution_context(
        max_concurrent_computation_calls=runtime.available_cores())
  loss = float(output.metrics['client_work']['train']['loss'])
  seconds = bench_timing.spread(walls)
  row = {
      'workers': count,
      'clients_per_round': clients,
      'seconds_per_round_median': seconds['median'],
      'seconds_per_round_p25': seconds['p25'],
      'seconds_per_round_p75': seconds['p75'],
      'seconds_text': bench_timing.fmt_spread(seconds, '.3f'),
      'driver_cpu_seconds_median': float(np.median(driver_cpu)),
      'workers_cpu_seconds_median': float(np.median(worker_cpu)),
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
  counts = sorted({r['workers'] for r in rows})

  def curves(key: str) -> dict[str, tuple[list[float], list[float]]]:
    return {f'{n} worker{"s" if n > 1 else ""}': (
        [r['clients_per_round'] for r in rows if r['workers'] == n],
        [r[key] for r in rows if r['workers'] == n]) for n in counts}

  plt = bench_common._pyplot()  # pylint: disable=protected-access
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for ax, key, label in ((axes[0], 'seconds_per_round_median', 'seconds per round (median)'),
                         (axes[1], 'worker_peak_mib_max', 'peak memory of the largest worker (MiB)')):
    for name, (xs, ys) in curves(key).items():
      ax.plot(xs, ys, marker='o', label=name)
    ax.set_xscale('log')
    ax.set_xlabel('clients per round')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  bench_common._save(fig, path)  # pylint: disable=protected-access
  plt.close(fig)


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
  settings = {
      'task': 'synthetic', 'model': _MODEL.value, 'num_clients': _NUM_CLIENTS.value,
      'worker_counts': _positive_ints(_WORKER_COUNTS.value, 'worker_counts'),
      'clients_per_round': _positive_ints(_CLIENTS.value, 'clients_per_round_sweep'),
      'rounds': _ROUNDS.value, 'warmup_rounds': _WARMUP_ROUNDS.value, 'batch_size': 16,
  }
  if _SMOKE.value:
    settings.update(SMOKE_SETTINGS)
  settings.update({'smoke': _SMOKE.value, 'partition': 'iid', 'client_epochs': 1,
                   'examples_per_client': 16, 'cores': runtime.available_cores()})
  load = bench_common.LoadMonitor()
  task = tasks.create_task(
      'synthetic', model=settings['model'], num_clients=settings['num_clients'], partition='iid',
      client_spec=tasks.ClientSpec(num_epochs=1, batch_size=settings['batch_size']))
  setup = experiment.Setup(
      task=training_loop.for_learning_process(task), weighted=True,
      client_optimizer=tff.learning.optimizers.build_sgdm(0.1),
      server_optimizer=tff.learning.optimizers.build_sgdm(1.0),
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
      _aggregator_fn=lambda weighted: tff.aggregators.MeanFactory())
  process = tff.learning.algorithms.build_weighted_fed_avg(setup.task.model_fn, **setup.builder_args())
  initial_weights = training_loop.initial_model_weights(task)
  rows = []
  for clients in settings['clients_per_round']:
    for count in settings['worker_counts']:
      rows.append(measure(settings, task, process, initial_weights, count, clients, load))
      gc.collect()
  table = bench_common.markdown_table(rows, COLUMNS)
  title = (f'FedAvg on 1-{max(settings["worker_counts"])} localhost TFF workers sharing '
           f'{settings["cores"]} cores; synthetic task, model {settings["model"]}')
  results_dir = Path(_RESULTS_DIR.value)
  paths = bench_common.write_results(
      results_dir, benchmark='workers', settings=settings, rows=rows, table=table, load=load)
  plot(rows, results_dir / 'workers.png', title=title)
  print(f'\n{title}\n\n{table}\n')
  print(f'results: {paths["json"]}, {paths["csv"]}, {paths["table"]}, {results_dir / "workers.png"}')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
