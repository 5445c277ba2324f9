"""Benchmark of the vertical FL recipe: PSI speed, secure-aggregation cost, accuracy.

  python -m scripts.bench_vertical           # the benchmark: 18-28 minutes on the shared 2 cores
  python -m scripts.bench_vertical --smoke   # tiny sizes, 1 epoch: a wiring check (tests)
  python -m scripts.bench_vertical --psi_only --output_dir=docs/benchmarks/vertical_psi
                                             # part 1 alone (~1 min per size on 2 idle cores)

Measures, in one process:
1. PSI wall time for n vs n IDs (half of them shared), up to 100,000 vs 100,000; target:
   median under 10 s. The hashing, point checks and X25519 work run on a process pool
   started (and warmed up) before the clock starts, as a party's own cores would be.
   `--repeats` runs per size; median, quartiles, min and max are all reported, with the
   load average sampled after every run (the machine may be shared).
2. Training time of the vertical model on digits (4 parties) with and without secure
   aggregation, alternating runs on the same aligned split; the overhead is the ratio of
   the medians (and each pair's ratio, with quartiles). Also the fusion step alone
   (microseconds per minibatch), which the training-time ratio dilutes with TensorFlow's
   per-call overhead.
3. Held-out metrics of the vertical, centralized and label-party-only models on digits
   (4 parties) and breast cancer (3 parties), per seed and averaged over 3 seeds from
   `--seed`. Checks: the vertical model within 1 point of centralized on both tasks, and
   on digits 20+ points above label-party-only.

results.json records the command, `--seed`, the git commit, the machine and the load;
its `headline` object holds exactly the numbers the README quotes.

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

from core import outputs  # noqa: E402
from core.errors import UserError  # noqa: E402
from recipes import cli  # noqa: E402
from recipes.vertical import provenance  # noqa: E402
from recipes.vertical import psi  # noqa: E402
from recipes.vertical import secure_sum  # noqa: E402
from scripts import bench_common  # noqa: E402
from scripts import bench_timing  # noqa: E402

if TYPE_CHECKING:
  from recipes.vertical import baselines
  from recipes.vertical import experiment

# TensorFlow (via recipes.vertical.experiment) is imported under `__main__` only: the PSI
# worker processes ("spawn", not "fork": forking a process that runs TensorFlow's thread
# pools is unsafe) re-import this module and need nothing but the cryptography.

_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny sizes and 1 epoch; checks are reported, not enforced.')
_DEFAULT_OUTPUT_DIR = 'docs/benchmarks/vertical'
_OUTPUT_DIR = flags.DEFINE_string('output_dir', _DEFAULT_OUTPUT_DIR, 'Where the results go.')
_PSI_ONLY = flags.DEFINE_bool('psi_only', False, 'Time only the PSI (part 1), e.g. on a quiet machine; '
                              'needs an --output_dir other than the full benchmark\'s.')
_PSI_WORKERS = flags.DEFINE_integer('psi_workers', os.cpu_count() or 1, 'Processes for the PSI.',
                                    lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repetitions of the PSI and of each fusion.',
                                lower_bound=1, upper_bound=100)
_SEED = flags.DEFINE_integer('seed', 0, 'First of the 3 accuracy seeds (seed, seed+1, seed+2); also '
                             'seeds the PSI benchmark\'s ID lists.', lower_bound=0,
                             upper_bound=2**32 - 3)

PSI_TARGET_SECONDS = 10.0
MAX_GAP_TO_CENTRALIZED = 0.01
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


def validate_flags() -> None:
  """Checks what absl's bounds cannot express.

  Raises:
    UserError: An empty --output_dir, or --psi_only writing over the full results.
  """
  if not _OUTPUT_DIR.value.strip():
    raise UserError('--output_dir must not be empty')
  if _PSI_ONLY.value and Path(_OUTPUT_DIR.value).resolve() == Path(_DEFAULT_OUTPUT_DIR).resolve():
    raise UserError(f'--psi_only would replace the full benchmark\'s results in {_DEFAULT_OUTPUT_DIR}; '
                    'pass another --output_dir (e.g. docs/benchmarks/vertical_psi)')


def _plan() -> Plan:
  seed = _SEED.value
  if _SMOKE.value:
    # 6,000 IDs: enough for the process pool to take part (it gets chunks of 5,000 points).
    return Plan(psi_sizes=(1_000, 6_000), epochs=1, seeds=(seed,), repeats=1)
  return Plan(psi_sizes=(10_000, 30_000, 100_000), epochs=None, seeds=(seed, seed + 1, seed + 2),
              repeats=_REPEATS.value)


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


def cpu_seconds(pids: Sequence[int]) -> float:
  """User + system CPU seconds used so far by this process and the processes `pids` (Linux).

  On a shared machine wall time counts the time other jobs held the cores; CPU time
  counts only this work, so it tells what the PSI would take on idle cores (roughly: it
  also grows a little under contention, through caches and frequency).
  """
  total = time.process_time()
  ticks = os.sysconf('SC_CLK_TCK')
  for pid in pids:
    with open(f'/proc/{pid}/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
    total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
  return total


def bench_psi(plan: Plan, workers: int, load: bench_common.LoadMonitor) -> list[dict[str, Any]]:
  """PSI seconds per set size, on a process pool that is running before the clock starts."""
  rows = []
  spawn = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
    # ProcessPoolExecutor starts its workers on first use: do that now.
    warm_up = [['warm-up']] * workers
    list(pool.map(psi.hash_to_points, warm_up))
    for n in plan.psi_sizes:
      first, second = _id_lists(n, seed=_SEED.value + n)
      seconds, cpu, loads, result = [], [], [], None
      pids = list(pool._processes)  # pylint: disable=protected-access
      for _ in range(plan.repeats):
        cpu_start = cpu_seconds(pids)
        result = psi.private_set_intersection({'party0': first, 'party1': second}, executor=pool)
        cpu.append(cpu_seconds(pids) - cpu_start)
        seconds.append(result.seconds)
        load.sample()
        loads.append(round(os.getloadavg()[0], 2))
      assert result is not None and result.intersection_size == n // 2
      timing = bench_timing.spread_with_values(seconds)
      cpu_timing = bench_timing.spread_with_values(cpu)
      print(f'PSI {n:>7,} vs {n:>7,} IDs: median {timing["median"]:.2f} s '
            f'[{timing["q1"]:.2f}-{timing["q3"]:.2f}] of {[round(s, 2) for s in seconds]}, '
            f'CPU median {cpu_timing["median"]:.2f} s, load {loads}', flush=True)
      rows.append({'ids_per_party': n, 'intersection': result.intersection_size, 'workers': workers,
                   'seconds': timing, 'cpu_seconds': cpu_timing,
                   'cpu_seconds_per_worker_median': cpu_timing['median'] / workers,
                   'load_average_1min_after_each_run': loads,
                   'x25519_per_second_at_median': 4 * n / timing['median'],
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


def _masking_parties(config: experiment.Config) -> int:
  return (config.num_parties or 0) - 1


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
  seconds = {secure: bench_timing.spread_with_values([run.train_seconds for run in trained])
             for secure, trained in runs.items()}
  pair_ratios = bench_timing.spread_with_values(
      [s.train_seconds / p.train_seconds for s, p in zip(runs[True], runs[False])])
  # The masked sum covers the parties other than the label party (it adds its own in the clear).
  fusion_setting = dict(num_parties=_masking_parties(config), batch_size=config.batch_size,
                        embedding_dim=config.embedding_dim, rounds=200 if _SMOKE.value else 2_000)
  fusion_us: dict[bool, list[float]] = {True: [], False: []}
  for _ in range(plan.repeats):
    fusion_us[True].append(fusion_microseconds(secure_sum.SecureSum(_masking_parties(config)),
                                               **fusion_setting))
    fusion_us[False].append(fusion_microseconds(secure_sum.PlainSum(), **fusion_setting))
  fusion = {secure: bench_timing.spread_with_values(values) for secure, values in fusion_us.items()}
  ratio = seconds[True]['median'] / seconds[False]['median']
  print(f'Training with secure aggregation median {seconds[True]["median"]:.2f} s, plain '
        f'{seconds[False]["median"]:.2f} s (x{ratio:.2f}); fusion per minibatch '
        f'{fusion[True]["median"]:.0f} us vs {fusion[False]["median"]:.0f} us', flush=True)
  return {
      'fusion_microseconds_secure': fusion[True], 'fusion_microseconds_plain': fusion[False],
      'config': dataclasses.asdict(config),
      'seconds_secure': seconds[True], 'seconds_plain': seconds[False],
      'overhead_ratio': ratio, 'overhead_ratio_per_pair': pair_ratios,
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
  return {'seeds': list(plan.seeds), 'runs': runs, 'mean_accuracy': mean, 'digits_curves': curves}


def _row(measurement: str, value: Any, target: str = '', met: bool | None = None, *,
         enforce: bool) -> dict[str, Any]:
  return {'measurement': measurement, 'value': value, 'target': target,
          'met': '' if met is None else met if enforce else 'skipped'}


def psi_summary_rows(psi_rows: list[dict[str, Any]], *, enforce: bool) -> list[dict[str, Any]]:
  """The PSI rows of the summary: the largest size's median (with its target), spread and CPU."""
  largest = psi_rows[-1]
  n, seconds = largest['ids_per_party'], largest['seconds']
  return [_row(f'PSI seconds, {n:,} vs {n:,} IDs, median', round(seconds['median'], 2),
               f'< {PSI_TARGET_SECONDS:g}', seconds['median'] < PSI_TARGET_SECONDS, enforce=enforce),
          _row(f'PSI seconds, {n:,} vs {n:,} IDs, quartiles', f'{seconds["q1"]:.2f}-{seconds["q3"]:.2f}',
               enforce=enforce),
          _row(f'PSI seconds, {n:,} vs {n:,} IDs, min-max', f'{seconds["min"]:.2f}-{seconds["max"]:.2f}',
               enforce=enforce),
          _row(f'PSI CPU seconds (all processes), {n:,} vs {n:,} IDs, median',
               round(largest['cpu_seconds']['median'], 2), enforce=enforce)]


