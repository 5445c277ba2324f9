"""Process hygiene for TensorFlow Federated 0.87: its C++ worker must not outlive us.

Importing TFF installs an execution context that lazily starts the bundled C++
`worker_binary` as a child process, with our stdout/stderr. TFF never stops it when
Python exits, so the orphan keeps about 400 MB and holds our stdout open: a pipeline
such as `python -m recipes.fed_avg | tee log` never sees end-of-file and hangs.

Two functions, kept apart on purpose (TFF's own library modules change nothing when
imported, and neither does any module of this project):

* `import_tff()` is the one place the project imports TFF. It only imports it.
* `enable_worker_hygiene()` is the opt-in, one call at the start of a program's entry
  point (every binary of this project calls it through `recipes.cli.run`; call it in
  your own TFF program too). It arranges three layers of cleanup (no library offers
  this, hence the hand-written code):

  1. every worker is started with the Linux parent-death signal (PR_SET_PDEATHSIG), so
     the kernel kills it even if Python is killed with SIGKILL;
  2. an `atexit` hook stops our worker children on a normal exit, an uncaught exception
     or Ctrl-C;
  3. SIGTERM and SIGHUP are turned into `SystemExit`, so the `atexit` hook also runs
     when a scheduler or a closed terminal ends the run.

  Every worker also starts with SIGINT at its default action: a run started in the
  background by a non-interactive shell (`... &`, nohup) inherits SIGINT ignored, and
  TFF stops its worker with SIGINT and then waits for it without a timeout, so such a
  run hung at exit after writing all its outputs. With `one_client_per_core` (the
  default) the local worker also runs at most one client computation per core at a time
  (TFF's default runs all clients of a round at once; see `_configure_tff`).

  If TFF is not imported yet, the TFF part waits until `import_tff()` imports it: a
  binary that never uses TFF (a benchmark driver) does not pay seconds to import it.

`use_remote_worker(address)` points TFF at a worker that runs elsewhere (started with
`python -m scripts.start_worker --port=N` on a bigger machine) instead of starting one
here: the recipes' `--tff_worker=host:port`; with several comma-separated addresses,
each round's clients are split across the workers (`core.tff_workers`).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import gc
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

from core.errors import UserError

WORKER_BINARY_NAME = 'worker_binary'
_PR_SET_PDEATHSIG = 1
_exit_handlers_installed = False
# Set by `enable_worker_hygiene`: what to do to TFF once it is imported (None: nothing).
_tff_settings: dict[str, Any] | None = None
_tff_configured = False


def _set_parent_death_signal() -> None:
  """Runs in the forked child before exec: die with SIGKILL when the parent dies.

  Also puts SIGINT back to its default action (see the module docstring): an ignored
  signal stays ignored across exec.
  """
  signal.signal(signal.SIGINT, signal.SIG_DFL)
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


def worker_binary_path() -> str:
  """The C++ worker bundled with TFF, found without importing TFF (which takes seconds).

  Raises:
    UserError: If TFF or its worker binary is not installed.
  """
  spec = importlib.util.find_spec('tensorflow_federated')
  locations = list(spec.submodule_search_locations or []) if spec else []
  if not locations:
    raise UserError('tensorflow_federated is not installed; run `bash scripts/setup.sh`')
  path = os.path.join(locations[0], 'data', WORKER_BINARY_NAME)
  if not os.access(path, os.X_OK):
    raise UserError(f'TFF\'s worker binary is missing at {path}; run `bash scripts/setup.sh`')
  return path


def worker_command(port: int, max_concurrent_computation_calls: int = -1) -> list[str]:
  """The command line of a worker serving on `port` (as TFF's local context starts it)."""
  return [worker_binary_path(), f'--port={port}',
          f'--max_concurrent_computation_calls={max_concurrent_computation_calls}']


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


def _install_exit_handlers() -> None:
  """atexit hook and SIGTERM/SIGHUP -> SystemExit (see the module docstring). Idempotent."""
  global _exit_handlers_installed
  if _exit_handlers_installed:
    return
  _exit_handlers_installed = True
  atexit.register(_cleanup_at_exit)
  for signum in (signal.SIGTERM, signal.SIGHUP):
    try:
      if signal.getsignal(signum) in (signal.SIG_DFL, None):
        signal.signal(signum, _exit_on_signal)
    except ValueError:  # Not the main thread: leave signals alone.
      pass


def _configure_tff(tff: ModuleType) -> None:
  """Applies the settings of `enable_worker_hygiene` to the imported TFF. Idempotent."""
  global _tff_configured
  if _tff_configured or _tff_settings is None:
    return
  _tff_configured = True
  from tensorflow_federated.python.core.impl.executor_stacks import executor_factory  # pylint: disable=g-import-not-at-top

  # TFF starts the worker with `subprocess.Popen` looked up on this module at call time.
  shim = ModuleType('subprocess')
  shim.__dict__.update(subprocess.__dict__)
  shim.Popen = _PopenWithParentDeath
  executor_factory.subprocess = shim
  if _tff_settings['one_client_per_core']:
    # TFF's local worker trains all clients of a round at once; with more clients than
    # cores they only compete for caches and memory. One client per core gave the
    # fastest rounds in scripts/bench_overhead.py and bounds the worker's working set.
    # Replacing the context TFF installed at import is free: it starts its worker only
    # when used.
    tff.backends.native.set_sync_local_cpp_execution_context(
        max_concurrent_computation_calls=available_cores())


def enable_worker_hygiene(*, one_client_per_core: bool = True) -> None:
  """Makes sure TFF workers started by this process die with it: call once, in `main`.

  The binaries of this project call it through `recipes.cli.run`; a program of your own
  that uses TFF (for instance with the factories of `recipes.aggregators`) calls it
  itself, before running its first computation:

      from core import runtime
      runtime.enable_worker_hygiene()

  It installs an `atexit` hook and turns SIGTERM/SIGHUP into `SystemExit` (only where
  their handler is still the default), starts every TFF worker with the parent-death
  signal, and with `one_client_per_core` replaces TFF's default local context by one
  that runs at most one client computation per core. The TFF part applies now if TFF is
  imported, else when `import_tff()` imports it. Idempotent.

  Args:
    one_client_per_core: Limit the local worker's concurrent client computations to the
      cores this process may use.
  """
  global _tff_settings
  _install_exit_handlers()
  if _tff_settings is None:
    _tff_settings = {'one_client_per_core': one_client_per_core}
  tff = sys.modules.get('tensorflow_federated')
  if tff is not None and hasattr(tff, 'backends'):  # Fully imported, not mid-import.
    _configure_tff(tff)


@functools.cache
def import_tff() -> ModuleType:
  """Imports `tensorflow_federated` and returns it, changing nothing else.

  Where `enable_worker_hygiene()` was called first, its TFF settings apply here.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  _configure_tff(tff)
  return tff


def available_cores() -> int:
  """CPU cores this process may run on (its affinity mask, else the machine's count)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


# A host name, an IPv4 address, or an IPv6 address in brackets.
_HOST = re.compile(r'\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+')


def parse_worker_address(address: str) -> tuple[str, int]:
  """Splits `host:port` (IPv6 as `[::1]:port`); raises ValueError with a readable reason."""
  host, sep, port = address.strip().rpartition(':')
  if (not sep or not _HOST.fullmatch(host) or not port.isdigit()
      or not 0 < int(port) < 65536):
    raise ValueError(f'expected host:port (e.g. localhost:8000), got {address!r}')
  return host, int(port)


def parse_worker_addresses(value: str) -> list[str]:
  """Splits `host:port[,host:port...]` into addresses; raises ValueError with a reason.

  Every address must be well formed (`parse_worker_address`) and appear once: the same
  worker twice would only run two slices of a round one after the other.
  """
  addresses = [a.strip() for a in value.split(',')]
  for address in addresses:
    if not address:
      raise ValueError(f'expected host:port[,host:port...], got an empty address in {value!r}')
    parse_worker_address(address)
  repeated = sorted({a for a in addresses if addresses.count(a) > 1})
  if repeated:
    raise ValueError(f'each worker address may appear once, {", ".join(repeated)} is repeated')
  return addresses


def register_worker_flag_validator(flag_name: str) -> None:
  """Makes absl refuse a malformed `host:port[,host:port...]` flag value at parse time."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  def check(value: str | None) -> bool:
    if value is not None:
      try:
        parse_worker_addresses(value)
      except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True

  flags.register_validator(flag_name, check)


def use_remote_worker(address: str, *, connect_timeout_seconds: float = 10.0) -> Any:
  """Makes TFF run every computation on the C++ worker(s) at `address`.

  Kept for callers of one worker; see `core.tff_workers.use_workers` (which this
  calls) for several.

  Args:
    address: `host:port[,host:port...]` of running workers (`python -m scripts.start_worker`).
    connect_timeout_seconds: How long to wait for the workers to answer.

  Returns:
    The installed execution context.

  Raises:
    UserError: If the address is malformed or no worker answers there in time.
  """
  from core import tff_workers  # pylint: disable=g-import-not-at-top  # Imports TFF.
  return tff_workers.use_workers(address.split(','),
                                 connect_timeout_seconds=connect_timeout_seconds)
