"""Simulation overhead: examples per second of a FedAvg round against Keras `fit`.

One FedAvg round (10 clients x 80 examples of `mnist_digits`, McMahan's CNN, batch 20,
one local epoch) trains on 800 examples; so does one epoch of centralized Keras `fit` on
the same 800 examples with the same model, batch size and SGD step. The ratio of their
examples per second says what the federated simulation costs on top of the training.

Contenders take turns round by round on the same sampled clients (warm-up rounds
dropped; who goes first rotates every round: `bench_harness.alternate_rounds`):

  keras_fit       `model.fit(x, y, batch_size, epochs=1, shuffle=True)` on the round's examples
  tff_defaults    raw TFF with its defaults: `build_weighted_fed_avg(task.model_fn, ...)`
                  (DATASET_REDUCE loop), client datasets rebuilt every round, TFF's stock
                  local C++ worker
  recipes         what every recipe runs (`bench_harness.recipe_process`: the process of
                  recipes/fed_avg.py under its default flags): DATASET_ITERATOR loop,
                  `ClientDatasets` (built once per client), the process built from
                  `for_learning_process(task)`, `process.next` on the recipes' worker (one
                  client per core at a time)

`--ablations` adds the steps in between, each adding one change to the previous one:
`iterator` (DATASET_ITERATOR loop), `iterator_cached` (+ ClientDatasets),
`fixed_input_spec` (+ `for_learning_process` without its zero initializers: the training
data no longer rides along in the computation), `no_initializer_draws` (+ the zero
initializers: the recipes' process, still on a worker that trains all clients at once);
`recipes` then adds the recipes' worker, which trains at most one client per core at a
time (core/runtime.py).

  python -m scripts.bench_overhead                  # the benchmark (about 3 minutes)
  python -m scripts.bench_overhead --ablations      # with the intermediate steps
  python -m scripts.bench_overhead --smoke          # a tiny wiring check (tests)

Outputs (default docs/benchmarks/overhead/): results.json, results.csv, table.md,
overhead.png. Every contender runs on its own execution context, hence its own worker.
Ratios are medians of per-round ratios with their quartiles, and the ratio of the best
(least disturbed) rounds; the CPU columns count this process plus the contender's
worker, which other processes' load disturbs less than wall time.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable, Sequence

from absl import flags
import numpy as np

import tasks
from core.errors import UserError
from recipes import cli
from recipes import training_loop
from scripts import bench_common
from scripts import bench_harness
from scripts import bench_timing

tff = bench_harness.tff
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

bench_harness.define_flags(
    'overhead', smoke_help='Tiny settings (synthetic task, tiny model, 2 rounds): a wiring check.',
    rounds=12, rounds_help='Timed rounds per contender.', warmup_rounds=2, num_clients=100,
    num_clients_help='mnist_digits clients, iid: 7,000 examples / this many per client.')
_ABLATIONS = flags.DEFINE_bool('ablations', False, 'Also time the steps between raw TFF and the recipes.')
_ONLY = flags.DEFINE_list('only', None, 'Time only these contenders (Keras always runs: it is the baseline).')
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 0.05, 'Client (and Keras) SGD learning rate (> 0).',
                                     lower_bound=0.0)
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds the partition and client sampling.', lower_bound=0,
                             upper_bound=2**31 - 1)


class KerasFit(bench_harness.Contender):
  """Centralized Keras training on the examples of the sampled clients (the baseline)."""

  name = 'keras_fit'
  description = 'Keras fit: 1 epoch on the same examples, same model, batch and SGD'

  def __init__(self, task: tasks.Task, batch_size: int, learning_rate: float) -> None:
    self._task = task
    self._batch_size = batch_size
    self._model = task.keras_model_fn()
    self._model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])
    self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  def _client_arrays(self, cid: str) -> tuple[np.ndarray, np.ndarray]:
    # The examples as arrays, read once: a Keras user holds the data in memory.
    if cid not in self._arrays:
      dataset = self._task.train_data.create_tf_dataset_for_client(cid)
      x, y = dataset.batch(10**7).get_single_element()
      self._arrays[cid] = (x.numpy(), y.numpy())
    return self._arrays[cid]

  def round(self, client_ids: Sequence[str]) -> None:
    arrays = [self._client_arrays(cid) for cid in client_ids]
    x = np.concatenate([a[0] for a in arrays])
    y = np.concatenate([a[1] for a in arrays])
    self._model.fit(x, y, batch_size=self._batch_size, epochs=1, shuffle=True, verbose=0)


def _rebuilt_each_round(task: tasks.Task) -> Callable[[list[str]], list[Any]]:
  """Raw TFF usage: every round builds the sampled clients' datasets anew."""
  return lambda ids: [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c))
                      for c in ids]


