"""Every recipe binary end to end through its flags, with every aggregator it supports."""

from __future__ import annotations

import concurrent.futures
import json
import math
import subprocess
from pathlib import Path

import pytest

from recipes import aggregator_registry
from tests import helpers
from tests.recipe_matrix import AGGREGATOR_ARGS

RECIPES = ('fed_avg', 'fed_sgd', 'fed_opt', 'fed_prox', 'dp_fed_avg')
# fed_avg (weighted and uniform builders) runs every aggregator; the other recipes pass
# the same `--aggregator` factory to their builder's `model_aggregator` (fed_sgd's own
# builder too), so one aggregator per family (plain, Byzantine-robust, private) checks
# their wiring. Each aggregator's learning-process behaviour, FedSGD's included, is
# tests/test_aggregator_registry.py's.
SUPPORTED = {
    'fed_avg': tuple(AGGREGATOR_ARGS),
    'fed_sgd': ('mean', 'median', 'dp_fixed'),
    'fed_opt': ('mean', 'median', 'dp_fixed'),
    'fed_prox': ('mean', 'median', 'dp_fixed'),
    'dp_fed_avg': ('dp_fixed', 'dp_adaptive'),
}


# The measurement each aggregator adds, as its metrics.csv column under `aggregator/`
# (every run also has `aggregator/client_count`): it must be there, finite, every round.
MEASUREMENT = {
    'clipped_mean': 'zeroing/clipped_fraction',
    'dp_fixed': 'noise_stddev',
    'dp_adaptive': 'clip_norm',
    'secure': 'mean_value/secure_upper_clipped_fraction',
    'median': 'non_finite_client_count',
    'trimmed_mean': 'trimmed_per_side',
}


def test_matrix_covers_every_aggregator() -> None:
  assert list(AGGREGATOR_ARGS)[-1] == 'secure'  # It changes the execution context.
  assert set(AGGREGATOR_ARGS) == set(aggregator_registry.SPECS)
  assert set(MEASUREMENT) <= set(AGGREGATOR_ARGS)
  assert set(SUPPORTED) == set(RECIPES)


# These also run once split across three TFF workers (recipes.fed_avg's runs on workers,
# federated evaluation among them, are tests/test_tff_workers.py's).
ON_WORKERS = ('fed_sgd', 'fed_opt', 'fed_prox', 'dp_fed_avg')


@pytest.fixture(scope='module')
def matrix_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
  """recipe -> (root, result) of tests.recipe_matrix, two recipes at a time (2 cores)."""
  roots = {recipe: tmp_path_factory.mktemp(recipe) for recipe in RECIPES}
  with helpers.serving_workers(3) as workers:
    addresses = ','.join(w.address for w in workers)

    def run(recipe: str) -> subprocess.CompletedProcess[str]:
      return helpers.run_binary('tests.recipe_matrix', recipe, str(roots[recipe]),
                                addresses if recipe in ON_WORKERS else '-',
                                *SUPPORTED[recipe], timeout=900)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
      return {recipe: (roots[recipe], result)
              for recipe, result in zip(RECIPES, pool.map(run, RECIPES))}


@pytest.mark.parametrize('recipe', RECIPES)
def test_recipe_runs_with_each_aggregator(recipe: str, matrix_runs) -> None:
  tmp_path, result = matrix_runs[recipe]
  runs = [json.loads(l) for l in result.stdout.splitlines() if l.startswith('{')]
  failed = [r for r in runs if not r['ok']]
  assert not failed, failed[0]['traceback']
  on_workers = ('workers',) if recipe in ON_WORKERS else ()
  assert [r['aggregator'] for r in runs] == [*SUPPORTED[recipe], *on_workers], result.stderr[-3000:]
  if on_workers:
    assert 'split across 3 TFF workers' in result.stdout
  for name in [*SUPPORTED[recipe], *on_workers]:
    out = tmp_path / f'{recipe}-{name}'
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['status'] == 'completed' and summary['rounds_completed'] == 2
    rows = helpers.read_rows(out / 'metrics.csv')
    # Aggregator measurements reach the CSV: every client counted, the aggregator's own
    # measurement finite; and the model stayed finite.
    counts = [float(r['aggregator/client_count']) for r in rows]
    # dp_fed_avg samples each client with probability 10/20 (Poisson): counts vary.
    assert counts == [10, 10] or (recipe == 'dp_fed_avg' and all(c > 0 for c in counts)), (
        name, counts)
    measured = MEASUREMENT.get(name)
    for row in rows:
      assert math.isfinite(float(row['train_loss'])), (name, row)
      if measured is not None:
        assert math.isfinite(float(row[f'aggregator/{measured}'])), (name, measured, row)
  if recipe == 'dp_fed_avg':
    privacy = json.loads((tmp_path / 'dp_fed_avg-dp_fixed' / 'summary.json').read_text())['privacy']
    assert privacy['rounds'] == 2 and privacy['epsilon'] > 0 and privacy['noise_multiplier'] == 0.1
  assert helpers.leaked_workers() == []


@pytest.mark.parametrize('recipe, args, needle', [
    ('fed_sgd', ['--client_learning_rate=0.1'], 'client_learning_rate'),
    ('fed_sgd', ['--client_epochs_per_round=2'], '--client_epochs_per_round'),
    ('fed_opt', ['--server_optimizer=sgd'], '--server_optimizer'),
    ('fed_opt', ['--server_momentum=0.9'], '--server_momentum'),
    ('fed_prox', ['--proximal_strength=-1'], '--proximal_strength'),
    ('dp_fed_avg', ['--aggregator=median'], '--aggregator'),
    ('dp_fed_avg', ['--noise_multiplier=1', '--target_epsilon=3'], '--target_epsilon'),
    ('fed_avg', ['--noise_multiplier=1'], '--noise_multiplier'),
    ('fed_avg', ['--aggregator=trimmed_mean', '--trim_fraction=0.7'], '--trim_fraction'),
    # The old name of clipped_mean: refused, naming the new one.
    ('fed_avg', ['--aggregator=robust'], 'clipped_mean'),
    # Task options are checked once, by tasks.create_task: a flag the user set for a task it
    # does not apply to is refused even at its default value.
    ('fed_avg', ['--task=emnist_character', '--num_clients=100'], 'num_clients=100'),
    ('fed_avg', ['--alpha=0.5'], "only to partition='dirichlet'"),
])
def test_recipe_rejects_inconsistent_flags(recipe: str, args: list[str], needle: str,
                                           tmp_path: Path) -> None:
  result = helpers.run_in_host(f'recipes.{recipe}', '--task=synthetic', '--total_rounds=1',
                              f'--root_output_dir={tmp_path}', *args)
  helpers.assert_one_line_error(result, needle)
