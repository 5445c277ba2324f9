"""Federated learning tasks: datasets split into clients, test sets and models."""

from recipes import runtime as _runtime  # noqa: F401  (sets TF's log level before TF loads)

from tasks.base import ClientSpec
from tasks.base import Task
from tasks.registry import TASKS
from tasks.registry import create_task

__all__ = ['ClientSpec', 'Task', 'TASKS', 'create_task']
