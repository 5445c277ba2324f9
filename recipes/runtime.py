"""Process hygiene for TensorFlow Federated 0.87: its C++ worker must not outlive us.

Importing TFF installs an execution context that lazily starts the bundled C++
`worker_binary` as a child process, with our stdout/stderr. TFF never stops it when
Python exits, so the orphan keeps about 400 MB and holds our stdout open: a pipeline
such as `python -m recipes.fed_avg | tee log` never sees end-of-file and hangs.

`import_tff()` is the one place the project imports TFF. It arranges three layers of
cleanup (no library offers this, hence the hand-written code):

1. every worker is started with the Linux parent-death signal (PR_SET_PDEATHSIG), so
   the kernel kills it even if Python is killed with SIGKILL;
2. an `atexit` hook stops our worker children on a normal exit, an uncaught exception
   or Ctrl-C;
3. SIGTERM and SIGHUP are turned into `SystemExit`, so the `atexit` hook also runs when
   a scheduler or a closed terminal ends the run.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import gc
import os
import signal
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

WORKER_BINARY_NAME = 'worker_binary'
_PR_SET_PDEATHSIG = 1
_installed = False

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it; this must happen
# before TensorFlow is first imported, which is why `recipes` imports this module first.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def _set_parent_death_signal() -> None:
  """Runs in the forked child before exec: die with SIGKILL when the parent dies."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  except (OSError, AttributeError):  # Not Linux: the atexit hook still applies.
    pass


class _PopenWithParentDeath(subprocess.Popen):
  """`subprocess.Popen` that ties the child's life to ours (see module docstring)."""

  def __init__(self, args: Any, *pargs: Any, **kwargs: Any) -> None:
    if kwargs.get('preexec_fn') is None and sys.platform.startswith('linux'):
      kwargs['preexec_fn'] = _set_parent_death_signal
    super().__init__(args, *pargs, **kwargs)


def worker_pids(parent_pid: int | None = None) -> list[int]:
  """Returns the pids of running TFF worker binaries (children of `parent_pid` if given)."""
  pids = []
  for entry in os.listdir('/proc') if os.path.isdir('/proc') else []:
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        argv0 = f.read().split(b'\0', 1)[0].decode(errors='replace')
      if os.path.basename(argv0) != WORKER_BINARY_NAME:
        continue
      if parent_pid is not None:
        with open(f'/proc/{entry}/stat') as f:
          # The command name is in parentheses and may hold spaces; ppid follows it.
          ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        if ppid != parent_pid:
          continue
      pids.append(int(entry))
    except (OSError, ValueError, IndexError):
      continue  # The process ended while we looked.
  return pids


def stop_workers(timeout_seconds: float = 5.0) -> None:
  """Stops every TFF worker that this process started (SIGINT, then SIGKILL)."""
  pids = worker_pids(os.getpid())
  for pid in pids:
    try:
      os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
      pass
  deadline = time.monotonic() + timeout_seconds
  while pids and time.monotonic() < deadline:
    for pid in list(pids):
      try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
          pids.remove(pid)
      except ChildProcessError:
        pids.remove(pid)
    if pids:
      time.sleep(0.05)
  for pid in pids:
    try:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
      pass


def _release_tff_context() -> None:
  """Drops TFF's default execution context so its worker manager is freed while Python is intact.

  Otherwise the manager's `__del__` runs during interpreter teardown, when module globals
  are already None, and prints an ignored AttributeError on every exit.
  """
  module = sys.modules.get('tensorflow_federated.python.core.impl.context_stack.context_stack_impl')
  errors = sys.modules.get(
      'tensorflow_federated.python.core.impl.context_stack.runtime_error_context')
  if module is None or errors is None:
    return
  try:
    module.context_stack.set_default_context(errors.create_runtime_error_context())
    gc.collect()
  except Exception:  # pylint: disable=broad-except  # Best effort at exit.
    pass


def _cleanup_at_exit() -> None:
  _release_tff_context()
  stop_workers()


def _exit_on_signal(signum: int, frame: Any) -> None:
  del frame
  raise SystemExit(128 + signum)


def install_worker_cleanup() -> None:
  """Makes sure TFF workers started by this process die with it. Idempotent."""
  global _installed
  if _installed:
    return
  _installed = True
  atexit.register(_cleanup_at_exit)
  for signum in (signal.SIGTERM, signal.SIGHUP):
    try:
      if signal.getsignal(signum) in (signal.SIG_DFL, None):
        signal.signal(signum, _exit_on_signal)
    except ValueError:  # Not the main thread: leave signals alone.
      pass


@functools.cache
def import_tff() -> ModuleType:
  """Imports `tensorflow_federated` with worker cleanup in place and returns the module."""
  install_worker_cleanup()
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.executor_stacks import executor_factory  # pylint: disable=g-import-not-at-top

  # TFF starts the worker with `subprocess.Popen` looked up on this module at call time.
  shim = ModuleType('subprocess')
  shim.__dict__.update(subprocess.__dict__)
  shim.Popen = _PopenWithParentDeath
  executor_factory.subprocess = shim
  return tff
