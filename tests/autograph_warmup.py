"""The binary server's AutoGraph warm-up: what one child converted, the next child finds done.

Why: most of a forked binary's remaining start-up is AutoGraph. Building a learning process
converts a few dozen Python functions (TFF's client update and reduce loop, the model's
forward pass, the aggregators' and metrics' functions) to graph code: parsing, analysing
and unparsing their source, pure Python. On this machine a fed_avg build took 5.9 s in a
freshly forked child and 2.1 s in a child of a server that had converted the same
functions before forking (1.4 s when built twice in one process). Each child starts from
the server's memory, so whatever the server converted, every later child has for free.

How: every child appends each function AutoGraph converts for it (a cache miss: its code
object's file, first line and name, and the conversion options) to a spool file of its
own (`record_conversions`). The server reads the spool between requests and converts
the same functions itself (`Warmup.step`), one at a time while no request waits. Nothing
changes in what a binary computes: AutoGraph's own cache is keyed by the code object and
the options alone (`tensorflow/python/autograph/pyct/transpiler.py`, `PyToPy`), so the
converted function a child finds is the one it would have made itself.

Safe to fork after it: converting runs no TensorFlow op and starts no thread (it parses
and writes Python; the server checks its threads before every fork all the same). The
server finds a function by walking the modules it has imported itself; one defined in a
module only a child imported is left to the children. The generated files are the
server's, removed when it ends: AutoGraph would have every child remove them at its exit.

The spool can be shared by several servers (the pytest-xdist workers'; tests/conftest.py
sets `SPOOL_ENV`): each converts what any child converted.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

# A directory shared by the servers of one test session (tests/conftest.py).
SPOOL_ENV = 'FEDRECIPES_TEST_AUTOGRAPH_SPOOL'
# =1: the server converts nothing (to measure what the warm-up saves).
DISABLE_ENV = 'FEDRECIPES_TEST_AUTOGRAPH_WARMUP_OFF'
_Key = tuple[str, int, str]  # A code object's file, first line and name.


def _transpiler() -> Any:
  from tensorflow.python.autograph.impl import api  # pylint: disable=g-import-not-at-top
  return api._TRANSPILER  # pylint: disable=protected-access


def record_conversions(spool: Path) -> None:
  """In a child: appends every function AutoGraph converts (a cache miss) to its spool file.

  Never fails the run: a function it cannot describe is converted as usual, unrecorded.
  """
  transpiler = _transpiler()
  original = transpiler.transform_function
  path = spool / f'{os.getpid()}.jsonl'

  def transform_function(fn: Any, user_context: Any) -> Any:
    try:
      options = user_context.options
      if not transpiler._cache.has(fn, options):  # pylint: disable=protected-access
        code = fn.__code__
        line = json.dumps([code.co_filename, code.co_firstlineno, code.co_name,
                           options.recursive, options.user_requested,
                           options.internal_convert_user_code,
                           sorted(f.name for f in options.optional_features)])
        with open(path, 'a', encoding='utf-8') as f:  # One write per line: never half a line.
          f.write(line + '\n')
    except Exception:  # pylint: disable=broad-except  # Only the warm-up is lost.
      pass
    return original(fn, user_context)

  transpiler.transform_function = transform_function


class Warmup:
  """In the server: converts what the children recorded in the spool (see module docstring)."""

  def __init__(self, spool: Path) -> None:
    self._spool = spool
    self._read_up_to: dict[Path, int] = {}
    self._seen: set[tuple[Any, ...]] = set()
    self._pending: list[list[Any]] = []
    self._code_by_key: dict[_Key, tuple[types.CodeType, dict[str, Any]]] = {}
    self._indexed_files: set[str] = set()
    self._remove_generated: list[Callable[[], Any]] = []
    self._next_scan = 0.0
    self._enabled = os.environ.get(DISABLE_ENV) != '1'
    # What this server did with each record, one JSON line each: [file, line, name, outcome].
    self.log = spool / f'server-{os.getpid()}.log'

  def step(self) -> bool:
    """Takes up at most one recorded function (scanning the spool twice a second).

    Returns:
      Whether it took one up (never, with `DISABLE_ENV` set).
    """
    if not self._enabled:
      return False
    if not self._pending and time.monotonic() >= self._next_scan:
      self._scan()
      self._next_scan = time.monotonic() + 0.5
    if not self._pending:
      return False
    record = self._pending.pop()
    try:
      self._convert(record)
    except Exception as e:  # pylint: disable=broad-except
      # Never the server's end: the children convert it themselves.
      self._note(record, f'failed: {type(e).__name__}: {e}')
    return True

  def close(self) -> None:
    """Removes the files AutoGraph generated for the server's conversions."""
    for remove in self._remove_generated:
      try:
        remove()
      except OSError:
        pass

  def _scan(self) -> None:
    for path in sorted(self._spool.glob('*.jsonl')):
      start = self._read_up_to.get(path, 0)
      try:
        with open(path, 'rb') as f:
          f.seek(start)
          data = f.read()
      except OSError:
        continue
      complete = data[:data.rfind(b'\n') + 1]  # A line still being written waits.
      self._read_up_to[path] = start + len(complete)
      for line in complete.decode('utf-8', errors='replace').splitlines():
        try:
          record = json.loads(line)
          key = (*record[:6], tuple(record[6]))
        except (ValueError, TypeError, IndexError):
          continue
        if key not in self._seen:
          self._seen.add(key)
          self._pending.append(record)

  def _convert(self, record: list[Any]) -> None:
    filename, first_line, name, recursive, user_requested, convert_user_code, features = record
    found = self._find_code(filename, first_line, name)
    if found is None:
      self._note(record, 'not in the server\'s modules')
      return
    code, module_globals = found
    # The cache is keyed by the code object: any function of that code will do. Its
    # closure only lends values to AutoGraph's directives, which these functions don't use.
    fn = types.FunctionType(code, module_globals, name, None,
                            tuple(types.CellType(None) for _ in code.co_freevars))
    from tensorflow.python.autograph.core import converter  # pylint: disable=g-import-not-at-top
    from tensorflow.python.autograph.pyct import loader  # pylint: disable=g-import-not-at-top
    options = converter.ConversionOptions(
        recursive=recursive, user_requested=user_requested,
        internal_convert_user_code=convert_user_code,
        optional_features=tuple(converter.Feature[f] for f in features))
    # AutoGraph registers the removal of each generated file with `atexit`; the children
    # inherit and would run those at their own exit. The server removes them at its end.
    real_atexit = loader.atexit
    loader.atexit = types.SimpleNamespace(register=self._remove_generated.append)
    try:
      _transpiler().transform(fn, converter.ProgramContext(options=options))
      outcome = 'converted'
    except Exception as e:  # pylint: disable=broad-except  # The children convert it themselves.
      outcome = f'failed: {type(e).__name__}: {e}'
    finally:
      loader.atexit = real_atexit
    self._note(record, outcome)

  def _note(self, record: list[Any], outcome: str) -> None:
    try:
      with open(self.log, 'a', encoding='utf-8') as f:
        f.write(json.dumps([*record[:3], outcome]) + '\n')
    except OSError:  # The session removed the spool on its way out.
      pass

  def _find_code(self, filename: str, first_line: int,
                 name: str) -> tuple[types.CodeType, dict[str, Any]] | None:
    if filename not in self._indexed_files:
      self._indexed_files.add(filename)
      for module in list(sys.modules.values()):
        if getattr(module, '__file__', None) == filename:
          self._index_module(module)
    return self._code_by_key.get((filename, first_line, name))

  def _index_module(self, module: types.ModuleType) -> None:
    """Every code object of the module's functions and classes, nested ones included."""
    seen: set[int] = set()
    module_globals = vars(module)

    def add_code(code: types.CodeType) -> None:
      self._code_by_key.setdefault((code.co_filename, code.co_firstlineno, code.co_name),
                                   (code, module_globals))
      for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
          add_code(constant)

    def walk(obj: Any) -> None:
      # Only functions, classes, methods and tf.functions: an attribute lookup on anything
      # else (a lazily loaded module above all) could import or run code in the server.
      if id(obj) in seen:
        return
      seen.add(id(obj))
      if isinstance(obj, (staticmethod, classmethod)):
        walk(obj.__func__)
      elif isinstance(obj, property):
        for accessor in (obj.fget, obj.fset, obj.fdel):
          if accessor is not None:
            walk(accessor)
      elif isinstance(obj, types.FunctionType):
        add_code(obj.__code__)
        wrapped = obj.__dict__.get('__wrapped__')  # functools.wraps
        if wrapped is not None:
          walk(wrapped)
      elif isinstance(obj, type):
        if obj.__module__ == module.__name__:
          for value in list(vars(obj).values()):
            walk(value)
      elif (type(obj).__module__.startswith('tensorflow.')
            and isinstance(getattr(type(obj), 'python_function', None), property)):
        walk(obj.python_function)  # A tf.function.

    for value in list(module_globals.values()):
      walk(value)
