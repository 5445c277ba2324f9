"""Test driver: runs one recipe's `main` in this process once per aggregator, via real flags.

Run as `python -m tests.recipe_matrix RECIPE ROOT_DIR WORKERS AGGREGATOR...` (the tests
fork it from the binary server). One process per recipe keeps each recipe's flags its own,
while the TFF import, the worker start and the recipe's caches are shared by all of that
recipe's aggregators. Then, if WORKERS (`host:port,...`, or '-' for none) is given, one
more run with the first aggregator, split across those TFF workers (`--tff_worker`; last,
as it installs their context for the rest of the process), into ROOT_DIR/RECIPE-workers.
Prints one JSON line per run.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

from absl import flags

from core import runtime
from recipes import aggregator_registry

# Each aggregator's example options (10 clients per round), from its spec. The ones that
# simulate secure sums go last: they install TFF's test execution context for the rest of
# the process.
AGGREGATOR_ARGS: dict[str, list[str]] = {
    name: [f'--{option}={value}' for option, value in spec.example.items()]
    for name, spec in sorted(aggregator_registry.SPECS.items(),
                             key=lambda item: item[1].simulates_secure_sum)
}
COMMON = ['--task=synthetic', '--clients_per_round=10', '--total_rounds=2', '--rounds_per_eval=1',
          '--progress=false']


def main(argv: list[str]) -> None:
  recipe, root, workers, *names = argv[1:]
  runtime.enable_worker_hygiene()  # As recipes.cli.run does: main() runs without it here.
  module = importlib.import_module(f'recipes.{recipe}')
  runs = [(name, name, []) for name in names]
  if workers != '-':
    runs.append(('workers', names[0], [f'--tff_worker={workers}']))
  for label, name, extra in runs:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['prog', *COMMON, f'--aggregator={name}', *AGGREGATOR_ARGS[name], *extra,
                 f'--root_output_dir={root}', f'--experiment_name={recipe}-{label}'])
    try:
      module.main([])
      print(json.dumps({'aggregator': label, 'ok': True}), flush=True)
    except Exception as e:  # pylint: disable=broad-except  # Reported to the test.
      print(json.dumps({'aggregator': label, 'ok': False, 'error': repr(e),
                        'traceback': traceback.format_exc()}), flush=True)


if __name__ == '__main__':
  main(sys.argv)