def summary_rows(psi_rows: list[dict[str, Any]], overhead: dict[str, Any], accuracy: dict[str, Any], *,
                 enforce: bool) -> list[dict[str, Any]]:
  """One row per headline number, with its target and whether it was met (if `enforce`)."""
  def row(measurement: str, value: Any, target: str = '', met: bool | None = None) -> dict[str, Any]:
    return _row(measurement, value, target, met, enforce=enforce)

  rows = psi_summary_rows(psi_rows, enforce=enforce)
  rows += [row('training time, secure aggregation / plain (medians)',
              round(overhead['overhead_ratio'], 2)),
          row('training time ratio per pair, quartiles',
              f'{overhead["overhead_ratio_per_pair"]["q1"]:.2f}-'
              f'{overhead["overhead_ratio_per_pair"]["q3"]:.2f}'),
          row('fusion per minibatch, secure (us, median)',
              round(overhead['fusion_microseconds_secure']['median'])),
          row('fusion per minibatch, plain (us, median)',
              round(overhead['fusion_microseconds_plain']['median']))]
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


def headline(psi_rows: list[dict[str, Any]], overhead: dict[str, Any],
             accuracy: dict[str, Any]) -> dict[str, Any]:
  """The numbers the README quotes, rounded as quoted, under stable keys."""
  mean = accuracy['mean_accuracy']
  return {
      **psi_headline(psi_rows),
      'training_overhead_ratio_median': round(overhead['overhead_ratio'], 2),
      'training_overhead_ratio_per_pair_q1': round(overhead['overhead_ratio_per_pair']['q1'], 2),
      'training_overhead_ratio_per_pair_q3': round(overhead['overhead_ratio_per_pair']['q3'], 2),
      'fusion_microseconds_secure_median': round(overhead['fusion_microseconds_secure']['median']),
      'fusion_microseconds_plain_median': round(overhead['fusion_microseconds_plain']['median']),
      **{f'{task}_accuracy_{model}': round(value, 3)
         for task, values in mean.items() for model, value in values.items()},
      'accuracy_seeds': accuracy['seeds'],
  }


