"""Federated-learning recipes on TensorFlow Federated: binaries and reusable parts."""

from recipes import runtime as _runtime  # noqa: F401  (sets TF's log level before TF loads)
