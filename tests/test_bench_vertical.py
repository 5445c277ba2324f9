"""Runs the vertical FL benchmark in its smoke mode and checks what it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.outputs import read_csv
from tests import helpers


@pytest.mark.slow
def test_bench_vertical_smoke(tmp_path: Path) -> None:
  helpers.run_binary('scripts.bench_vertical', '--smoke', '--psi_workers=2', f'--output_dir={tmp_path}',
                     check=True)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['settings']['smoke'] is True
  assert results['machine']['cpu_count'] >= 1
  assert results['seed'] == 0 and results['settings']['seed'] == 0
  assert results['git_commit'] == 'unknown' or len(results['git_commit'].split('-')[0]) == 40
  assert 'scripts.bench_vertical' in results['command']
  assert results['load']['load_average_1min_samples']
  assert [row['intersection'] for row in results['psi']] == [500, 3_000]
  for row in results['psi']:
    seconds = row['seconds']
    assert seconds['min'] <= seconds['q1'] <= seconds['median'] <= seconds['q3'] <= seconds['max']
    assert row['cpu_seconds']['median'] > 0
  headline = results['headline']
  assert headline['psi_seconds_median'] == round(results['psi'][-1]['seconds']['median'], 2)
  assert headline['digits_accuracy_vertical'] == round(
      results['accuracy']['mean_accuracy']['digits']['vertical'], 3)
  assert results['secure_aggregation']['overhead_ratio'] > 0
  assert set(results['accuracy']['mean_accuracy']) == {'digits', 'breast_cancer'}
  summary = read_csv(tmp_path / 'results.csv')
  assert summary[0]['measurement'].startswith('PSI seconds')
  assert all(row['met'] in ('skipped', '') for row in summary)  # Smoke mode enforces nothing.
  assert (tmp_path / 'table.md').read_text().startswith('| measurement |')
  for name in ('psi_time.png', 'training.png'):
    assert (tmp_path / name).stat().st_size > 0


def test_spread_reports_median_and_quartiles() -> None:
  from scripts import bench_timing  # pylint: disable=g-import-not-at-top
  stats = bench_timing.spread_with_values([5.0, 1.0, 4.0, 2.0, 3.0])
  assert (stats['median'], stats['q1'], stats['q3'], stats['min'], stats['max']) == (3, 2, 4, 1, 5)
  assert stats['all'] == [5.0, 1.0, 4.0, 2.0, 3.0]


def test_readme_quotes_the_committed_vertical_results() -> None:
  root = Path(__file__).resolve().parents[1]
  headline = json.loads((root / 'docs/benchmarks/vertical/results.json').read_text())['headline']
  readme = (root / 'README.md').read_text()
  section = readme[readme.index('## Vertical federated learning'):readme.index('## Install details')]
  table = section[section.index('### Measurements'):]
  quoted = [
      f"{headline['psi_seconds_median']} [{headline['psi_seconds_q1']}-{headline['psi_seconds_q3']}]",
      f"{headline['psi_cpu_seconds_median']} [{headline['psi_cpu_seconds_q1']}-"
      f"{headline['psi_cpu_seconds_q3']}]",
      f"{headline['training_overhead_ratio_median']} [{headline['training_overhead_ratio_per_pair_q1']}-"
      f"{headline['training_overhead_ratio_per_pair_q3']}]",
      f"{headline['fusion_microseconds_secure_median']} / {headline['fusion_microseconds_plain_median']}",
      ' / '.join(str(headline[f'digits_accuracy_{m}'])
                 for m in ('vertical', 'centralized', 'label_party_only')),
      ' / '.join(str(headline[f'breast_cancer_accuracy_{m}'])
                 for m in ('vertical', 'centralized', 'label_party_only')),
  ]
  for text in quoted:
    assert text in table, text


def test_psi_only_smoke_writes_psi_results_alone(tmp_path: Path) -> None:
  helpers.run_module('scripts.bench_vertical', '--smoke', '--psi_only', '--psi_workers=2',
                     f'--output_dir={tmp_path}', check=True)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['benchmark'] == 'vertical_psi'
  assert 'secure_aggregation' not in results and 'accuracy' not in results
  assert [row['intersection'] for row in results['psi']] == [500, 3_000]
  assert results['headline']['psi_seconds_median'] == round(results['psi'][-1]['seconds']['median'], 2)
  assert not (tmp_path / 'training.png').exists()


def test_psi_only_refuses_to_replace_the_full_results() -> None:
  result = helpers.run_module('scripts.bench_vertical', '--smoke', '--psi_only')
  helpers.assert_one_line_error(result, '--psi_only would replace')
