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

import tensorflow as tf

from core.runtime import import_tff
from tasks import digit_arrays
from tasks import in_memory
from tasks import partition as partition_lib

tff = import_tff()

# The arrays and the validation split live in a module without TensorFlow (Flower's peer uses them).
DATA_PATH = digit_arrays.DATA_PATH
NUM_CLASSES = digit_arrays.NUM_CLASSES
NUM_VALIDATION = digit_arrays.NUM_VALIDATION
load_arrays = digit_arrays.load_arrays
to_model_inputs = digit_arrays.to_model_inputs
validation_indices = digit_arrays.validation_indices


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
  (train_x, train_y), validation = digit_arrays.split_training(arrays)
  test_x, test_y = to_model_inputs(arrays['test_images'], arrays['test_labels'])
  clients = partition_lib.partition(partition, train_y, num_clients, seed, alpha)
  train_data = in_memory.client_data_from_arrays(train_x, train_y, clients)
  validation_data = tf.data.Dataset.from_tensor_slices(validation)
  test_data = tf.data.Dataset.from_tensor_slices((test_x, test_y))
  return train_data, validation_data, test_data
