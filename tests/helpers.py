"""Helpers for end-to-end tests: run a binary as a user would and inspect what it leaves."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from scripts import local_workers

ROOT = Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, timeout: float = 300, check: bool = False,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
  """Runs `python -m module args...` with stdout/stderr captured through pipes.

  Capturing through pipes is deliberate: a leaked TFF worker holding the pipe open would
  make this hang (and time out) instead of passing.
  """
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(ROOT))
  result = subprocess.run(
      [sys.executable, '-m', module, *args], capture_output=True, text=True,
      timeout=timeout, cwd=cwd or ROOT, env=env, stdin=subprocess.DEVNULL,
  )
  if check and result.returncode != 0:
    raise AssertionError(f'{module} exited {result.returncode}:\n{result.stdout}\n{result.stderr}')
  return result


class _BinaryServer:
  """The client side of tests/binary_server.py: one server per test session, started lazily.

  Its stderr goes to a log in its own temporary directory, where the runs' outputs go too;
  `close` ends it and removes the directory.
  """

  def __init__(self) -> None:
    self._dir = Path(tempfile.mkdtemp(prefix='fedrecipes-binaries-'))
    self._log = open(self._dir / 'process.log', 'wb')  # pylint: disable=consider-using-with
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(ROOT))
    self._process = subprocess.Popen(
        [sys.executable, '-m', 'tests.binary_server'], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT, env=env)
    self._lock = threading.Lock()
    self._next_id = 0
    self._replies: dict[int, dict[str, object]] = {}
    self._changed = threading.Condition(self._lock)
    if not self._ready():
      raise RuntimeError(f'the binary server did not start: {self._log_tail()}')
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self) -> None:
    for line in self._process.stdout:
      message = json.loads(line)
      with self._changed:
        self._replies.setdefault(message['id'], {}).update(message)
        self._changed.notify_all()
    with self._changed:
      self._replies[-1] = {'closed': True}
      self._changed.notify_all()

  def start(self, module: str, args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> 'ForkedRun':
    """Forks a child that runs `python -m module args`; returns at once."""
    with self._lock:
      request_id = self._next_id
      self._next_id += 1
    stdout, stderr = (self._dir / f'{request_id}.out', self._dir / f'{request_id}.err')
    request = {'id': request_id, 'module': module, 'args': list(args), 'cwd': str(cwd),
               'env': env, 'stdout': str(stdout), 'stderr': str(stderr)}
    with self._lock:
      self._process.stdin.write((json.dumps(request) + '\n').encode())
      self._process.stdin.flush()
    pid = self._wait_for(request_id, 'pid', timeout=60)
    return ForkedRun(self, request_id, int(pid), [sys.executable, '-m', module, *args],
                     stdout, stderr)

  def _wait_for(self, request_id: int, key: str, timeout: float | None) -> object:
    deadline = None if timeout is None else time.monotonic() + timeout
    with self._changed:
      while True:
        reply = self._replies.get(request_id, {})
        if 'error' in reply:
          raise RuntimeError(f'binary server: {reply["error"]}')
        if key in reply:
          return reply[key]
        if -1 in self._replies:
          raise RuntimeError(f'the binary server exited: {self._log_tail()}')
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
          raise TimeoutError(f'no {key} for request {request_id}')
        self._changed.wait(remaining)

  @property
  def pid(self) -> int:
    return self._process.pid

  def _ready(self) -> bool:
    message = json.loads(self._process.stdout.readline() or '{}')
    self.address = message.get('address')  # Its socket, for its children's own runs.
    return bool(message.get('ready'))

  def _log_tail(self) -> str:
    self._log.flush()
    return (self._dir / 'process.log').read_text(errors='replace')[-3000:]

  def close(self) -> None:
    try:
      self._process.stdin.close()
      self._process.wait(timeout=60)
    except (OSError, subprocess.TimeoutExpired):
      self._process.kill()
      self._process.wait()
    self._log.close()
    shutil.rmtree(self._dir, ignore_errors=True)


class ForkedRun:
  """A binary running in a child of the binary server (see `start_binary`)."""

  def __init__(self, server: _BinaryServer, request_id: int, pid: int, args: list[str],
               stdout: Path, stderr: Path) -> None:
    self._server = server
    self._id = request_id
    self.pid = pid
    self.args = args
    self._stdout = stdout
    self._stderr = stderr
    self.returncode: int | None = None

  def poll(self) -> int | None:
    """The exit code if the run has ended, else None."""
    if self.returncode is None:
      try:
        self.returncode = int(self._server._wait_for(self._id, 'returncode', timeout=0))  # pylint: disable=protected-access
      except TimeoutError:
        return None
    return self.returncode

  def send_signal(self, signum: int) -> None:
    if self.poll() is None:
      os.kill(self.pid, signum)

  def wait(self, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Waits for the run to end; kills it and raises `subprocess.TimeoutExpired` after `timeout`."""
    try:
      code = self._server._wait_for(self._id, 'returncode', timeout)  # pylint: disable=protected-access
    except TimeoutError:
      self.send_signal(signal.SIGKILL)
      self._server._wait_for(self._id, 'returncode', 60)  # pylint: disable=protected-access
      raise subprocess.TimeoutExpired(self.args, timeout) from None
    self.returncode = int(code)
    result = subprocess.CompletedProcess(
        self.args, self.returncode, self._stdout.read_text(errors='replace'),
        self._stderr.read_text(errors='replace'))
    self._stdout.unlink(missing_ok=True)
    self._stderr.unlink(missing_ok=True)
    return result


