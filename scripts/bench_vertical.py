"""Benchmark of the vertical FL recipe: PSI speed, secure-aggregation cost, accuracy.

  .venv/bin/python scripts/bench_vertical.py           # full run, a few minutes on 2 cores
  .venv/bin/python scripts/bench_vertical.py --smoke   # tiny sizes, checks not enforced

Measures, in one process on this machine:
1. PSI wall time for n vs n IDs (half of them shared), up to 100,000 vs 100,000; target
   under 10 s. The X25519 work runs on a process pool started (and warmed up) before the
   clock starts. Best of `--repeats` runs: the machine may be shared, and the minimum is
   the least disturbed measurement (the load average is recorded too).
2. Training time of the vertical model on digits (4 parties) with and without secure
   aggregation, alternating runs on the same aligned split; the overhead is their ratio.
3. Held-out metrics of the vertical, centralized and label-party-only models on digits
   (4 parties) and breast cancer (3 parties), averaged over seeds; the checks are that the
   vertical model is within 2 points of centralized on both, and on digits 20+ points
   above label-party-only.

Writes results.json, results.csv, psi_time.png and training.png to `--output_dir`, prints
the summary table, and exits 1 if a check fails (full mode only).
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
from typing import Any, Sequence

from absl import flags
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes import cli  # noqa: E402
from recipes import outputs  # noqa: E402
from recipes.vertical import psi  # noqa: E402

# TensorFlow (via recipes.vertical.experiment) is imported under `__main__` only: the PSI's
# worker processes ("spawn", not "fork", since forking a process that runs TensorFlow's
# thread pools is unsafe) re-import this file and need nothing but the cryptography.

_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny sizes and 1 epoch; checks are reported, not enforced.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'results/vertical', 'Where results go.')
_PSI_WORKERS = flags.DEFINE_integer('psi_workers', os.cpu_count() or 1, 'Processes for the PSI.', lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repetitions (PSI and secure-aggregation runs).',
                                lower_bound=1)

PSI_TARGET_SECONDS = 10.0
MAX_GAP_TO_CENTRALIZED = 0.02
MIN_GAIN_OVER_LABEL_PARTY = 0.20


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to measure: sizes, seeds, epochs."""

  psi_sizes: Sequence[int]
  overhead_epochs: int | None  # None: the recipe's default
  accuracy_epochs: int | None
  seeds: Sequence[int]
  repeats: int


def _plan() -> Plan:
  if _SMOKE.value:
    # 6,000 IDs: enough for the process pool to take part (it gets chunks of 5,000 points).
    return Plan(psi_sizes=(1_000, 6_000), overhead_epochs=1, accuracy_epochs=1, seeds=(0,), repeats=1)
  return Plan(psi_sizes=(10_000, 30_000, 100_000), overhead_epochs=None, accuracy_epochs=None,
              seeds=(0, 1, 2), repeats=_REPEATS.value)


