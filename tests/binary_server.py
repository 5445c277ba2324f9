"""Test driver: runs `python -m MODULE ARGS` in forked copies of one pre-imported process.

Starting a recipe binary costs seconds before it does anything: Python imports
TensorFlow and TensorFlow Federated (about 6 s on an idle core, every time). The suite
runs binaries well over a hundred times, so this server imports them once and forks a
child per run. The child is a real process of its own, with fresh absl flags (the
server defines none), its own TFF execution context and C++ worker (started lazily, as
in a fresh process), its own signal handlers and exit code; it runs the module with
`runpy` as `__main__`, exactly what `python -m MODULE` runs, with stdin from /dev/null
and stdout/stderr into files. Nothing of a run survives into the next one.

Safe to fork: the server only imports (it never runs a TensorFlow op, trace or gRPC
channel, so no TensorFlow thread pool or gRPC state exists yet), and before every fork
it checks that its threads are only the known ones (`_unexpected_threads`): Python
threads, and OpenBLAS's worker threads (numpy's and scipy's), which OpenBLAS stops before
a fork and restarts when needed (pthread_atfork). A thread started by other C++ code,
such as TensorFlow's op pools, would mean that the assumption broke. The Python threads
are the event loops of the execution contexts that importing TFF installs; they do not
survive the fork, so each child installs a fresh context first (`_fresh_tff_context`).
The children are tied to the server's life (and their TFF workers to theirs) with the
parent-death signal.

What is not the same as a fresh `python -m`: the interpreter's start-up (modules already
imported), AutoGraph's cache (a child finds already converted the functions that earlier
children converted, which the server converts between requests: the same code they would
have made, seconds sooner; tests/autograph_warmup.py), the garbage collector's view (the
inherited heap is frozen, `gc.freeze`) and its final teardown of every module (the child
runs what the interpreter runs at exit, then `os._exit`s; see `_run_child`). Tests for
which the process start or end itself is the point (the README's commands, pipes,
signals) keep real subprocesses (`tests.helpers.run_module`).

Protocol (one JSON object per line): requests on stdin
  {"id": N, "module": M, "args": [...], "cwd": D, "env": {...}, "stdout": F, "stderr": F}
replies on stdout: {"id": N, "pid": P} once forked, {"id": N, "returncode": R} at exit.
Closing stdin stops the server after its running children have exited.

The server also listens on a Unix socket, whose path every child finds in
`FEDRECIPES_TEST_FORK_SERVER`: a child that starts binaries of its own (a benchmark
script's recipe runs, `scripts.bench_common.run_command`) asks the server to fork them
too (`run_forked`), instead of paying the imports again. One request per connection,
without "id"; the replies are the same.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import json
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from tests import autograph_warmup

_PR_SET_PDEATHSIG = 1
# The server's socket, for a child's own runs (see the module docstring and `run_forked`).
FORK_SERVER_ENV = 'FEDRECIPES_TEST_FORK_SERVER'

# Imported once here, before any fork. Each must define no absl flag at import (the
# children define the binaries' flags), and none may start a thread.
PREIMPORTS = (
    'tensorflow',
    'core.runtime',
    'tasks',
    'recipes.experiment',
    'recipes.training_loop',
    'matplotlib.pyplot',
)


def _die_with_parent(signum: int = signal.SIGKILL) -> None:
  try:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
  except (OSError, AttributeError):
    pass


def _openblas_workers() -> int:
  """Worker threads of the loaded OpenBLAS libraries (each pool's main thread is ours)."""
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  return sum(pool['num_threads'] - 1 for pool in threadpoolctl.threadpool_info()
             if pool['internal_api'] == 'openblas')


def _unexpected_threads(openblas_workers: int) -> int:
  """Threads that are neither Python's nor (at most `openblas_workers`) OpenBLAS's."""
  native = len(os.listdir('/proc/self/task')) - len(threading.enumerate())
  return max(0, native - openblas_workers)


def _fresh_tff_context() -> None:
  """Installs a new TFF default execution context: the inherited one's event-loop thread is gone.

  TFF's own default, what importing TFF installs in a fresh process. `core.runtime.import_tff()`
  only imports; the worker-hygiene settings (parent-death signal for the worker, one client
  per core) are an opt-in that the binary itself makes in its entry point
  (`recipes.cli.run` -> `core.runtime.enable_worker_hygiene()`), as in a fresh process. The
  server never opts in (`_check_no_hygiene`), so every child starts with the opt-in not made.
  """
  from core import runtime  # pylint: disable=g-import-not-at-top
  runtime.import_tff().backends.native.set_sync_local_cpp_execution_context()


def _check_no_hygiene() -> None:
  """Refuses to serve if the server itself opted into worker hygiene.

  Its children inherit `core.runtime`'s module state: an opt-in made here would look
  already made to every binary (no SIGTERM handler of its own, TFF configured once for a
  context that the fork replaced), unlike a fresh `python -m`.
  """
  from core import runtime  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  if runtime._tff_settings is not None or runtime._exit_handlers_installed:
    raise RuntimeError('the binary server must not call core.runtime.enable_worker_hygiene()')


def preimport() -> None:
  """Imports what every binary needs, with TFF through `core.runtime.import_tff` as the project does."""
  import importlib  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  for name in PREIMPORTS:
    importlib.import_module(name)
  from core import runtime  # pylint: disable=g-import-not-at-top
  runtime.import_tff()
  _check_no_hygiene()


def _exit_code(value: Any) -> int:
  """The exit code of `sys.exit(value)`, as the interpreter computes it."""
  if value is None:
    return 0
  if isinstance(value, int):
    return value
  print(value, file=sys.stderr)  # sys.exit('message') prints it and exits 1.
  return 1


def _run_child(request: dict[str, Any], server_sockets: Sequence[socket.socket],
               address: str, spool: Path) -> None:
  """In the forked child: become `python -m module args`; never returns.

  `server_sockets` (the server's listener and connections) are closed; `address` is the
  server's socket, for the child's own runs (`FORK_SERVER_ENV`); the functions AutoGraph
  converts for the child are recorded in `spool` (tests/autograph_warmup.py).

  Ends as the interpreter ends `python -m module` (exit code, traceback, non-daemon
  threads joined, `atexit` hooks, stdio flushed), but then leaves with `os._exit`
  instead of tearing down every module: that teardown touches the whole inherited heap
  and cost about 4 s per run in copy-on-write faults.
  """
  code = 1
  interrupted = False
  try:
    _die_with_parent()
    for server_socket in server_sockets:
      server_socket.close()
    os.setpgid(0, 0)  # Its own process group, as a separately started command.
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request['stdout'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((devnull, 0), (out, 1), (err, 2)):
      os.dup2(fd, target)
      os.close(fd)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    os.environ[FORK_SERVER_ENV] = address
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _fresh_tff_context()
    autograph_warmup.record_conversions(spool)
    module, args = request['module'], list(request['args'])
    sys.argv = [module, *args]  # runpy replaces argv[0] by the module's file.
    sys.orig_argv = [sys.executable, '-m', module, *args]
    try:
      runpy.run_module(module, run_name='__main__', alter_sys=True)
      code = 0
    except SystemExit as e:
      code = _exit_code(e.code)
    except KeyboardInterrupt:
      traceback.print_exc()
      interrupted = True
    except BaseException:  # pylint: disable=broad-except  # As the interpreter reports it.
      traceback.print_exc()
      code = 1
    threading._shutdown()  # pylint: disable=protected-access  # Joins non-daemon threads.
    atexit._run_exitfuncs()  # pylint: disable=protected-access
  except BaseException:  # pylint: disable=broad-except  # A broken set-up or exit hook.
    traceback.print_exc()
    code = 1
  finally:
    try:
      sys.stdout.flush()
      sys.stderr.flush()
    finally:
      if interrupted:  # Like the interpreter: die of SIGINT (return code -2).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
      os._exit(code & 0xFF)  # pylint: disable=protected-access


def _reply(message: dict[str, Any]) -> None:
  sys.stdout.write(json.dumps(message) + '\n')
  sys.stdout.flush()


class _Connection:
  """A socket client of the server: one request, then the pid and exit code replies."""

  def __init__(self, sock: socket.socket) -> None:
    self.sock = sock
    self.buffer = b''

  def send(self, message: dict[str, Any]) -> None:
    try:
      self.sock.sendall((json.dumps(message) + '\n').encode())
    except OSError:  # The client gave up (timed out and killed the run): nothing to tell.
      pass


def serve() -> None:
  """Reads requests from stdin and its socket, forks a child per request, reports pids and exit codes.

  Runs until stdin is closed (the test session ended, or died) and its children exited.
  """
  preimport()
  # Out of the garbage collector's sight, in the server and in every child: a child's
  # collections would otherwise traverse the whole inherited heap (TensorFlow's and TFF's
  # modules), touching its pages (copy-on-write). Measured: a forked fed_avg run of 2
  # rounds took 5.45 s instead of 5.9 s (Python's docs advise `gc.freeze` before forks).
  gc.collect()
  gc.freeze()
  openblas_workers = _openblas_workers()
  address = os.path.join(tempfile.mkdtemp(prefix='fedrecipes-fork-'), 'server.sock')
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(address)
  listener.listen(16)
  shared_spool = os.environ.get(autograph_warmup.SPOOL_ENV)
  spool = Path(shared_spool or tempfile.mkdtemp(prefix='fedrecipes-autograph-'))
  warmup = autograph_warmup.Warmup(spool)
  _reply({'ready': True, 'unexpected_threads': _unexpected_threads(openblas_workers),
          'address': address})
  # pid -> request id (stdin) or connection (socket).
  children: dict[int, int | _Connection] = {}
  reading: list[_Connection] = []
  buffer = b''
  open_input = True

  def fork(request: dict[str, Any], client: int | _Connection) -> None:
    answer = _reply if isinstance(client, int) else client.send
    ids = {'id': client} if isinstance(client, int) else {}
    unexpected = _unexpected_threads(openblas_workers)
    if unexpected:
      answer({**ids, 'error': f'the server runs {unexpected} native threads besides '
              'OpenBLAS\'s: not forking'})
      return
    server_sockets = [listener, *(c.sock for c in reading),
                      *(c.sock for c in [client, *children.values()] if isinstance(c, _Connection))]
    pid = os.fork()
    if pid == 0:
      _run_child(request, server_sockets, address, spool)
    children[pid] = client
    answer({**ids, 'pid': pid})

  while open_input or children:
    watched = [listener, *(c.sock for c in reading)] + ([0] if open_input else [])
    readable, _, _ = select.select(watched, [], [], 0.02)
    if not readable and warmup.step():  # While no request waits.
      gc.freeze()  # What the conversion made, too.
    if 0 in readable:
      chunk = os.read(0, 65536)
      if not chunk:
        open_input = False
      buffer += chunk
      while b'\n' in buffer:
        line, buffer = buffer.split(b'\n', 1)
        request = json.loads(line)
        fork(request, request['id'])
    if listener in readable:
      connection, _ = listener.accept()
      reading.append(_Connection(connection))
    for client in [c for c in reading if c.sock in readable]:
      chunk = client.sock.recv(65536)
      client.buffer += chunk
      if b'\n' in client.buffer or not chunk:
        reading.remove(client)
        if b'\n' in client.buffer:
          fork(json.loads(client.buffer.split(b'\n', 1)[0]), client)
        else:
          client.sock.close()
    while children:
      try:
        pid, status = os.waitpid(-1, os.WNOHANG)
      except ChildProcessError:
        break
      if pid == 0:
        break
      client = children.pop(pid, None)
      code = os.waitstatus_to_exitcode(status)
      if isinstance(client, int):
        _reply({'id': client, 'returncode': code})
      elif client is not None:
        client.send({'returncode': code})
        client.sock.close()
  listener.close()
  os.unlink(address)
  os.rmdir(os.path.dirname(address))
  warmup.close()
  if not shared_spool:
    shutil.rmtree(spool, ignore_errors=True)


def run_forked(command: Sequence[str], *, cwd: str | os.PathLike[str], env: dict[str, str],
               timeout: float) -> subprocess.CompletedProcess[str]:
  """Runs `[python, '-m', module, *args]` forked by the binary server that forked this process.

  For a child of the server (`FORK_SERVER_ENV` set) that starts binaries of its own:
  `subprocess.run(command, capture_output=True, text=True, ...)` without the imports.

  Raises:
    subprocess.TimeoutExpired: After `timeout` seconds (the run is killed).
  """
  if list(command[:2]) != [sys.executable, '-m']:
    raise ValueError(f'not a `python -m` command: {command}')
  folder = Path(tempfile.mkdtemp(prefix='fedrecipes-forked-'))
  stdout, stderr = folder / 'stdout', folder / 'stderr'
  request = {'module': command[2], 'args': list(command[3:]), 'cwd': str(cwd), 'env': env,
             'stdout': str(stdout), 'stderr': str(stderr)}
  deadline = time.monotonic() + timeout
  pid = None
  try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
      sock.connect(os.environ[FORK_SERVER_ENV])
      sock.sendall((json.dumps(request) + '\n').encode())
      replies = sock.makefile('r')
      try:
        while True:
          sock.settimeout(max(0.01, deadline - time.monotonic()))
          try:
            line = replies.readline()
          except (socket.timeout, TimeoutError):
            raise subprocess.TimeoutExpired(list(command), timeout) from None
          reply = json.loads(line or '{"error": "the binary server closed the connection"}')
          if 'error' in reply:
            raise RuntimeError(f'binary server: {reply["error"]}')
          if 'pid' in reply:
            pid = int(reply['pid'])
          if 'returncode' in reply:
            pid = None
            return subprocess.CompletedProcess(
                list(command), int(reply['returncode']), stdout.read_text(errors='replace'),
                stderr.read_text(errors='replace'))
      finally:
        # Timed out, or this process is being stopped (SIGTERM, Ctrl-C): the run is the
        # server's child, not ours, and would outlive us.
        if pid is not None:
          try:
            os.kill(pid, signal.SIGKILL)
          except ProcessLookupError:
            pass
  finally:
    for path in (stdout, stderr):
      path.unlink(missing_ok=True)
    folder.rmdir()


if __name__ == '__main__':
  serve()
  # Nothing to clean up (the server starts no worker); tearing down TensorFlow's modules
  # would only keep the test session waiting for seconds.
  sys.stdout.flush()
  os._exit(0)  # pylint: disable=protected-access
