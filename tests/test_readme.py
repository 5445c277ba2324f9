"""The README's numbers are the committed results': generated, and checked here."""

from __future__ import annotations

import json

from scripts import readme_tables


def test_readme_tables_equal_the_committed_results():
  text = readme_tables.README.read_text()
  assert set(readme_tables.sections(text)) <= set(readme_tables.RENDERERS), (
      'every generated README section has a renderer')
  assert readme_tables.render(text) == text, (
      'README.md differs from docs/benchmarks/*/results.json: run `python -m scripts.readme_tables`')


def test_a_changed_result_is_caught(tmp_path, monkeypatch):
  # Copy the results, change one number, and render from the copy: the check must see it.
  record = readme_tables.load('robustness')
  record['results'][0]['final_test_accuracy'] += 0.0100
  (tmp_path / 'robustness').mkdir()
  (tmp_path / 'robustness' / 'results.json').write_text(json.dumps(record))
  monkeypatch.setattr(readme_tables, 'RESULTS', tmp_path)
  text = readme_tables.README.read_text()
  renderers = {'robustness': readme_tables.robustness}
  only_robustness = text[text.index('<!-- generated:robustness -->'):
                         text.index('<!-- /generated:robustness -->') + 31]
  assert readme_tables.render(only_robustness, renderers) != only_robustness


def test_provenance_names_file_command_and_commit():
  line = readme_tables.provenance('x', {'command': 'python -m scripts.bench_x', 'git_commit': 'a' * 40,
                                         'git_dirty': False,
                                         'load': {'load_average_1min_at_start': 0.2,
                                                  'load_average_1min_peak': 0.9, 'cores': 2}})
  assert '`docs/benchmarks/x/results.json`' in line and 'aaaaaaaaaa' in line
  assert 'python -m scripts.bench_x' in line and '0.2 at start, 0.9 peak on 2 cores' in line
