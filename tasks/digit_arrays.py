"""The embedded MNIST digits as numpy arrays: loading, model inputs, the validation split.

Kept free of TensorFlow (Federated) so that a peer system's environment (Flower's, in
`scripts/flower_peer.py`) trains on exactly the digits and split that fedrecipes uses.
`tasks/mnist_digits.py` builds the federated task on top of it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from core.errors import UserError

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


def split_training(arrays: dict[str, np.ndarray]) -> tuple[tuple[np.ndarray, np.ndarray],
                                                         tuple[np.ndarray, np.ndarray]]:
  """Model inputs of the 7,000 digits the clients share and of the 1,000 validation digits.

  Args:
    arrays: From `load_arrays`.

  Returns:
    `((train_x, train_y), (validation_x, validation_y))`, in the order of the npz.
  """
  all_x, all_y = to_model_inputs(arrays['train_images'], arrays['train_labels'])
  held = validation_indices(all_y)
  rest = np.setdiff1d(np.arange(len(all_y)), held)
  return (all_x[rest], all_y[rest]), (all_x[held], all_y[held])
