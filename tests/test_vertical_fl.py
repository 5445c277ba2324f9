"""End-to-end tests of `python -m recipes.vertical_fl`, its data API errors and its accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from core.outputs import read_csv
from recipes.vertical import data
from recipes.vertical import experiment
from recipes.vertical import metrics
from tests import helpers


@pytest.mark.slow
@pytest.mark.parametrize('flags, num_parties, secure', [
    (['--task=digits', '--num_parties=3', '--epochs=2'], 3, True),
    (['--task=breast_cancer', '--secure_aggregation=false', '--overlap=0.6', '--epochs=1'], 3, False),
])
def test_binary_runs_end_to_end(tmp_path: Path, flags: list[str], num_parties: int,
                                secure: bool) -> None:
  process = helpers.run_in_host('recipes.vertical_fl', *flags, '--progress=false',
                                f'--root_output_dir={tmp_path}', '--experiment_name=e2e', check=True)
  assert 'PSI:' in process.stdout and 'no raw IDs' in process.stdout
  out = tmp_path / 'e2e'
  summary = json.loads((out / 'summary.json').read_text())
  assert set(summary['models']) == set(experiment.MODEL_NAMES)
  for scores in summary['models'].values():
    assert set(metrics.METRIC_NAMES) <= set(scores)
    assert 0 <= scores['accuracy'] <= 1
  assert summary['config']['num_parties'] == num_parties
  assert summary['secure_aggregation']['enabled'] is secure
  assert summary['psi']['intersection_size'] == summary['rows']['train'] + summary['rows']['test']
  assert summary['seed'] == 0
  assert summary['git_commit'] == 'unknown' or len(summary['git_commit'].split('-')[0]) == 40
  rows = read_csv(out / 'metrics.csv')
  assert len(rows) == summary['config']['epochs']
  assert {'epoch', 'vertical_train_loss', 'vertical_test_accuracy',
          'centralized_test_accuracy', 'label_party_only_test_accuracy'} <= set(rows[0])
  assert (out / 'curves.png').stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize('flags, message', [
    (['--task=mnist'], 'value should be one of <breast_cancer|digits>'),
    (['--task=breast_cancer', '--num_parties=4'], 'has 3 feature groups'),
    (['--learning_rate=inf'], '--learning_rate=inf'),
    (['--num_parties=2'], "the label party coordinates, so it would learn the other party's embedding"),
    (['--seed=-1'], 'flag --seed=-1'),
])
def test_bad_input_fails_with_one_line(tmp_path: Path, flags: list[str], message: str) -> None:
  process = helpers.run_in_host('recipes.vertical_fl', *flags, f'--root_output_dir={tmp_path}')
  assert process.returncode == 2
  helpers.assert_one_line_error(process, message)


def test_feature_rows_and_ids_must_match() -> None:
  with pytest.raises(UserError, match="party 'bank' has 3 IDs but 4 feature rows"):
    data.PartyTable(name='bank', ids=['a', 'b', 'c'], features=np.zeros((4, 2)),
                    feature_names=['x', 'y'])
  with pytest.raises(UserError, match='2 labels but 3 feature rows'):
    data.PartyTable(name='bank', ids=['a', 'b', 'c'], features=np.zeros((3, 1)), feature_names=['x'],
                    labels=np.zeros(2))


def test_data_api_rejects_unknown_task_and_bad_splits() -> None:
  with pytest.raises(UserError, match="unknown task 'mnist'"):
    data.load('mnist', num_parties=2, overlap=0.5, seed=0)
  with pytest.raises(UserError, match='overlap must be in'):
    data.load('digits', num_parties=2, overlap=1.5, seed=0)
  with pytest.raises(UserError, match='2 to 3 parties, not 4'):
    data.load('breast_cancer', num_parties=4, overlap=0.5, seed=0)


def test_party_tables_overlap_but_differ() -> None:
  dataset = data.load('digits', num_parties=4, overlap=0.5, seed=0)
  id_sets = [set(party.ids) for party in dataset.parties]
  common = set.intersection(*id_sets)
  assert len(common) == round(0.5 * 1797)
  assert all(len(ids) > len(common) for ids in id_sets)  # Each party has people of its own.
  assert dataset.parties[0].ids[:20] != dataset.parties[1].ids[:20]  # Different orders.
  assert [len(party.feature_names) for party in dataset.parties] == [16, 16, 16, 16]
  assert dataset.parties[0].labels is not None and dataset.parties[1].labels is None


def test_tiny_overlap_gives_empty_intersection_error() -> None:
  config = experiment.Config(task='breast_cancer', overlap=0.0001)  # round(0.0001 * 569) == 0
  with pytest.raises(UserError, match='intersection is empty'):
    experiment.align(config)


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_curves(tmp_path: Path) -> None:
  # --seed decides every random choice that affects the metrics (IDs, split, initialization,
  # batch order); the cryptography's os.urandom keys and shuffles must not change them.
  # 'b' runs in a process of its own (forked), 'a' and 'c' one after the other in the
  # recipe host: the same seed gives the same metrics across processes, and within one.
  def metrics_csv(name: str, seed: int) -> str:
    run = helpers.run_binary if name == 'b' else helpers.run_in_host
    run('recipes.vertical_fl', '--task=breast_cancer', '--epochs=3', f'--seed={seed}',
        '--progress=false', f'--root_output_dir={tmp_path}', f'--experiment_name={name}',
        check=True)
    return (tmp_path / name / 'metrics.csv').read_text()

  first, again, other = metrics_csv('a', 5), metrics_csv('b', 5), metrics_csv('c', 6)
  assert first == again
  assert first != other
  summary = json.loads((tmp_path / 'a' / 'summary.json').read_text())
  assert summary['seed'] == 5 and summary['config']['seed'] == 5
  assert summary['git_commit']


@pytest.mark.slow
def test_vertical_model_matches_centralized_on_digits_four_parties() -> None:
  # Each party holds two pixel rows of every digit; the label party alone is weak.
  result = experiment.run(experiment.Config(task='digits', num_parties=4))
  accuracy = {name: scores['accuracy'] for name, scores in result.metrics.items()}
  assert accuracy['vertical'] >= accuracy['centralized'] - 0.01, accuracy
  assert accuracy['vertical'] >= accuracy['label_party_only'] + 0.20, accuracy