def _stock_context() -> Any:
  """TFF's own local context: a worker that trains all clients of a round at once."""
  return tff.backends.native.create_sync_local_cpp_execution_context(
      max_concurrent_computation_calls=-1)


def build_contenders(task: tasks.Task, *, learning_rate: float, batch_size: int,
                     ablations: bool, only: Sequence[str] | None = None) -> list[Any]:
  """The contenders, started; Keras last, since tracing TFF processes invalidates earlier
  Keras models."""
  contender = bench_harness.FederatedContender
  loops = tff.learning.LoopImplementation

  def raw_process(model_task: tasks.Task, loop: Any) -> Any:
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_task.model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0), loop_implementation=loop)

  raw = raw_process(task, loops.DATASET_REDUCE)
  recipe = bench_harness.recipe_process(task, learning_rate=learning_rate)
  if ablations:
    iterator = raw_process(task, loops.DATASET_ITERATOR)
    fixed_spec = raw_process(
        training_loop.for_learning_process(task, skip_initializer_draws=False),
        loops.DATASET_ITERATOR)
  # After every process is built: tracing one invalidates Keras models made before it.
  initial_weights = training_loop.initial_model_weights(task)
  contenders: list[Any] = [
      contender('tff_defaults', raw, _rebuilt_each_round(task), context=_stock_context(),
                description='raw TFF defaults: DATASET_REDUCE, datasets rebuilt per round'),
      contender('recipes', recipe, training_loop.ClientDatasets(task),
                initial_weights=initial_weights,
                description='the recipes\' plumbing: DATASET_ITERATOR, ClientDatasets, '
                'for_learning_process, one client per core'),
  ]
  if ablations:
    contenders[1:1] = [
        contender('iterator', iterator, _rebuilt_each_round(task), context=_stock_context(),
                  description='+ DATASET_ITERATOR loop'),
        contender('iterator_cached', iterator, training_loop.ClientDatasets(task),
                  context=_stock_context(), description='+ datasets built once per client'),
        contender('fixed_input_spec', fixed_spec, training_loop.ClientDatasets(task),
                  context=_stock_context(),
                  description='+ input spec fixed eagerly (no data in the computation)'),
        contender('no_initializer_draws', recipe, training_loop.ClientDatasets(task),
                  context=_stock_context(), initial_weights=initial_weights,
                  description='+ models start at zero (the recipes\' process)'),
    ]
  if only:
    unknown = set(only) - {c.name for c in contenders}
    if unknown:
      raise UserError(f'--only: unknown contenders {sorted(unknown)}; choose from '
                      f'{[c.name for c in contenders]} (with --ablations for the steps)')
    contenders = [c for c in contenders if c.name in only]
  for federated in contenders:
    federated.start()
  contenders.insert(0, KerasFit(task, batch_size, learning_rate))
  return contenders


def summarize(contenders: Sequence[Any], times: dict[str, list[bench_timing.RoundTime]],
              examples_per_round: float) -> list[dict[str, Any]]:
  """One row per contender: seconds, examples/s and the paired ratios against Keras."""
  keras = times[KerasFit.name]
  rows = []
  for contender in contenders:
    own = times[contender.name]
    walls = [t.wall for t in own]
    ratios = [k.wall / t.wall for k, t in zip(keras, own)]
    cpu_ratios = [k.total_cpu / t.total_cpu for k, t in zip(keras, own)]
    seconds = bench_timing.spread(walls)
    ratio = bench_timing.spread(ratios)
    cpu_ratio = bench_timing.spread(cpu_ratios)
    rows.append({
        'contender': contender.name,
        'description': contender.description,
        'examples_per_round': examples_per_round,
        'rounds_timed': len(own),
        'seconds_per_round_median': seconds['median'],
        'seconds_per_round_p25': seconds['p25'],
        'seconds_per_round_p75': seconds['p75'],
        'examples_per_second': examples_per_round / seconds['median'],
        'ratio_vs_keras_median': ratio['median'],
        'ratio_vs_keras_p25': ratio['p25'],
        'ratio_vs_keras_p75': ratio['p75'],
        'cpu_seconds_per_round_median': float(np.median([t.total_cpu for t in own])),
        'worker_cpu_seconds_per_round_median': float(np.median([t.worker_cpu for t in own])),
        'cpu_ratio_vs_keras_median': cpu_ratio['median'],
        # Least-disturbed rounds (as timeit takes the minimum): on a shared machine the
        # closest to what an idle one would show.
        'best_round_ratio_vs_keras': min(t.wall for t in keras) / seconds['min'],
        'ratio_text': bench_timing.fmt_spread(ratio),
        'per_round_seconds': walls,
        'per_round_ratio_vs_keras': ratios,
    })
  return rows


