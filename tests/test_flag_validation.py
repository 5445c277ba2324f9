"""Every flag of every binary refuses a bad value before any work: one line, exit code 2.

The table is generated, not written by hand: `tests/flag_walker.py` imports each binary
and tries, for every flag the project defines, NaN and infinities, a far-out-of-range
number, an unknown choice or a malformed string (see its docstring). A new flag without a
declared range, or a string flag without a bad value in the walker's table, fails here.
A handful of those values then go through the binaries, to see the one-line error (two
of them through real `python -m` processes).
"""

from __future__ import annotations

import concurrent.futures
import json
import math

import pytest

from tests import helpers

BINARIES = (
    'recipes.fed_avg', 'recipes.fed_sgd', 'recipes.fed_opt', 'recipes.fed_prox',
    'recipes.dp_fed_avg', 'recipes.vertical_fl',
    'scripts.bench_communication', 'scripts.bench_overhead', 'scripts.bench_peer',
    'scripts.bench_remote', 'scripts.bench_robustness', 'scripts.bench_scaling',
    'scripts.bench_vertical', 'scripts.convert_mnist', 'scripts.start_worker',
    'scripts.bench_demo', 'scripts.bench_federated_eval', 'scripts.bench_flower',
    'scripts.bench_suite_population', 'scripts.bench_workers', 'scripts.worker_addresses',
)


def _walk(binary: str) -> dict:
  # Forked from the binary server: every walk is a process of its own (binaries define
  # flags of the same names) without paying the TensorFlow imports again.
  result = helpers.run_binary('tests.flag_walker', binary, timeout=600)
  lines = [l for l in result.stdout.splitlines() if l.startswith('{')]
  assert result.returncode == 0 and lines, result.stderr[-3000:]
  return json.loads(lines[-1])


@pytest.fixture(scope='module')
def walks() -> dict[str, dict]:
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    return dict(zip(BINARIES, pool.map(_walk, BINARIES)))


@pytest.mark.parametrize('binary', BINARIES)
def test_every_flag_refuses_its_bad_values(walks, binary):
  walk = walks[binary]
  assert walk['checked'] > 0, walk
  assert walk['unknown'] == [], f'string flags without a bad value in BAD_STRINGS: {walk}'
  assert walk['not_refused'] == [], walk


@pytest.mark.parametrize('binary, flag, real_process', [
    # Two through a real `python -m` (start-up chatter included), the rest forked.
    ('recipes.fed_avg', '--client_learning_rate=nan', True),
    ('recipes.fed_avg', '--clients_per_round=-3', False),
    ('recipes.dp_fed_avg', '--noise_multiplier=inf', True),
    ('recipes.fed_opt', '--server_beta_1=1.0', False),
    ('recipes.fed_avg', '--experiment_name=a/b', False),
])
def test_binary_prints_one_line_and_exits_2(tmp_path, binary, flag, real_process):
  run = helpers.run_module if real_process else helpers.run_binary
  result = run(binary, flag, f'--root_output_dir={tmp_path}')
  assert result.returncode == 2
  helpers.assert_one_line_error(result, flag.split('=')[0])
  assert not any(tmp_path.iterdir())  # Refused before anything was written.


def test_non_finite_float_flags_are_refused_after_parsing():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from recipes import cli  # pylint: disable=g-import-not-at-top
  from core.errors import UserError  # pylint: disable=g-import-not-at-top
  if 'validation_probe' not in flags.FLAGS:
    flags.DEFINE_float('validation_probe', 1.0, 'A float flag for this test.', lower_bound=0.0)
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  for value in (math.nan, math.inf):  # absl's lower_bound lets both through.
    with flagsaver.flagsaver(validation_probe=value):
      with pytest.raises(UserError, match='--validation_probe must be a finite number'):
        cli.check_flag_values()
  cli.check_flag_values()  # 1.0 is fine.
