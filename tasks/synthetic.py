"""A tiny, seeded, learnable image task for wiring tests: which quadrant is bright?

Each 28x28x1 image is faint noise with one bright 14x14 quadrant; the label is that
quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right). The classes are
linearly separable, so even softmax regression gets near 100% accuracy within a few
federated rounds, which lets end-to-end tests check that accuracy rises.

`load_data` defaults to 4 clients; through `create_task` the usual split options apply
(`num_clients`, default 100, and `partition`), with 16 examples per client.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recipes.errors import UserError
from recipes.runtime import import_tff
from tasks import in_memory
from tasks import partition as partition_lib

tff = import_tff()

NUM_CLASSES = 4
_SIDE = 28
_HALF = _SIDE // 2


def make_examples(num_examples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Draws `num_examples` images, float32 (n, 28, 28, 1) in [0, 1], and int32 labels."""
  labels = rng.integers(0, NUM_CLASSES, size=num_examples).astype(np.int32)
  quadrants = np.zeros((NUM_CLASSES, _SIDE, _SIDE), dtype=np.float32)
  for label in range(NUM_CLASSES):
    row, col = divmod(label, 2)
    quadrants[label, row * _HALF:(row + 1) * _HALF, col * _HALF:(col + 1) * _HALF] = 1.0
  noise = rng.uniform(0.0, 0.3, size=(num_examples, _SIDE, _SIDE))
  brightness = rng.uniform(0.5, 0.7, size=(num_examples, 1, 1))
  images = np.clip(noise + brightness * quadrants[labels], 0.0, 1.0).astype(np.float32)
  return images[..., np.newaxis], labels


def load_data(
    *,
    num_clients: int = 4,
    partition: str = 'iid',
    alpha: float = 0.5,
    seed: int = 0,
    examples_per_client: int = 16,
    num_test_examples: int = 256,
) -> tuple[tff.simulation.datasets.ClientData, tf.data.Dataset]:
  """Generates `num_clients * examples_per_client` training examples and splits them.

  Args:
    num_clients: Number of clients.
    partition: A name from `tasks.partition.PARTITIONS`.
    alpha: Dirichlet concentration (only for `partition='dirichlet'`).
    seed: Seed of the images and of the partition.
    examples_per_client: Average training examples per client.
    num_test_examples: Size of the centralized test set.

  Returns:
    `(train_data, test_data)`, both yielding `(x, y)`: x float32 (28, 28, 1) in [0, 1]
    (background low, the bright quadrant high), y an int32 scalar in [0, 4).

  Raises:
    UserError: If a size is not positive or the partition arguments are invalid.
  """
  if min(num_clients, examples_per_client, num_test_examples) < 1:
    raise UserError(
        'synthetic task sizes (clients, examples per client, test examples) must be >= 1')
  rng = np.random.default_rng(seed)
  train_x, train_y = make_examples(num_clients * examples_per_client, rng)
  test_x, test_y = make_examples(num_test_examples, rng)
  clients = partition_lib.partition(partition, train_y, num_clients, seed, alpha)
  train_data = in_memory.client_data_from_arrays(train_x, train_y, clients)
  return train_data, tf.data.Dataset.from_tensor_slices((test_x, test_y))
