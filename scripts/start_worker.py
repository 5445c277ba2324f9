"""Starts TFF's bundled C++ worker on a port, for recipes run with `--tff_worker=host:port`.

On the machine that should do the heavy work (same environment: `bash scripts/setup.sh`):

  python -m scripts.start_worker --port=8000

then, wherever the recipe runs:

  python -m recipes.fed_avg --tff_worker=bighost:8000 ...

The worker replaces this process (exec), so Ctrl-C or `kill` stops it directly. It serves
one run at a time and keeps no state between runs, so several runs can use it one after
another. The worker accepts unauthenticated gRPC on every interface and runs whatever
computation it is sent: expose it only on a trusted network, or keep the port closed and
reach it through an SSH tunnel (`ssh -L 8000:localhost:8000 bighost`, then
`--tff_worker=localhost:8000`).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
from typing import Sequence

from absl import flags

from core import runtime
from core.errors import UserError
from recipes import cli

_PORT = flags.DEFINE_integer('port', 8000, 'TCP port to serve on (all interfaces).',
                             lower_bound=1, upper_bound=65535)
_MAX_CONCURRENT_CALLS = flags.DEFINE_integer(
    'max_concurrent_computation_calls', None,
    'Limit on parallel calls of one computation, i.e. clients trained at once; default: the '
    'cores of this machine, as the recipes\' local worker (-1: no limit). In a container with '
    'a CPU limit, set it to that limit: the default sees every core of the host.',
    lower_bound=-1)


def validate_flags() -> None:
  """Checks what the flags' bounds cannot express."""
  if _MAX_CONCURRENT_CALLS.value == 0:
    raise UserError('--max_concurrent_computation_calls must be positive, or -1 for no limit')


def _check_port_free(port: int) -> None:
  """The worker only logs a failed bind and exits; say it in one line instead."""
  with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind(('', port))
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise UserError(f'port {port} is in use; choose another --port') from None
      raise UserError(f'cannot serve on port {port}: {e.strerror}') from None


def main(argv: Sequence[str]) -> None:
  del argv
  _check_port_free(_PORT.value)
  concurrency = _MAX_CONCURRENT_CALLS.value
  args = runtime.worker_command(
      _PORT.value, runtime.available_cores() if concurrency is None else concurrency)
  print(f'TFF worker serving on port {_PORT.value} (pid {os.getpid()}); run recipes with '
        f'--tff_worker={socket.gethostname()}:{_PORT.value}; stop it with Ctrl-C', flush=True)
  # Started in the background by a non-interactive shell, we inherit SIGINT ignored; the
  # worker must still stop on SIGINT (Ctrl-C, `kill -INT`).
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  sys.stdout.flush()
  os.execv(args[0], args)


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
