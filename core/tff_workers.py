"""TFF computations on C++ workers started elsewhere: `--tff_worker=host:port[,host:port...]`.

Workers are TFF's own `worker_binary`, started with `python -m scripts.start_worker`. This
module points TFF's execution at them, with TFF's own pieces (a `RemoteExecutor` over a
gRPC stub, the native compiler):

* one address: a `tff.framework.SyncExecutionContext` on that worker (every computation
  runs there);
* several addresses: TFF's mergeable-computation context
  (`tff.framework.MergeableCompExecutionContext` with
  `tff.backends.native.compile_to_mergeable_comp_form`): each round's cohort of clients is
  split into one contiguous slice per worker, every worker trains its slice and
  aggregates it partially, and the partial aggregates are merged on a worker. A round
  whose aggregations cannot be merged that way (one aggregation feeding another) is
  refused by `check_splittable` before training starts.

Three things are hand-written here, because TFF 0.87 does not offer them:

1. A worker that stops answering fails the run at once, naming the worker
   (`WorkerLostError`). TFF's execution context retries a call that failed with
   gRPC UNAVAILABLE forever (with back-off), so a killed worker hung the run.
2. Each worker's async context runs on its own event-loop thread (`_OwnLoopContext`).
   TFF's `RemoteExecutor` makes blocking gRPC calls inside its coroutines, so on one
   shared event loop the workers took turns: the second worker got its clients only
   after the first had returned its result.
3. `--aggregator=secure` on remote workers: TFF's C++ worker cannot run the secure-sum
   intrinsics; TFF's test backend replaces them by plain sums of the same clipped,
   quantized values (what `tff.backends.test` does for its local worker), and here the
   same replacement runs before compiling for the remote worker(s).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
from typing import Any, Callable, Sequence

import grpc

from core import runtime
from core.errors import UserError

tff = runtime.import_tff()

# gRPC limits of TFF's own local context (executor_stacks/executor_factory.py): model
# states and client datasets travel as single messages.
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_CHANNEL_OPTIONS = [
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
]
# After a failed call: how long the worker may take to answer again before it counts as lost.
_RECONNECT_GRACE_SECONDS = 2.0


class WorkerLostError(UserError):
  """A TFF worker stopped answering during the run (killed, crashed, network gone).

  A `UserError`, so the recipes' entry point prints it as one line and exits non-zero.

  Attributes:
    address: The worker's `host:port`.
  """

  def __init__(self, address: str, detail: str) -> None:
    super().__init__(
        f'the TFF worker at {address} stopped answering during the run ({detail}); the '
        'checkpoints written so far are intact: restart the worker (python -m '
        f'scripts.start_worker --port={address.rpartition(":")[2]}) and rerun with --resume')
    self.address = address


def _lost_worker_error(address: str, channel: grpc.Channel, error: Exception) -> Exception:
  """`WorkerLostError` if the worker at `address` no longer answers, else `error` itself.

  A computation that fails on the worker (a bug) also comes back as a gRPC error; only a
  worker that cannot be reached any more counts as lost.
  """
  inner = getattr(error, 'grpc_error', None) or (error.args[0] if error.args else error)
  code = inner.code() if isinstance(inner, grpc.Call) else None
  if code == grpc.StatusCode.UNAVAILABLE:
    return WorkerLostError(address, f'gRPC {code.name}')
  ready = grpc.channel_ready_future(channel)
  try:
    ready.result(timeout=_RECONNECT_GRACE_SECONDS)
  except grpc.FutureTimeoutError:
    return WorkerLostError(address, f'gRPC {code.name if code else type(error).__name__}')
  finally:
    ready.cancel()  # Unsubscribes (a no-op once it is done).
  return error


class _FailFastStub(tff.framework.RemoteExecutorGrpcStub):
  """TFF's gRPC stub, but a worker that does not answer raises `WorkerLostError`.

  TFF turns UNAVAILABLE into a `RetryableError`, and its execution context retries those
  forever. Disposing (freeing a worker's values) never fails the run: TFF ignores the
  errors of `dispose_executor` itself, and `dispose` is made to do the same.
  """

  def __init__(self, channel: grpc.Channel, address: str) -> None:
    super().__init__(channel)
    self.address = address

  def _call(self, method: Callable[[Any], Any], request: Any) -> Any:
    try:
      return method(request)
    except (grpc.RpcError, tff.framework.RetryableError) as e:
      raise _lost_worker_error(self.address, self._channel, e) from e

  def get_executor(self, request: Any) -> Any:
    return self._call(super().get_executor, request)

  def create_value(self, request: Any) -> Any:
    return self._call(super().create_value, request)

  def create_struct(self, request: Any) -> Any:
    return self._call(super().create_struct, request)

  def create_call(self, request: Any) -> Any:
    return self._call(super().create_call, request)

  def create_selection(self, request: Any) -> Any:
    return self._call(super().create_selection, request)

  def compute(self, request: Any) -> Any:
    return self._call(super().compute, request)

  def dispose(self, request: Any) -> Any:
    # TFF calls this from the weakref finalizers of its remote values too, where an error
    # reaches no caller: Python printed it as a traceback ("Exception ignored in ...")
    # above the run's one-line error when a worker was killed. A worker that is gone has
    # no values left to free, and the run's next call reports it as `WorkerLostError`.
    try:
      return super().dispose(request)
    except (grpc.RpcError, tff.framework.RetryableError):
      return None


def connect(addresses: Sequence[str], *, timeout_seconds: float = 10.0) -> list[_FailFastStub]:
  """Opens a gRPC channel to every worker and waits until all answer.

  Args:
    addresses: `host:port` of each worker.
    timeout_seconds: How long to wait (for all of them at once).

  Returns:
    One stub per address, in order.

  Raises:
    UserError: Naming every address where no worker answered in time.
  """
  channels = [grpc.insecure_channel(a, _GRPC_CHANNEL_OPTIONS) for a in addresses]
  futures = [grpc.channel_ready_future(c) for c in channels]
  # The channels connect concurrently: the wait is at most the timeout, not one per worker.
  deadline = time.monotonic() + timeout_seconds
  missing = []
  for address, future in zip(addresses, futures):
    try:
      future.result(timeout=max(0.0, deadline - time.monotonic()))
    except grpc.FutureTimeoutError:
      missing.append(address)
  if missing:
    # Cancelled, not closed: gRPC polls a subscribed channel's state from a thread, and
    # closing the channel while that thread still runs (up to 0.2 s after the last
    # unsubscription) kills it with "Cannot invoke RPC: Channel closed!", a traceback above
    # the one-line error. Unreferenced, a channel unsubscribes everything and goes quietly.
    for future in futures:
      future.cancel()
    if len(addresses) == 1:
      where, how = f'at {missing[0]}', 'start one there'
    else:
      where = (f'at {", ".join(missing)} ({len(missing)} of the {len(addresses)} addresses '
               'of --tff_worker)')
      how = 'start one on each'
    ports = sorted({a.rpartition(':')[2] for a in missing})
    port = ports[0] if len(ports) == 1 else 'PORT'
    raise UserError(f'no TFF worker answers {where} (waited {timeout_seconds:g} s); {how} with '
                    f'`python -m scripts.start_worker --port={port}`')
  return [_FailFastStub(c, a) for c, a in zip(channels, addresses)]


def _executor_factory(stub: _FailFastStub) -> Any:
  """TFF's remote executor stack on one worker (as TFF's local C++ context builds it)."""

  def executor_stack(cardinalities: dict[Any, int]) -> Any:
    # As TFF's local stack: an unknown number of clients defaults to 0.
    if cardinalities.get(tff.CLIENTS) is None:
      cardinalities[tff.CLIENTS] = 0
    executor = tff.framework.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.ResourceManagingExecutorFactory(executor_stack)


def _native_compiler(secure: bool) -> Callable[[Any], Any]:
  if not secure:
    return tff.backends.native.desugar_and_transform_to_native

  def compile_secure(comp: Any) -> Any:
    # As tff.backends.test's context: secure sums become plain sums of the same values.
    return tff.backends.native.desugar_and_transform_to_native(
        tff.backends.test.replace_secure_intrinsics_with_bodies(comp))

  return compile_secure


@functools.lru_cache(maxsize=64)
def _mergeable_form(comp: Any, secure: bool) -> Any:
  # Cached: `check_splittable` compiles the round once before training, and the context
  # then finds the result here instead of compiling it again.
  if secure:
    replaced = tff.backends.test.replace_secure_intrinsics_with_bodies(comp)
    # The replacement drops the Python containers of the result type (a round would
    # return a dict, not a `LearningProcessOutput`); put the original type back.
    comp = tff.framework.ConcreteComputation.with_type(replaced, comp.type_signature)
  return tff.backends.native.compile_to_mergeable_comp_form(comp)


class _OwnLoopContext(tff.framework.AsyncContext):
  """An async context whose coroutines run on an event loop of their own, in a thread.

  TFF's `RemoteExecutor` blocks its event loop in every gRPC call; giving each worker
  its own loop lets the mergeable context's calls to different workers overlap.
  """

  def __init__(self, inner: Any, name: str) -> None:
    self._inner = inner
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
    self._thread.start()

  async def invoke(self, comp: Any, arg: Any) -> Any:
    if asyncio.iscoroutine(arg):
      arg = await arg
    future = asyncio.run_coroutine_threadsafe(self._inner.invoke(comp, arg), self._loop)
    return await asyncio.wrap_future(future)


@dataclasses.dataclass(frozen=True)
class _Installed:
  addresses: tuple[str, ...]
  stubs: tuple[_FailFastStub, ...]
  secure: bool


_installed: _Installed | None = None


def addresses_in_use() -> tuple[str, ...]:
  """The worker addresses the current context runs on; () for TFF's local worker."""
  return _installed.addresses if _installed else ()


