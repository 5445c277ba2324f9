"""Test driver: runs one recipe binary many times in one process, through its real entry point.

The tests start one per binary (`tests.helpers.run_in_host`; how it is started and talked
to: below). It imports the binary once (its flags, its TFF import), then serves runs: for
each request it points stdout/stderr at the run's files, parses the run's command line
afresh and calls the binary's own `cli.run(main, validate=...)`, so the one-line errors,
exit codes and everything `main` writes are what `python -m MODULE ARGS` gives. What a
fresh process per run paid again every time, and a host pays once: the interpreter and
TFF start-up, the local TFF worker's start, and above all TensorFlow's tracing and
autograph caches (building a learning process from cold caches took 14 s in a fresh
process at load 8, and 3.3 s the second time in the same one).

Between runs the host restores what a run may change for the next one (hand-written: no
library resets a TFF program's process state):
- the absl flags go back to their defaults (`unparse_flags`);
- TFF's default execution context goes back to the host's own local one: a run with
  `--tff_worker` installs a remote context, `--aggregator=secure` TFF's test context;
- the working directory, environment and `sys.argv`/`sys.orig_argv` go back to the
  host's (each run sees its own command line, as `python -m MODULE ARGS` would).

Where the process itself is the point (signals, kills, the interpreter's exit, pipes, a
leaked worker), tests keep real or forked processes (`run_module`, `run_binary`).

Run as `python -m tests.recipe_host MODULE SOCKET`: the tests fork it from their binary
server (`tests.helpers.run_in_host`), and it connects to the Unix socket SOCKET on which
the test listens. Protocol (one JSON object per line): requests from the test
  {"args": [...], "cwd": D, "env": {...}, "stdout": F, "stderr": F}
replies to it: {"ready": true} once imported, then {"returncode": R} per run. The host
exits when the test closes the socket.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import traceback
from typing import Any

from absl import flags

from core import runtime
from recipes import cli

def _exit_code(value: Any) -> int:
  """The exit code of `sys.exit(value)`, as the interpreter computes it."""
  if value is None:
    return 0
  if isinstance(value, int):
    return value
  print(value, file=sys.stderr)
  return 1


class _Host:
  """One binary, imported once, run once per request."""

  def __init__(self, module_name: str) -> None:
    self._name = module_name
    # What cli.run does first; then TFF's context is the one every run starts from.
    runtime.enable_worker_hygiene()
    self._module = importlib.import_module(module_name)
    self._tff = runtime.import_tff()
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl  # pylint: disable=g-import-not-at-top
    self._stack = context_stack_impl.context_stack
    self._context = self._stack.current
    self._cwd = os.getcwd()
    self._argv = list(sys.argv), list(sys.orig_argv)
    self._environ = dict(os.environ)

  def _restore(self) -> None:
    from core import tff_workers  # pylint: disable=g-import-not-at-top
    flags.FLAGS.unparse_flags()
    if self._stack.current is not self._context:
      self._stack.set_default_context(self._context)
    tff_workers._installed = None  # pylint: disable=protected-access
    sys.argv, sys.orig_argv = list(self._argv[0]), list(self._argv[1])
    os.chdir(self._cwd)
    os.environ.clear()
    os.environ.update(self._environ)

  def run(self, request: dict[str, Any]) -> int:
    """Runs the binary with the request's arguments; returns its exit code."""
    saved = os.dup(1), os.dup(2)
    out = os.open(request['stdout'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    code = 1
    try:
      os.chdir(request['cwd'])
      os.environ.update(request.get('env', {}))
      # As `python -m MODULE ARGS` sets them; runs record orig_argv as their command.
      sys.argv = [self._module.__file__, *request['args']]
      sys.orig_argv = [sys.executable, '-m', self._name, *request['args']]
      try:
        cli.run(self._module.main, validate=getattr(self._module, 'validate_flags', None))
        code = 0
      except SystemExit as e:
        code = _exit_code(e.code)
      except BaseException:  # pylint: disable=broad-except  # As the interpreter reports it.
        traceback.print_exc()
        code = 1
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      os.close(saved[0])
      os.close(saved[1])
      self._restore()
    return code


def main(argv: list[str]) -> None:
  module, address = argv[1:]
  # The socket is not inherited by TFF's worker (Python's sockets are close-on-exec); fd 1
  # and 2 are each run's files while it runs.
  with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
    connection.connect(address)
    requests, replies = connection.makefile('r'), connection.makefile('w')
    host = _Host(module)
    replies.write(json.dumps({'ready': True}) + '\n')
    replies.flush()
    for line in requests:
      code = host.run(json.loads(line))
      replies.write(json.dumps({'returncode': code}) + '\n')
      replies.flush()


if __name__ == '__main__':
  main(sys.argv)
