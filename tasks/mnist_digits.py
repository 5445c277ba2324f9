"""10,000 real MNIST digits shipped with the project, split into synthetic clients.

The data is `tasks/data/mnist_digits.npz` (8,000 train / 2,000 held-out test, made by
`scripts/convert_mnist.py`, see `tasks/data/MNIST_ATTRIBUTION.md`). It needs no download,
so experiments in the style of McMahan et al. (2017) run offline in seconds per round.

Of the 8,000 training digits, a fixed, class-stratified 1,000 (the same for every seed)
form the validation set; the clients share the other 7,000. Periodic evaluation, early
stopping and tuning read validation; the 2,000 test digits are for the reported result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from core.runtime import import_tff
from tasks import in_memory
from tasks import partition as partition_lib
from tasks.mnist_arrays import DATA_PATH  # noqa: F401  (part of this module's interface)
from tasks.mnist_arrays import load_arrays
from tasks.mnist_arrays import NUM_CLASSES
from tasks.mnist_arrays import to_model_inputs

tff = import_tff()

NUM_VALIDATION = 1_000
_VALIDATION_SEED = 20261201  # Fixed: the validation digits do not move with --seed.


def validation_indices(labels: np.ndarray, size: int = NUM_VALIDATION) -> np.ndarray:
  """Indices of a fixed, class-stratified validation subset of the training digits."""
  rng = np.random.default_rng(_VALIDATION_SEED)
  order = rng.permutation(len(labels))
  # Stratified: each class gets its share of `size` (largest remainders round the shares so
  # that they add up to `size` exactly), taken in the shuffled order.
  counts = np.bincount(labels, minlength=NUM_CLASSES)
  shares = size * counts / len(labels)
  take = np.floor(shares).astype(int)
  take[np.argsort(take - shares)[:size - take.sum()]] += 1
  chosen = [order[labels[order] == label][:take[label]] for label in range(NUM_CLASSES)]
  return np.sort(np.concatenate(chosen))


def load_data(
    *,
    num_clients: int = 100,
    partition: str = 'shards',
    alpha: float = 0.5,
    seed: int = 0,
    path: str | Path = DATA_PATH,
) -> tuple[tff.simulation.datasets.ClientData, tf.data.Dataset, tf.data.Dataset]:
  """Partitions 7,000 training digits into clients; keeps validation and test digits central.

  Args:
    num_clients: Number of clients.
    partition: A name from `tasks.partition.PARTITIONS`.
    alpha: Dirichlet concentration (only for `partition='dirichlet'`).
    seed: Seed of the partition.
    path: The npz file.

  Returns:
    `(train_data, validation_data, test_data)`: a `ClientData` with ids '0000', '0001',
    ... over 7,000 digits, and `tf.data.Dataset`s of the 1,000 validation and 2,000 test
    digits; all yield `(x, y)` with x float32 (28, 28, 1) in [0, 1] (background 0, ink 1)
    and y an int32 scalar.

  Raises:
    UserError: If the data is missing or corrupt or the partition arguments are invalid.
  """
  arrays = load_arrays(path)
  all_x, all_y = to_model_inputs(arrays['train_images'], arrays['train_labels'])
  held = validation_indices(all_y)
  rest = np.setdiff1d(np.arange(len(all_y)), held)
  train_x, train_y = all_x[rest], all_y[rest]
  test_x, test_y = to_model_inputs(arrays['test_images'], arrays['test_labels'])
  clients = partition_lib.partition(partition, train_y, num_clients, seed, alpha)
  train_data = in_memory.client_data_from_arrays(train_x, train_y, clients)
  validation_data = tf.data.Dataset.from_tensor_slices((all_x[held], all_y[held]))
  test_data = tf.data.Dataset.from_tensor_slices((test_x, test_y))
  return train_data, validation_data, test_data
