"""One seed decides a run, and a run interrupted at any phase resumes to the same end.

End to end through the binaries: the same flags twice give the same metrics.csv (timing
columns aside) and the same final weights; a different seed gives other curves. Then a
run is interrupted with SIGINT, SIGTERM or SIGKILL in each phase of a round (during
`process.next`, the validation/test evaluation, right after its CSV row, right after its
TensorBoard write, just before and just after a checkpoint save; the recipes' test hook
FEDRECIPES_TEST_PAUSE=phase@round pauses there) and resumed with the same command: every
round ends up in metrics.csv exactly once, with the uninterrupted run's values and
bit-identical final weights, and no TFF worker outlives an interrupted run.

Signals and process exit are the point of the interrupted runs. The graceful chain's first
two (SIGINT during `process.next`, SIGTERM during evaluation) are real `python -m
recipes.fed_avg` processes, so the interpreter's own exit after a signal is covered; its
other four, and the killed chain's (SIGKILL: no exit path runs at all), are forked from the
pre-imported binary server (`helpers.start_binary`: the same signal handlers and exit hooks,
without seconds of imports per run).
Uninterrupted runs go through the binary's entry point in its long-lived test host
(`helpers.run_in_host`); of the FedAvg and DP same-seed pairs, one run is a process of its
own (`helpers.run_binary`), so the seed is shown to decide the run across processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from core import runtime
from tests import helpers

tff = runtime.import_tff()

TIMING_COLUMNS = ('round_seconds',)
PHASES = ('next', 'eval', 'csv', 'tensorboard', 'checkpoint', 'saved')
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
# Rounds 1-8; a checkpoint every 2 rounds, validation every round.
RUN = ('--task=synthetic', '--num_clients=20', '--clients_per_round=4', '--total_rounds=8',
       '--rounds_per_eval=1', '--rounds_per_checkpoint=2', '--progress=false')
# Graceful interruptions in these phases are real processes (see the module docstring).
REAL_PROCESS_PHASES = ('next', 'eval')
# The round in which each phase is interrupted (checkpoint phases need an even round).
PHASE_ROUNDS = {'next': 1, 'eval': 2, 'csv': 3, 'tensorboard': 3, 'checkpoint': 4, 'saved': 6}


def metrics_without_timings(path: Path) -> list[dict[str, str]]:
  return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
          for row in helpers.read_rows(path)]


def final_weights(run_dir: Path, round_num: int) -> list[np.ndarray]:
  from tensorflow_federated.python.program import file_utils  # pylint: disable=g-import-not-at-top
  state = asyncio.run(file_utils.read_saved_model(run_dir / 'checkpoints' / f'round_{round_num}'))
  return [np.asarray(leaf) for leaf in tf.nest.flatten(state)]


def run(module: str, out: Path, name: str, *flags: str,
        forked: bool = False) -> subprocess.CompletedProcess[str]:
  """An uninterrupted run, in the binary's test host (or `forked` from the binary server)."""
  return (helpers.run_binary if forked else helpers.run_in_host)(
      module, *flags, f'--root_output_dir={out}', f'--experiment_name={name}', check=True)


@pytest.mark.slow
@pytest.mark.parametrize('module,flags,across_processes', [
    ('recipes.fed_avg', (), True),
    # The server optimizer's state adds nothing that depends on the process.
    ('recipes.fed_opt', ('--server_optimizer=adam', '--server_learning_rate=0.01'), False),
    # The DP noise is drawn by TFF from seeds of its own: shown across processes too.
    ('recipes.dp_fed_avg', ('--clients_per_round=5', '--aggregator=dp_fixed', '--clip_norm=0.5',
                            '--noise_multiplier=0.8'), True),
])
def test_same_seed_same_run_other_seed_other_run(tmp_path, module, flags, across_processes):
  common = ('--task=synthetic', '--num_clients=20', '--total_rounds=3', '--rounds_per_eval=1',
            '--progress=false', *flags)
  first = run(module, tmp_path, 'first', *common, '--seed=5')
  run(module, tmp_path, 'second', *common, '--seed=5', forked=across_processes)
  run(module, tmp_path, 'other', *common, '--seed=6')
  rows = metrics_without_timings(tmp_path / 'first' / 'metrics.csv')
  assert len(rows) == 3
  assert rows == metrics_without_timings(tmp_path / 'second' / 'metrics.csv')
  assert rows != metrics_without_timings(tmp_path / 'other' / 'metrics.csv')
  for a, b in zip(final_weights(tmp_path / 'first', 3), final_weights(tmp_path / 'second', 3)):
    np.testing.assert_array_equal(a, b)
  if module == 'recipes.dp_fed_avg':
    # The noise is part of what the seed decides: its stddev was logged every round.
    assert all(float(r['aggregator/noise_stddev']) > 0 for r in rows)
    assert 'privacy' in first.stdout
  # The summary says how to reproduce the run.
  summary = helpers.read_json(tmp_path / 'first' / 'summary.json')
  assert summary['seed'] == 5
  assert len(summary['git_commit']) == 40 or summary['git_commit'] == 'unknown'
  assert '--seed=5' in summary['command']


def _finish(process: subprocess.Popen[str] | helpers.ForkedRun,
            timeout: float | None = None) -> str:
  """Waits for a real or forked run to end; returns its stderr."""
  if isinstance(process, helpers.ForkedRun):
    return process.wait(timeout).stderr
  return process.communicate(timeout=timeout)[1]