def psi_headline(psi_rows: list[dict[str, Any]]) -> dict[str, Any]:
  """The PSI numbers the README quotes (largest size), rounded as quoted."""
  largest = psi_rows[-1]
  seconds = largest['seconds']
  return {
      'psi_ids_per_party': largest['ids_per_party'],
      'psi_seconds_median': round(seconds['median'], 2),
      'psi_seconds_q1': round(seconds['q1'], 2),
      'psi_seconds_q3': round(seconds['q3'], 2),
      'psi_seconds_min': round(seconds['min'], 2),
      'psi_seconds_max': round(seconds['max'], 2),
      'psi_repeats': len(seconds['all']),
      'psi_workers': largest['workers'],
      'psi_cpu_seconds_median': round(largest['cpu_seconds']['median'], 2),
      'psi_cpu_seconds_q1': round(largest['cpu_seconds']['q1'], 2),
      'psi_cpu_seconds_q3': round(largest['cpu_seconds']['q3'], 2),
      'psi_load_average_1min': largest['load_average_1min_after_each_run'],
  }


def _plot(out: Path, psi_rows: list[dict[str, Any]], overhead: dict[str, Any],
          accuracy: dict[str, Any]) -> None:
  sizes = [r['ids_per_party'] for r in psi_rows]
  outputs.plot_curves({'median': (sizes, [r['seconds']['median'] for r in psi_rows]),
                       'min': (sizes, [r['seconds']['min'] for r in psi_rows]),
                       'max': (sizes, [r['seconds']['max'] for r in psi_rows])},
                      out / 'psi_time.png', title='Private set intersection, n vs n IDs (half shared)',
                      xlabel='IDs per party', ylabel='seconds')
  baselines = {model: curve for model, curve in accuracy['digits_curves'].items()
               if model != 'vertical'}
  curves = {'vertical, secure aggregation': overhead['curves']['secure'],
            'vertical, plain sum': overhead['curves']['plain'], **baselines}
  outputs.plot_curves({label: (range(1, len(curve) + 1), curve) for label, curve in curves.items()},
                      out / 'training.png', title='Digits split across 4 parties (first seed)',
                      xlabel='epoch', ylabel='test accuracy')


