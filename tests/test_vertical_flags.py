"""Every flag of the vertical binaries refuses its bad values (tests/flag_walker.py)."""

from __future__ import annotations

import json

import pytest

from tests import helpers


@pytest.mark.parametrize('binary', ['recipes.vertical_fl', 'scripts.bench_vertical'])
def test_flag_walker_finds_nothing_accepted(binary: str) -> None:
  process = helpers.run_module('tests.flag_walker', binary, check=True)
  report = json.loads(process.stdout.strip().splitlines()[-1])
  assert report['checked'] > 0
  assert report['not_refused'] == []
  assert report['unknown'] == []
