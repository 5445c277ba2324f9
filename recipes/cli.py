"""Entry-point wrapper shared by every binary: absl flags, clean one-line errors, exit codes."""

from __future__ import annotations

import math
import sys
from typing import Callable, NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging

from core import runtime
from core.errors import UserError


def _fail(message: str, code: int = 2) -> NoReturn:
  prog = sys.argv[0].rsplit('/', 1)[-1] if sys.argv else 'recipe'
  print(f'{prog}: error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


def check_flag_values(validate: Callable[[], None] | None = None) -> None:
  """Checks the parsed flags: every float flag is finite, then `validate()` (if given).

  absl's `lower_bound`/`upper_bound` let NaN through (every comparison with NaN is
  false) and infinity through any open side, and a NaN learning rate or clip only shows
  up rounds later as a diverged run; so every float flag of every binary must be finite.
  Ranges are declared where each flag is defined (`lower_bound=`, `upper_bound=`).

  Raises:
    UserError: For the first value that is not acceptable.
  """
  for flag in flags.FLAGS._flags().values():  # pylint: disable=protected-access
    value = flag.value
    if isinstance(flag.parser, flags.FloatParser) and value is not None and not math.isfinite(value):
      raise UserError(f'--{flag.name} must be a finite number, got {value}')
  if validate is not None:
    validate()


def run(main: Callable[[Sequence[str]], None],
        validate: Callable[[], None] | None = None) -> None:
  """Runs `main` under absl with friendly failure modes.

  * `UserError` (bad flags, missing data) -> one line on stderr, exit 2.
  * An illegal flag value (absl validators and bounds, enum flags, a float that is not
    finite, anything `validate` raises) -> one line, exit 2, before `main` starts.
  * Ctrl-C -> one line, exit 130; outputs written so far are kept.
  Anything else is a bug and keeps its traceback.

  It also opts the process into TFF worker hygiene (`core.runtime.enable_worker_hygiene`):
  this entry point is where a binary changes the process, never a library import.

  Args:
    main: The binary's main function.
    validate: Checks of single flag values that absl's bounds cannot express; raises
      `UserError`. Runs right after parsing (tests/flag_walker.py calls it too).
  """
  runtime.enable_worker_hygiene()  # Before any TFF computation; see core/runtime.py.

  def guarded(argv: Sequence[str]) -> None:
    extra = [a for a in argv[1:]]
    if extra:
      raise UserError(f'unexpected positional arguments: {" ".join(extra)}')
    if not flags.FLAGS['verbosity'].present:
      # TFF logs every model construction at INFO; a recipe shows progress itself.
      logging.set_verbosity(logging.WARNING)
      # Only if loaded: a binary that never uses TensorFlow (a benchmark driver) must not
      # pay seconds to import it just to quiet it.
      tf = sys.modules.get('tensorflow')
      if tf is not None:
        tf.get_logger().setLevel('ERROR')
    main(argv)

  def flags_parser(argv: list[str]) -> list[str]:
    try:
      remaining = flags.FLAGS(argv)
    except flags.Error as e:
      _fail(f'{e}; see --help')
    try:
      check_flag_values(validate)
    except UserError as e:
      _fail(str(e))
    return remaining

  try:
    app.run(guarded, flags_parser=flags_parser)
  except UserError as e:
    _fail(str(e))
  except KeyboardInterrupt:
    _fail('interrupted; outputs written so far are kept (rerun with --resume to continue)', 130)
