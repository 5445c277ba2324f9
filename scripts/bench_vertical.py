"""Benchmark of the vertical FL recipe: PSI speed, secure-aggregation cost, accuracy.

  python -m scripts.bench_vertical           # the benchmark, ~3 minutes on 2 idle cores
  python -m scripts.bench_vertical --smoke   # tiny sizes, 1 epoch: a wiring check (tests)

Measures, in one process:
1. PSI wall time for n vs n IDs (half of them shared), up to 100,000 vs 100,000; target
   under 10 s. The X25519 work runs on a process pool started (and warmed up) before the
   clock starts, as a party's own cores would be. Best of `--repeats` runs: the machine
   may be shared, and the minimum is the least disturbed measurement.
2. Training time of the vertical model on digits (4 parties) with and without secure
   aggregation, alternating runs on the same aligned split; the overhead is the ratio.
   Also the fusion step alone (microseconds per minibatch), which the training-time ratio
   dilutes with TensorFlow's per-call overhead.
3. Held-out metrics of the vertical, centralized and label-party-only models on digits
   (4 parties) and breast cancer (3 parties), averaged over seeds. Checks: the vertical
   model within 2 points of centralized on both tasks, and on digits 20+ points above
   label-party-only.

Unlike the other benchmarks it calls the recipe's library (`recipes.vertical.experiment`)
in-process rather than the binary: the PSI and the two fusions must be timed on their
own, without process start-up. Writes results.json, results.csv, table.md, psi_time.png
and training.png to `--output_dir`; exits 1 if a check fails (not in smoke mode).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from absl import flags
import numpy as np

if __package__ in (None, ''):  # Run as a file: make the project importable.
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes import cli  # noqa: E402
from recipes import outputs  # noqa: E402
from recipes.vertical import psi  # noqa: E402
from recipes.vertical import secure_sum  # noqa: E402
from scripts import bench_common  # noqa: E402

if TYPE_CHECKING:
  from recipes.vertical import baselines
  from recipes.vertical import experiment

# TensorFlow (via recipes.vertical.experiment) is imported under `__main__` only: the PSI
# worker processes ("spawn", not "fork": forking a process that runs TensorFlow's thread
# pools is unsafe) re-import this module and need nothing but the cryptography.

_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny sizes and 1 epoch; checks are reported, not enforced.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'docs/benchmarks/vertical', 'Where the results go.')
_PSI_WORKERS = flags.DEFINE_integer('psi_workers', os.cpu_count() or 1, 'Processes for the PSI.',
                                    lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repetitions of the PSI and of each fusion.',
                                lower_bound=1)

PSI_TARGET_SECONDS = 10.0
MAX_GAP_TO_CENTRALIZED = 0.02
MIN_GAIN_OVER_LABEL_PARTY = 0.20

_COLUMNS: Sequence[bench_common.Column] = tuple(
    (key, key, '') for key in ('measurement', 'value', 'target', 'met'))


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to measure: sizes, seeds, epochs (None: the recipe's default)."""

  psi_sizes: Sequence[int]
  epochs: int | None
  seeds: Sequence[int]
  repeats: int


def _plan() -> Plan:
  if _SMOKE.value:
    # 6,000 IDs: enough for the process pool to take part (it gets chunks of 5,000 points).
    return Plan(psi_sizes=(1_000, 6_000), epochs=1, seeds=(0,), repeats=1)
  return Plan(psi_sizes=(10_000, 30_000, 100_000), epochs=None, seeds=(0, 1, 2), repeats=_REPEATS.value)


def _config(plan: Plan, **settings: Any) -> experiment.Config:
  from recipes.vertical import experiment  # pylint: disable=g-import-not-at-top,redefined-outer-name
  config = experiment.Config(**settings)
  return config if plan.epochs is None else dataclasses.replace(config, epochs=plan.epochs)