COLUMNS = [
    ('contender', 'contender', ''),
    ('seconds_per_round_median', 's/round', '.3f'),
    ('examples_per_second', 'examples/s', '.0f'),
    ('ratio_text', 'vs Keras fit: median [quartiles]', ''),
    ('best_round_ratio_vs_keras', 'best rounds vs Keras', '.2f'),
    ('cpu_seconds_per_round_median', 'CPU s/round', '.3f'),
    ('cpu_ratio_vs_keras_median', 'CPU ratio vs Keras', '.2f'),
]


def plot(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> None:
  """Examples/s per contender (bars, quartile whiskers) and the per-round ratios."""
  with bench_common.figure(path, title=title, columns=2, size=(12, 4.5)) as axes:
    bars, ratios = axes[0]
    names = [r['contender'] for r in rows]
    rate = [r['examples_per_second'] for r in rows]
    low = [r['examples_per_round'] / r['seconds_per_round_p75'] for r in rows]
    high = [r['examples_per_round'] / r['seconds_per_round_p25'] for r in rows]
    bars.bar(names, rate, yerr=[np.subtract(rate, low), np.subtract(high, rate)], capsize=4,
             color=['gray'] + ['tab:blue'] * (len(rows) - 1))
    bars.set_ylabel('examples per second (median, quartiles)')
    ratios.boxplot([r['per_round_ratio_vs_keras'] for r in rows[1:]])
    ratios.set_xticks(range(1, len(rows)), [r['contender'] for r in rows[1:]])
    ratios.axhline(1.0, color='black', linestyle='--', linewidth=1)
    ratios.set_ylabel('examples/s relative to Keras fit, per round')
    for ax in (bars, ratios):
      ax.tick_params(axis='x', labelrotation=20, labelsize=8)
      ax.grid(alpha=0.3, axis='y')


CONTENDERS = ('keras_fit', 'tff_defaults', 'iterator', 'iterator_cached', 'fixed_input_spec',
              'no_initializer_draws', 'recipes')


def validate_flags() -> None:
  """Single-flag checks beyond the bounds, right after parsing."""
  bench_harness.validate_flags()
  if _LEARNING_RATE.value <= 0:
    raise UserError(f'--learning_rate must be positive, got {_LEARNING_RATE.value}')
  unknown = sorted(set(_ONLY.value or ()) - set(CONTENDERS))
  if unknown:
    raise UserError(f'unknown --only={",".join(unknown)}; choose from {", ".join(CONTENDERS)}')


def main(argv: Sequence[str]) -> None:
  del argv
  settings = bench_harness.settings_from_flags(
      learning_rate=_LEARNING_RATE.value, seed=_SEED.value, ablations=_ABLATIONS.value,
      only=_ONLY.value)
  task = bench_harness.create_task(settings)
  client_ids = list(task.train_data.client_ids)
  examples_per_client = task.train_data.create_tf_dataset_for_client(client_ids[0]).cardinality()
  settings['examples_per_client'] = int(examples_per_client)
  examples_per_round = settings['examples_per_client'] * settings['clients_per_round']
  print(f'overhead: {settings["clients_per_round"]} clients x {settings["examples_per_client"]} '
        f'examples, model {settings["model"]}, batch {settings["batch_size"]}', flush=True)

  load = bench_common.LoadMonitor()
  contenders = build_contenders(task, learning_rate=settings['learning_rate'],
                                batch_size=settings['batch_size'], ablations=settings['ablations'],
                                only=_ONLY.value)
  times = bench_harness.alternate_rounds(
      contenders, client_ids, clients_per_round=settings['clients_per_round'],
      rounds=settings['rounds'], warmup_rounds=settings['warmup_rounds'], seed=settings['seed'],
      load=load)
  rows = summarize(contenders, times, examples_per_round)
  # Free the contenders' contexts now, while Python is intact: each stops its worker.
  del contenders
  gc.collect()

  title = (f'FedAvg round vs Keras fit: {settings["clients_per_round"]} clients x '
           f'{settings["examples_per_client"]} examples, {settings["model"]}, batch '
           f'{settings["batch_size"]}, 1 epoch')
  bench_common.publish(
      Path(flags.FLAGS.results_dir), benchmark='overhead', settings=settings, rows=rows,
      table=bench_common.markdown_table(rows, COLUMNS), title=title, load=load,
      plot=lambda path: plot(rows, path, title=title), plot_name='overhead.png')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
