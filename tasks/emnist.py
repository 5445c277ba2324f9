"""Federated EMNIST (LEAF), naturally partitioned by writer, through TFF's own loader.

`tff.simulation.datasets.emnist.load_data` downloads `emnist_all.sqlite.lzma` when the
decompressed file is not cached, which fails offline with a long traceback, and it treats
a truncated download as cached. This module checks the cached file first and turns both
cases into one actionable `UserError`.

Pixel convention: TFF stores EMNIST with background 1.0 and ink 0.0. We feed models
`1 - pixels` (background 0, ink 1), the convention of MNIST, of `mnist_digits` and of
TFF's own EMNIST autoencoder preprocessing, so that every task and model in this project
sees the same kind of image. (TFF's character-recognition preprocessing passes pixels
through unchanged; that is why accuracies are comparable, not identical, to its baselines.)
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Mapping

import tensorflow as tf

from core.errors import UserError
from core.runtime import import_tff
from tasks.sqlite_files import check_sqlite_header

tff = import_tff()

DATABASE_FILENAME = 'emnist_all.sqlite'
DOWNLOAD_URL = 'https://storage.googleapis.com/tff-datasets-public/emnist_all.sqlite.lzma'
NUM_CLASSES_DIGITS = 10
NUM_CLASSES_ALL = 62


def database_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
  """Where TFF looks for the database: `<cache_dir or ~/.tff>/emnist_all.sqlite`."""
  root = Path(cache_dir).expanduser() if cache_dir else Path.home() / '.tff'
  return root / DATABASE_FILENAME


def _check_database_file(path: Path) -> None:
  """Cheap integrity checks of the SQLite header (a full `PRAGMA integrity_check` reads GBs)."""
  redownload = (f'delete it, download {DOWNLOAD_URL}, decompress it (xz -d) '
                f'and place {DATABASE_FILENAME} there again')
  if not path.is_file():
    raise UserError(
        f'{DATABASE_FILENAME} not found in {path.parent}; download {DOWNLOAD_URL}, decompress '
        f'it (xz -d) and place {DATABASE_FILENAME} there, or pass --cache_dir')
  check_sqlite_header(path, redownload)


def _to_model_inputs(element: Mapping[str, Any]) -> tuple[tf.Tensor, tf.Tensor]:
  # Background 1 -> 0 and ink 0 -> 1 (see the module docstring), plus a channel axis.
  return tf.expand_dims(1.0 - element['pixels'], axis=-1), element['label']


def _map_to_model_inputs(dataset: tf.data.Dataset) -> tf.data.Dataset:
  return dataset.map(_to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE)


def load_data(
    *, only_digits: bool = False, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[tff.simulation.datasets.ClientData, tf.data.Dataset, tf.data.Dataset]:
  """Loads federated EMNIST from the cached SQLite file, never downloading.

  Args:
    only_digits: If True, the 10-class digits-only subset (3,383 writers); otherwise all
      62 classes (digits, upper case 10-35, lower case 36-61; 3,400 writers).
    cache_dir: Directory holding `emnist_all.sqlite`; None means `~/.tff`.

  Returns:
    `(train_data, validation_data, test_data)`: a `ClientData` keyed by writer (every
    writer trains), and the writers' held-out examples (TFF's test split) divided by
    writer: those of every other writer in sorted order are the validation set, the rest
    the test set, so the two share no writer. All yield `(x, y)`: x float32
    (28, 28, 1) in [0, 1] with background 0 and ink 1, y an int32 scalar.

  Raises:
    UserError: If the database is missing, truncated or not TFF's EMNIST file.
  """
  path = database_path(cache_dir)
  _check_database_file(path)
  try:
    train, test = tff.simulation.datasets.emnist.load_data(
        only_digits=only_digits, cache_dir=str(path.parent))
  except (sqlite3.Error, tff.simulation.datasets.sql_client_data.DatabaseFormatError) as e:
    raise UserError(f'{path} is corrupt or not the TFF EMNIST database ({e}); delete it and '
                    f'download {DOWNLOAD_URL} again') from e
  if not train.client_ids or not test.client_ids:
    raise UserError(f'{path} has no clients for only_digits={only_digits}; it is not the '
                    f'TFF EMNIST database, delete it and download {DOWNLOAD_URL} again')
  train = train.preprocess(_map_to_model_inputs)
  writers = sorted(test.client_ids)

  def merged(ids: list[str]) -> tf.data.Dataset:
    # A fixed client order: the merged set is the same on every run; read lazily.
    return _map_to_model_inputs(tf.data.Dataset.from_tensor_slices(ids).flat_map(
        test.serializable_dataset_fn))

  return train, merged(writers[0::2]), merged(writers[1::2])
