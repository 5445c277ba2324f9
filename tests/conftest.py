"""Shared test setup: the test process opts into TFF worker hygiene so no worker outlives pytest."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from core import runtime  # noqa: E402

# What every binary does in its entry point (recipes.cli.run); importing a library
# module no longer does it (tests/test_layers.py).
runtime.enable_worker_hygiene()
runtime.import_tff()
