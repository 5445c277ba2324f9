"""The quick suite and `--all`: heavy tests are skipped visibly, and CI runs them."""

from __future__ import annotations

import subprocess

from tests import helpers


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
  return helpers.run_module('pytest', '-p', 'no:cacheprovider', '-n', '0', '-q', '-rs', *args)


def test_heavy_tests_are_skipped_with_their_reason_unless_all():
  # The population benchmark's smoke is heavy (about two minutes); without --all it is
  # skipped, and the summary says why and how to run it. A quick test beside it runs.
  result = _pytest('tests/test_benchmark_suite.py::test_population_benchmark_smoke',
                   'tests/test_benchmark_suite.py::test_recipe_flags_are_the_suite_options')
  assert result.returncode == 0, result.stdout[-2000:]
  assert '1 passed, 1 skipped' in result.stdout, result.stdout[-2000:]
  assert ('test_benchmark_suite.py:' in result.stdout
          and 'heavy: bash scripts/test.sh --all runs it (CI does)' in result.stdout)


def test_ci_runs_the_readme_test_command_with_all():
  commands = [l for l in (helpers.ROOT / '.ci' / 'run').read_text().splitlines()
              if l.strip() and not l.startswith('#')]
  assert commands[-1].split() == ['exec', 'bash', 'scripts/test.sh', '-q', '--all']
  assert 'bash scripts/test.sh' in (helpers.ROOT / 'README.md').read_text()
