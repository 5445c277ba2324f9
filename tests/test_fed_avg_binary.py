"""End-to-end tests of `python -m recipes.fed_avg` through its flags, as a user runs it.

The runs go through the binary's entry point in a long-lived process per binary
(`helpers.run_in_host`: warm TensorFlow caches); the piped run is a real
`python -m ... | cat`, which also checks a fresh process's start and exit. Killing and resuming a run is tested, for every
signal and phase, in test_reproducibility.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import helpers

FAST = ['--task=synthetic', '--clients_per_round=2', '--progress=false']


def _csv_rounds(path: Path) -> list[int]:
  import csv  # pylint: disable=g-import-not-at-top
  with open(path, newline='') as f:
    return [int(r['round']) for r in csv.DictReader(f)]


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
  """(root, flags, stdout) of one finished 4-round run, shared by the tests that read it."""
  root = tmp_path_factory.mktemp('fed_avg')
  args = [*FAST, '--total_rounds=4', '--rounds_per_eval=2', f'--root_output_dir={root}',
          '--experiment_name=e2e']
  result = helpers.run_in_host('recipes.fed_avg', *args, check=True)
  return root, args, result.stdout


def test_trains_and_writes_every_output(trained_run: tuple[Path, list[str], str]) -> None:
  root, _, stdout = trained_run
  out = root / 'e2e'
  assert str(out) in stdout
  assert _csv_rounds(out / 'metrics.csv') == [1, 2, 3, 4]
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['status'] == 'completed' and summary['rounds_completed'] == 4
  assert 0.0 <= summary['final_test_accuracy'] <= 1.0
  assert 0.0 <= summary['final_validation_accuracy'] <= 1.0
  hparams = json.loads((out / 'hparams.json').read_text())
  assert hparams['recipe'] == 'fed_avg' and hparams['weighting'] == 'num_examples'
  assert (out / 'metrics.png').stat().st_size > 1000
  assert any((out / 'tensorboard').iterdir())
  assert any((out / 'checkpoints').iterdir())
  assert helpers.leaked_workers() == []


def test_refuses_to_overwrite_a_run(trained_run: tuple[Path, list[str], str]) -> None:
  root, args, _ = trained_run
  before = (root / 'e2e' / 'metrics.csv').read_text()
  helpers.assert_one_line_error(helpers.run_in_host('recipes.fed_avg', *args), '--resume')
  assert (root / 'e2e' / 'metrics.csv').read_text() == before


@pytest.mark.parametrize('weighting', ['num_examples', 'uniform'])
def test_accuracy_rises_on_mnist_digits(tmp_path: Path, weighting: str) -> None:
  helpers.run_in_host(
      'recipes.fed_avg', '--task=mnist_digits', '--partition=iid', '--num_clients=20',
      '--clients_per_round=5', '--total_rounds=8', '--rounds_per_eval=1', '--model=2nn',
      f'--weighting={weighting}', '--progress=false',
      f'--root_output_dir={tmp_path}', '--experiment_name=rise', check=True)
  rows = helpers.read_rows(tmp_path / 'rise' / 'metrics.csv')
  accuracies = [float(r['validation_accuracy']) for r in rows]
  assert accuracies[-1] > accuracies[0] + 0.1, accuracies
  assert accuracies[-1] > 0.8, accuracies


@pytest.mark.parametrize('flag_args, needle', [
    (['--task=imagenet'], '--task'),
    (['--clients_per_round=500'], 'clients_per_round'),
    (['--total_rounds=0'], '--total_rounds'),
    (['--server_momentum=0.5'], '--server_momentum'),
    (['--alpha=0.1'], '--alpha'),
    (['--resume'], '--experiment_name'),
    (['--target_accuracy=1.5'], '--target_accuracy'),
    (['--weighting=median'], '--weighting'),
    (['--client_batch_size=0'], '--client_batch_size'),
])
def test_bad_flags_fail_with_one_line(tmp_path: Path, flag_args: list[str], needle: str) -> None:
  result = helpers.run_in_host('recipes.fed_avg', *FAST, *flag_args, f'--root_output_dir={tmp_path}')
  helpers.assert_one_line_error(result, needle)
  assert result.returncode == 2


def test_piped_run_returns_and_leaves_no_worker(tmp_path: Path) -> None:
  # `python -m recipes.fed_avg ... | cat`: the pipe must close when the recipe ends.
  command = (f'{sys.executable} -m recipes.fed_avg {" ".join(FAST)} --total_rounds=1 '
             f'--root_output_dir={tmp_path} --experiment_name=piped 2>&1 | cat')
  started = time.monotonic()
  result = subprocess.run(['bash', '-c', command], capture_output=True, text=True, timeout=180,
                          cwd=helpers.ROOT, env=dict(os.environ, PYTHONPATH=str(helpers.ROOT)))
  assert result.returncode == 0, result.stdout
  assert 'outputs:' in result.stdout
  assert time.monotonic() - started < 180
  assert helpers.leaked_workers() == []


def test_federated_evaluation_reports_the_spread_over_clients(tmp_path: Path) -> None:
  common = ('--task=synthetic', '--num_clients=20', '--clients_per_round=4', '--total_rounds=2',
            '--rounds_per_eval=2', '--progress=false', f'--root_output_dir={tmp_path}')
  helpers.run_in_host('recipes.fed_avg', *common, '--experiment_name=plain', check=True)
  helpers.run_in_host('recipes.fed_avg', *common, '--experiment_name=fed',
                     '--federated_eval_clients=6', check=True)
  plain = helpers.read_rows(tmp_path / 'plain' / 'metrics.csv')
  rows = helpers.read_rows(tmp_path / 'fed' / 'metrics.csv')
  # 16 examples per client; every 5th (positions 4, 9, 14) is held out: 13 train, 4 clients.
  assert [float(r['train_examples']) for r in plain] == [64, 64]
  assert [float(r['train_examples']) for r in rows] == [52, 52]
  evaluated = rows[-1]
  assert int(evaluated['fed_eval_clients']) == 6
  values = {k: float(evaluated[f'fed_eval_accuracy_{k}']) for k in ('min', 'p10', 'p50', 'p90', 'mean')}
  assert 0 <= values['min'] <= values['p10'] <= values['p50'] <= values['p90'] <= 1
  assert values['min'] <= values['mean'] <= 1
  assert rows[0]['fed_eval_clients'] == ''  # Only on evaluation rounds.
  summary = helpers.read_json(tmp_path / 'fed' / 'summary.json')
  assert summary['final_federated_eval']['fed_eval_accuracy_p50'] == values['p50']


def test_target_is_compared_at_keras_float32_precision() -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from recipes import training_loop  # pylint: disable=g-import-not-at-top
  keras_accuracy = float(np.float32(950) / np.float32(1000))  # 0.949999988...
  assert keras_accuracy < 0.95
  assert training_loop.target_reached(keras_accuracy, 0.95)
  assert not training_loop.target_reached(float(np.float32(949) / np.float32(1000)), 0.95)
