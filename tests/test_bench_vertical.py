"""Runs the vertical FL benchmark in its smoke mode and checks what it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes.outputs import read_csv
from tests import helpers


@pytest.mark.slow
def test_bench_vertical_smoke(tmp_path: Path) -> None:
  helpers.run_module('scripts.bench_vertical', '--smoke', '--psi_workers=2', f'--output_dir={tmp_path}',
                     check=True)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['settings']['smoke'] is True
  assert results['machine']['cpu_count'] >= 1
  assert [row['intersection'] for row in results['psi']] == [500, 3_000]
  assert results['secure_aggregation']['overhead_ratio'] > 0
  assert set(results['accuracy']['mean_accuracy']) == {'digits', 'breast_cancer'}
  summary = read_csv(tmp_path / 'results.csv')
  assert summary[0]['measurement'].startswith('PSI seconds')
  assert all(row['met'] in ('skipped', '') for row in summary)  # Smoke mode enforces nothing.
  assert (tmp_path / 'table.md').read_text().startswith('| measurement |')
  for name in ('psi_time.png', 'training.png'):
    assert (tmp_path / name).stat().st_size > 0