def _install(addresses: Sequence[str], stubs: Sequence[_FailFastStub], secure: bool) -> Any:
  global _installed
  if len(stubs) == 1:
    context = tff.framework.SyncExecutionContext(
        executor_fn=_executor_factory(stubs[0]),
        compiler_fn=_native_compiler(secure),
        transform_args=tff.tensorflow.transform_args,
        transform_result=tff.tensorflow.transform_result,
    )
  else:
    workers = [
        _OwnLoopContext(
            tff.framework.AsyncExecutionContext(
                executor_fn=_executor_factory(stub),
                compiler_fn=tff.backends.native.desugar_and_transform_to_native,
                transform_args=tff.tensorflow.transform_args,
                transform_result=tff.tensorflow.transform_result,
            ),
            name=f'tff-worker-{stub.address}')
        for stub in stubs
    ]
    context = tff.framework.MergeableCompExecutionContext(
        workers, compiler_fn=functools.partial(_mergeable_form, secure=secure))
  tff.framework.set_default_context(context)
  _installed = _Installed(tuple(addresses), tuple(stubs), secure)
  return context


def use_workers(addresses: Sequence[str], *, connect_timeout_seconds: float = 10.0) -> Any:
  """Makes TFF run every computation on the worker(s) at `addresses` (`host:port` each).

  Call it before the first computation runs: then TFF never starts a local worker.

  Args:
    addresses: One or more `host:port` of running workers (`scripts/start_worker.py`).
    connect_timeout_seconds: How long to wait for the workers to answer.

  Returns:
    The installed execution context.

  Raises:
    UserError: If an address is malformed or repeated, or no worker answers at one.
  """
  try:
    addresses = runtime.parse_worker_addresses(','.join(addresses))
  except ValueError as e:
    raise UserError(f'--tff_worker: {e}') from None
  stubs = connect(addresses, timeout_seconds=connect_timeout_seconds)
  return _install(addresses, stubs, secure=False)


