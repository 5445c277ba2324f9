"""Runs the vertical FL benchmark in its smoke mode and checks what it writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.outputs import read_csv

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_vertical_smoke(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  process = subprocess.run(
      [sys.executable, 'scripts/bench_vertical.py', '--smoke', '--psi_workers=2', f'--output_dir={tmp_path}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert process.returncode == 0, process.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['smoke'] is True
  assert results['machine']['cpu_count'] >= 1
  assert [row['intersection'] for row in results['psi']] == [500, 3_000]
  assert results['secure_aggregation']['overhead_ratio'] > 0
  assert set(results['accuracy']['mean_accuracy']) == {'digits', 'breast_cancer'}
  summary = read_csv(tmp_path / 'results.csv')
  assert summary[0]['measurement'].startswith('PSI time')
  assert all(row['met'] in ('skipped', '') for row in summary)  # Smoke mode enforces nothing.
  for name in ('psi_time.png', 'training.png'):
    assert (tmp_path / name).stat().st_size > 0
