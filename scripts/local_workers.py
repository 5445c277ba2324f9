"""TFF workers started on localhost for benchmarks and tests, and always stopped.

A `LocalWorker` is what a user gets from `python -m scripts.start_worker --port=N` on
another machine: TFF's C++ worker serving on a port, for `--tff_worker=host:port`
(`core.runtime.use_remote_worker`, `core.tff_workers.use_workers`). Each runs in
its own session, so a Ctrl-C in the terminal reaches the benchmark, which then stops
its workers itself (SIGINT, then SIGKILL after 10 s).

    with local_workers.started(2) as workers:
      tff_workers.use_workers([w.address for w in workers])
      ...

Hand-written on `subprocess` (no library starts TFF's worker binary); imports neither
TensorFlow nor TFF, so that a benchmark driver can start workers before (or without)
importing them.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Iterator

from core import runtime
from scripts import bench_common

_STOP_SECONDS = 10


def _default_sigint() -> None:
  # Runs in the child before exec: a benchmark started in the background by a
  # non-interactive shell has SIGINT ignored, and an ignored signal stays ignored
  # across exec; the worker must still stop on SIGINT.
  signal.signal(signal.SIGINT, signal.SIG_DFL)


class LocalWorker:
  """One TFF worker serving on a localhost port; a context manager that stops it.

  Attributes:
    port: The port it serves on.
    address: `localhost:<port>`, for `--tff_worker`.
    process: The `subprocess.Popen` of the worker.
    pid: The worker's pid (also through `scripts.start_worker`, which execs the worker).
  """

  def __init__(self, port: int | None = None, *, via_start_worker: bool = False) -> None:
    """Starts the worker.

    Args:
      port: The port; default: a free one (portpicker).
      via_start_worker: Start it as a user does, `python -m scripts.start_worker
        --port=N` (which checks the port and execs the worker), instead of running the
        worker binary directly with the same arguments.
    """
    import portpicker  # pylint: disable=g-import-not-at-top  # Not in the Flower environment.
    self.port = port or portpicker.pick_unused_port()
    self.address = f'localhost:{self.port}'
    if via_start_worker:
      command = [sys.executable, '-m', 'scripts.start_worker', f'--port={self.port}']
    else:
      command = runtime.worker_command(self.port, runtime.available_cores())
    self.process = subprocess.Popen(
        command, cwd=bench_common.ROOT, env=bench_common.subprocess_env(),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_default_sigint)
    self.pid = self.process.pid

  def wait_until_serving(self, timeout_seconds: float = 60) -> None:
    """Returns once the worker accepts connections on its port.

    A TCP connection, not gRPC's `channel_ready_future`: the C++ server listens only once
    it serves, and gRPC's connectivity-polling thread, which a ready future starts, could
    outlive the wait and die with "Cannot invoke RPC: Channel closed!" (a traceback from
    another thread, seen in the killed-worker test when it restarts a worker) when the
    channel was closed while it was still polling.

    Raises:
      RuntimeError: If the worker exits first or does not serve within the timeout.
    """
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        raise RuntimeError(f'the worker on port {self.port} exited early')
      try:
        with socket.create_connection(('localhost', self.port), timeout=1):
          return
      except OSError:
        time.sleep(0.05)
    raise RuntimeError(f'no worker serving on port {self.port} after {timeout_seconds:.0f} s')

  def kill(self) -> None:
    """Kills the worker at once (SIGKILL), as a crashed machine would lose it."""
    self.process.kill()
    self.process.wait()

  def stop(self) -> None:
    """Stops the worker if it still runs: SIGINT, then SIGKILL after 10 s."""
    if self.process.poll() is not None:
      return
    self.process.send_signal(signal.SIGINT)
    try:
      self.process.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
      self.kill()

  def __enter__(self) -> LocalWorker:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.stop()


@contextlib.contextmanager
def started(count: int, **kwargs: Any) -> Iterator[list[LocalWorker]]:
  """`count` workers (`LocalWorker(**kwargs)` each), all stopped on exit whatever happens."""
  workers: list[LocalWorker] = []
  try:
    for _ in range(count):
      workers.append(LocalWorker(**kwargs))
    yield workers
  finally:
    for worker in workers:
      worker.stop()
