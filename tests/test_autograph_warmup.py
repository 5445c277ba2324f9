"""The binary server converts what its children converted (tests/autograph_warmup.py).

Through the binary, as the suite uses it: a fed_avg run forked after the server warmed up
converts none of the functions the server converted, and computes the same run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests import autograph_warmup
from tests import helpers

RUN = ('--task=synthetic', '--num_clients=20', '--total_rounds=1', '--rounds_per_eval=1',
       '--progress=false', '--seed=3')


def _recorded(path: Path) -> set[tuple[str, int, str]]:
  """The functions a child converted itself (its spool file; none if it has none)."""
  if not path.exists():
    return set()
  return {tuple(json.loads(line)[:3]) for line in path.read_text().splitlines()}


def _server_log(path: Path) -> dict[tuple[str, int, str], str]:
  if not path.exists():
    return {}
  return {tuple(r[:3]): r[3] for r in map(json.loads, path.read_text().splitlines())}


def _run(tmp_path: Path, name: str) -> int:
  forked = helpers.start_binary('recipes.fed_avg', *RUN, f'--root_output_dir={tmp_path}',
                                f'--experiment_name={name}')
  result = forked.wait(300)
  assert result.returncode == 0, result.stderr
  return forked.pid


def test_a_forked_binary_finds_converted_what_an_earlier_one_converted(tmp_path: Path) -> None:
  spool = Path(os.environ[autograph_warmup.SPOOL_ENV])
  first = _run(tmp_path, 'first')
  log = spool / f'server-{helpers.binary_server_pid()}.log'
  deadline = time.monotonic() + 120
  while not _recorded(spool / f'{first}.jsonl') <= set(_server_log(log)):
    assert time.monotonic() < deadline, 'the server did not take up what the first run converted'
    time.sleep(0.2)
  converted = {key for key, outcome in _server_log(log).items() if outcome == 'converted'}
  # TFF's client update (tensorflow_federated/.../model_delta_client_work.py) among them.
  assert any(name == 'client_update' for _, _, name in converted), sorted(converted)
  second = _run(tmp_path, 'second')
  assert not _recorded(spool / f'{second}.jsonl') & converted
  rows = [helpers.read_rows(tmp_path / name / 'metrics.csv') for name in ('first', 'second')]
  for row in rows[0] + rows[1]:
    row.pop('round_seconds')
  assert rows[0] == rows[1]
