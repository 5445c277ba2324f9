"""The layers: `core` under `tasks` under `recipes`, and library imports that change nothing.

Each check runs in a fresh interpreter: this test process has long imported everything and
opted into worker hygiene (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests import helpers

_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(helpers.ROOT))


def _python(code: str, timeout: float = 180) -> dict:
  """Runs `code` in a fresh interpreter at the project root; returns the JSON it prints last."""
  result = subprocess.run(
      [sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
      timeout=timeout, cwd=helpers.ROOT, env=_ENV, stdin=subprocess.DEVNULL)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


_LOADED = '''
import json, sys
def loaded(*prefixes):
  return sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in prefixes))
'''


def test_tasks_imports_no_recipes_module():
  # The public names and every task module: none of them may reach up into recipes.
  found = _python(_LOADED + '''
import tasks
from tasks import ClientSpec, Task, TASKS, create_task
import tasks.emnist, tasks.in_memory, tasks.digit_arrays, tasks.mnist_digits, tasks.models
import tasks.numbered_clients, tasks.partition, tasks.registry, tasks.synthetic
print(json.dumps({'recipes': loaded('recipes'), 'tasks': loaded('tasks')}))
''')
  assert found['recipes'] == []
  assert 'tasks.registry' in found['tasks']  # The imports above did load the tasks.


def test_core_imports_neither_tasks_nor_recipes():
  found = _python(_LOADED + '''
import core.errors, core.metrics_log, core.outputs, core.runtime, core.tff_workers
print(json.dumps({'above': loaded('tasks', 'recipes'), 'core': loaded('core')}))
''')
  assert found['above'] == []
  assert 'core.tff_workers' in found['core']


def test_partition_and_the_digits_arrays_import_without_tff():
  # What the Flower peer uses, in an environment where TFF cannot be installed.
  found = _python(_LOADED + '''
import tasks.partition, tasks.digit_arrays
print(json.dumps({'heavy': loaded('tensorflow_federated', 'tensorflow', 'recipes')}))
''')
  assert found['heavy'] == []


_PROCESS_STATE = '''
import atexit, json, signal, subprocess, sys
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
'''


def test_importing_library_modules_changes_nothing_in_the_process():
  states = _python(_PROCESS_STATE + '''
before = state()
import recipes.aggregators
after_aggregators = state()
import tasks, recipes.aggregator_registry, recipes.training_loop, recipes.experiment
import recipes.optimizers, recipes.privacy, core.runtime, core.tff_workers
from tasks import create_task
after_all = state()
# The opt-in does change them: the comparison above would catch an import that does.
core.runtime.enable_worker_hygiene()
opted_in = state()
print(json.dumps({'before': before, 'after_aggregators': after_aggregators,
                  'after_all': after_all, 'opted_in': opted_in}))
''')
  before = states['before']
  assert states['after_aggregators'] == before
  assert states['after_all'] == before
  opted_in = states['opted_in']
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