def _id_lists(n: int, seed: int) -> tuple[list[str], list[str]]:
  """Two parties with n IDs each, n/2 of them shared, in unrelated orders."""
  rng = np.random.default_rng(seed)
  universe = [f'cust-{value:010d}' for value in rng.choice(10**10, size=n + n // 2, replace=False)]
  first, second = universe[:n], universe[n // 2:]
  return first, [second[i] for i in rng.permutation(len(second))]


def bench_psi(plan: Plan, workers: int) -> list[dict[str, Any]]:
  rows = []
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
    # Start every worker before timing (ProcessPoolExecutor starts them on first use).
    list(pool.map(psi.blind, [psi.new_private_key()] * workers, [[psi.hash_to_point('warm-up')]] * workers))
    for n in plan.psi_sizes:
      rows.append(_bench_psi_size(n, pool, workers, plan.repeats))
  return rows


def _bench_psi_size(n: int, pool: concurrent.futures.Executor, workers: int, repeats: int) -> dict[str, Any]:
  first, second = _id_lists(n, seed=n)
  seconds, result = [], None
  for _ in range(repeats):
    result = psi.private_set_intersection({'party0': first, 'party1': second}, executor=pool)
    seconds.append(result.seconds)
  assert result is not None and result.intersection_size == n // 2
  print(f'PSI {n:>7} vs {n:>7} IDs: best {min(seconds):.2f} s of {[round(s, 2) for s in seconds]}', flush=True)
  return {'ids_per_party': n, 'intersection': result.intersection_size, 'workers': workers,
          'seconds_best': min(seconds), 'seconds_all': seconds,
          'x25519_ops_per_second': 4 * n / min(seconds), 'megabytes_sent': result.transcript.num_bytes / 1e6}


def bench_secure_aggregation(plan: Plan) -> dict[str, Any]:
  """Vertical training on one aligned split, alternating secure and plain sum fusion."""
  from recipes.vertical import experiment  # pylint: disable=g-import-not-at-top

  config = experiment.Config(task='digits', num_parties=4)
  if plan.overhead_epochs is not None:
    config = dataclasses.replace(config, epochs=plan.overhead_epochs)
  aligned = experiment.align(config)
  runs: dict[bool, list[Any]] = {True: [], False: []}
  for _ in range(plan.repeats):
    for secure in (True, False):
      runs[secure].append(experiment.train_vertical(
          aligned.split, dataclasses.replace(config, secure_aggregation=secure),
          num_classes=aligned.dataset.num_classes))
  best = {secure: min(run.train_seconds for run in trained) for secure, trained in runs.items()}
  accuracy = {secure: trained[-1].test_accuracy[-1] for secure, trained in runs.items()}
  print(f'Secure aggregation: {best[True]:.2f} s vs {best[False]:.2f} s plain '
        f'(x{best[True] / best[False]:.2f})', flush=True)
  return {
      'config': dataclasses.asdict(config),
      'seconds_secure_best': best[True], 'seconds_plain_best': best[False],
      'seconds_secure_all': [run.train_seconds for run in runs[True]],
      'seconds_plain_all': [run.train_seconds for run in runs[False]],
      'overhead_ratio': best[True] / best[False],
      'test_accuracy_secure': accuracy[True], 'test_accuracy_plain': accuracy[False],
      'curves': {'secure': runs[True][-1].test_accuracy, 'plain': runs[False][-1].test_accuracy},
  }


def bench_accuracy(plan: Plan) -> dict[str, Any]:
  """Three models on both tasks, per seed and averaged."""
  from recipes.vertical import experiment  # pylint: disable=g-import-not-at-top

  per_run, mean, curves = [], {}, {}
  for task, num_parties in (('digits', 4), ('breast_cancer', 3)):
    by_model: dict[str, list[float]] = {name: [] for name in experiment.MODEL_NAMES}
    for seed in plan.seeds:
      config = experiment.Config(task=task, num_parties=num_parties, seed=seed)
      if plan.accuracy_epochs is not None:
        config = dataclasses.replace(config, epochs=plan.accuracy_epochs)
      result = experiment.run(config)
      for model, scores in result.metrics.items():
        per_run.append({'task': task, 'num_parties': num_parties, 'seed': seed, 'model': model, **scores})
        by_model[model].append(scores['accuracy'])
      if seed == plan.seeds[0] and task == 'digits':
        curves = {model: trained.test_accuracy for model, trained in result.trained.items()}
      print(f'{task} seed {seed}: ' + ', '.join(f'{m} {s["accuracy"]:.4f}' for m, s in result.metrics.items()),
            flush=True)
    mean[task] = {model: statistics.mean(values) for model, values in by_model.items()}
  return {'runs': per_run, 'mean_accuracy': mean, 'digits_curves': curves}


def _summary_rows(psi_rows: list[dict[str, Any]], overhead: dict[str, Any], accuracy: dict[str, Any], *,
                  enforce: bool) -> list[dict[str, Any]]:
  """One row per headline number, with its target and whether it was met (if `enforce`)."""
  check = (lambda met: met) if enforce else (lambda met: 'skipped')
  largest = psi_rows[-1]
  rows = [{'measurement': f'PSI time, {largest["ids_per_party"]:,} vs {largest["ids_per_party"]:,} IDs',
           'value': round(largest['seconds_best'], 2), 'unit': 's',
           'target': f'< {PSI_TARGET_SECONDS:g}', 'met': check(largest['seconds_best'] < PSI_TARGET_SECONDS)},
          {'measurement': 'secure aggregation training time / plain', 'value': round(overhead['overhead_ratio'], 2),
           'unit': 'x', 'target': '', 'met': ''}]
  mean = accuracy['mean_accuracy']
  for task, values in mean.items():
    for model, value in values.items():
      rows.append({'measurement': f'{task} accuracy, {model}', 'value': round(value, 4), 'unit': '',
                   'target': '', 'met': ''})
    gap = values['vertical'] - values['centralized']
    rows.append({'measurement': f'{task} vertical - centralized', 'value': round(gap, 4), 'unit': '',
                 'target': f'>= -{MAX_GAP_TO_CENTRALIZED}', 'met': check(gap >= -MAX_GAP_TO_CENTRALIZED)})
  gain = mean['digits']['vertical'] - mean['digits']['label_party_only']
  rows.append({'measurement': 'digits vertical - label_party_only', 'value': round(gain, 4), 'unit': '',
               'target': f'>= {MIN_GAIN_OVER_LABEL_PARTY}', 'met': check(gain >= MIN_GAIN_OVER_LABEL_PARTY)})
  return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
  print(f'\n{"measurement":<46}{"value":>10}  {"target":<10}met')
  for row in rows:
    print(f'{row["measurement"]:<46}{row["value"]:>10}{row["unit"]:<2}{row["target"]:<10}{row["met"]}')


def main(argv: Sequence[str]) -> None:
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tf.get_logger().setLevel('ERROR')  # Per-party step functions trip TF's retracing warning.
  plan = _plan()
  started, load_before = time.time(), os.getloadavg()
  psi_rows = bench_psi(plan, _PSI_WORKERS.value)
  overhead = bench_secure_aggregation(plan)
  accuracy = bench_accuracy(plan)
  rows = _summary_rows(psi_rows, overhead, accuracy, enforce=not _SMOKE.value)
  _print_table(rows)

  out = Path(_OUTPUT_DIR.value)
  out.mkdir(parents=True, exist_ok=True)
  outputs.write_json(out / 'results.json', {
      'machine': outputs.machine_description(), 'smoke': _SMOKE.value, 'plan': dataclasses.asdict(plan),
      'seconds_total': time.time() - started, 'load_average_before': load_before,
      'load_average_after': os.getloadavg(), 'summary': rows, 'psi': psi_rows,
      'secure_aggregation': overhead, 'accuracy': accuracy,
  })
  outputs.write_csv(out / 'results.csv', rows)
  outputs.plot_curves({'PSI (best of runs)': ([r['ids_per_party'] for r in psi_rows],
                                              [r['seconds_best'] for r in psi_rows])},
                      out / 'psi_time.png', title='Private set intersection, n vs n IDs (half shared)',
                      xlabel='IDs per party', ylabel='seconds')
  epochs = list(range(1, len(overhead['curves']['secure']) + 1))
  training = {'vertical, secure aggregation': (epochs, overhead['curves']['secure']),
              'vertical, plain sum': (epochs, overhead['curves']['plain'])}
  training |= {model: (list(range(1, len(curve) + 1)), curve)
               for model, curve in accuracy['digits_curves'].items() if model != 'vertical'}
  outputs.plot_curves(training, out / 'training.png', title='Digits split across 4 parties',
                      xlabel='epoch', ylabel='test accuracy')
  print(f'\nResults: {out}')
  failed = [row['measurement'] for row in rows if row['met'] is False]
  if failed:
    print(f'checks failed: {"; ".join(failed)}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  # TensorFlow must be loaded before absl's app.run starts: importing Keras inside `main`
  # breaks tf.keras.Sequential in TF 2.14 ("Output tensors of a Sequential model must be
  # the output of a TensorFlow Layer").
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow  # noqa: F401  pylint: disable=unused-import,g-import-not-at-top
  from recipes.vertical import experiment  # noqa: F401  pylint: disable=unused-import,g-import-not-at-top

  cli.run(main)
