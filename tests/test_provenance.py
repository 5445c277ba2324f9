"""core.outputs.git_commit: the commit and whether the code that made a result was committed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core import outputs


def _git(repo: Path, *args: str) -> None:
  subprocess.run(['git', '-C', str(repo), '-c', 'user.email=t@t', '-c', 'user.name=t', *args],
                 check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
  (tmp_path / 'recipes').mkdir()
  (tmp_path / 'recipes' / 'x.py').write_text('x = 1\n')
  results = tmp_path / outputs.RESULTS_DIR / 'communication'
  results.mkdir(parents=True)
  (results / 'results.json').write_text('{}\n')
  _git(tmp_path, 'init', '-q')
  _git(tmp_path, 'add', '-A')
  _git(tmp_path, 'commit', '-qm', 'first')
  monkeypatch.setattr(outputs, '_ROOT', tmp_path)
  return tmp_path


def test_clean_tree(repo):
  record = outputs.git_commit()
  assert len(record['git_commit']) == 40 and record['git_dirty'] is False


def test_a_changed_source_file_is_dirty(repo):
  (repo / 'recipes' / 'x.py').write_text('x = 2\n')
  assert outputs.git_commit()['git_dirty'] is True


def test_rewritten_benchmark_results_and_untracked_outputs_are_not(repo):
  # A benchmark writes its results (and plot) as it finishes, and runs write untracked
  # outputs: neither is the code that made the result.
  (repo / outputs.RESULTS_DIR / 'communication' / 'results.json').write_text('{"a": 1}\n')
  (repo / 'runs').mkdir()
  (repo / 'runs' / 'metrics.csv').write_text('round\n')
  assert outputs.git_commit()['git_dirty'] is False


def test_not_a_checkout(tmp_path, monkeypatch):
  monkeypatch.setattr(outputs, '_ROOT', tmp_path)
  assert outputs.git_commit() == {'git_commit': 'unknown', 'git_dirty': None}
