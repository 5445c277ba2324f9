"""Recipes on several TFF workers (`--tff_worker=a:1,b:2,...`), and workers that fail, end to end.

Workers are started with `python -m scripts.start_worker` on free localhost ports, the way a
user starts them on other machines, and always stopped after the tests.

Same seed -> same metrics: runs are reproducible (seeded initial weights, per-(seed, round,
client) shuffles), so a run split across workers must give the local run's metrics up to
float rounding (the partial sums are added in another order; measured on the weights:
at most 1.5e-8); a run with another seed does not (`test_a_different_seed_changes_the_metrics`).

The recipe runs go through each binary's entry point in its long-lived test host
(`helpers.run_in_host`, which puts TFF's local context back after a `--tff_worker` run);
the run whose worker is killed is a process of its own (`helpers.start_binary`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import portpicker
import pytest

from core import runtime
from core.errors import UserError
from scripts import bench_timing
from scripts import local_workers
from tests import helpers

# 5 clients per round over 2 or 3 workers: uneven slices (3+2, 2+2+1).
FAST = ['--task=synthetic', '--model=tiny', '--clients_per_round=5', '--client_batch_size=4',
        '--progress=false', '--rounds_per_eval=1']
# Every metric of a row except the timing.
COMPARED = ('clients', 'train_loss', 'train_accuracy', 'train_examples', 'validation_loss',
            'validation_accuracy', 'test_loss', 'test_accuracy')


Workers = list[local_workers.LocalWorker]


class Worker(local_workers.LocalWorker):
  """A worker started like `python -m scripts.start_worker --port=N`, serving when made;
  `stop()` always runs."""

  def __init__(self, port: int | None = None) -> None:
    super().__init__(port, via_start_worker=True)
    try:
      self.wait_until_serving()
    except BaseException:
      self.stop()
      raise


@pytest.fixture(scope='module')
def workers() -> Iterator[Workers]:
  """Three running workers, shared by the tests that do not kill one."""
  with helpers.serving_workers(3) as started:
    yield started


def _run(tmp_path: Path, name: str, *flags: str, check: bool = True,
         recipe: str = 'recipes.fed_avg') -> subprocess.CompletedProcess[str]:
  return helpers.run_in_host(recipe, *FAST, *flags, f'--root_output_dir={tmp_path}',
                             f'--experiment_name={name}', check=check)


def _metrics(tmp_path: Path, name: str) -> list[dict[str, float | None]]:
  rows = helpers.read_rows(tmp_path / name / 'metrics.csv')
  return [{k: float(r[k]) if r.get(k) else None for k in ('round', *COMPARED)} for r in rows]


def _assert_same_metrics(expected: list[dict[str, float]], actual: list[dict[str, float]]) -> None:
  assert [r['round'] for r in actual] == [r['round'] for r in expected]
  for want, got in zip(expected, actual):
    for key in COMPARED:
      if want[key] is None:
        assert got[key] is None, (key, want, got)
      else:
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (key, want, got)


def _cpu(worker: Worker) -> float:
  return bench_timing.cpu_seconds(worker.pid)


@pytest.fixture(scope='module')
def split_runs(tmp_path_factory: pytest.TempPathFactory,
               workers: Workers) -> tuple[Path, dict[int, bool]]:
  """(root, workers count -> whether each of them worked) of 3-round runs: 'local',
  'workers2' and 'workers3' (the same flags on 2 and 3 of the workers)."""
  root = tmp_path_factory.mktemp('split')
  _run(root, 'local', '--total_rounds=3')
  every_worker_worked = {}
  for count in (2, 3):
    before = [_cpu(w) for w in workers[:count]]
    addresses = ','.join(w.address for w in workers[:count])
    result = _run(root, f'workers{count}', '--total_rounds=3', f'--tff_worker={addresses}')
    assert f'split across {count} TFF workers' in result.stdout
    every_worker_worked[count] = all(_cpu(w) > b for w, b in zip(workers[:count], before))
  return root, every_worker_worked


@pytest.mark.slow
def test_two_and_three_workers_give_the_local_workers_metrics(split_runs) -> None:
  root, every_worker_worked = split_runs
  local = _metrics(root, 'local')
  # A run that learns (so equal metrics are not equal by accident of a dead model).
  assert local[-1]['train_loss'] < local[0]['train_loss']
  for count in (2, 3):
    _assert_same_metrics(local, _metrics(root, f'workers{count}'))
    # Every worker trained its slice of the clients.
    assert every_worker_worked[count], f'a worker did no work ({count} workers)'


@pytest.mark.slow
def test_a_different_seed_changes_the_metrics(tmp_path: Path, split_runs,
                                              workers: Workers) -> None:
  """The comparison above can fail: a run with another seed does not match."""
  root, _ = split_runs
  addresses = ','.join(w.address for w in workers[:2])
  _run(tmp_path, 'seed1', '--total_rounds=3', '--seed=1', f'--tff_worker={addresses}')
  with pytest.raises(AssertionError):
    _assert_same_metrics(_metrics(root, 'workers2'), _metrics(tmp_path, 'seed1'))


@pytest.mark.slow
def test_secure_aggregation_stays_on_the_workers(tmp_path: Path, workers: Workers) -> None:
  """`--aggregator=secure` used to replace the remote context by a local test worker."""
  secure = ['--aggregator=secure', '--secure_bound=10', '--total_rounds=2']
  _run(tmp_path, 'local', *secure)
  for count in (1, 2):
    before = [_cpu(w) for w in workers[:count]]
    addresses = ','.join(w.address for w in workers[:count])
    result = _run(tmp_path, f'secure{count}', *secure, f'--tff_worker={addresses}')
    assert 'TFF worker' in result.stdout
    assert all(_cpu(w) > b for w, b in zip(workers[:count], before)), 'a worker did no work'
    _assert_same_metrics(_metrics(tmp_path, 'local'), _metrics(tmp_path, f'secure{count}'))


@pytest.mark.slow
def test_federated_evaluation_runs_on_three_workers(tmp_path: Path, workers: Workers) -> None:
  # The other recipes run on three workers in tests/test_recipes.py (their recipe matrix).
  addresses = ','.join(w.address for w in workers)
  helpers.run_in_host('recipes.fed_avg', *FAST, '--total_rounds=1', '--federated_eval_clients=3',
                      f'--tff_worker={addresses}', f'--root_output_dir={tmp_path}',
                      '--experiment_name=run', check=True)
  summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
  assert summary['status'] == 'completed' and summary['rounds_completed'] == 1
  assert 'fed_eval_accuracy_p50' in helpers.read_rows(tmp_path / 'run' / 'metrics.csv')[0]


@pytest.mark.slow
def test_unreachable_workers_are_each_named_before_training(tmp_path: Path,
                                                            workers: Workers) -> None:
  dead = [f'localhost:{portpicker.pick_unused_port()}' for _ in range(2)]
  started = time.monotonic()
  result = _run(tmp_path, 'dead', f'--tff_worker={workers[0].address},{dead[0]},{dead[1]}',
                '--tff_worker_wait_seconds=1.5', check=False)
  line = helpers.assert_one_line_error(result, 'no TFF worker answers', dead[0], dead[1],
                                       'waited 1.5 s', 'start_worker')
  assert time.monotonic() - started < 10  # The default wait is 10 s.
  assert workers[0].address not in line
  assert not (tmp_path / 'dead' / 'metrics.csv').exists()


def test_worker_wait_applies_only_with_workers(tmp_path: Path) -> None:
  result = _run(tmp_path, 'wait', '--tff_worker_wait_seconds=5', check=False)
  helpers.assert_one_line_error(result, '--tff_worker_wait_seconds', '--tff_worker')


@pytest.mark.parametrize('value', ['localhost:8000,bighost', 'localhost:8000,,localhost:8001',
                                   'localhost:8000,localhost:8000'])
def test_malformed_worker_list_is_refused_at_parse_time(tmp_path: Path, value: str) -> None:
  result = _run(tmp_path, 'bad', f'--tff_worker={value}', check=False)
  assert result.returncode == 2
  helpers.assert_one_line_error(result, '--tff_worker')


@pytest.mark.parametrize('value, expected', [
    ('localhost:8000', ['localhost:8000']),
    ('a:1, b:2,[::1]:3', ['a:1', 'b:2', '[::1]:3']),
])
def test_parse_worker_addresses(value: str, expected: list[str]) -> None:
  assert runtime.parse_worker_addresses(value) == expected


@pytest.mark.parametrize('value', ['', 'a:1,', 'a:1,b', 'a:1,a:1', 'a:1;b:2'])
def test_parse_worker_addresses_rejects(value: str) -> None:
  with pytest.raises(ValueError):
    runtime.parse_worker_addresses(value)


def test_a_round_with_dependent_aggregations_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
  """TFF splits a round only if no aggregation feeds another; say so in one line."""
  from core import tff_workers  # pylint: disable=g-import-not-at-top
  tff = runtime.import_tff()

  @tff.federated_computation(tff.FederatedType(tff.types.TensorType(np.float32), tff.CLIENTS))
  def sum_then_sum_again(values):
    total = tff.federated_sum(values)
    return tff.federated_sum(tff.federated_broadcast(total))

  @tff.federated_computation(tff.FederatedType(tff.types.TensorType(np.float32), tff.CLIENTS))
  def one_sum(values):
    return tff.federated_sum(values)

  assert tff_workers.split_error(one_sum) is None
  assert tff_workers.split_error(sum_then_sum_again) is not None
  tff_workers.check_splittable(sum_then_sum_again, what='this')  # Local worker: no check.
  monkeypatch.setattr(tff_workers, '_installed', tff_workers._Installed(  # pylint: disable=protected-access
      ('a:1', 'b:2'), (), secure=False))
  with pytest.raises(UserError, match='cannot run across 2 TFF workers') as error:
    tff_workers.check_splittable(sum_then_sum_again, what='this')
  assert '\n' not in str(error.value)
  tff_workers.check_splittable(one_sum, what='this')


def test_disposing_on_a_gone_worker_is_silent_and_other_calls_name_it() -> None:
  """TFF frees remote values from weakref finalizers; their errors printed a traceback.

  When a worker was killed, a finalizer's `dispose` call failed with gRPC UNAVAILABLE and
  Python printed "Exception ignored in ..." with a traceback above the run's one-line error
  (seen once in the killed-worker test below, which depends on garbage-collection timing).
  """
  import grpc  # pylint: disable=g-import-not-at-top
  from core import tff_workers  # pylint: disable=g-import-not-at-top
  tff = runtime.import_tff()
  from tensorflow_federated.proto.v0 import executor_pb2  # pylint: disable=g-import-not-at-top
  address = f'localhost:{portpicker.pick_unused_port()}'  # Nothing listens there.
  # Not closed at the end: TFF's stubs subscribe to the channel's state, which gRPC polls
  # from a thread, and closing the channel while a connection attempt to the dead address
  # changes that state can kill the thread with "Channel closed!" (an unhandled-thread
  # warning of this suite). Unreferenced, the channel unsubscribes them and goes quietly.
  channel = grpc.insecure_channel(address)
  stub = tff_workers._FailFastStub(channel, address)  # pylint: disable=protected-access
  assert stub.dispose(executor_pb2.DisposeRequest()) is None
  # TFF's own stub raises there, as the finalizers saw.
  with pytest.raises(tff.framework.RetryableError):
    tff.framework.RemoteExecutorGrpcStub(channel).dispose(executor_pb2.DisposeRequest())
  with pytest.raises(tff_workers.WorkerLostError, match=address):
    stub.compute(executor_pb2.ComputeRequest())


def _rounds_logged(path: Path) -> int:
  try:
    return len(helpers.read_rows(path))
  except (OSError, ValueError):
    return 0


@pytest.mark.slow
def test_killed_worker_stops_the_run_in_one_line_and_resume_continues(tmp_path: Path) -> None:
  started = [Worker(), Worker()]
  try:
    addresses = ','.join(w.address for w in started)
    # The tiny model: rounds of a fraction of a second still leave the run in the middle
    # of its 1000 rounds when the worker dies (the 1.7M-parameter CNN cost minutes of CPU).
    flags = ['--task=synthetic', '--model=tiny', '--clients_per_round=6', '--progress=false',
             '--rounds_per_eval=5', '--rounds_per_checkpoint=2', f'--tff_worker={addresses}',
             f'--root_output_dir={tmp_path}', '--experiment_name=run']
    run = helpers.start_binary('recipes.fed_avg', *flags, '--total_rounds=1000')
    try:
      csv = tmp_path / 'run' / 'metrics.csv'
      deadline = time.monotonic() + 240
      while _rounds_logged(csv) < 5 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.2)
      assert _rounds_logged(csv) >= 5, 'the run did not get going'
      started[1].kill()
      result = run.wait(timeout=120)
    finally:
      if run.poll() is None:
        run.send_signal(signal.SIGKILL)
        run.wait()
    helpers.assert_one_line_error(result, f'TFF worker at {started[1].address}', '--resume')
    assert started[0].address not in helpers.error_lines(result.stderr)[-1]
    logged = _rounds_logged(csv)
    assert logged < 1000
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['status'] == 'failed'
    # The worker comes back on the same port; the run continues from its last checkpoint.
    started[1] = Worker(started[1].port)
    total = logged + 2
    helpers.run_in_host('recipes.fed_avg', *flags, f'--total_rounds={total}', '--resume',
                        check=True)
    rounds = [int(r['round']) for r in helpers.read_rows(csv)]
    assert rounds == list(range(1, total + 1))
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['status'] == 'completed' and summary['rounds_completed'] == total
  finally:
    for worker in started:
      worker.stop()
  assert not helpers.leaked_workers()


@pytest.mark.slow
def test_bench_workers_smoke(tmp_path: Path) -> None:
  helpers.run_binary('scripts.bench_workers', '--smoke', f'--results_dir={tmp_path}', timeout=600,
                     check=True)
  for name in ('results.json', 'results.csv', 'table.md', 'workers.png'):
    assert (tmp_path / name).stat().st_size > 0, name
  record = json.loads((tmp_path / 'results.json').read_text())
  assert record['settings']['smoke'] is True and 'load_average_1min_peak' in record['load']
  rows = record['results']
  assert [r['workers'] for r in rows] == [1, 2]
  for row in rows:
    assert len(row['worker_peak_mib']) == row['workers']
    assert all(m > 10 for m in row['worker_peak_mib'])
    assert row['seconds_per_round_median'] > 0 and row['workers_cpu_seconds_median'] > 0
  assert not helpers.leaked_workers()
