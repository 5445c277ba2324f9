"""Smoke modes of the timing benchmarks (overhead, scaling, remote), run as a user runs them.

Each benchmark is forked from the pre-imported binary server (tests/helpers.run_binary),
and the test checks afterwards that no TFF worker outlived it. Plus the pieces the benchmarks rely on: the line fit and the
recipes' process task (`training_loop.for_learning_process`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tasks
from core.runtime import import_tff
from recipes import training_loop
from scripts import bench_timing
from tests import helpers

tff = import_tff()


def _results(results_dir: Path, png: str) -> dict:
  for name in ('results.json', 'results.csv', 'table.md', png):
    assert (results_dir / name).stat().st_size > 0, name
  assert (results_dir / png).stat().st_size > 5000
  record = json.loads((results_dir / 'results.json').read_text())
  assert record['machine']['cpu_count'] >= 1 and record['settings']['smoke'] is True
  return record


@pytest.mark.slow
def test_bench_overhead_smoke(tmp_path: Path) -> None:
  result = helpers.run_binary('scripts.bench_overhead', '--smoke', f'--results_dir={tmp_path}',
                              timeout=300, check=True)
  record = _results(tmp_path, 'overhead.png')
  rows = {r['contender']: r for r in record['results']}
  assert list(rows) == ['keras_fit', 'tff_defaults', 'recipes']
  assert rows['keras_fit']['ratio_vs_keras_median'] == 1.0
  for row in rows.values():
    assert row['rounds_timed'] == 2 and row['examples_per_second'] > 0
  assert '| recipes |' in result.stdout
  assert helpers.leaked_workers() == []


@pytest.mark.slow
def test_bench_scaling_smoke(tmp_path: Path) -> None:
  result = helpers.run_binary('scripts.bench_scaling', '--smoke', f'--results_dir={tmp_path}',
                              timeout=300, check=True)
  record = _results(tmp_path, 'scaling.png')
  rows = record['results']
  assert [(r['sweep'], r['clients_per_round']) for r in rows] == [
      ('clients', 2), ('clients', 4), ('model', 2)]
  for row in rows:
    assert row['worker_peak_mib'] > 10 and row['python_peak_mib'] > 10
    assert row['examples_per_round'] == 16 * row['clients_per_round']
  assert 'r2' in record['fits']['clients_per_round']['seconds_per_round']
  assert 'Linear fits' in result.stdout
  assert helpers.leaked_workers() == []


@pytest.mark.slow
def test_bench_remote_smoke(tmp_path: Path) -> None:
  helpers.run_binary('scripts.bench_remote', '--smoke', f'--results_dir={tmp_path}',
                     timeout=300, check=True)
  record = _results(tmp_path, 'remote.png')
  assert [r['worker'] for r in record['results']] == ['local', 'remote']
  # Only the local context started a worker of the benchmark's own.
  assert record['settings']['local_workers_started'] == 1
  assert helpers.leaked_workers() == []


def test_fit_line_and_spread() -> None:
  fit = bench_timing.fit_line([10, 50, 100, 200], [1.0, 3.0, 5.5, 10.5])
  assert fit['slope'] == pytest.approx(0.05, abs=1e-3) and fit['r2'] > 0.999
  assert bench_timing.spread([3, 1, 2])['median'] == 2
  assert bench_timing.rotate(['a', 'b', 'c'], 4) == ['b', 'c', 'a']


def test_process_task_leaves_training_data_out_of_the_computation() -> None:
  # Task.input_spec traced inside TFF's graph embedded the 8,000 training examples
  # (25 MB) as constants in every computation that process.next sent to the worker.
  from tensorflow_federated.python.core.impl.computation import computation_impl  # pylint: disable=g-import-not-at-top
  task = tasks.create_task('mnist_digits', model='tiny')
  process_task = training_loop.for_learning_process(task)
  assert process_task.input_spec == task.input_spec
  process = tff.learning.algorithms.build_weighted_fed_avg(
      process_task.model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  size = computation_impl.ConcreteComputation.get_proto(process.next).ByteSize()
  assert size < 2 * 2**20, size


def test_process_task_models_start_at_zero_and_the_loop_sets_random_weights() -> None:
  task = tasks.create_task('synthetic', model='2nn')
  process_task = training_loop.for_learning_process(task)
  process = tff.learning.algorithms.build_weighted_fed_avg(
      process_task.model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))
  state = process.initialize()
  zero = process.get_model_weights(state)
  assert all(not np.any(w) for w in zero.trainable)
  weights = training_loop.initial_model_weights(task)
  state = process.set_model_weights(state, weights)
  kernels = [w for w in process.get_model_weights(state).trainable if np.ndim(w) == 2]
  assert all(np.std(k) > 0.01 for k in kernels)
  datasets = training_loop.ClientDatasets(task)
  ids = list(task.train_data.client_ids)[:3]
  # Each round reshuffles every client, from a seed of (run seed, round, client): the same
  # round gives the same order, another round another order.
  def order(round_num: int) -> list[int]:
    return [int(y) for _, batch in datasets(ids[:1], round_num)[0] for y in batch.numpy()]
  assert order(1) == order(1) and order(1) != order(2)
  assert sorted(order(1)) == sorted(order(2))
  output = process.next(state, datasets(ids))
  assert output.metrics['client_work']['train']['num_examples'] == 48
