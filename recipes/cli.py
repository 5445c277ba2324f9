"""Entry-point wrapper shared by every binary: absl flags, clean one-line errors, exit codes."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging

from recipes.errors import UserError
from recipes.runtime import install_worker_cleanup


def _fail(message: str, code: int = 2) -> NoReturn:
  prog = sys.argv[0].rsplit('/', 1)[-1] if sys.argv else 'recipe'
  print(f'{prog}: error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


def run(main: Callable[[Sequence[str]], None]) -> None:
  """Runs `main` under absl with friendly failure modes.

  * `UserError` (bad flags, missing data) -> one line on stderr, exit 2.
  * An illegal flag value (absl validators, enum flags) -> one line, exit 2.
  * Ctrl-C -> one line, exit 130; outputs written so far are kept.
  Anything else is a bug and keeps its traceback.
  """
  install_worker_cleanup()

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
      return flags.FLAGS(argv)
    except flags.Error as e:
      _fail(f'{e}; see --help')

  try:
    app.run(guarded, flags_parser=flags_parser)
  except UserError as e:
    _fail(str(e))
  except KeyboardInterrupt:
    _fail('interrupted; outputs written so far are kept (rerun with --resume to continue)', 130)