_server: _BinaryServer | None = None
_server_lock = threading.Lock()


def _binary_server() -> _BinaryServer:
  global _server
  with _server_lock:
    if _server is None:
      _server = _BinaryServer()
      atexit.register(_server.close)
    return _server


def fork_server_address() -> str:
  """The binary server's socket, which its children find in FEDRECIPES_TEST_FORK_SERVER."""
  return _binary_server().address


def binary_server_pid() -> int:
  """The binary server's process id (its AutoGraph warm-up log is named after it)."""
  return _binary_server().pid


def start_binary(module: str, *args: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> ForkedRun:
  """Starts `python -m module args` as a child of the binary server (tests/binary_server.py)."""
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(ROOT), **(env or {}))
  return _binary_server().start(module, args, cwd=cwd or ROOT, env=full_env)


def run_binary(module: str, *args: str, timeout: float = 300, check: bool = False,
               cwd: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
  """`run_module`, but forked from the pre-imported binary server: no seconds of imports.

  The child is a process of its own (fresh flags, TFF context, worker, exit code); see
  tests/binary_server.py for the little that differs from a fresh `python -m`. Use
  `run_module` where the process start, pipes or the interpreter's exit are the point.
  """
  result = start_binary(module, *args, cwd=cwd, env=env).wait(timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'{module} exited {result.returncode}:\n{result.stdout}\n{result.stderr}')
  return result


class _RecipeHost:
  """The client side of tests/recipe_host.py: one long-lived process per binary.

  The host is forked from the binary server (no seconds of imports) and talks to this
  process through a Unix socket that it connects to when it starts.
  """

  def __init__(self, module: str) -> None:
    self.module = module
    self.lock = threading.Lock()
    self._count = 0
    self._dir = Path(tempfile.mkdtemp(prefix='fedrecipes-host-'))
    address = str(self._dir / 'host.sock')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
      listener.bind(address)
      listener.listen(1)
      listener.settimeout(0.5)
      self._process = start_binary('tests.recipe_host', module, address)
      deadline = time.monotonic() + 180
      while True:
        try:
          self._socket, _ = listener.accept()
          break
        except TimeoutError:
          if self._process.poll() is not None or time.monotonic() > deadline:
            self.close()
            raise RuntimeError(f'the recipe host for {module} did not start: {self._log}')
    self._requests = self._socket.makefile('w')
    self._replies = self._socket.makefile('r')
    if not json.loads(self._replies.readline() or '{}').get('ready'):
      self.close()
      raise RuntimeError(f'the recipe host for {module} did not start: {self._log}')

  def alive(self) -> bool:
    return self._process.poll() is None

  def close(self) -> None:
    """Ends the host (it exits when its socket closes; killed if it does not)."""
    if self._closed:
      return
    self._closed = True
    if getattr(self, '_socket', None) is not None:
      # The makefile() objects keep the socket open: shut the connection down itself.
      try:
        self._socket.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass
      self._socket.close()
    try:
      self._log = self._process.wait(60).stderr[-3000:]
    except subprocess.TimeoutExpired:
      self._log = '(killed: it did not exit)'
    shutil.rmtree(self._dir, ignore_errors=True)

  _closed = False
  _log = '(no output)'

  def run(self, args: Sequence[str], *, cwd: Path, env: dict[str, str],
          timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs the binary once in the host (callers hold `lock`); kills the host on timeout."""
    self._count += 1
    stdout, stderr = self._dir / f'{self._count}.out', self._dir / f'{self._count}.err'
    self._requests.write(json.dumps({
        'args': list(args), 'cwd': str(cwd), 'env': env,
        'stdout': str(stdout), 'stderr': str(stderr)}) + '\n')
    self._requests.flush()
    command = [sys.executable, '-m', self.module, *args]
    self._socket.settimeout(timeout)
    try:
      reply = self._replies.readline()
    except TimeoutError:
      self._process.send_signal(signal.SIGKILL)
      self.close()
      raise subprocess.TimeoutExpired(command, timeout) from None
    if not reply:
      self.close()
      raise RuntimeError(f'the recipe host for {self.module} died: {self._log}')
    result = subprocess.CompletedProcess(
        command, int(json.loads(reply)['returncode']), stdout.read_text(errors='replace'),
        stderr.read_text(errors='replace'))
    stdout.unlink(missing_ok=True)
    stderr.unlink(missing_ok=True)
    return result


_hosts: dict[str, _RecipeHost] = {}
_hosts_lock = threading.Lock()  # Not _server_lock: starting a host may start the server.


def _recipe_host(module: str) -> _RecipeHost:
  with _hosts_lock:
    host = _hosts.get(module)
    if host is None or not host.alive():
      host = _hosts[module] = _RecipeHost(module)
      atexit.register(host.close)
    return host


def run_in_host(module: str, *args: str, timeout: float = 300, check: bool = False,
                cwd: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
  """`run_binary`, but in a long-lived process per binary that keeps TensorFlow's caches warm.

  The run goes through the binary's own entry point (`cli.run`: flag parsing and checks,
  one-line errors, exit codes) with its output in the result as from a process; the host
  restores flags, TFF's execution context, cwd and environment after it (see
  tests/recipe_host.py). For tests that read a run's outputs, errors and exit code; where
  the process itself (its signals, exit or TFF worker) is the point, use `run_binary` or
  `run_module`. Runs of one binary take turns; different binaries run in parallel.
  """
  host = _recipe_host(module)
  with host.lock:
    result = host.run(args, cwd=cwd or ROOT, env=dict(env or {}), timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'{module} exited {result.returncode}:\n{result.stdout}\n{result.stderr}')
  return result


@contextlib.contextmanager
def serving_workers(count: int) -> Iterator[list[local_workers.LocalWorker]]:
  """`count` TFF workers started like `python -m scripts.start_worker --port=N`, each
  serving before the block runs; all stopped after it, whatever happens."""
  with local_workers.started(count, via_start_worker=True) as workers:
    for worker in workers:
      worker.wait_until_serving()
    yield workers


def error_lines(stderr: str) -> list[str]:
  """Lines of stderr that are not TensorFlow's start-up chatter."""
  noise = ('oneDNN', 'cuda', 'TensorRT', 'cpu_feature_guard', 'rebuild TensorFlow', 'AVX',
           'cuDNN', 'cuFFT', 'cuBLAS', 'port.cc', 'WARNING: All log messages')
  return [l for l in stderr.splitlines() if l.strip() and not any(n in l for n in noise)]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
  """Asserts a non-zero exit with one clear error line (no traceback) containing `needles`."""
  assert result.returncode != 0, result.stdout + result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  lines = [l for l in error_lines(result.stderr) if 'error' in l.lower()]
  assert len(lines) == 1, result.stderr
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


