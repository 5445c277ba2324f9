"""Shared test setup: the test process opts into TFF worker hygiene so no worker outlives pytest."""

import gc
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

# TensorFlow's C++ start-up chatter (CUDA factories 'already registered' on this GPU-less
# machine) would otherwise end the output of each pytest-xdist worker.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# A suite started in the background (`... &`, nohup, some CI runners) inherits SIGINT
# ignored, and so would every binary it starts (exec keeps an ignored signal ignored):
# the interrupt tests' SIGINT would then do nothing and the run would go on to its end.
# A handler here is reset to the default at exec, so the binaries get Python's
# KeyboardInterrupt, as when the suite runs in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

from core import runtime  # noqa: E402

# What every binary does in its entry point (recipes.cli.run); importing a library
# module no longer does it (tests/test_layers.py).
runtime.enable_worker_hygiene()
runtime.import_tff()
# Import-time objects (most of TensorFlow's and TFF's) out of the garbage collector's
# sight: the tests that build learning processes in this process allocate enough to run
# many full collections, each of which would traverse them all.
gc.collect()
gc.freeze()

import pytest  # noqa: E402

from tests import autograph_warmup  # noqa: E402

_OWN_SPOOL = pytest.StashKey[str]()

# Files whose tests take longest (most of the suite's time: recipe runs), started first so
# that the two pytest workers of scripts/test.sh end together instead of one of them
# finishing a long file alone at the end. Measured with `--durations`; order is a
# scheduling hint only, and a file missing here just runs after these.
SLOWEST_FIRST = (
    'test_benchmark_suite.py', 'test_reproducibility.py', 'test_recipes.py',
    'test_benchmark_scripts.py', 'test_tff_workers.py', 'test_population.py',
    'test_benchmarks_smoke.py', 'test_fed_avg_binary.py', 'test_vertical_fl.py',
    'test_privacy.py', 'test_bench_vertical.py',
)


def pytest_configure(config: pytest.Config) -> None:
  """One AutoGraph spool for the session's binary servers (tests/autograph_warmup.py).

  Set before pytest-xdist starts its workers, which inherit it: each worker's server then
  converts what the other's children converted too.
  """
  if autograph_warmup.SPOOL_ENV not in os.environ:
    os.environ[autograph_warmup.SPOOL_ENV] = tempfile.mkdtemp(prefix='fedrecipes-autograph-')
    config.stash[_OWN_SPOOL] = os.environ[autograph_warmup.SPOOL_ENV]


def pytest_unconfigure(config: pytest.Config) -> None:
  spool = config.stash.get(_OWN_SPOOL, None)
  if spool is not None:
    shutil.rmtree(spool, ignore_errors=True)
    del os.environ[autograph_warmup.SPOOL_ENV]


def pytest_addoption(parser: pytest.Parser) -> None:
  parser.addoption(
      '--all', action='store_true', dest='fedrecipes_all',
      help='also run the tests marked heavy: the benchmark-size models (ResNet-18, the '
           'LSTMs) trained end to end, benchmarks over thousands of clients (CI runs them)')


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
  """Skips the heavy tests without --all; groups tests for pytest-xdist; slow files first.

  The heavy tests are skipped, not deselected, so that every run's summary counts them
  ("N skipped ... heavy") and no one mistakes the quick suite for all of it.

  Each test file is one group, so its module fixtures (a trained run, a recipe host) are
  built by one worker only; a test that names its own `xdist_group` (the benchmark-suite
  tasks: one group per task) may run beside the rest of its file. Runs before xdist's own
  hook, which reads the groups.
  """
  if not config.getoption('fedrecipes_all'):
    skip = pytest.mark.skip(reason='heavy: bash scripts/test.sh --all runs it (CI does)')
    for item in items:
      if item.get_closest_marker('heavy') is not None:
        item.add_marker(skip)
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  for item in items:
    if item.get_closest_marker('xdist_group') is None:
      item.add_marker(pytest.mark.xdist_group(item.path.name))
  # sorted() is stable: within a file, tests keep their order.
  items[:] = sorted(items, key=lambda item: rank.get(item.path.name, len(rank)))
