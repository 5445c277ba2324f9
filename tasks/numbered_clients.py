"""A `ClientData` over clients numbered 0..n-1 whose memory does not grow with n.

Simulated populations (`mnist_digits`, `synthetic`) number their clients; their ids are
the zero-padded numbers ('0000', '0001', ...; six digits for a million clients), so that
sorting the ids keeps numeric order. TFF's `ClientData.from_clients_and_tf_fn` keeps the
ids as a Python list and looks a client up with `client_id in list`: for 10^6 clients
that is about 60 MB of strings per copy and a linear scan per dataset. Here the ids are
a `ClientIds` sequence that computes an id from its number and back, so `len`, indexing,
`in` and `index` cost O(1) and nothing is stored per client; a client's dataset is made
only when someone asks for it. TFF has no such class, hence this module.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Callable, Iterator

import tensorflow as tf

from core.runtime import import_tff

tff = import_tff()

# Builds client `index`'s dataset. `index` is a Python int when called eagerly and an
# int64 scalar tensor when traced (`serializable_dataset_fn` in a graph).
DatasetFn = Callable[[Any], tf.data.Dataset]


def id_width(num_clients: int) -> int:
  """Digits of a client id: at least 4, enough for `num_clients - 1`."""
  return max(4, len(str(num_clients - 1)))


class ClientIds(collections.abc.Sequence):
  """The ids '0000', '0001', ... of `num_clients` clients, computed on access.

  Behaves like a read-only list of strings (it compares equal to a list with the same
  ids); `copy()` returns a real list, as TFF's `ClientData.datasets` expects.
  """

  def __init__(self, num_clients: int) -> None:
    if num_clients < 1:
      raise ValueError(f'num_clients must be >= 1, got {num_clients}')
    self._num_clients = num_clients
    self._width = id_width(num_clients)

  def __len__(self) -> int:
    return self._num_clients

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(self._num_clients))]
    if index < 0:
      index += self._num_clients
    if not 0 <= index < self._num_clients:
      raise IndexError(f'client index {index} out of range for {self._num_clients} clients')
    return f'{index:0{self._width}d}'

  def __iter__(self) -> Iterator[str]:
    return (f'{i:0{self._width}d}' for i in range(self._num_clients))

  def number(self, client_id: str) -> int | None:
    """The number of `client_id`, or None if it is not one of these ids."""
    if (not isinstance(client_id, str) or len(client_id) != self._width
        or not (client_id.isascii() and client_id.isdigit())):
      return None
    number = int(client_id)
    return number if number < self._num_clients else None

  def __contains__(self, client_id: object) -> bool:
    return self.number(client_id) is not None  # type: ignore[arg-type]

  def index(self, client_id: object, start: int = 0, stop: int | None = None) -> int:
    number = self.number(client_id)  # type: ignore[arg-type]
    stop = self._num_clients if stop is None else stop
    if number is None or not start <= number < stop:
      raise ValueError(f'{client_id!r} is not a client id')
    return number

  def count(self, client_id: object) -> int:
    return int(client_id in self)

  def copy(self) -> list[str]:
    """A list of all ids (materialized: use only for small populations)."""
    return list(self)

  def __eq__(self, other: object) -> bool:
    if isinstance(other, ClientIds):
      return len(other) == len(self)
    if isinstance(other, collections.abc.Sequence) and not isinstance(other, str):
      return len(other) == len(self) and all(a == b for a, b in zip(self, other))
    return NotImplemented

  __hash__ = None  # type: ignore[assignment]  # Like a list.

  def __repr__(self) -> str:
    return f'ClientIds({self._num_clients}: {self[0]!r}..{self[-1]!r})'


class NumberedClientData(tff.simulation.datasets.ClientData):
  """A `ClientData` of `num_clients` numbered clients, each dataset built on request.

  Args:
    num_clients: Size of the population.
    dataset_fn: Builds the dataset of one client from its number (see `DatasetFn`). It
      is called once here, for client 0, to learn the element type.
  """

  def __init__(self, num_clients: int, dataset_fn: DatasetFn) -> None:
    super().__init__()
    self._client_ids = ClientIds(num_clients)
    self._dataset_fn = dataset_fn
    self._element_type_structure = dataset_fn(0).element_spec

  @property
  def client_ids(self) -> ClientIds:
    return self._client_ids

  @property
  def serializable_dataset_fn(self) -> Callable[[Any], tf.data.Dataset]:
    def serializable_dataset_fn(client_id: Any) -> tf.data.Dataset:
      if tf.executing_eagerly():
        return self.create_tf_dataset_for_client(client_id)
      return self._dataset_fn(tf.strings.to_number(client_id, out_type=tf.int64))

    return serializable_dataset_fn

  def create_tf_dataset_for_client(self, client_id: str | tf.Tensor) -> tf.data.Dataset:
    """The dataset of `client_id` (a string, or an eager string tensor).

    Raises:
      ValueError: If `client_id` is not a client of this population.
    """
    if tf.is_tensor(client_id):
      client_id = client_id.numpy().decode()
    number = self._client_ids.number(client_id)
    if number is None:
      raise ValueError(f'ID [{client_id}] is not a client in this ClientData '
                       f'({self._client_ids!r})')
    return self._dataset_fn(number)

  @property
  def element_type_structure(self) -> Any:
    return self._element_type_structure