def enable_secure_intrinsics() -> None:
  """Lets the current context run TFF's secure-sum intrinsics (simulated as plain sums).

  On remote workers (`use_workers`), re-installs their context with the secure sums
  replaced before compiling; otherwise installs TFF's local test context, as before.
  """
  if _installed is None:
    tff.backends.test.set_sync_test_cpp_execution_context()
  elif not _installed.secure:
    _install(_installed.addresses, _installed.stubs, secure=True)


def split_error(computation: Any, *, secure: bool = False) -> Exception | None:
  """Why TFF cannot split `computation` across workers, or None if it can.

  Compiles it to TFF's mergeable form (per-worker partial aggregates, a merge, the rest
  after the merge), as the several-worker context does; the result is cached, so the
  context does not compile it again.

  Args:
    computation: A `tff.Computation`, e.g. a round (`process.next`).
    secure: Whether secure sums are first replaced by plain sums (`enable_secure_intrinsics`).

  Returns:
    The compiler's exception, or None.
  """
  try:
    _mergeable_form(computation, secure)
  except (ValueError, TypeError) as e:  # What TFF's mergeable compiler raises.
    return e
  return None


def check_splittable(computation: Any, *, what: str) -> None:
  """Refuses, before training, a round that cannot be split across the workers in use.

  A no-op on one worker or on TFF's local worker.

  Args:
    computation: A `tff.Computation` (a round: `process.next`).
    what: What the user chose that made it, for the message (e.g. `fed_avg with
      --aggregator=secure`).

  Raises:
    UserError: If TFF cannot split it into per-worker partial aggregates and a merge.
  """
  if _installed is None or len(_installed.addresses) < 2:
    return
  error = split_error(computation, secure=_installed.secure)
  if error is not None:
    reason = str(error).strip().split('\n', 1)[0]
    if len(reason) > 160:
      reason = reason[:157] + '...'
    raise UserError(
        f'{what} cannot run across {len(_installed.addresses)} TFF workers: TFF cannot split '
        f'its round into per-worker partial aggregates ({type(error).__name__}: {reason}); '
        'give --tff_worker a single address')
