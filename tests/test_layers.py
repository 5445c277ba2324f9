"""The layers: `core` under `tasks` under `recipes`, and library imports that change nothing.

The checks run in a fresh interpreter (one for all of them, see `_WALK`): this test process
has long imported everything and opted into worker hygiene (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests import helpers

_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(helpers.ROOT))


# One fresh interpreter walks up the layers, snapshotting what each step loaded and the
# process state that an import must not change (signal handlers, `subprocess.Popen` and
# TFF's reference to it, TFF's execution context). The order makes every check hold in
# one process: the TFF-free modules first; then TFF itself (its own import installs its
# context: the baseline); `core` with every task and core module unloaded again, so that
# an import of a task module by `core` would show; `tasks`, before any `recipes` module exists; the
# library modules of `recipes`; and last the opt-in, which must change the state.
_WALK = """
import json, signal, subprocess, sys

def loaded(*prefixes):
  return sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in prefixes))

snapshots = {}
import tasks.partition, tasks.digit_arrays
snapshots['partition'] = {'heavy': loaded('tensorflow_federated', 'tensorflow', 'recipes')}

import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.executor_stacks import executor_factory
seen = []  # Keeps every context seen alive, so that no two share an id().
# A suite started under nohup passes SIGHUP ignored to this process, and the opt-in rightly
# leaves an ignored signal alone: start from the defaults a terminal gives.
for signum in (signal.SIGTERM, signal.SIGHUP):
  signal.signal(signum, signal.SIG_DFL)

def state():
  seen.append(context_stack_impl.context_stack.current)
  return {
      'sigterm': repr(signal.getsignal(signal.SIGTERM)),
      'sighup': repr(signal.getsignal(signal.SIGHUP)),
      'popen': repr(subprocess.Popen),
      'tff_subprocess_popen': repr(executor_factory.subprocess.Popen),
      'context': id(context_stack_impl.context_stack.current),
  }

snapshots['before'] = state()
for name in loaded('tasks', 'core'):  # tasks.partition imported core.errors.
  del sys.modules[name]
import core.errors, core.metrics_log, core.outputs, core.runtime, core.tff_workers
snapshots['core'] = {'above': loaded('tasks', 'recipes'), 'core': loaded('core'),
                     'state': state()}

# The public names and every task module: none of them may reach up into recipes.
import tasks
from tasks import ClientSpec, Task, TASKS, create_task
import tasks.emnist, tasks.in_memory, tasks.digit_arrays, tasks.mnist_digits, tasks.models
import tasks.numbered_clients, tasks.partition, tasks.registry, tasks.synthetic
import tasks.benchmark_suite, tasks.benchmark_suite.files
snapshots['tasks'] = {'recipes': loaded('recipes'), 'tasks': loaded('tasks'), 'state': state()}

import recipes.aggregators
snapshots['aggregators'] = state()
import recipes.aggregator_registry, recipes.training_loop, recipes.experiment
import recipes.optimizers, recipes.privacy
snapshots['recipes'] = state()
# The opt-in does change them: the comparisons above would catch an import that does.
core.runtime.enable_worker_hygiene()
snapshots['opted_in'] = state()
print(json.dumps(snapshots))
"""


@pytest.fixture(scope='module')
def walk() -> dict:
  """What each step of `_WALK` loaded, and the process state after it."""
  result = subprocess.run(
      [sys.executable, '-c', _WALK], capture_output=True, text=True, timeout=180,
      cwd=helpers.ROOT, env=_ENV, stdin=subprocess.DEVNULL)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_partition_and_the_digits_arrays_import_without_tff(walk):
  # What the Flower peer uses, in an environment where TFF cannot be installed.
  assert walk['partition']['heavy'] == []


def test_core_imports_neither_tasks_nor_recipes(walk):
  assert walk['core']['above'] == []
  assert 'core.tff_workers' in walk['core']['core']


def test_tasks_imports_no_recipes_module(walk):
  assert walk['tasks']['recipes'] == []
  assert 'tasks.registry' in walk['tasks']['tasks']  # The imports above did load the tasks.


def test_importing_library_modules_changes_nothing_in_the_process(walk):
  before = walk['before']
  assert walk['core']['state'] == before
  assert walk['tasks']['state'] == before
  assert walk['aggregators'] == before
  assert walk['recipes'] == before
  opted_in = walk['opted_in']
  for key in ('sigterm', 'sighup', 'tff_subprocess_popen', 'context'):
    assert opted_in[key] != before[key], key
  assert opted_in['popen'] == before['popen']  # Only TFF's own reference is swapped.


def test_a_users_program_that_opts_in_leaves_no_worker(tmp_path):
  # The documented one-call opt-in, in a program of the user's own: it runs a TFF
  # computation (which starts the C++ worker) and exits while its output is a pipe, which
  # would hang if the worker outlived it.
  program = tmp_path / 'my_program.py'
  program.write_text(textwrap.dedent('''
      import numpy as np
      import tensorflow_federated as tff
      from core import runtime
      from recipes import aggregators

      def main():
        runtime.enable_worker_hygiene()
        factory = aggregators.median()
        process = factory.create(tff.TensorType(np.float32))
        output = process.next(process.initialize(), [1.0, 5.0, 2.0])
        print('median', float(output.result))

      if __name__ == '__main__':
        main()
  '''))
  result = subprocess.run([sys.executable, str(program)], capture_output=True, text=True,
                          timeout=180, cwd=helpers.ROOT, env=_ENV,
                          stdin=subprocess.DEVNULL)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'median 2.0' in result.stdout
  assert helpers.leaked_workers() == []
