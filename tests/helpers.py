"""Helpers for end-to-end tests: run a binary as a user would and inspect what it leaves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def leaked_workers() -> list[int]:
  """TFF worker binaries whose Python parent is gone (orphans), excluding zombies.

  A worker whose parent is still a live Python process belongs to a run in progress
  (possibly another one on this machine), not to a leak.
  """
  from core import runtime  # pylint: disable=g-import-not-at-top
  return [p for p in runtime.worker_pids() if _is_alive(p) and not _has_python_parent(p)]


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
