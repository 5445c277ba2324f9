"""Writes a tiny `emnist_all.sqlite` in the exact format TFF's EMNIST loader reads.

The format, from `tff.simulation.datasets.emnist` and `sql_client_data` (TFF 0.87):

* table `examples(split_name TEXT, client_id TEXT, serialized_example_proto BLOB)`;
* table `client_metadata(client_id TEXT, split_name TEXT, num_examples INTEGER)`, where
  the client ids of a split are read from;
* split names `digits_only_train`, `digits_only_test`, `all_train`, `all_test`;
* each example is a `tf.train.Example` with `pixels`: 784 floats (parsed as (28, 28)
  float32) and `label`: one int64;
* pixels are stored inverted: 1.0 is background, 0.0 is ink.

The images are real MNIST digits from `tasks/data/mnist_digits.npz`. "Letters" (labels
10-61, only in the `all_*` splits) are transposed digits: only their labels matter here.
The last client writes letters only, so, as in the real data, it is missing from the
digits-only splits.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tasks import mnist_digits

DIGITS_PER_CLIENT = 4
LETTERS_PER_CLIENT = 2


@dataclasses.dataclass
class WrittenSplit:
  """What one split holds: per client id, uint8 images (ink high) and labels, in order."""

  images: dict[str, np.ndarray]
  labels: dict[str, np.ndarray]

  @property
  def num_examples(self) -> int:
    return sum(len(labels) for labels in self.labels.values())


def _serialize(image: np.ndarray, label: int) -> bytes:
  stored_pixels = 1.0 - image.astype(np.float32).reshape(-1) / 255.0  # TFF's inverted form.
  return tf.train.Example(features=tf.train.Features(feature={
      'pixels': tf.train.Feature(float_list=tf.train.FloatList(value=stored_pixels)),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
  })).SerializeToString()


def write_emnist_sqlite(
    path: str | Path, num_clients: int = 4, seed: int = 0
) -> dict[str, WrittenSplit]:
  """Writes the database to `path`; returns what each split holds, by split name.

  Clients `f0000_00` .. hold, per train/test split, DIGITS_PER_CLIENT digits and
  LETTERS_PER_CLIENT letters; the last client holds DIGITS_PER_CLIENT + LETTERS_PER_CLIENT
  letters and no digits.
  """
  arrays = mnist_digits.load_arrays()
  rng = np.random.default_rng(seed)
  per_client = DIGITS_PER_CLIENT + LETTERS_PER_CLIENT
  picks = rng.choice(len(arrays['train_labels']), size=(2, num_clients, per_client), replace=False)
  splits = {name: WrittenSplit({}, {}) for name in
            ('digits_only_train', 'digits_only_test', 'all_train', 'all_test')}
  for s, part in enumerate(('train', 'test')):
    for k in range(num_clients):
      client_id = f'f{k:04d}_{k % 100:02d}'
      images = arrays['train_images'][picks[s, k]]
      labels = arrays['train_labels'][picks[s, k]].astype(np.int64)
      num_digits = DIGITS_PER_CLIENT if k < num_clients - 1 else 0
      # Letters: transposed images with labels 10-61.
      images[num_digits:] = np.transpose(images[num_digits:], (0, 2, 1))
      labels[num_digits:] = rng.integers(10, 62, size=per_client - num_digits)
      splits[f'all_{part}'].images[client_id] = images
      splits[f'all_{part}'].labels[client_id] = labels
      if num_digits:
        splits[f'digits_only_{part}'].images[client_id] = images[:num_digits]
        splits[f'digits_only_{part}'].labels[client_id] = labels[:num_digits]

  write_sqlite(path, {
      split_name: {client_id: [_serialize(image, int(label))
                               for image, label in zip(split.images[client_id], labels)]
                   for client_id, labels in split.labels.items()}
      for split_name, split in splits.items()})
  return splits


def write_sqlite(path: str | Path, splits: Mapping[str, Mapping[str, Sequence[bytes]]],
                 index: bool = False) -> None:
  """Writes `splits` (split -> client id -> serialized examples) in TFF's SQLite schema.

  The statements of `tff.simulation.datasets.sql_client_data_utils`; every loader of TFF's
  datasets (EMNIST, CIFAR-100, Shakespeare, Stack Overflow) reads this schema.

  Args:
    path: The database file (replaced).
    splits: The examples.
    index: Also index `examples` by client (TFF's schema has none; a large fixture reads
      each client much faster with it, and the loader does not notice).
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.unlink(missing_ok=True)
  connection = sqlite3.connect(path)
  with connection:
    connection.execute("""CREATE TABLE examples (
        split_name TEXT NOT NULL,
        client_id TEXT NOT NULL,
        serialized_example_proto BLOB NOT NULL);""")
    connection.execute("""CREATE TABLE client_metadata (
        client_id TEXT NOT NULL,
        split_name TEXT NOT NULL,
        num_examples INTEGER NOT NULL);""")
    for split_name, clients in splits.items():
      connection.executemany(
          'INSERT INTO examples (split_name, client_id, serialized_example_proto) VALUES (?, ?, ?);',
          ((split_name, client_id, example)
           for client_id, examples in clients.items() for example in examples))
      connection.executemany(
          'INSERT INTO client_metadata (client_id, split_name, num_examples) VALUES (?, ?, ?);',
          ((client_id, split_name, len(examples)) for client_id, examples in clients.items()))
    if index:
      connection.execute('CREATE INDEX examples_by_client ON examples (client_id, split_name);')
  connection.close()
