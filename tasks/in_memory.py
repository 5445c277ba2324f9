"""A TFF `ClientData` over in-memory numpy arrays, one index array per client."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from recipes.runtime import import_tff

tff = import_tff()


def client_ids(num_clients: int) -> list[str]:
  """Zero-padded ids ('0000', '0001', ...) so that sorting them keeps numeric order."""
  width = max(4, len(str(num_clients - 1)))
  return [f'{i:0{width}d}' for i in range(num_clients)]


def client_data_from_arrays(
    x: np.ndarray, y: np.ndarray, client_indices: Sequence[np.ndarray]
) -> tff.simulation.datasets.ClientData:
  """Builds a `ClientData` whose client `k` yields `(x[i], y[i])` for i in client_indices[k].

  The examples are reordered so that every client is one contiguous slice. Eager callers
  (`create_tf_dataset_for_client`, the usual path in a training loop) get a slice of
  tensors made once; traced callers (`serializable_dataset_fn` inside a `tf.function` or a
  TFF computation) get the arrays as graph constants, since a graph cannot capture eager
  tensors. Unlike `tff.simulation.datasets.TestClientData`, whose traced function holds
  one dataset per client, the traced function here stays small for many clients.

  Args:
    x: Features, shape (N, ...).
    y: Labels, shape (N,).
    client_indices: Non-empty index arrays into `x` and `y`, one per client.

  Returns:
    A `tff.simulation.datasets.ClientData` with ids from `client_ids(len(client_indices))`.
  """
  if any(len(indices) == 0 for indices in client_indices):
    raise ValueError('every client needs at least one example')
  order = np.concatenate(client_indices)
  x_sorted, y_sorted = x[order], y[order]
  offsets = np.concatenate([[0], np.cumsum([len(i) for i in client_indices])]).astype(np.int64)
  x_eager, y_eager = tf.constant(x_sorted), tf.constant(y_sorted)

  def dataset_fn(client_id: str | tf.Tensor) -> tf.data.Dataset:
    if tf.executing_eagerly():
      k = int(client_id.numpy() if tf.is_tensor(client_id) else client_id)
      start, end = int(offsets[k]), int(offsets[k + 1])
      return tf.data.Dataset.from_tensor_slices((x_eager[start:end], y_eager[start:end]))
    k = tf.strings.to_number(client_id, out_type=tf.int64)
    bounds = tf.constant(offsets)
    start, end = bounds[k], bounds[k + 1]
    return tf.data.Dataset.from_tensor_slices(
        (tf.constant(x_sorted)[start:end], tf.constant(y_sorted)[start:end]))

  return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
      client_ids(len(client_indices)), dataset_fn)
