"""The benchmarks' shared harness: the round loop, timing, results, localhost workers.

The drivers' smoke modes (tests/test_benchmarks_smoke.py and others) run these pieces end to
end; here each is checked on its own, with values worked out by hand.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import pytest

from core import runtime
from core.errors import UserError
from recipes import training_loop
from scripts import bench_common
from scripts import bench_harness
from scripts import bench_timing
from scripts import local_workers
from tests import binary_server
from tests import helpers


class _Recorder(bench_harness.Contender):
  """Records which clients it trained on, in which order; `prepare` takes 50 ms."""

  def __init__(self, name: str, log: list[tuple[str, tuple[str, ...]]]) -> None:
    self.name = name
    self._log = log

  def prepare(self, client_ids: Sequence[str]) -> None:
    time.sleep(0.05)

  def round(self, client_ids: Sequence[str]) -> None:
    self._log.append((self.name, tuple(client_ids)))


def test_alternate_rounds_rotates_contenders_on_the_same_clients_and_drops_warmup() -> None:
  log: list[tuple[str, tuple[str, ...]]] = []
  contenders = [_Recorder('a', log), _Recorder('b', log), _Recorder('c', log)]
  client_ids = [f'client{i}' for i in range(10)]
  times = bench_harness.alternate_rounds(contenders, client_ids, clients_per_round=3, rounds=4,
                                         warmup_rounds=2, seed=7)
  # 2 warm-up + 4 timed rounds of 3 contenders; only the timed ones are kept.
  assert len(log) == 18
  assert {name: len(t) for name, t in times.items()} == {'a': 4, 'b': 4, 'c': 4}
  for round_num in range(1, 7):
    turns = log[3 * (round_num - 1):3 * round_num]
    # Who goes first rotates: round 1 starts with b, round 2 with c, round 3 with a, ...
    assert [name for name, _ in turns] == bench_timing.rotate(['a', 'b', 'c'], round_num)
    # Every contender trains on the clients the recipes would sample in that round.
    expected = tuple(training_loop.sample_clients(client_ids, 3, 7, round_num))
    assert [clients for _, clients in turns] == [expected] * 3
  # `prepare` (50 ms) runs before the clock starts.
  assert max(t.wall for timings in times.values() for t in timings) < 0.04


def _burn_cpu(seconds: float) -> None:
  end = time.process_time() + seconds
  while time.process_time() < end:
    pass


def test_timed_counts_the_cpu_of_every_worker_given() -> None:
  # This process stands in for the workers: its own CPU counted once per pid given.
  me = os.getpid()
  _, alone = bench_timing.timed(lambda: _burn_cpu(0.3))
  _, twice = bench_timing.timed(lambda: _burn_cpu(0.3), (me, me))
  assert alone.worker_cpu == 0 and alone.cpu >= 0.3 and alone.wall >= alone.cpu * 0.5
  assert twice.worker_cpu == pytest.approx(2 * twice.cpu, abs=0.05)
  assert twice.total_cpu == pytest.approx(3 * twice.cpu, abs=0.05)


@pytest.mark.parametrize('values, expected', [(['3', '1'], [3, 1]), (['10'], [10])])
def test_positive_ints(values: list[str], expected: list[int]) -> None:
  assert bench_common.positive_ints(values, 'counts') == expected


@pytest.mark.parametrize('values', [[], ['0'], ['2', '-1'], ['x'], ['1.5']])
def test_positive_ints_refuses(values: list[str]) -> None:
  with pytest.raises(UserError, match='--counts must be a list of positive integers'):
    bench_common.positive_ints(values, 'counts')


def test_publish_writes_results_and_plot_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
  rows = [{'name': 'x', 'seconds': 1.25, 'curve': [1, 2]}, {'name': 'y', 'seconds': None}]
  table = bench_common.markdown_table(rows, [('name', 'name', ''), ('seconds', 's', '.1f')])

  def plot(path: Path) -> None:
    with bench_common.figure(path, title='t', columns=2) as axes:
      assert axes.shape == (1, 2)
      axes[0][0].plot([1, 2], [3, 4])

  paths = bench_common.publish(
      tmp_path / 'out', benchmark='b', settings={'smoke': True}, rows=rows, table=table,
      title='The title', load=bench_common.LoadMonitor(), plot=plot, plot_name='p.png',
      extra={'note': 1})
  assert sorted(paths) == ['csv', 'json', 'plot', 'table']
  record = json.loads(paths['json'].read_text())
  assert (record['benchmark'], record['settings'], record['note']) == ('b', {'smoke': True}, 1)
  assert record['results'][0]['curve'] == [1, 2]
  assert paths['csv'].read_text().splitlines()[0] == 'name,seconds'  # Lists stay in the JSON.
  assert paths['table'].read_text() == table + '\n'
  assert paths['plot'] == tmp_path / 'out' / 'p.png' and paths['plot'].stat().st_size > 1000
  out = capsys.readouterr().out
  assert '\nThe title\n\n| name | s |' in out and '| y | - |' in out
  assert str(paths['plot']) in out.splitlines()[-1]


def test_local_workers_serve_and_are_stopped() -> None:
  with local_workers.started(2) as workers:
    assert len({w.port for w in workers}) == 2
    for worker in workers:
      worker.wait_until_serving()
      assert worker.pid in runtime.worker_pids(os.getpid())
  assert all(w.process.poll() is not None for w in workers)
  assert helpers.leaked_workers() == []


def test_a_local_worker_is_stopped_when_the_block_fails() -> None:
  with pytest.raises(RuntimeError, match='boom'):
    with local_workers.LocalWorker() as worker:
      raise RuntimeError('boom')
  assert worker.process.poll() is not None


def test_under_the_tests_a_benchmarks_runs_are_forked_by_the_binary_server(monkeypatch):
  # What a benchmark that the binary server forked sees (tests/binary_server.py).
  monkeypatch.setenv(binary_server.FORK_SERVER_ENV, helpers.fork_server_address())
  probe = [sys.executable, '-m', 'timeit', '-n', '1', '-r', '1']
  # Forked from the server: TensorFlow is already imported, as in no fresh interpreter.
  bench_common.run_command([*probe, "import sys; assert 'tensorflow' in sys.modules"],
                           timeout=60, what='the probe')
  with pytest.raises(UserError, match=r'the probe failed with exit code 1: AssertionError'):
    bench_common.run_command([*probe, 'assert False'], timeout=60, what='the probe')
  started = time.monotonic()
  with pytest.raises(UserError, match='the sleeper did not finish within 1 s'):
    bench_common.run_command([*probe, '__import__("time").sleep(60)'], timeout=1,
                             what='the sleeper')
  assert time.monotonic() - started < 10
