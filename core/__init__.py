"""The lowest layer of fedrecipes, used by `tasks` and `recipes` and importing neither.

* `core.errors`: `UserError`, the one exception meaning "the user asked for something that
  cannot work" (entry points print it as one line).
* `core.runtime`: importing TensorFlow Federated (`import_tff`) and the opt-in worker
  hygiene (`enable_worker_hygiene`) that keeps TFF's C++ worker from outliving us.
* `core.tff_workers`: running TFF computations on workers started elsewhere.
* `core.outputs`: JSON/CSV/PNG writers and provenance (command, git commit, machine).
* `core.metrics_log`: flattening TFF metrics and the resumable per-round CSV.

Importing any of these changes nothing in the process (no signal handler, no execution
context, no patched module), with one deliberate exception below.
"""

import os as _os

# TensorFlow's C++ start-up chatter (a dozen lines of CUDA/oneDNN notices) is silenced
# unless the user set a level: this must happen before TensorFlow is first imported, and
# `tasks` and `recipes` import this package first. It changes only a default.
_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
