"""Remote execution: seconds per round on a separately started TFF worker against a local one.

The recipes run their computations on TFF's C++ worker. By default the recipe starts it
as a child process; with `--tff_worker=host:port` it uses one started elsewhere with
`python -m scripts.start_worker --port=N` (core/runtime.py, `use_remote_worker`).
This benchmark runs the same FedAvg process (the recipes' plumbing: `experiment.Setup`,
`training_loop.ClientDatasets`, `process.next`) round by round on both, alternating
who goes first, and reports the remote/local ratio of seconds per round.

By default the "remote" worker is started here, on localhost, so the ratio shows what
the remote mode itself costs (the connection path, a worker that is not our child).
Point `--tff_worker` at a worker on another machine to measure a real network; each
round sends the server state and the sampled clients' data there (the "payload" column
estimates those bytes) and brings the new state back.

  python -m scripts.bench_remote                          # localhost worker (about 2 minutes)
  python -m scripts.bench_remote --tff_worker=bighost:8000
  python -m scripts.bench_remote --smoke                  # a tiny wiring check (tests)

Outputs (default docs/benchmarks/remote/): results.json, results.csv, table.md, remote.png.
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
from core.errors import UserError
from recipes import cli
from recipes import experiment
from recipes import training_loop
from scripts import bench_common
from scripts import bench_timing

tff = runtime.import_tff()

_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny settings (synthetic task, tiny model, 2 rounds): a wiring check.')
_TFF_WORKER = flags.DEFINE_string(
    'tff_worker', None, 'host:port of a running worker to measure; default: start one on localhost.')
runtime.register_worker_flag_validator('tff_worker')
_ROUNDS = flags.DEFINE_integer('rounds', 10, 'Timed rounds on each worker.', lower_bound=1)
_WARMUP_ROUNDS = flags.DEFINE_integer('warmup_rounds', 2, 'Untimed rounds first.', lower_bound=0)
_CLIENTS_PER_ROUND = flags.DEFINE_integer('clients_per_round', 10, 'Clients per round.',
                                          lower_bound=1)
_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 100, 'mnist_digits clients (IID split).',
                                    lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 20, 'Local batch size.', lower_bound=1)
_MODEL = flags.DEFINE_enum('model', 'cnn', list(tasks.models.MODELS), 'Model.')
_RESULTS_DIR = flags.DEFINE_string(
    'results_dir', str(bench_common.RESULTS_ROOT / 'remote'), 'Where results go.')


def validate_flags() -> None:
  """Checks what the flags' bounds cannot express."""
  if not _RESULTS_DIR.value:
    raise UserError('--results_dir must name a directory')
  if _CLIENTS_PER_ROUND.value > _NUM_CLIENTS.value:
    raise UserError(f'--clients_per_round={_CLIENTS_PER_ROUND.value} exceeds --num_clients='
                    f'{_NUM_CLIENTS.value}')

SMOKE_SETTINGS = {'task': 'synthetic', 'model': 'tiny', 'num_clients': 20,
                  'clients_per_round': 2, 'batch_size': 4, 'rounds': 2, 'warmup_rounds': 1}


