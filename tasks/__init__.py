"""Federated learning tasks: datasets split into clients, test sets and models.

`tasks` depends only on `core` (never on `recipes`). Its public names load lazily, so
that `import tasks.partition` (pure numpy, used by the Flower peer too) does not import
TensorFlow Federated.
"""

from __future__ import annotations

import importlib
from typing import Any

import core as _core  # noqa: F401  (sets TF's log level before TF loads)

# Public name -> the module that defines it.
_EXPORTS = {
    'ClientSpec': 'tasks.base',
    'Task': 'tasks.base',
    'TASKS': 'tasks.registry',
    'create_task': 'tasks.registry',
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value  # Later look-ups skip this function.
  return value


def __dir__() -> list[str]:
  return sorted([*globals(), *_EXPORTS])