def _publish(benchmark: str, rows: list[dict[str, Any]], settings: dict[str, Any],
             load: bench_common.LoadMonitor, extra: dict[str, Any]) -> Path:
  """Prints the summary table, writes the results to --output_dir and returns that folder."""
  table = bench_common.markdown_table(rows, _COLUMNS)
  print('\n' + table)
  out = Path(_OUTPUT_DIR.value)
  bench_common.write_results(
      out, benchmark=benchmark,
      settings={'smoke': _SMOKE.value, 'seed': _SEED.value, 'psi_workers': _PSI_WORKERS.value, **settings},
      rows=rows, table=table, load=load, extra={'seed': _SEED.value, **extra})
  return out


def _exit_if_failed(rows: list[dict[str, Any]]) -> None:
  failed = [row['measurement'] for row in rows if row['met'] is False]
  if failed:
    print(f'checks failed: {"; ".join(failed)}', file=sys.stderr)
    sys.exit(1)


def main(argv: Sequence[str]) -> None:
  del argv
  # The code that runs is the code on disk now: record its commit before anything else.
  git_commit = provenance.git_commit()
  plan = _plan()
  load = bench_common.LoadMonitor()
  psi_rows = bench_psi(plan, _PSI_WORKERS.value, load)
  if _PSI_ONLY.value:
    rows = psi_summary_rows(psi_rows, enforce=not _SMOKE.value)
    out = _publish('vertical_psi', rows, {'psi_sizes': list(plan.psi_sizes), 'repeats': plan.repeats},
                   load, {'git_commit': git_commit, 'headline': psi_headline(psi_rows), 'psi': psi_rows})
    print(f'\nResults: {out}')
    _exit_if_failed(rows)
    return
  overhead = bench_secure_aggregation(plan, load)
  accuracy = bench_accuracy(plan, load)
  rows = summary_rows(psi_rows, overhead, accuracy, enforce=not _SMOKE.value)
  out = _publish(
      'vertical', rows, dataclasses.asdict(plan), load,
      {'git_commit': git_commit, 'headline': headline(psi_rows, overhead, accuracy),
       'psi': psi_rows, 'secure_aggregation': overhead, 'accuracy': accuracy})
  _plot(out, psi_rows, overhead, accuracy)
  print(f'\nResults: {out}')
  _exit_if_failed(rows)


if __name__ == '__main__':
  # TensorFlow must be loaded before absl's app.run starts (see the same note in
  # recipes/vertical_fl.py: otherwise tf.keras.Sequential fails in TF 2.14).
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # pylint: disable-next=unused-import,g-import-not-at-top
  from recipes.vertical import experiment  # noqa: F401

  cli.run(main, validate=validate_flags)
