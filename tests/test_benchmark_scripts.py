"""The benchmark scripts' smoke modes, run as a user runs them, so that they cannot rot.

Each smoke run goes through the real recipe binaries (the benchmarks start them as
subprocesses with pipes, so a leaked TFF worker would hang the test instead of passing);
the benchmark drivers themselves are forked from the pre-imported binary server
(tests/helpers.run_binary), the shell script runs as a real `bash` command. The Flower comparison needs the
separate Flower environment and is skipped without it (`bash scripts/setup_flower.sh`
makes it in about half a minute; the tests do not install it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import bench_common
from tests import emnist_sqlite
from tests import helpers

pytestmark = pytest.mark.slow


def _bash(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
  return subprocess.run(
      ['bash', str(helpers.ROOT / 'scripts' / script), *args], capture_output=True, text=True,
      timeout=timeout, cwd=helpers.ROOT, env=bench_common.subprocess_env(),
      stdin=subprocess.DEVNULL)


def _ray_processes() -> list[int]:
  """Ray daemons and workers started from the Flower environment that are still alive."""
  pids = []
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/cmdline', 'rb') as f:
          cmdline = f.read().decode(errors='replace')
      except OSError:
        continue
      if '.venv-flower' in cmdline and ('ray' in cmdline.lower()) and int(entry) != os.getpid():
        pids.append(int(entry))
  return pids


def test_markdown_table_shows_missing_values() -> None:
  table = bench_common.markdown_table(
      [{'a': 'x', 'b': 1.23456}, {'a': 'y', 'b': None}], [('a', 'A', ''), ('b', 'B', '.2f')])
  assert table.splitlines() == ['| A | B |', '|---|---|', '| x | 1.23 |', '| y | - |']


def test_curve_keeps_evaluated_rounds() -> None:
  rows = [{'round': '1', 'test_accuracy': ''}, {'round': '2', 'test_accuracy': '0.5'}]
  assert bench_common.curve(rows) == ([2], [0.5])


def _fake_run(out: Path, command: list[str], commit: str, dirty: bool = False) -> None:
  """A finished run as a recipe leaves it: summary.json (with its provenance), metrics.csv."""
  out.mkdir(parents=True)
  summary = {'command': ' '.join(['python', *command[1:]]), 'git_commit': commit,
             'git_dirty': dirty, 'rounds_completed': 3}
  (out / 'summary.json').write_text(json.dumps(summary))
  (out / 'metrics.csv').write_text('round,validation_accuracy\n3,0.5\n')


def test_run_recipe_resume_reuses_only_a_finished_run_of_the_same_command_and_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setattr(bench_common.outputs, 'git_commit',
                      lambda: {'git_commit': 'abc', 'git_dirty': False})
  ran = []

  def fake_run_command(command, **unused_kwargs):
    ran.append(command)
    _fake_run(tmp_path / 'runs' / command[-1].split('=')[1], command, 'abc')
    return '', 1.5

  monkeypatch.setattr(bench_common, 'run_command', fake_run_command)
  runs = tmp_path / 'runs'

  def command(name: str, flag: str = '--seed=0') -> list[str]:
    return [sys.executable, '-m', 'recipes.fed_avg', flag, '--progress=false',
            f'--root_output_dir={runs}', f'--experiment_name={name}']

  _fake_run(runs / 'done', command('done'), 'abc')
  run = bench_common.run_recipe('recipes.fed_avg', ['--seed=0'], runs_dir=runs, name='done',
                                reuse=True)
  assert run['reused'] and run['process_seconds'] is None and ran == []
  assert run['rows'] == [{'round': '3', 'validation_accuracy': '0.5'}]

  # Killed mid-run: no summary.json. Moved aside (kept), run again.
  (runs / 'killed').mkdir()
  (runs / 'killed' / 'metrics.csv').write_text('round\n1\n')
  run = bench_common.run_recipe('recipes.fed_avg', ['--seed=0'], runs_dir=runs, name='killed',
                                reuse=True)
  assert not run['reused'] and run['process_seconds'] == 1.5 and len(ran) == 1
  assert [p.name.startswith('killed.unfinished-') for p in runs.iterdir()].count(True) == 1

  # Another command, another commit, or a dirty tree: refused, nothing mixed into the table.
  with pytest.raises(bench_common.UserError, match='another command'):
    bench_common.run_recipe('recipes.fed_avg', ['--seed=1'], runs_dir=runs, name='done',
                            reuse=True)
  _fake_run(runs / 'old', command('old'), 'def')
  with pytest.raises(bench_common.UserError, match='commit def'):
    bench_common.run_recipe('recipes.fed_avg', ['--seed=0'], runs_dir=runs, name='old',
                            reuse=True)
  _fake_run(runs / 'dirty', command('dirty'), 'abc', dirty=True)
  with pytest.raises(bench_common.UserError, match='dirty: True'):
    bench_common.run_recipe('recipes.fed_avg', ['--seed=0'], runs_dir=runs, name='dirty',
                            reuse=True)


def test_flower_side_does_not_import_tff() -> None:
  # bench_flower runs in the Flower environment, where TFF cannot even be installed.
  code = ('import sys; import scripts.bench_flower, scripts.bench_common; '
          'assert "tensorflow_federated" not in sys.modules; '
          'assert "tensorflow" not in sys.modules')
  subprocess.run([sys.executable, '-c', code], check=True, cwd=helpers.ROOT,
                 env=bench_common.subprocess_env(), timeout=60)


def test_bench_communication_smoke(tmp_path: Path) -> None:
  result = helpers.run_binary(
      'scripts.bench_communication', '--smoke', f'--results_dir={tmp_path / "results"}',
      f'--runs_dir={tmp_path / "runs"}', timeout=300, check=True)
  record = json.loads((tmp_path / 'results' / 'results.json').read_text())
  rows = record['results']
  assert [r['key'] for r in rows] == ['fedsgd', 'fedadam']
  assert [r['recipe'] for r in rows] == ['recipes.fed_sgd', 'recipes.fed_opt']
  for row in rows:
    assert row['rounds_run'] <= 2 and row['curve_rounds'][0] == 1
    assert 0.0 <= row['final_test_accuracy'] <= 1.0
  fedsgd = rows[0]
  assert fedsgd['speedup_vs_fedsgd'] == (1.0 if fedsgd['rounds_to_target'] else None)
  assert record['machine']['cpu_count'] >= 1 and 'load_average_1min_peak' in record['load']
  assert (tmp_path / 'results' / 'results.csv').read_text().startswith('key,algorithm')
  assert (tmp_path / 'results' / 'accuracy_vs_rounds.png').stat().st_size > 5000
  assert '| FedSGD | 1 step | all |' in result.stdout
  assert helpers.leaked_workers() == []


def test_emnist_adaptive_is_the_grids_emnist_row() -> None:
  # The script is a shortcut to benchmark_grid.sh's emnist_character row (whose cells run in
  # tests/test_benchmark_suite.py); the published settings are checked here on its commands.
  shortcut = _bash('emnist_adaptive.sh', '--print', timeout=60)
  grid = _bash('benchmark_grid.sh', '--print', 'emnist_character', timeout=60)
  assert shortcut.returncode == 0 and shortcut.stdout == grid.stdout, shortcut.stderr
  published = {  # optimizer: (recipe, server optimizer, client lr, server lr, epsilon)
      'fedavg': ('fed_avg', 'sgd', '0.1', '1', None),
      'fedavgm': ('fed_opt', 'sgdm', '0.0316227766', '0.316227766', None),
      'fedadam': ('fed_opt', 'adam', '0.0316227766', '0.00316227766', '0.0001'),
      'fedyogi': ('fed_opt', 'yogi', '0.0316227766', '0.00316227766', '0.0001'),
      'fedadagrad': ('fed_opt', 'adagrad', '0.0316227766', '0.1', '0.01'),
  }
  lines = {l.split('--experiment_name=emnist_character-')[1].split()[0]: l.split()
           for l in shortcut.stdout.splitlines()}
  assert sorted(lines) == sorted(published)
  for optimizer, (recipe, server, client_lr, server_lr, epsilon) in published.items():
    words = lines[optimizer]
    assert words[1:3] == ['-m', f'recipes.{recipe}'], words
    for flag in ('--task=emnist_character', '--model=cnn_dropout', '--clients_per_round=10',
                 '--client_batch_size=20', '--total_rounds=1500', f'--server_optimizer={server}',
                 f'--client_learning_rate={client_lr}', f'--server_learning_rate={server_lr}'):
      assert flag in words, (optimizer, flag, words)
    assert (f'--server_epsilon={epsilon}' in words) == (epsilon is not None), words
  assert '--server_momentum=0.9' in lines['fedavgm']


def test_emnist_adaptive_without_the_database_says_where_to_get_it(tmp_path: Path) -> None:
  result = _bash('emnist_adaptive.sh', f'--cache_dir={tmp_path}', 'fedadam', timeout=300)
  helpers.assert_one_line_error(result, 'emnist_all.sqlite not found', str(tmp_path))


def test_emnist_adaptive_rejects_an_unknown_optimizer() -> None:
  result = _bash('emnist_adaptive.sh', 'fedsgdm', timeout=30)
  helpers.assert_one_line_error(result, "unknown task or optimizer 'fedsgdm'")


# Heavy: it needs Flower's own environment, which only .ci/run installs (with --all).
@pytest.mark.heavy
@pytest.mark.skipif(not bench_common.FLOWER_PYTHON.exists(),
                    reason='the Flower environment (.venv-flower) is not installed; '
                           'create it with `bash scripts/setup_flower.sh` (about 35 s)')
def test_bench_peer_smoke(tmp_path: Path) -> None:
  result = helpers.run_binary(
      'scripts.bench_peer', '--smoke', '--repeats=1', f'--results_dir={tmp_path / "results"}',
      f'--runs_dir={tmp_path / "runs"}', timeout=600, check=True)
  record = json.loads((tmp_path / 'results' / 'results.json').read_text())
  systems = [r['system'] for r in record['results']]
  assert systems[0].startswith('fedrecipes') and systems[1].startswith('Flower 1.42')
  for row in record['results']:
    assert len(row['round_seconds']) == 2 and row['seconds_per_round'] > 0
    assert 0.0 <= row['final_test_accuracy'] <= 1.0
  assert record['summary']['speedup_flower_over_fedrecipes'] > 0
  assert (tmp_path / 'results' / 'seconds_per_round.png').stat().st_size > 5000
  assert 'Flower s/round / fedrecipes s/round' in result.stdout
  assert helpers.leaked_workers() == []
  assert _ray_processes() == []


def test_bench_demo_and_federated_eval_smoke(tmp_path: Path) -> None:
  helpers.run_binary('scripts.bench_demo', '--smoke', '--seeds=3',
                     f'--results_dir={tmp_path / "demo"}', timeout=300, check=True)
  demo = json.loads((tmp_path / 'demo' / 'results.json').read_text())
  assert [r['seed'] for r in demo['results']] == [3]
  assert demo['statistics']['process_seconds']['median'] > 0
  assert len(demo['git_commit']) == 40 or demo['git_commit'] == 'unknown'
  helpers.run_binary('scripts.bench_federated_eval', '--smoke',
                     f'--results_dir={tmp_path / "fed"}', timeout=300, check=True)
  rows = json.loads((tmp_path / 'fed' / 'results.json').read_text())['results']
  assert [r['partition'] for r in rows] == ['shards', 'iid']
  for row in rows:
    assert row['fed_eval_accuracy_min'] <= row['fed_eval_accuracy_p50'] <= 1
    assert row['fed_eval_clients'] == 5
  assert helpers.leaked_workers() == []
