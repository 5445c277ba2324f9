"""Remote execution: seconds per round on a separately started TFF worker against a local one.

The recipes run their computations on TFF's C++ worker. By default the recipe starts it
as a child process; with `--tff_worker=host:port` it uses one started elsewhere with
`python -m scripts.start_worker --port=N` (core/runtime.py, `use_remote_worker`).
This benchmark runs the same FedAvg process (the recipes' plumbing:
`bench_harness.recipe_process`, `training_loop.ClientDatasets`, `process.next`) round by
round on both, alternating who goes first (`bench_harness.alternate_rounds`), and reports
the remote/local ratio of seconds per round.

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
from pathlib import Path
from typing import Any, Sequence

from absl import flags
import numpy as np

import tasks
from core import runtime
from recipes import cli
from recipes import training_loop
from scripts import bench_common
from scripts import bench_harness
from scripts import bench_timing
from scripts import local_workers

tff = bench_harness.tff

bench_harness.define_flags(
    'remote', smoke_help='Tiny settings (synthetic task, tiny model, 2 rounds): a wiring check.',
    rounds=10, rounds_help='Timed rounds on each worker.', warmup_rounds=2,
    num_clients=100, num_clients_help='mnist_digits clients (IID split).')
_TFF_WORKER = flags.DEFINE_string(
    'tff_worker', None, 'host:port of a running worker to measure; default: start one on localhost.')
runtime.register_worker_flag_validator('tff_worker')

validate_flags = bench_harness.validate_flags  # Run right after parsing (tests/flag_walker.py too).


def _payload_mb(model_weights: Any, task: tasks.Task, client_ids: Sequence[str]) -> float:
  """About what one round sends: the model weights and the sampled clients' examples."""
  total = sum(np.asarray(w).nbytes for w in (*model_weights.trainable, *model_weights.non_trainable))
  for cid in client_ids:
    for tensor in task.train_data.create_tf_dataset_for_client(cid).batch(10**7).get_single_element():
      total += tensor.numpy().nbytes
  return total / 2**20


def measure(settings: dict[str, Any], address: str, load: bench_common.LoadMonitor) -> dict[str, Any]:
  """Alternating rounds on the local worker and on the one at `address`."""
  task = bench_harness.create_task(settings)
  process = bench_harness.recipe_process(task)
  initial_weights = training_loop.initial_model_weights(task)
  datasets = training_loop.ClientDatasets(task)
  local_context = tff.framework.get_context_stack().current
  known = runtime.worker_pids(os.getpid())
  contenders = [
      bench_harness.FederatedContender('local', process, datasets, context=local_context,
                                       initial_weights=initial_weights),
      bench_harness.FederatedContender('remote', process, datasets,
                                       context=runtime.use_remote_worker(address),
                                       initial_weights=initial_weights),
  ]
  for contender in contenders:
    contender.start()
  local_workers_started = set(runtime.worker_pids(os.getpid())) - set(known)
  client_ids = list(task.train_data.client_ids)
  timings = bench_harness.alternate_rounds(
      contenders, client_ids, clients_per_round=settings['clients_per_round'],
      rounds=settings['rounds'], warmup_rounds=settings['warmup_rounds'], load=load)
  last_clients = training_loop.sample_clients(
      client_ids, settings['clients_per_round'], 0, settings['warmup_rounds'] + settings['rounds'])
  payload = _payload_mb(process.get_model_weights(contenders[0].state), task, last_clients)
  # Only the local context may have started a worker of ours: back to it, then let the
  # remote context go.
  tff.framework.set_default_context(local_context)
  del contenders
  gc.collect()
  times = {name: [t.wall for t in timing] for name, timing in timings.items()}
  return {'times': times, 'payload_mb': payload, 'local_workers_started': len(local_workers_started)}


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
  settings = bench_harness.settings_from_flags(
      worker=_TFF_WORKER.value or 'started on localhost by the benchmark')
  load = bench_common.LoadMonitor()
  if _TFF_WORKER.value:
    address = _TFF_WORKER.value
    measured = measure(settings, address, load)
  else:
    with local_workers.LocalWorker() as worker:
      address = worker.address
      measured = measure(settings, address, load)
  times = measured['times']
  ratios = bench_timing.spread([r / l for r, l in zip(times['remote'], times['local'])])
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
        'ratio_remote_over_local_median': ratios['median'] if name == 'remote' else 1.0,
        'ratio_text': bench_timing.fmt_spread(ratios) if name == 'remote' else '1.00',
        'payload_mb_per_round': measured['payload_mb'],
        'per_round_seconds': times[name],
    })
  settings['local_workers_started'] = measured['local_workers_started']
  title = (f'FedAvg rounds, local worker vs one at {address}\n'
           f'{settings["clients_per_round"]} clients/round, model {settings["model"]}')
  bench_common.publish(
      Path(flags.FLAGS.results_dir), benchmark='remote', settings=settings, rows=rows,
      table=bench_common.markdown_table(rows, COLUMNS), title=title, load=load,
      plot=lambda path: plot(times, path, title=title), plot_name='remote.png')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
