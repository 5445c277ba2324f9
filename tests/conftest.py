"""Shared test setup: TFF is imported through recipes.runtime so no worker outlives pytest."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from recipes import runtime  # noqa: E402

runtime.import_tff()
