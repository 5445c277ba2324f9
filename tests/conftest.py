"""Shared test setup: the test process opts into TFF worker hygiene so no worker outlives pytest."""

import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# A suite started in the background (`... &`, nohup, some CI runners) inherits SIGINT
# ignored, and so would every binary it starts (exec keeps an ignored signal ignored):
# the interrupt tests' SIGINT would then do nothing and the run would go on to its end.
# A handler here is reset to the default at exec, so the binaries get Python's
# KeyboardInterrupt, as when the suite runs in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

from core import runtime  # noqa: E402

# What every binary does in its entry point (recipes.cli.run); importing a library
# module no longer does it (tests/test_layers.py).
runtime.enable_worker_hygiene()
runtime.import_tff()
