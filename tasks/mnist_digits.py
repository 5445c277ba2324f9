"""10,000 real MNIST digits shipped with the project, split into synthetic clients.

The data is `tasks/data/mnist_digits.npz` (8,000 train / 2,000 held-out test, made by
`scripts/convert_mnist.py`, see `tasks/data/MNIST_ATTRIBUTION.md`). It needs no download,
so experiments in the style of McMahan et al. (2017) run offline in seconds per round.

Of the 8,000 training digits, a fixed, class-stratified 1,000 (the same for every seed)
form the validation set; the clients share the other 7,000. Periodic evaluation, early
stopping and tuning read validation; the 2,000 test digits are for the reported result.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from recipes.errors import UserError
from recipes.runtime import import_tff
from tasks import in_memory
from tasks import partition as partition_lib

tff = import_tff()

DATA_PATH = Path(__file__).resolve().parent / 'data' / 'mnist_digits.npz'
NUM_CLASSES = 10
NUM_VALIDATION = 1_000
_VALIDATION_SEED = 20261201  # Fixed: the validation digits do not move with --seed.
_KEYS = ('train_images', 'train_labels', 'test_images', 'test_labels')
_REGENERATE = 'regenerate it with `python scripts/convert_mnist.py`'


def load_arrays(path: str | Path = DATA_PATH) -> dict[str, np.ndarray]:
  """Reads and validates the npz: uint8 images (N, 28, 28), int labels in [0, 10).

  Raises:
    UserError: If the file is missing, unreadable or has unexpected contents.
  """
  path = Path(path)
  if not path.is_file():
    raise UserError(f'{path} not found; {_REGENERATE}')
  try:
    with np.load(path) as npz:
      arrays = {key: npz[key] for key in _KEYS}
  except KeyError as e:
    raise UserError(f'{path} lacks the array {e}; {_REGENERATE}') from e
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f'{path} is corrupt ({type(e).__name__}: {e}); {_REGENERATE}') from e
  for split in ('train', 'test'):
    images, labels = arrays[f'{split}_images'], arrays[f'{split}_labels']
    if (images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28)
        or labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer)
        or not len(labels) or labels.min() < 0 or labels.max() >= NUM_CLASSES):
      raise UserError(f'{path} has malformed {split} arrays; {_REGENERATE}')
  return arrays


def to_model_inputs(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1] (ink high); labels -> int32."""
  return (images.astype(np.float32) / 255.0)[..., np.newaxis], labels.astype(np.int32)


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