class LocalhostWorker:
  """A worker started like `python -m scripts.start_worker`, in its own session; stops on exit."""

  def __init__(self) -> None:
    self.port = portpicker.pick_unused_port()
    self.process = subprocess.Popen(
        runtime.worker_command(self.port, runtime.available_cores()), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    self.address = f'localhost:{self.port}'

  def __enter__(self) -> 'LocalhostWorker':
    return self

  def __exit__(self, *exc: Any) -> None:
    self.process.send_signal(signal.SIGINT)
    try:
      self.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()


def _payload_mb(model_weights: Any, task: tasks.Task, client_ids: Sequence[str]) -> float:
  """About what one round sends: the model weights and the sampled clients' examples."""
  total = sum(np.asarray(w).nbytes for w in (*model_weights.trainable, *model_weights.non_trainable))
  for cid in client_ids:
    for tensor in task.train_data.create_tf_dataset_for_client(cid).batch(10**7).get_single_element():
      total += tensor.numpy().nbytes
  return total / 2**20


def measure(settings: dict[str, Any], address: str, load: bench_common.LoadMonitor) -> dict[str, Any]:
  """Alternating rounds on the local worker and on the one at `address`."""
  task = tasks.create_task(
      settings['task'], model=settings['model'], num_clients=settings['num_clients'],
      partition='iid', client_spec=tasks.ClientSpec(num_epochs=1, batch_size=settings['batch_size']))
  setup = experiment.Setup(
      task=training_loop.for_learning_process(task), weighted=True,
      client_optimizer=tff.learning.optimizers.build_sgdm(0.05),
      server_optimizer=tff.learning.optimizers.build_sgdm(1.0),
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
      _aggregator_fn=lambda weighted: tff.aggregators.MeanFactory())
  process = tff.learning.algorithms.build_weighted_fed_avg(setup.task.model_fn, **setup.builder_args())
  initial_weights = training_loop.initial_model_weights(task)
  contexts = {'local': tff.framework.get_context_stack().current}
  known = runtime.worker_pids(os.getpid())
  contexts['remote'] = runtime.use_remote_worker(address)
  states = {}
  for name, context in contexts.items():
    tff.framework.set_default_context(context)
    states[name] = process.set_model_weights(process.initialize(), initial_weights)
  local_workers = set(runtime.worker_pids(os.getpid())) - set(known)

  datasets = training_loop.ClientDatasets(task)
  client_ids = list(task.train_data.client_ids)
  times: dict[str, list[float]] = {name: [] for name in contexts}
  for round_num in range(1, settings['warmup_rounds'] + settings['rounds'] + 1):
    sampled = training_loop.sample_clients(client_ids, settings['clients_per_round'], 0, round_num)
    for name in bench_timing.rotate(list(contexts), round_num):
      tff.framework.set_default_context(contexts[name])
      start = time.perf_counter()
      states[name] = process.next(states[name], datasets(sampled)).state
      if round_num > settings['warmup_rounds']:
        times[name].append(time.perf_counter() - start)
    load.sample()
    print(f'round {round_num}: ' + ', '.join(f'{n} {t[-1]:.3f} s' for n, t in times.items() if t),
          flush=True)
  payload = _payload_mb(process.get_model_weights(states['local']), task, sampled)
  # Only the local context may have started a worker of ours.
  contexts['remote'] = None
  tff.framework.set_default_context(contexts['local'])
  del states
  gc.collect()
  return {'times': times, 'payload_mb': payload, 'local_workers_started': len(local_workers)}


def plot(times: dict[str, list[float]], path: Path, *, title: str) -> None:
  bench_common.plot_lines(
      {name: (list(range(1, len(values) + 1)), values) for name, values in times.items()},
      path, title=title, ylabel='seconds per round')


COLUMNS = [
    ('worker', 'worker', ''),
    ('address', 'address', ''),
    ('seconds_text', 's/round: median [quartiles]', ''),
    ('best_seconds', 'best round s', '.3f'),
    ('ratio_text', 'remote/local per round: median [quartiles]', ''),
    ('payload_mb_per_round', 'payload MB/round', '.1f'),
]


def main(argv: Sequence[str]) -> None:
  del argv
  settings = {
      'task': 'mnist_digits', 'model': _MODEL.value, 'num_clients': _NUM_CLIENTS.value,
      'clients_per_round': _CLIENTS_PER_ROUND.value, 'batch_size': _BATCH_SIZE.value,
      'rounds': _ROUNDS.value, 'warmup_rounds': _WARMUP_ROUNDS.value,
  }
  if _SMOKE.value:
    settings.update(SMOKE_SETTINGS)
  settings.update({'partition': 'iid', 'client_epochs': 1, 'smoke': _SMOKE.value,
                   'worker': _TFF_WORKER.value or 'started on localhost by the benchmark'})
  load = bench_common.LoadMonitor()
  if _TFF_WORKER.value:
    address = _TFF_WORKER.value
    measured = measure(settings, address, load)
  else:
    with LocalhostWorker() as worker:
      address = worker.address
      measured = measure(settings, address, load)
  times = measured['times']
  ratios = [r / l for r, l in zip(times['remote'], times['local'])]
  rows = []
  for name in ('local', 'remote'):
    seconds = bench_timing.spread(times[name])
    rows.append({
        'worker': name,
        'address': 'child of this process' if name == 'local' else address,
        'seconds_per_round_median': seconds['median'],
        'seconds_per_round_p25': seconds['p25'],
        'seconds_per_round_p75': seconds['p75'],
        'seconds_text': bench_timing.fmt_spread(seconds, '.3f'),
        'best_seconds': seconds['min'],
        'ratio_remote_over_local_median': bench_timing.spread(ratios)['median'] if name == 'remote' else 1.0,
        'ratio_text': bench_timing.fmt_spread(bench_timing.spread(ratios)) if name == 'remote' else '1.00',
        'payload_mb_per_round': measured['payload_mb'],
        'per_round_seconds': times[name],
    })
  settings['local_workers_started'] = measured['local_workers_started']
  title = (f'FedAvg rounds, local worker vs one at {address}\n'
           f'{settings["clients_per_round"]} clients/round, model {settings["model"]}')
  table = bench_common.markdown_table(rows, COLUMNS)
  results_dir = Path(_RESULTS_DIR.value)
  paths = bench_common.write_results(
      results_dir, benchmark='remote', settings=settings, rows=rows, table=table, load=load)
  plot(times, results_dir / 'remote.png', title=title)
  print(f'\n{title}\n\n{table}\n')
  print(f'results: {paths["json"]}, {paths["csv"]}, {paths["table"]}, {results_dir / "remote.png"}')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
