"""Recipes on a separately started TFF worker (`--tff_worker=host:port`), end to end.

A worker is started on a free localhost port with `python -m scripts.start_worker`, the way
a user starts one on a bigger machine, and stopped after the tests whatever happens.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator

import portpicker
import pytest

from core import runtime
from scripts import bench_timing
from scripts import local_workers
from tests import helpers

FAST = ['--task=synthetic', '--clients_per_round=2', '--progress=false']


@pytest.fixture(scope='module')
def worker() -> Iterator[tuple[str, int]]:
  """(address, pid) of a worker started with scripts.start_worker; always stopped."""
  with local_workers.LocalWorker(via_start_worker=True) as started:
    started.wait_until_serving()
    yield started.address, started.pid  # start_worker execs the worker: same pid.


class _LocalWorkerWatch:
  """Records TFF workers whose parent is the process `pid`, until the context exits."""

  def __init__(self, pid: int) -> None:
    self._pid = pid
    self.seen: set[int] = set()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True)

  def _watch(self) -> None:
    while not self._stop.is_set():
      self.seen.update(runtime.worker_pids(self._pid))
      self._stop.wait(0.1)

  def __enter__(self) -> '_LocalWorkerWatch':
    self._thread.start()
    return self

  def __exit__(self, *exc: object) -> None:
    self._stop.set()
    self._thread.join()


def test_worker_binary_is_the_started_process(worker: tuple[str, int]) -> None:
  _, pid = worker
  assert pid in runtime.worker_pids()


def test_recipe_runs_on_the_remote_worker_and_starts_none(tmp_path: Path,
                                                         worker: tuple[str, int]) -> None:
  address, pid = worker
  cpu_before = bench_timing.cpu_seconds(pid)
  run = helpers.start_binary(
      'recipes.fed_avg', *FAST, '--total_rounds=2', '--rounds_per_eval=1',
      f'--tff_worker={address}', f'--root_output_dir={tmp_path}', '--experiment_name=remote')
  with _LocalWorkerWatch(run.pid) as watch:
    result = run.wait(timeout=300)
  assert result.returncode == 0, result.stderr
  assert watch.seen == set(), 'the recipe started a local worker of its own'
  assert f'on the TFF worker at {address}' in result.stdout
  summary = json.loads((tmp_path / 'remote' / 'summary.json').read_text())
  assert summary['status'] == 'completed' and summary['rounds_completed'] == 2
  hparams = json.loads((tmp_path / 'remote' / 'hparams.json').read_text())
  assert hparams['tff_worker'] == address
  assert bench_timing.cpu_seconds(pid) > cpu_before, 'the worker did no work'
  # The worker serves one run after another.
  helpers.run_in_host('recipes.fed_avg', *FAST, '--total_rounds=1', f'--tff_worker={address}',
                     f'--root_output_dir={tmp_path}', '--experiment_name=again', check=True)


def test_unreachable_worker_is_one_line(tmp_path: Path) -> None:
  port = portpicker.pick_unused_port()
  result = helpers.run_in_host('recipes.fed_avg', *FAST, f'--tff_worker=localhost:{port}',
                              '--tff_worker_wait_seconds=1', f'--root_output_dir={tmp_path}')
  helpers.assert_one_line_error(result, 'no TFF worker answers', 'waited 1 s', 'start_worker')
  assert not (tmp_path / 'metrics.csv').exists()


def test_malformed_worker_address_is_one_line(tmp_path: Path) -> None:
  result = helpers.run_in_host('recipes.fed_avg', *FAST, '--tff_worker=bighost',
                              f'--root_output_dir={tmp_path}')
  helpers.assert_one_line_error(result, '--tff_worker', 'host:port')


def test_start_worker_refuses_a_busy_port(worker: tuple[str, int]) -> None:
  port = worker[0].rpartition(':')[2]
  result = helpers.run_module('scripts.start_worker', f'--port={port}', timeout=60)
  helpers.assert_one_line_error(result, f'port {port} is in use')


@pytest.mark.parametrize('address, expected', [
    ('localhost:8000', ('localhost', 8000)),
    ('10.0.0.7:65535', ('10.0.0.7', 65535)),
    ('[::1]:8000', ('[::1]', 8000)),
])
def test_parse_worker_address(address: str, expected: tuple[str, int]) -> None:
  assert runtime.parse_worker_address(address) == expected


@pytest.mark.parametrize('address', ['localhost', ':8000', 'host:0', 'host:70000', 'host:http'])
def test_parse_worker_address_rejects(address: str) -> None:
  with pytest.raises(ValueError, match='host:port'):
    runtime.parse_worker_address(address)
