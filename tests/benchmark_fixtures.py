"""Small generated dataset files in the exact formats TFF's loaders read, for the suite tasks.

The schema, from `tff.simulation.datasets.sql_client_data` and each loader (TFF 0.87):

* SQLite tables `examples(split_name, client_id, serialized_example_proto)` and
  `client_metadata(client_id, split_name, num_examples)` (the statements of
  `sql_client_data_utils`);
* `cifar100.sqlite`, splits `train` / `test`: `tf.train.Example` with `image` (32*32*3
  int64 pixels), `label` (int64, 0-99) and `coarse_label` (int64, 0-19);
* `shakespeare.sqlite`, splits `train` / `test`: `snippets` (one bytes string);
* `stackoverflow.sqlite`, splits `train` / `heldout` / `test`: `tokens`, `title`, `tags`
  ('|'-separated), `type`, `creation_date` (bytes) and `score` (int64);
* `datasets/stackoverflow.word_count` ("word count" lines, most frequent first) and
  `datasets/stackoverflow.tag_count` (a JSON object tag -> count): the extracted forms of
  TFF's vocabulary archives;
* `emnist_all.sqlite`: tests/emnist_sqlite.py.

The contents carry a learning signal a few rounds can show: CIFAR images are a solid
colour per class (4 classes), Shakespeare roles repeat one short line, StackOverflow
sentences cycle through a fixed word order and each question's tag is set by its words.

    python -m tests.benchmark_fixtures --cache_dir=DIR [--stackoverflow_users=N]

writes every file (the grid's `--smoke` and scripts/bench_suite_population.py use it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from tests import emnist_sqlite

CIFAR_CLASSES = (0, 1, 2, 3)
_CIFAR_COLOURS = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220], [220, 220, 30]])
SHAKESPEARE_LINE = 'to be or not to be '
TAGS = ('python', 'java', 'sql', 'css', 'html', 'android', 'linux', 'git')
# Each tag has its own 3 words (more tags than recall@5 looks at, so that it can fail).
WORDS = tuple(f'{tag}{i}' for tag in TAGS for i in range(3))
_TAG_WORDS = {t: (3 * t, 3 * t + 1, 3 * t + 2) for t in range(len(TAGS))}


def _example(**features: object) -> bytes:
  def feature(value: object) -> tf.train.Feature:
    if isinstance(value, bytes):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, (list, np.ndarray)):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=list(np.ravel(value))))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
  return tf.train.Example(features=tf.train.Features(
      feature={k: feature(v) for k, v in features.items()})).SerializeToString()


write_sqlite = emnist_sqlite.write_sqlite


def cifar_image(label: int, rng: np.random.Generator) -> np.ndarray:
  """A 32x32x3 image of the class's colour with a little noise (uint8 values as int64)."""
  noise = rng.integers(-20, 21, size=(32, 32, 3))
  return np.clip(_CIFAR_COLOURS[label] + noise, 0, 255).astype(np.int64)


def write_cifar100(cache_dir: str | Path, *, train_clients: int = 6, test_clients: int = 4,
                   per_client: int = 8, seed: int = 0) -> dict[str, dict[str, list[int]]]:
  """Writes `cifar100.sqlite`; returns the labels of each split's clients, in order."""
  rng = np.random.default_rng(seed)
  splits: dict[str, dict[str, list[bytes]]] = {}
  labels: dict[str, dict[str, list[int]]] = {}
  for split, count in (('train', train_clients), ('test', test_clients)):
    splits[split], labels[split] = {}, {}
    for k in range(count):
      client_labels = [int(rng.choice(CIFAR_CLASSES)) for _ in range(per_client)]
      splits[split][str(k)] = [
          _example(image=cifar_image(y, rng), label=y, coarse_label=y // 5)
          for y in client_labels]
      labels[split][str(k)] = client_labels
  write_sqlite(Path(cache_dir) / 'cifar100.sqlite', splits)
  return labels


def write_shakespeare(cache_dir: str | Path, *, clients: int = 4, snippets: int = 3) -> None:
  """Writes `shakespeare.sqlite`: every role speaks the same line in both splits."""
  splits = {split: {f'PLAY_{k}_ROLE_{k}': [
      _example(snippets=(SHAKESPEARE_LINE * (2 + (i + k) % 3)).encode()) for i in range(snippets)]
      for k in range(clients)} for split in ('train', 'test')}
  write_sqlite(Path(cache_dir) / 'shakespeare.sqlite', splits)


def stackoverflow_example(tag: int, length: int = 6) -> bytes:
  """A question whose words are those of its tag, in a fixed cyclic order."""
  words = _TAG_WORDS[tag]
  tokens = ' '.join(WORDS[words[i % len(words)]] for i in range(length))
  return _example(tokens=tokens.encode(), title=WORDS[words[0]].encode(),
                  tags=TAGS[tag].encode(), type=b'question',
                  creation_date=b'2016-01-01 00:00:00 UTC', score=1)


def write_stackoverflow(cache_dir: str | Path, *, train_users: int = 6, heldout_users: int = 3,
                        test_users: int = 3, per_user: int = 6, index: bool = False) -> None:
  """Writes `stackoverflow.sqlite` and the two vocabulary files under `datasets/`.

  Many users share the same few serialized examples, so that writing 100,000 users
  takes seconds.
  """
  by_tag = [stackoverflow_example(t) for t in range(len(TAGS))]
  splits = {}
  for split, count in (('train', train_users), ('heldout', heldout_users), ('test', test_users)):
    splits[split] = {f'{split}_{k:07d}': [by_tag[(k + i) % len(TAGS)] for i in range(per_user)]
                     for k in range(count)}
  cache_dir = Path(cache_dir)
  write_sqlite(cache_dir / 'stackoverflow.sqlite', splits, index=index)
  vocab_dir = cache_dir / 'datasets'
  vocab_dir.mkdir(parents=True, exist_ok=True)
  (vocab_dir / 'stackoverflow.word_count').write_text(
      ''.join(f'{word} {1000 - i}\n' for i, word in enumerate(WORDS)))
  (vocab_dir / 'stackoverflow.tag_count').write_text(
      json.dumps({tag: 100 - i for i, tag in enumerate(TAGS)}))


def write_all(cache_dir: str | Path, *, stackoverflow_users: int = 6) -> Path:
  """Writes every suite dataset into `cache_dir`; returns it."""
  cache_dir = Path(cache_dir)
  cache_dir.mkdir(parents=True, exist_ok=True)
  emnist_sqlite.write_emnist_sqlite(cache_dir / 'emnist_all.sqlite')
  write_cifar100(cache_dir)
  write_shakespeare(cache_dir)
  write_stackoverflow(cache_dir, train_users=stackoverflow_users,
                      index=stackoverflow_users > 1000)
  return cache_dir


def main(argv: list[str]) -> int:
  """`--cache_dir=DIR [--stackoverflow_users=N]`: writes the fixtures there."""
  options = dict(arg[2:].split('=', 1) for arg in argv if arg.startswith('--') and '=' in arg)
  unknown = set(options) - {'cache_dir', 'stackoverflow_users'}
  if 'cache_dir' not in options or unknown or len(options) != len(argv):
    print('usage: python -m tests.benchmark_fixtures --cache_dir=DIR [--stackoverflow_users=N]',
          file=sys.stderr)
    return 2
  users = int(options.get('stackoverflow_users', 6))
  print(write_all(options['cache_dir'], stackoverflow_users=users))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
