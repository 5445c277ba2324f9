"""The benchmark-suite tasks (tasks/benchmark_suite) on generated files in TFF's own formats."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from core.runtime import import_tff
from recipes import training_loop
from tasks import benchmark_suite
from tasks import create_task
from tests import benchmark_fixtures
from tests import emnist_sqlite
from tests import helpers

tff = import_tff()

# Small settings through each task's own options (the fixtures are tiny).
SMALL = {
    'emnist_autoencoder': {},
    'cifar100_image': {'crop_size': 8},
    'shakespeare_character': {'sequence_length': 8},
    'stackoverflow_word': {'sequence_length': 6},
    'stackoverflow_tag': {},
}


@pytest.fixture(scope='module')
def cache(tmp_path_factory) -> Path:
  """A cache dir holding every suite file (generated in about a second)."""
  return benchmark_fixtures.write_all(tmp_path_factory.mktemp('suite_cache'))


def _task(name: str, cache: Path, **kwargs):
  return create_task(name, cache_dir=str(cache), **SMALL[name], **kwargs)


@pytest.mark.parametrize('name,clients,headline', [
    ('emnist_autoencoder', 4, 'mean_squared_error'),
    ('cifar100_image', 6, 'accuracy'),
    ('shakespeare_character', 4, 'accuracy'),
    ('stackoverflow_word', 6, 'accuracy_no_oov_no_eos'),
    ('stackoverflow_tag', 6, 'recall_at_5'),
])
def test_each_task_is_tffs_baseline_over_its_file(cache, name, clients, headline):
  task = _task(name, cache)
  assert len(task.train_data.client_ids) == clients
  assert task.metrics.headline == headline
  model = task.model_fn()
  assert isinstance(model, tff.learning.models.VariableModel)
  # The Keras builder is TFF's own: the same weights as the baseline's model.
  assert ([tuple(v.shape) for v in model.trainable_variables]
          == [tuple(w.shape) for w in task.keras_model_fn().trainable_weights])
  # Training batches have the element type the model was built for.
  client = task.train_data.client_ids[0]
  batches = task.preprocess_train(task.train_data.create_tf_dataset_for_client(client), seed=1)
  assert batches.element_spec == model.input_spec
  assert len(list(batches)) >= 1
  metric_names = set(model.metric_finalizers())
  assert {source for source, _ in task.metrics.columns} <= metric_names


def test_client_shuffle_is_seeded(cache):
  task = _task('stackoverflow_word', cache)
  client = task.train_data.client_ids[0]

  def order(seed):
    dataset = task.preprocess_train(task.train_data.create_tf_dataset_for_client(client), seed)
    return np.concatenate([x.numpy().ravel() for x, _ in dataset])

  np.testing.assert_array_equal(order(5), order(5))
  assert any(not np.array_equal(order(5), order(s)) for s in (6, 7, 8))


def test_autoencoder_evaluation_is_tffs_mean_squared_error(cache):
  task = _task('emnist_autoencoder', cache)
  weights = training_loop.initial_model_weights(task, seed=0)
  zero = tff.learning.models.ModelWeights(
      trainable=[np.zeros_like(w) for w in weights.trainable],
      non_trainable=[np.zeros_like(w) for w in weights.non_trainable])
  result = training_loop.Evaluator(task, task.validation_data, 'validation')(zero)
  # Zero weights: every sigmoid output is 0.5. Validation is every other held-out writer.
  splits = emnist_sqlite.write_emnist_sqlite(cache.parent / 'check.sqlite')['all_test']
  writers = sorted(splits.images)[0::2]
  pixels = np.concatenate([splits.images[w].reshape(-1, 784) / 255.0 for w in writers])
  assert result['validation_mean_squared_error'] == pytest.approx(
      np.mean((pixels - 0.5) ** 2), rel=1e-4)
  assert result['validation_mean_absolute_error'] == pytest.approx(
      np.mean(np.abs(pixels - 0.5)), rel=1e-4)
  assert result['validation_loss'] == pytest.approx(np.mean((pixels - 0.5) ** 2), rel=1e-4)


def test_tag_prediction_evaluation_is_recall_at_5_and_precision(cache):
  task = _task('stackoverflow_tag', cache)
  weights = training_loop.initial_model_weights(task, seed=0)
  kernel, bias = weights.trainable
  # No word matters; the bias ranks tags 3-7 first and makes them positive (sigmoid 0.73),
  # tags 0-2 not (0.27). (All-equal scores would make top-5 the first five tags.)
  bias = np.where(np.arange(bias.shape[0]) >= 3, 1.0, -1.0).astype(np.float32)
  set_weights = tff.learning.models.ModelWeights(
      trainable=[np.zeros_like(kernel), bias], non_trainable=[])
  result = training_loop.Evaluator(task, task.validation_data, 'validation')(set_weights)
  # Validation: all 18 held-out questions (3 users x 6, fewer than 10,000); user k asks
  # questions with tags (k + i) % 8, i = 0..5, one tag each.
  tags = np.array([(k + i) % 8 for k in range(3) for i in range(6)])
  hits = np.sum(tags >= 3)  # 12 of 18.
  assert result['validation_recall_at_5'] == pytest.approx(hits / len(tags))
  # Precision at the 0.5 threshold: 5 predicted tags per question, one of them true or none.
  assert result['validation_precision'] == pytest.approx(hits / (5 * len(tags)))


@pytest.mark.parametrize('name', benchmark_suite.TASKS)
def test_missing_files_are_named_with_the_cache_dir_and_urls(tmp_path, name):
  with pytest.raises(UserError) as raised:
    create_task(name, cache_dir=str(tmp_path))
  message = str(raised.value)
  assert '\n' not in message and str(tmp_path) in message and 'nothing is downloaded' in message
  for data_file in benchmark_suite.DATA_FILES[name]:
    assert data_file.path in message and data_file.url in message
  assert list(tmp_path.iterdir()) == []  # Nothing was downloaded or created.


def test_only_the_missing_files_are_named(cache, tmp_path):
  shutil.copy(cache / 'stackoverflow.sqlite', tmp_path / 'stackoverflow.sqlite')
  with pytest.raises(UserError, match='needs datasets/stackoverflow.word_count, '
                                      'datasets/stackoverflow.tag_count in') as raised:
    create_task('stackoverflow_tag', cache_dir=str(tmp_path))
  assert 'stackoverflow.sqlite.lzma' not in str(raised.value)


def _copy_cache(cache: Path, target: Path) -> Path:
  shutil.copytree(cache, target)
  return target


def test_corrupt_and_wrong_schema_files_give_one_line(cache, tmp_path):
  cases = []
  # (task, file, new content or a copy source, what the message says)
  data = (cache / 'shakespeare.sqlite').read_bytes()
  cases.append(('shakespeare_character', 'shakespeare.sqlite', b'\x00garbage' * 500, 'not a SQLite'))
  cases.append(('shakespeare_character', 'shakespeare.sqlite', data[:len(data) // 2], 'truncated'))
  # Another dataset's file in CIFAR-100's place: TFF's parser rejects its examples.
  cases.append(('cifar100_image', 'cifar100.sqlite', data, 'not TFF\'s CIFAR-100 database'))
  no_tables = tmp_path / 'no_tables.sqlite'
  sqlite3.connect(no_tables).execute('CREATE TABLE other (x INTEGER)').connection.commit()
  cases.append(('emnist_autoencoder', 'emnist_all.sqlite', no_tables.read_bytes(), 'corrupt or not'))
  cases.append(('stackoverflow_word', 'datasets/stackoverflow.word_count', b'lonely\n', 'corrupt'))
  cases.append(('stackoverflow_tag', 'datasets/stackoverflow.tag_count', b'[1, 2', 'corrupt'))
  cases.append(('stackoverflow_tag', 'datasets/stackoverflow.tag_count.tar.bz2', b'BZh9 partial',
                'not the official archive'))
  for i, (name, relative, content, needle) in enumerate(cases):
    root = _copy_cache(cache, tmp_path / f'case{i}')
    (root / relative).write_bytes(content)
    with pytest.raises(UserError) as raised:
      create_task(name, cache_dir=str(root), **SMALL[name])
    message = str(raised.value)
    assert '\n' not in message, message
    assert needle in message and str(root / relative) in message, (name, relative, message)


def test_options_that_do_not_apply_are_refused(cache):
  with pytest.raises(UserError, match='crop_size=8 does not apply to task .shakespeare_character'):
    create_task('shakespeare_character', cache_dir=str(cache),
                crop_size=8)
  with pytest.raises(UserError, match='model=.cnn. does not apply'):
    create_task('cifar100_image', cache_dir=str(cache), model='cnn')
  with pytest.raises(UserError, match='--sequence_length=5 does not apply to task .mnist_digits'):
    create_task('mnist_digits', sequence_length=5)
  # Given, even at the task's default, is what counts (the recipes pass only flags set).
  with pytest.raises(UserError, match='--only_digits=False does not apply to task .cifar100_image'):
    create_task('cifar100_image', cache_dir=str(cache), only_digits=False)
  with pytest.raises(TypeError, match='no_such_option'):
    create_task('cifar100_image', cache_dir=str(cache), no_such_option=3)


def test_recipe_flags_are_the_suite_options():
  # recipes.experiment passes each suite flag the user set as the create_task option of the
  # same name.
  from recipes import benchmark_task_flags  # pylint: disable=g-import-not-at-top
  assert benchmark_task_flags.names() == benchmark_suite.OPTION_NAMES


def test_target_is_reached_in_the_headline_metrics_direction():
  # The loop's stopping rule (recipes.training_loop.run_training calls it with the task's
  # `higher_is_better`): a falling headline (the autoencoder's mean squared error) reaches
  # its target by dropping to it, a rising one by climbing to it.
  assert training_loop.target_reached(0.02, 0.03, higher_is_better=False)
  assert training_loop.target_reached(0.03, 0.03, higher_is_better=False)
  assert not training_loop.target_reached(0.04, 0.03, higher_is_better=False)
  assert not training_loop.target_reached(0.02, 0.03, higher_is_better=True)
  assert training_loop.target_reached(0.04, 0.03, higher_is_better=True)


# End to end: each task trains once through a recipe binary with the smallest settings its
# flags allow (2 rounds of 2 clients, short sequences, 8x8 crops; the fixtures' vocabularies
# have 24 words and 8 tags), and the tests below share that run's outputs.
# task -> (recipe, flags, headline, learning signal expected after the 2nd round?)
E2E = {
    'emnist_character': ('recipes.fed_avg', ['--model=2nn', '--client_learning_rate=0.05'],
                         'accuracy', False),
    # Its target is reached at the first evaluation: 0.9 is above any mean squared error of
    # pixels in [0, 1], and the autoencoder's headline is reached by falling to it.
    'emnist_autoencoder': ('recipes.fed_avg', ['--client_learning_rate=1.0', '--target_accuracy=0.9'],
                           'mean_squared_error', False),
    'shakespeare_character': ('recipes.fed_avg', ['--sequence_length=8', '--client_learning_rate=1.0',
                                                  '--client_batch_size=4'], 'accuracy', True),
    'cifar100_image': ('recipes.fed_opt', ['--crop_size=8', '--client_batch_size=4',
                                           '--server_optimizer=yogi', '--client_learning_rate=0.03',
                                           '--server_learning_rate=0.1'], 'accuracy', False),
    'stackoverflow_word': ('recipes.fed_opt', ['--sequence_length=6', '--num_validation_examples=12',
                                               '--num_test_examples=12', '--server_optimizer=adam',
                                               '--client_learning_rate=0.3',
                                               '--server_learning_rate=0.03'],
                           'accuracy_no_oov_no_eos', True),
    'stackoverflow_tag': ('recipes.fed_opt', ['--num_validation_examples=12', '--num_test_examples=12',
                                              '--server_optimizer=adagrad', '--client_learning_rate=1.0',
                                              '--server_learning_rate=0.3', '--server_epsilon=0.01'],
                          'recall_at_5', True),
}
_ROUNDS = 2
# The metric columns each task logs (train_/validation_/test_ + these).
_METRIC_COLUMNS = {
    'emnist_character': ('accuracy',),
    'emnist_autoencoder': ('mean_squared_error', 'mean_absolute_error'),
    'shakespeare_character': ('accuracy',),
    'cifar100_image': ('accuracy',),
    'stackoverflow_word': ('accuracy', 'accuracy_no_oov', 'accuracy_no_oov_no_eos'),
    'stackoverflow_tag': ('precision', 'recall_at_5'),
}


# Benchmark-size models: ResNet-18 (11M parameters; 2 minutes of building and tracing for 2
# rounds) and the two LSTMs. Their runs are `heavy` (tests/conftest.py: `--all`, which CI
# passes); the quick suite trains the three other tasks through both binaries.
HEAVY = ('cifar100_image', 'shakespeare_character', 'stackoverflow_word')


def _marks(group: str, task_names) -> tuple:
  """One pytest-xdist group per run (they may go to both workers); heavy if a task is."""
  heavy = (pytest.mark.heavy,) if set(task_names) & set(HEAVY) else ()
  return (pytest.mark.xdist_group(group), *heavy)


@pytest.fixture(scope='module', params=[
    pytest.param(name, marks=_marks(f'suite_{name}', [name])) for name in E2E])
def run(request, cache, tmp_path_factory) -> dict:
  """One binary run of a task (once per module): its result, output dir and settings."""
  name = request.param
  module, flags, headline, learns = E2E[name]
  root = tmp_path_factory.mktemp(f'run_{name}')
  # Forked from the pre-imported binary server: a process of its own without the import's
  # seconds (the grid smokes below start real `python -m` processes through the script).
  result = helpers.run_binary(
      module, f'--task={name}', f'--cache_dir={cache}', f'--total_rounds={_ROUNDS}',
      '--clients_per_round=2', '--rounds_per_eval=1', '--progress=false',
      f'--root_output_dir={root}', '--experiment_name=run', *flags, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = root / 'run'
  return {'name': name, 'result': result, 'out': out, 'headline': headline, 'learns': learns,
          'rows': helpers.read_rows(out / 'metrics.csv'),
          'summary': helpers.read_json(out / 'summary.json')}


@pytest.mark.slow
def test_binary_logs_the_tasks_own_metrics(run):
  headline, rows = run['headline'], run['rows']
  reached_at_first = run['name'] == 'emnist_autoencoder'
  assert len(rows) == (1 if reached_at_first else _ROUNDS)
  columns = set(rows[0])
  for prefix in ('train', 'validation', 'test'):
    assert {f'{prefix}_{headline}', f'{prefix}_loss'} <= columns, columns
  # Exactly the task's own metrics (a classifier's accuracy only where the task has one).
  trained = {c[len('train_'):] for c in columns if c.startswith('train_')}
  assert trained == {'loss', 'examples', *_METRIC_COLUMNS[run['name']]}, trained
  validation = [float(r[f'validation_{headline}']) for r in rows]
  assert all(np.isfinite(validation))
  assert float(rows[-1][f'test_{headline}']) >= 0
  assert run['out'].joinpath('metrics.png').stat().st_size > 5000


@pytest.mark.slow
def test_summary_and_stdout_name_the_headline_metric(run):
  headline, summary, rows = run['headline'], run['summary'], run['rows']
  assert summary['headline_metric'] == headline
  assert summary['headline_higher_is_better'] == (headline != 'mean_squared_error')
  assert summary['target_metric'] == f'validation_{headline}'
  assert summary[f'final_test_{headline}'] == pytest.approx(float(rows[-1][f'test_{headline}']))
  assert f'test {headline.replace("_", " ")}' in run['result'].stdout
  if run['name'] == 'emnist_autoencoder':
    assert summary['status'] == 'target_reached' and summary['target_reached_round'] == 1
  else:
    assert summary['status'] == 'completed' and summary['rounds_completed'] == _ROUNDS


@pytest.mark.slow
def test_learning_signal_where_the_fixture_allows_one(run):
  if not run['learns']:
    pytest.skip(f'{run["name"]}: no learning signal expected in {_ROUNDS} rounds on its fixture')
  headline = run['headline']
  validation = [float(r[f'validation_{headline}']) for r in run['rows']]
  assert validation[-1] > validation[0], validation


@pytest.mark.slow
def test_binary_leaves_no_worker(run):
  del run  # After the run.
  assert helpers.leaked_workers() == []


def test_binary_refuses_missing_files_in_one_line(tmp_path):
  result = helpers.run_module('recipes.fed_opt', '--task=stackoverflow_tag',
                              f'--cache_dir={tmp_path}', timeout=300)
  assert result.returncode == 2
  helpers.assert_one_line_error(result, 'stackoverflow.sqlite', 'stackoverflow.word_count',
                                'stackoverflow.tag_count', str(tmp_path), 'https://')


def test_binary_refuses_a_corrupt_file_in_one_line(tmp_path):
  (tmp_path / 'shakespeare.sqlite').write_bytes(b'\x00garbage' * 500)
  result = helpers.run_in_host('recipes.fed_avg', '--task=shakespeare_character',
                              f'--cache_dir={tmp_path}', timeout=300)
  assert result.returncode == 2
  helpers.assert_one_line_error(result, 'not a SQLite', str(tmp_path / 'shakespeare.sqlite'))


def test_binary_refuses_a_task_flag_of_another_task(cache):
  result = helpers.run_in_host('recipes.fed_avg', '--task=cifar100_image', f'--cache_dir={cache}',
                              '--sequence_length=5', timeout=300)
  assert result.returncode == 2
  helpers.assert_one_line_error(
      result, "--sequence_length=5 does not apply to task 'cifar100_image'")


def test_grid_prints_every_cell_with_the_papers_settings():
  result = subprocess.run(
      ['bash', str(helpers.ROOT / 'scripts' / 'benchmark_grid.sh'), '--print'],
      capture_output=True, text=True, timeout=60, cwd=helpers.ROOT)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 30 and 'benchmark_grid: 30 cells (printed)' in result.stderr
  by_cell = {(l.split('--task=')[1].split()[0],
              l.split('--experiment_name=')[1].split()[0].rsplit('-', 1)[1]): l for l in lines}
  assert len(by_cell) == 30
  # Spot checks against the authors' tables (log10 learning rates, hyperparameters.md).
  so_word_yogi = by_cell[('stackoverflow_word', 'fedyogi')]
  for flag in ('--clients_per_round=50', '--client_batch_size=16', '--total_rounds=1500',
               '--client_learning_rate=0.316227766', '--server_learning_rate=0.01',
               '--server_epsilon=1e-05', '--server_optimizer=yogi', 'recipes.fed_opt'):
    assert flag in so_word_yogi, (flag, so_word_yogi)
  cifar_avg = by_cell[('cifar100_image', 'fedavg')]
  for flag in ('recipes.fed_avg', '--server_learning_rate=3.16227766', '--client_learning_rate=0.1',
               '--total_rounds=4000', '--crop_size=24'):
    assert flag in cifar_avg, (flag, cifar_avg)
  assert '--client_learning_rate=100 ' in by_cell[('stackoverflow_tag', 'fedadagrad')]


def test_grid_gives_beta_2_to_the_adam_and_yogi_cells_only():
  result = subprocess.run(
      ['bash', str(helpers.ROOT / 'scripts' / 'benchmark_grid.sh'), '--print', 'cifar100_image',
       '--server_beta_2=0.999'], capture_output=True, text=True, timeout=60, cwd=helpers.ROOT)
  assert result.returncode == 0, result.stderr
  with_beta = [l for l in result.stdout.splitlines() if '--server_beta_2=0.999' in l]
  assert sorted(l.split('--experiment_name=')[1].split()[0] for l in with_beta) == [
      'cifar100_image-fedadam', 'cifar100_image-fedyogi']


# The grid's smoke runs each task through the binary its E2E run above did not use, so
# every task trains end to end through both recipes.fed_avg (FedAvg) and recipes.fed_opt (FedAdam here).
_OTHER_BINARY = {
    'fedavg': ('fed_avg', [t for t, (m, *_) in E2E.items() if m == 'recipes.fed_opt']),
    'fedadam': ('fed_opt', [t for t, (m, *_) in E2E.items() if m == 'recipes.fed_avg']),
}
# (optimizer, its tasks): the heavy tasks' cells apart from the others.
_GRID_SMOKES = [(o, tasks) for o, (_, all_tasks) in _OTHER_BINARY.items()
                for tasks in ([t for t in all_tasks if t not in HEAVY],
                              [t for t in all_tasks if t in HEAVY]) if tasks]


def test_every_task_is_in_one_grid_smoke_per_binary():
  for optimizer, (_, tasks) in _OTHER_BINARY.items():
    assert len(tasks) == 3
    assert sorted(t for o, ts in _GRID_SMOKES if o == optimizer for t in ts) == sorted(tasks)


def _grid(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
  return subprocess.run(['bash', str(helpers.ROOT / 'scripts' / 'benchmark_grid.sh'), *args],
                        capture_output=True, text=True, timeout=120, cwd=helpers.ROOT,
                        stdin=subprocess.DEVNULL, env=env)


def test_grid_runs_the_cells_it_prints(cache, tmp_path):
  """The run mode executes exactly the --print commands, in order (a recording stand-in for
  the interpreter: the cells' training is the test below)."""
  venv = tmp_path / 'venv'
  (venv / 'bin').mkdir(parents=True)
  calls = tmp_path / 'calls.txt'
  stand_in = venv / 'bin' / 'python'
  stand_in.write_text(f'#!/usr/bin/env bash\necho "$0 $*" >> {calls}\n')
  stand_in.chmod(0o755)
  env = {**os.environ, 'FEDRECIPES_VENV': str(venv)}
  args = ['--smoke', 'emnist_character', 'stackoverflow_tag', 'fedavg', 'fedadam',
          f'--cache_dir={cache}', f'--root_output_dir={tmp_path / "runs"}']
  printed = _grid('--print', *args, env=env)
  ran = _grid(*args, env=env)
  assert printed.returncode == 0 and ran.returncode == 0, printed.stderr + ran.stderr
  assert 'benchmark_grid: 4 cells (run)' in ran.stderr
  # Each invocation names its default output folder by the second it started.
  def cells(text: str) -> list[str]:
    return [re.sub(r'benchmark_grid-smoke/[0-9-]+', 'benchmark_grid-smoke/TIME', line)
            for line in text.splitlines()]
  assert len(cells(printed.stdout)) == 4
  assert cells(calls.read_text()) == cells(printed.stdout)


@pytest.mark.slow
@pytest.mark.parametrize('optimizer,tasks', [
    pytest.param(o, tasks, marks=_marks(f'suite_grid_{o}_{"_".join(tasks)}', tasks),
                 id=f'{o}-{"+".join(tasks)}') for o, tasks in _GRID_SMOKES])
def test_grid_smoke_trains_each_task_through_the_other_binary(cache, tmp_path, optimizer, tasks):
  recipe = _OTHER_BINARY[optimizer][0]
  # The script's --smoke cells (on the module's fixtures), each run as its own process
  # forked from the tests' binary server; that the script runs what it prints is checked
  # above.
  printed = _grid('--print', '--smoke', *tasks, optimizer, f'--cache_dir={cache}',
                  f'--root_output_dir={tmp_path}')
  assert printed.returncode == 0, printed.stderr
  commands = printed.stdout.splitlines()
  assert len(commands) == len(tasks)
  for command in commands:
    _, dash_m, module, *args = command.split()
    assert dash_m == '-m' and module == f'recipes.{recipe}', command
    helpers.run_binary(module, *args, timeout=900, check=True)
  for task in tasks:
    out = tmp_path / f'{task}-{optimizer}'
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['status'] == 'completed' and summary['rounds_completed'] == 2, summary
    assert summary['recipe'] == recipe and summary['headline_metric'] == E2E[task][2]
    hparams = json.loads((out / 'hparams.json').read_text())
    assert hparams['server_optimizer'] == ('sgd' if optimizer == 'fedavg' else 'adam')
    rows = helpers.read_rows(out / 'metrics.csv')
    trained = {c[len('train_'):] for c in rows[0] if c.startswith('train_')}
    assert trained == {'loss', 'examples', *_METRIC_COLUMNS[task]}, (task, trained)
    assert all(np.isfinite(float(r[f'validation_{E2E[task][2]}'])) for r in rows)
  assert helpers.leaked_workers() == []


@pytest.mark.slow
@pytest.mark.heavy
def test_population_benchmark_smoke(tmp_path):
  helpers.run_module('scripts.bench_suite_population', '--smoke',
                     f'--results_dir={tmp_path / "results"}', timeout=900, check=True)
  record = helpers.read_json(tmp_path / 'results' / 'results.json')
  assert [row['population'] for row in record['results']] == [100, 2_000]
  for row in record['results']:
    assert row['users_read'] == row['population']
    assert row['startup_seconds'] > 0 and row['peak_mib'] > 0
  assert record['load']['load_average_1min_samples'] and record['git_commit']
  assert (tmp_path / 'results' / 'population.png').stat().st_size > 5000
  assert helpers.leaked_workers() == []