def leaked_workers(under: str | None = None) -> list[int]:
  """TFF worker binaries whose Python parent is gone (orphans), excluding zombies.

  A worker whose parent is still a live Python process belongs to a run in progress
  (possibly another one on this machine), not to a leak. `under`: only workers whose
  binary path starts with it (scripts/test.sh passes its virtualenv).
  """
  from core import runtime  # pylint: disable=g-import-not-at-top
  return [p for p in runtime.worker_pids() if _is_alive(p) and not _has_python_parent(p)
          and (under is None or _argv0(p).startswith(under))]


def _argv0(pid: int) -> str:
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return f.read().split(b'\0', 1)[0].decode(errors='replace')
  except OSError:
    return ''


def _stat_fields(pid: int) -> list[str]:
  with open(f'/proc/{pid}/stat') as f:
    return f.read().rsplit(')', 1)[1].split()


def _is_alive(pid: int) -> bool:
  try:
    return _stat_fields(pid)[0] != 'Z'  # Zombies hold no memory.
  except OSError:
    return False


def _has_python_parent(pid: int) -> bool:
  try:
    ppid = int(_stat_fields(pid)[1])
    with open(f'/proc/{ppid}/cmdline', 'rb') as f:
      return ppid > 1 and b'python' in f.read()
  except (OSError, ValueError, IndexError):
    return False


def read_rows(path: Path) -> list[dict[str, str]]:
  """Rows of a metrics CSV."""
  import csv  # pylint: disable=g-import-not-at-top
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def read_json(path: Path) -> object:
  """A JSON file's content."""
  import json  # pylint: disable=g-import-not-at-top
  return json.loads(Path(path).read_text())
