"""Tries bad values for every flag of one binary; prints the ones that were not refused.

    python -m tests.flag_walker recipes.fed_avg

imports the binary's module (without running it), then for every flag that the project
defines (modules under recipes/, scripts/, tasks/) parses the binary's command line with
one bad value at a time and runs the checks that `recipes.cli.run` runs right after
parsing (`cli.check_flag_values` with the module's `validate_flags`, if it has one). A
value counts as refused when parsing or those checks raise; so a binary passes only if
every single bad value is rejected before any work starts, which `cli.run` turns into one
line and exit code 2.

Bad values, by kind of flag:
  float: nan, inf, -inf, and -1e30 (unless negative values are meaningful: NEGATIVE_OK)
  integer: -1000000000 (unless in NEGATIVE_OK), and upper_bound + 1 where one is declared
  enum: a name that is not a choice;  bool: 'maybe'
  string and list: the value(s) in BAD_STRINGS (a string flag missing there is reported, so a
    new flag cannot slip by untested)

Prints one JSON object: {"binary": ..., "checked": N, "not_refused": [[flag, value], ...],
"unknown": [flag, ...]}.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from absl import flags

# Flags for which a negative number is a legitimate setting.
NEGATIVE_OK = {
    'client_batch_size': -2,  # -1 means the whole client dataset; -2 is still bad.
    'max_concurrent_computation_calls': -2,  # -1 means no limit.
}

# One bad value for each string (or list) flag of any binary.
BAD_STRINGS = {
    'model': 'no_such_model',
    'experiment_name': '../escape',
    'root_output_dir': '',
    'cache_dir': '',
    # No port; an empty address in a list; a repeated address.
    'tff_worker': ('localhost', 'localhost:8000,bighost', 'localhost:8000,,localhost:8001',
                   'localhost:8000,localhost:8000'),
    'output_dir': '',
    'only': 'no_such_contender',
    'algorithms': 'no_such_algorithm',
    'aggregators': 'no_such_aggregator',
    'attacks': 'no_such_attack',
    'systems': 'no_such_system',
    'clients_per_round_sweep': '0',
    'models': 'no_such_model',
    'flower_python': '',
    'npm_package_dir': '',
    'output': '',
    'seeds': '-1',
    'learning_rates_from': '/no/such/results.json',
    'results_dir': '',
    'runs_dir': '',
    'resume_run': ('/no/such/dir', ''),
    'package_dir': '/no/such/dir',
    'populations': '0',
    'clients_model': 'no_such_model',
    'clients_per_round': '0',  # bench_scaling's list of counts (elsewhere an integer flag).
    'measure': '{not json',
    'worker_counts': '0',
    'service': 'fedrecipes-worker',  # No port.
}

# A valid value for each required flag, given while another flag is under test (otherwise the
# missing required flag, not the bad value, would be what is refused).
GOOD_REQUIRED = {
    'output': '/tmp/flag_walker_output.json',
}

_PROJECT_PREFIXES = ('recipes', 'scripts', 'tasks')


def _project_flags(binary: str) -> list[Any]:
  own = []
  for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
    name = module.replace('/', '.')
    if module == binary or any(p in name.split('.') for p in _PROJECT_PREFIXES):
      own.extend(module_flags)
  seen, unique = set(), []
  for flag in own:
    if flag.name not in seen:
      seen.add(flag.name)
      unique.append(flag)
  return unique


def bad_values(flag: Any) -> list[str] | None:
  """Bad command-line values for `flag`; None if none is known (a string flag)."""
  parser = flag.parser
  if isinstance(parser, flags.BooleanParser):
    return ['maybe']
  if isinstance(parser, flags.EnumParser) or hasattr(parser, 'enum_values'):
    return ['no_such_choice']
  if isinstance(parser, flags.FloatParser):
    values = ['nan', 'inf', '-inf']
    values.append(str(NEGATIVE_OK[flag.name]) if flag.name in NEGATIVE_OK else '-1e30')
    if parser.upper_bound is not None:
      values.append(repr(float(parser.upper_bound) * 2 + 1))
    return values
  if isinstance(parser, flags.IntegerParser):
    values = [str(NEGATIVE_OK.get(flag.name, -1_000_000_000))]
    if parser.upper_bound is not None:
      values.append(str(parser.upper_bound + 1))
    return values
  if flag.name in BAD_STRINGS:
    values = BAD_STRINGS[flag.name]
    return list(values) if isinstance(values, tuple) else [values]
  return None


def walk(binary: str) -> dict[str, Any]:
  """Imports `binary` and tries every bad value; see the module docstring."""
  from recipes import cli  # pylint: disable=g-import-not-at-top
  from core.errors import UserError  # pylint: disable=g-import-not-at-top

  module = importlib.import_module(binary)
  if hasattr(module, '_define_flags'):  # Binaries that define their flags only when run.
    module._define_flags()  # pylint: disable=protected-access
  validate = getattr(module, 'validate_flags', None)
  argv0 = binary.rsplit('.', 1)[-1]
  not_refused, unknown, checked = [], [], 0
  own = _project_flags(binary)
  # absl keeps no 'required' attribute (a validator enforces it): give every flag of
  # GOOD_REQUIRED that this binary has a valid value.
  good = {f.name: GOOD_REQUIRED[f.name] for f in own if f.name in GOOD_REQUIRED}
  for flag in own:
    values = bad_values(flag)
    if values is None:
      unknown.append(flag.name)
      continue
    for value in values:
      checked += 1
      flags.FLAGS.unparse_flags()
      try:
        others = [f'--{name}={v}' for name, v in good.items() if name != flag.name]
        flags.FLAGS([argv0, *others, f'--{flag.name}={value}'])
        cli.check_flag_values(validate)
      except (flags.Error, UserError):
        continue
      not_refused.append([flag.name, value])
  return {'binary': binary, 'checked': checked, 'not_refused': not_refused, 'unknown': unknown}


if __name__ == '__main__':
  print(json.dumps(walk(sys.argv[1])))
