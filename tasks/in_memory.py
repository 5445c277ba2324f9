"""A TFF `ClientData` over in-memory numpy arrays, one index array per client."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from core.runtime import import_tff
from tasks import numbered_clients

tff = import_tff()


def client_ids(num_clients: int) -> numbered_clients.ClientIds:
  """Zero-padded ids ('0000', '0001', ...) so that sorting them keeps numeric order."""
  return numbered_clients.ClientIds(num_clients)


def client_data_from_arrays(
    x: np.ndarray, y: np.ndarray, client_indices: Sequence[np.ndarray]
) -> tff.simulation.datasets.ClientData:
  """Builds a `ClientData` whose client `k` yields `(x[i], y[i])` for i in client_indices[k].

  The examples are reordered once so that every client is one contiguous slice of a
  single eager copy of the arrays; per client only its offset is stored. A client's
  dataset is a slice made when it is asked for:

  * eagerly (`create_tf_dataset_for_client`, the training loop's path): a slice of the
    eager tensors;
  * traced in a function (`tf.function`, or tf.data's `flat_map` in
    `create_tf_dataset_from_all_clients`): the function captures the eager tensors by
    reference, so tracing copies no example into the graph;
  * traced in a plain graph (TFF serializes a `tff.tensorflow.computation`, e.g.
    `dataset_computation`, that way): a serialized graph cannot refer to memory of this
    process, so only there the arrays become graph constants. `Task.input_spec` builds its
    dataset eagerly, so tracing a model never takes this path.

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
  offsets = np.concatenate([[0], np.cumsum([len(i) for i in client_indices])]).astype(np.int64)
  with tf.init_scope():  # Eager even if called while a graph is being built.
    x_all, y_all = tf.constant(x[order]), tf.constant(y[order])
    bounds = tf.constant(offsets)

  def dataset_fn(k: Any) -> tf.data.Dataset:
    if not tf.is_tensor(k):
      start, end = int(offsets[k]), int(offsets[k + 1])
      return tf.data.Dataset.from_tensor_slices((x_all[start:end], y_all[start:end]))
    if tf.inside_function():
      xs, ys, ends = x_all, y_all, bounds
    else:
      xs, ys, ends = tf.constant(x_all.numpy()), tf.constant(y_all.numpy()), tf.constant(offsets)
    start, end = ends[k], ends[k + 1]
    return tf.data.Dataset.from_tensor_slices((xs[start:end], ys[start:end]))

  return numbered_clients.NumberedClientData(len(client_indices), dataset_fn)