def _id_lists(n: int, seed: int) -> tuple[list[str], list[str]]:
  """Two parties with n IDs each, n/2 of them shared, in unrelated orders."""
  rng = np.random.default_rng(seed)
  universe = [f'cust-{value:010d}' for value in rng.choice(10**10, size=n + n // 2, replace=False)]
  first, second = universe[:n], universe[n // 2:]
  return first, [second[i] for i in rng.permutation(len(second))]


def bench_psi(plan: Plan, workers: int, load: bench_common.LoadMonitor) -> list[dict[str, Any]]:
  """PSI seconds per set size, on a process pool that is running before the clock starts."""
  rows = []
  spawn = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
    # ProcessPoolExecutor starts its workers on first use: do that now.
    warm_up = [[psi.hash_to_point('warm-up')]] * workers
    list(pool.map(psi.blind, [psi.new_private_key()] * workers, warm_up))
    for n in plan.psi_sizes:
      first, second = _id_lists(n, seed=n)
      seconds, result = [], None
      for _ in range(plan.repeats):
        result = psi.private_set_intersection({'party0': first, 'party1': second}, executor=pool)
        seconds.append(result.seconds)
        load.sample()
      assert result is not None and result.intersection_size == n // 2
      print(f'PSI {n:>7,} vs {n:>7,} IDs: best {min(seconds):.2f} s of '
            f'{[round(s, 2) for s in seconds]}', flush=True)
      rows.append({'ids_per_party': n, 'intersection': result.intersection_size, 'workers': workers,
                   'seconds_best': min(seconds), 'seconds_all': seconds,
                   'x25519_per_second': 4 * n / min(seconds),
                   'megabytes_sent': result.transcript.num_bytes / 1e6})
  return rows


def fusion_microseconds(fusion: secure_sum.Fusion, *, num_parties: int, batch_size: int,
                        embedding_dim: int, rounds: int) -> float:
  """Mean time of one fusion of `num_parties` embeddings of one minibatch."""
  rng = np.random.default_rng(0)
  embeddings = [rng.normal(size=(batch_size, embedding_dim)).astype(np.float32)
                for _ in range(num_parties)]
  start = time.perf_counter()
  for _ in range(rounds):
    fusion(embeddings)
  return (time.perf_counter() - start) / rounds * 1e6


def bench_secure_aggregation(plan: Plan, load: bench_common.LoadMonitor) -> dict[str, Any]:
  """Vertical training on one aligned split, alternating secure and plain sum fusion."""
  from recipes.vertical import experiment  # pylint: disable=g-import-not-at-top,redefined-outer-name

  config = _config(plan, task='digits', num_parties=4)
  aligned = experiment.align(config)
  runs: dict[bool, list[baselines.TrainedModel]] = {True: [], False: []}
  for _ in range(plan.repeats):
    for secure in (True, False):
      runs[secure].append(experiment.train_vertical(
          aligned.split, dataclasses.replace(config, secure_aggregation=secure),
          num_classes=aligned.dataset.num_classes))
      load.sample()
  best = {secure: min(run.train_seconds for run in trained) for secure, trained in runs.items()}
  fusion_setting = dict(num_parties=config.num_parties, batch_size=config.batch_size,
               embedding_dim=config.embedding_dim, rounds=200 if _SMOKE.value else 2_000)
  fusion_us = {True: fusion_microseconds(secure_sum.SecureSum(config.num_parties), **fusion_setting),
               False: fusion_microseconds(secure_sum.PlainSum(), **fusion_setting)}
  print(f'Training with secure aggregation {best[True]:.2f} s, plain {best[False]:.2f} s '
        f'(x{best[True] / best[False]:.2f}); fusion per minibatch {fusion_us[True]:.0f} us vs '
        f'{fusion_us[False]:.0f} us', flush=True)
  return {
      'fusion_microseconds_secure': fusion_us[True], 'fusion_microseconds_plain': fusion_us[False],
      'config': dataclasses.asdict(config),
      'seconds_secure_best': best[True], 'seconds_plain_best': best[False],
      'seconds_secure_all': [run.train_seconds for run in runs[True]],
      'seconds_plain_all': [run.train_seconds for run in runs[False]],
      'overhead_ratio': best[True] / best[False],
      'test_accuracy_secure': runs[True][-1].test_accuracy[-1],
      'test_accuracy_plain': runs[False][-1].test_accuracy[-1],
      'curves': {'secure': runs[True][-1].test_accuracy, 'plain': runs[False][-1].test_accuracy},
  }


def bench_accuracy(plan: Plan, load: bench_common.LoadMonitor) -> dict[str, Any]:
  """The three models on both tasks, per seed and averaged over seeds."""
  from recipes.vertical import experiment  # pylint: disable=g-import-not-at-top,redefined-outer-name

  runs, mean, curves = [], {}, {}
  for task, num_parties in (('digits', 4), ('breast_cancer', 3)):
    accuracies: dict[str, list[float]] = {name: [] for name in experiment.MODEL_NAMES}
    for seed in plan.seeds:
      result = experiment.run(_config(plan, task=task, num_parties=num_parties, seed=seed))
      load.sample()
      for model, scores in result.metrics.items():
        runs.append({'task': task, 'num_parties': num_parties, 'seed': seed, 'model': model, **scores})
        accuracies[model].append(scores['accuracy'])
      if task == 'digits' and seed == plan.seeds[0]:
        curves = {model: trained.test_accuracy for model, trained in result.trained.items()}
      accuracy_text = ', '.join(f'{model} {scores["accuracy"]:.4f}'
                                for model, scores in result.metrics.items())
      print(f'{task}, seed {seed}: {accuracy_text}', flush=True)
    mean[task] = {model: statistics.mean(values) for model, values in accuracies.items()}
  return {'runs': runs, 'mean_accuracy': mean, 'digits_curves': curves}


def summary_rows(psi_rows: list[dict[str, Any]], overhead: dict[str, Any], accuracy: dict[str, Any], *,
                 enforce: bool) -> list[dict[str, Any]]:
  """One row per headline number, with its target and whether it was met (if `enforce`)."""
  largest = psi_rows[-1]
  n = largest['ids_per_party']
  def row(measurement: str, value: float, target: str = '', met: bool | None = None) -> dict[str, Any]:
    return {'measurement': measurement, 'value': value, 'target': target,
            'met': '' if met is None else met if enforce else 'skipped'}

  largest = psi_rows[-1]
  n, seconds = largest['ids_per_party'], largest['seconds_best']
  rows = [row(f'PSI seconds, {n:,} vs {n:,} IDs', round(seconds, 2), f'< {PSI_TARGET_SECONDS:g}',
              seconds < PSI_TARGET_SECONDS),
          row('training time, secure aggregation / plain', round(overhead['overhead_ratio'], 2)),
          row('fusion per minibatch, secure (us)', round(overhead['fusion_microseconds_secure'])),
          row('fusion per minibatch, plain (us)', round(overhead['fusion_microseconds_plain']))]
  mean = accuracy['mean_accuracy']
  for task, values in mean.items():
    rows += [row(f'{task} accuracy, {model}', round(value, 4)) for model, value in values.items()]
    gap = values['vertical'] - values['centralized']
    rows.append(row(f'{task}: vertical - centralized', round(gap, 4),
                    f'>= -{MAX_GAP_TO_CENTRALIZED:g}', gap >= -MAX_GAP_TO_CENTRALIZED))
  gain = mean['digits']['vertical'] - mean['digits']['label_party_only']
  rows.append(row('digits: vertical - label_party_only', round(gain, 4),
                  f'>= {MIN_GAIN_OVER_LABEL_PARTY:g}', gain >= MIN_GAIN_OVER_LABEL_PARTY))
  return rows


def _plot(out: Path, psi_rows: list[dict[str, Any]], overhead: dict[str, Any],
          accuracy: dict[str, Any]) -> None:
  sizes = [r['ids_per_party'] for r in psi_rows]
  outputs.plot_curves({'best of runs': (sizes, [r['seconds_best'] for r in psi_rows])},
                      out / 'psi_time.png', title='Private set intersection, n vs n IDs (half shared)',
                      xlabel='IDs per party', ylabel='seconds')
  baselines = {model: curve for model, curve in accuracy['digits_curves'].items()
               if model != 'vertical'}
  curves = {'vertical, secure aggregation': overhead['curves']['secure'],
            'vertical, plain sum': overhead['curves']['plain'], **baselines}
  outputs.plot_curves({label: (range(1, len(curve) + 1), curve) for label, curve in curves.items()},
                      out / 'training.png', title='Digits split across 4 parties (seed 0)',
                      xlabel='epoch', ylabel='test accuracy')


def main(argv: Sequence[str]) -> None:
  del argv
  plan = _plan()
  load = bench_common.LoadMonitor()
  psi_rows = bench_psi(plan, _PSI_WORKERS.value, load)
  overhead = bench_secure_aggregation(plan, load)
  accuracy = bench_accuracy(plan, load)
  rows = summary_rows(psi_rows, overhead, accuracy, enforce=not _SMOKE.value)
  table = bench_common.markdown_table(rows, _COLUMNS)
  print('\n' + table)

  out = Path(_OUTPUT_DIR.value)
  bench_common.write_results(
      out, benchmark='vertical', settings={'smoke': _SMOKE.value, **dataclasses.asdict(plan)},
      rows=rows, table=table, load=load,
      extra={'psi': psi_rows, 'secure_aggregation': overhead, 'accuracy': accuracy})
  _plot(out, psi_rows, overhead, accuracy)
  print(f'\nResults: {out}')
  failed = [row['measurement'] for row in rows if row['met'] is False]
  if failed:
    print(f'checks failed: {"; ".join(failed)}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  # TensorFlow must be loaded before absl's app.run starts (see the same note in
  # recipes/vertical_fl.py: otherwise tf.keras.Sequential fails in TF 2.14).
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # pylint: disable-next=unused-import,g-import-not-at-top
  from recipes.vertical import experiment  # noqa: F401

  cli.run(main)
