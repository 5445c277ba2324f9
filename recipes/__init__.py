"""Federated-learning recipes on TensorFlow Federated: binaries and reusable parts.

Library modules (aggregators, the training loop, ...) change nothing in the process when
imported; the binaries opt into TFF worker hygiene in their entry point (`recipes.cli.run`).
"""

import core as _core  # noqa: F401  (sets TF's log level before TF loads)
