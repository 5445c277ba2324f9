"""The bundled MNIST digits as numpy arrays: reading, validating, converting to model inputs.

Numpy only (no TensorFlow, no TFF), so the Flower peer (`scripts/flower_peer.py`), which
runs where TFF cannot be installed, reads the same digits the same way as
`tasks.mnist_digits`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from core.errors import UserError

DATA_PATH = Path(__file__).resolve().parent / 'data' / 'mnist_digits.npz'
NUM_CLASSES = 10
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
