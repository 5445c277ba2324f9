"""The robustness benchmark: its attacked client work, by hand, and its smoke mode end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tasks
from core.errors import UserError
from core.runtime import import_tff
from recipes import aggregators
from scripts import bench_robustness
from tests import helpers

tff = import_tff()


def _task() -> tasks.Task:
  # No shuffling: two clients with the same examples must compute the same update.
  return tasks.create_task(
      'synthetic', model='tiny', client_spec=tasks.ClientSpec(batch_size=5, shuffle_buffer_size=0),
      num_clients=4, partition='iid', seed=0)


def _client_dataset(task: tasks.Task) -> tf.data.Dataset:
  first_client = task.train_data.client_ids[0]
  return task.preprocess_train(task.train_data.create_tf_dataset_for_client(first_client))


def test_each_client_update_is_multiplied_by_its_factor() -> None:
  task = _task()
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  honest = tff.learning.templates.build_model_delta_client_work(
      task.model_fn, optimizer, tff.learning.ClientWeighting.UNIFORM)
  attacked = bench_robustness.with_update_factors(honest)
  weights = tff.learning.models.ModelWeights.from_model(task.model_fn())
  weights = tf.nest.map_structure(lambda v: v.numpy(), weights)
  dataset = _client_dataset(task)

  reference = honest.next(honest.initialize(), [weights], [dataset]).result[0].update
  factors = [1.0, -1.0, 2.5]
  results = attacked.next(
      attacked.initialize(), [weights] * 3,
      [bench_robustness.client_data(dataset, f) for f in factors]).result

  assert np.abs(reference[0]).max() > 1e-3  # A real update, not zeros.
  for factor, result in zip(factors, results):
    for got, want in zip(result.update, reference):
      np.testing.assert_allclose(got, factor * np.asarray(want), rtol=1e-5, atol=1e-7)
    assert result.update_weight == 1.0


def test_one_flipped_and_one_honest_identical_client_average_to_no_change() -> None:
  # Honest u and attacked -u: their mean is 0, so the server model must not move.
  task = _task()
  process = bench_robustness.build_attacked_fed_avg(
      task.model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.1),
      model_aggregator=aggregators.unweighted_mean())
  state = process.initialize()
  dataset = _client_dataset(task)

  flipped = process.next(state, [bench_robustness.client_data(dataset, 1.0),
                                 bench_robustness.client_data(dataset, -1.0)]).state
  honest = process.next(state, [bench_robustness.client_data(dataset, 1.0)] * 2).state

  before = process.get_model_weights(state).trainable
  for start, after in zip(before, process.get_model_weights(flipped).trainable):
    np.testing.assert_allclose(after, start, atol=1e-6)
  moved = process.get_model_weights(honest).trainable
  assert max(np.abs(a - b).max() for a, b in zip(moved, before)) > 1e-3


def test_attackers_are_a_fixed_number_per_round_and_reproducible() -> None:
  settings = bench_robustness.Settings(
      aggregators=('mean',), attacks=(bench_robustness.Attack('none'),), total_rounds=1,
      rounds_per_eval=1, clients_per_round=10, attackers_per_round=2, trim_fraction=0.2,
      num_clients=100, partition='iid', model='2nn', client_learning_rate=0.1,
      client_batch_size=20, client_epochs_per_round=1, seed=0)
  chosen = [bench_robustness.attackers(settings, r) for r in range(1, 21)]
  assert all(len(c) == 2 and c <= set(range(10)) for c in chosen)
  assert chosen == [bench_robustness.attackers(settings, r) for r in range(1, 21)]
  assert len({frozenset(c) for c in chosen}) > 1  # Different clients in different rounds.


@pytest.mark.parametrize('spec, factor, name, label', [
    ('none', 1.0, 'none', 'no attack'),
    ('scale:100', 100.0, 'scale:100', 'scale x100'),
    ('sign_flip', -1.0, 'sign_flip:1', 'sign flip x-1'),
    ('sign_flip:2.5', -2.5, 'sign_flip:2.5', 'sign flip x-2.5'),
])
def test_attack_specs(spec: str, factor: float, name: str, label: str) -> None:
  attack = bench_robustness.Attack.parse(spec)
  assert (attack.update_factor, attack.name, attack.label) == (factor, name, label)


@pytest.mark.parametrize('spec', ['flip:2', 'scale:0', 'scale:-3', 'scale:x', 'none:2'])
def test_bad_attack_specs_are_user_errors(spec: str) -> None:
  with pytest.raises(UserError):
    bench_robustness.Attack.parse(spec)


@pytest.mark.slow
def test_smoke_writes_results(tmp_path: Path) -> None:
  result = helpers.run_binary(
      'scripts.bench_robustness', '--smoke', f'--results_dir={tmp_path}', timeout=240, check=True)
  for name in ('results.json', 'results.csv', 'table.md', 'accuracy_vs_rounds.png'):
    assert (tmp_path / name).stat().st_size > 0, name
  record = json.loads((tmp_path / 'results.json').read_text())
  runs = record['results']
  assert [(r['aggregator'], r['attack']) for r in runs] == [
      ('mean', 'none'), ('mean', 'sign_flip:10'), ('median', 'none'), ('median', 'sign_flip:10')]
  for run in runs:
    assert run['rounds'] == 2 and run['curve_rounds'] == [0, 1, 2]
    assert 0.0 <= run['final_test_accuracy'] <= 1.0
  assert record['settings']['smoke'] is True and 'cpu_count' in record['machine']
  assert '| median |' in result.stdout
  assert not helpers.leaked_workers()