def _interrupt(out: Path, name: str, phase: str, round_num: int, signum: int) -> None:
  """Starts the run (or its resume), stops it with `signum` at `phase` of `round_num`."""
  run_dir = out / name
  marker = run_dir / 'test_phase'
  if marker.exists():
    marker.unlink()
  resume = ('--resume',) if run_dir.exists() else ()
  args = [*RUN, f'--root_output_dir={out}', f'--experiment_name={name}', *resume]
  pause = {'FEDRECIPES_TEST_PAUSE': f'{phase}@{round_num}'}
  if signum == signal.SIGKILL or phase not in REAL_PROCESS_PHASES:
    process = helpers.start_binary('recipes.fed_avg', *args, env=pause)
  else:
    env = dict(os.environ, PYTHONPATH=str(helpers.ROOT), TF_CPP_MIN_LOG_LEVEL='3', **pause)
    process = subprocess.Popen(
        [sys.executable, '-m', 'recipes.fed_avg', *args], cwd=helpers.ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while not marker.exists():
    assert process.poll() is None, f'{phase}@{round_num}: exited early\n{_finish(process)}'
    assert time.monotonic() < deadline, f'{phase}@{round_num} never reached'
    time.sleep(0.02)
  process.send_signal(signum)
  stderr = _finish(process, timeout=120)
  assert process.returncode != 0, f'{phase}@{round_num}: finished despite {signum}'
  assert 'Traceback' not in stderr, stderr
  time.sleep(0.5)
  # Whatever the signal (SIGKILL runs no cleanup), the run's TFF worker died with it.
  assert helpers.leaked_workers() == [], f'{phase}@{round_num}: a worker outlived {signum}'


def _interrupted_chain(out: Path, name: str, signals: tuple[int, ...]) -> Path:
  """One run interrupted once in every phase (phase i by signals[i]), then finished."""
  for phase, signum in zip(PHASES, signals):
    _interrupt(out, name, phase, PHASE_ROUNDS[phase], signum)
  helpers.run_in_host('recipes.fed_avg', *RUN, f'--root_output_dir={out}',
                      f'--experiment_name={name}', '--resume', check=True)
  return out / name


def _chains() -> dict[str, tuple[int, ...]]:
  """Which signal stops each phase, per chain.

  By default two chains: SIGKILL in every phase (no cleanup runs: the resume starts from
  the last periodic checkpoint), and SIGINT / SIGTERM alternating (the run saves its last
  finished round on the way out), so every phase meets both kinds of ending and both
  graceful signals. FEDRECIPES_FULL_INTERRUPT_MATRIX=1 runs all 18 (phase, signal) pairs
  (three chains; several minutes).
  """
  if os.environ.get('FEDRECIPES_FULL_INTERRUPT_MATRIX') == '1':
    return {f'rotation{k}': tuple(SIGNALS[(i + k) % 3] for i in range(len(PHASES)))
            for k in range(3)}
  return {'killed': (signal.SIGKILL,) * len(PHASES),
          'graceful': tuple((signal.SIGINT, signal.SIGTERM)[i % 2] for i in range(len(PHASES)))}


@pytest.mark.slow
def test_interrupted_anywhere_resumes_to_the_uninterrupted_run(tmp_path):
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    reference = pool.submit(run, 'recipes.fed_avg', tmp_path, 'reference', *RUN)
    chains = [pool.submit(_interrupted_chain, tmp_path, name, signals)
              for name, signals in _chains().items()]
    reference.result()
    chain_dirs = [c.result() for c in chains]
  expected_rows = metrics_without_timings(tmp_path / 'reference' / 'metrics.csv')
  assert [int(r['round']) for r in expected_rows] == list(range(1, 9))
  expected_weights = final_weights(tmp_path / 'reference', 8)
  for chain in chain_dirs:
    assert metrics_without_timings(chain / 'metrics.csv') == expected_rows, chain
    for a, b in zip(final_weights(chain, 8), expected_weights):
      np.testing.assert_array_equal(a, b)
    summary = helpers.read_json(chain / 'summary.json')
    assert summary['status'] == 'completed' and summary['rounds_completed'] == 8
    # Five interrupted resumes and the last one.
    assert len(helpers.read_json(chain / 'hparams.json')['resumes']) == len(PHASES)


def test_resume_refuses_a_flag_that_changes_what_is_learned(tmp_path):
  run('recipes.fed_avg', tmp_path, 'run', *RUN[:-4], '--total_rounds=1', '--progress=false')
  result = helpers.run_in_host(
      'recipes.fed_avg', *RUN[:-4], '--total_rounds=2', '--progress=false',
      '--client_learning_rate=0.5', f'--root_output_dir={tmp_path}', '--experiment_name=run',
      '--resume')
  helpers.assert_one_line_error(result, '--client_learning_rate=0.5', 'the run has 0.05')
  # Run-control flags may change: this resume continues to round 2.
  run('recipes.fed_avg', tmp_path, 'run', *RUN[:-4], '--total_rounds=2', '--progress=false',
      '--resume')
  assert [r['round'] for r in helpers.read_rows(tmp_path / 'run' / 'metrics.csv')] == ['1', '2']
