"""The dataset files each benchmark task reads, and one-line errors when they are missing or bad.

TFF's loaders download a missing file at run time (`download.get_compressed_file` for the
SQLite databases, `tf.keras.utils.get_file` for the StackOverflow vocabularies), which
fails offline with a long traceback, and they take a truncated download for a cached
file. This module checks every file a task needs before TFF opens it, so that nothing is
downloaded without the user asking and each problem is one actionable line.

The vocabularies: `tff.simulation.datasets.stackoverflow.load_word_counts` /
`load_tag_counts` accept only the official `.tar.bz2` archive under `<cache_dir>/datasets/`
(checked against its SHA-256; any other content is downloaded again). When that archive
is there and intact, TFF's loaders read it; otherwise the extracted file beside it
(`stackoverflow.word_count`, `stackoverflow.tag_count`) is parsed here in the same format
(hand-written because no TFF function reads the extracted file alone: a few lines).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import sqlite3
import tarfile
from pathlib import Path
from typing import Callable, Sequence

import tensorflow as tf

from core.errors import UserError
from core.runtime import import_tff
from tasks.sqlite_files import check_sqlite_header

tff = import_tff()

_STORAGE = 'https://storage.googleapis.com/tff-datasets-public'
# SHA-256 of the vocabulary archives, as `tff.simulation.datasets.stackoverflow` (TFF 0.87)
# checks them: an archive with another digest would make TFF download it again.
_WORD_COUNT_SHA256 = '1dc00256d6e527c54b9756d968118378ae14e6692c0b3b6cad470cdd3f0c519c'
_TAG_COUNT_SHA256 = '6fe281cec490d9384a290d560072438e7e2b377bbb823876ce7bd6f82696772d'


@dataclasses.dataclass(frozen=True)
class DataFile:
  """One file a task needs in its cache directory.

  Attributes:
    path: Path relative to the cache directory (e.g. `datasets/stackoverflow.word_count`).
    url: Where to download it (compressed).
    install: How to turn the download into `path`.
  """

  path: str
  url: str
  install: str


def _sqlite_file(name: str) -> DataFile:
  return DataFile(f'{name}.sqlite', f'{_STORAGE}/{name}.sqlite.lzma',
                  f'decompress it (xz -d) into the cache dir')


EMNIST = _sqlite_file('emnist_all')
CIFAR100 = _sqlite_file('cifar100')
SHAKESPEARE = _sqlite_file('shakespeare')
STACKOVERFLOW = _sqlite_file('stackoverflow')
WORD_COUNTS = DataFile('datasets/stackoverflow.word_count',
                       f'{_STORAGE}/stackoverflow.word_count.tar.bz2',
                       'put it in <cache dir>/datasets/ (TFF extracts it; or tar -xjf it there)')
TAG_COUNTS = DataFile('datasets/stackoverflow.tag_count',
                      f'{_STORAGE}/stackoverflow.tag_count.tar.bz2',
                      'put it in <cache dir>/datasets/ (TFF extracts it; or tar -xjf it there)')
_ARCHIVE_SHA256 = {WORD_COUNTS.path: _WORD_COUNT_SHA256, TAG_COUNTS.path: _TAG_COUNT_SHA256}


def cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
  """The cache directory TFF's loaders use: `cache_dir`, or `~/.tff` when None."""
  return Path(cache_dir).expanduser() if cache_dir else Path.home() / '.tff'


def _archive(root: Path, data_file: DataFile) -> Path:
  return root / f'{data_file.path}.tar.bz2'


def _present(root: Path, data_file: DataFile) -> bool:
  if data_file.path in _ARCHIVE_SHA256 and _archive(root, data_file).is_file():
    return True
  return (root / data_file.path).is_file()


def require(task: str, root: Path, files: Sequence[DataFile]) -> None:
  """Raises one `UserError` naming every missing file of `task`, the cache dir and the URLs.

  Args:
    task: The task's name, for the message.
    root: The cache directory.
    files: The files the task reads.

  Raises:
    UserError: If any file is missing (nothing is downloaded).
  """
  missing = [f for f in files if not _present(root, f)]
  if not missing:
    return
  steps = '; '.join(f'download {f.url} and {f.install}' for f in missing)
  raise UserError(
      f'task {task} needs {", ".join(f.path for f in missing)} in {root}, not found; {steps}; '
      f'or pass --cache_dir (nothing is downloaded at run time)')


def check_sqlite(path: Path, data_file: DataFile) -> None:
  """Cheap integrity checks of a SQLite file's header (a full integrity check reads GBs).

  Raises:
    UserError: If the file is not a SQLite database or is shorter than its header says.
  """
  redownload = f'delete it and download {data_file.url} again ({data_file.install})'
  check_sqlite_header(path, redownload)


def open_client_data(
    root: Path, data_file: DataFile, what: str, load: Callable[[str], tuple],
) -> tuple:
  """Opens a TFF SQLite dataset with `load(cache_dir)`; checks every split parses.

  Each returned split must have clients, and its first client's first example must parse
  with TFF's own parser: a file of another dataset (another schema) fails here, at start-up,
  not in the middle of training.

  Args:
    root: The cache directory.
    data_file: The SQLite file (`root / data_file.path`).
    what: The dataset's name for messages (e.g. `TFF's CIFAR-100 database`).
    load: TFF's loader, called with the cache directory; returns `ClientData` splits.

  Returns:
    What `load` returns.

  Raises:
    UserError: For a corrupt file, another schema, or an empty split.
  """
  path = root / data_file.path
  check_sqlite(path, data_file)
  again = f'delete it and download {data_file.url} again'
  try:
    splits = load(str(root))
    for split in splits:
      if not split.client_ids:
        raise UserError(f'{path} has a split without clients: it is not {what}; {again}')
      first = split.create_tf_dataset_for_client(split.client_ids[0])
      next(iter(first.take(1)), None)
  except (sqlite3.Error, tff.simulation.datasets.sql_client_data.DatabaseFormatError,
          tf.errors.OpError) as e:
    reason = ' '.join(str(e).split())[:200]
    raise UserError(f'{path} is corrupt or not {what} ({reason}); {again}') from None
  return splits


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with path.open('rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _vocabulary(root: Path, data_file: DataFile, tff_loader: Callable[[], dict],
                parse: Callable[[Path], dict]) -> dict:
  archive = _archive(root, data_file)
  if archive.is_file():
    if _sha256(archive) != _ARCHIVE_SHA256[data_file.path]:
      raise UserError(f'{archive} is not the official archive (SHA-256 differs: corrupt or '
                      f'partial download; TFF would download it again); delete it and download '
                      f'{data_file.url} again')
    try:
      return tff_loader()
    except (OSError, ValueError, tarfile.TarError) as e:
      raise UserError(f'{archive} cannot be read ({e}); delete it and download '
                      f'{data_file.url} again') from None
  path = root / data_file.path
  try:
    counts = parse(path)
  except (OSError, ValueError, UnicodeDecodeError, AttributeError) as e:
    raise UserError(f'{path} is corrupt ({" ".join(str(e).split())[:120]}); delete it and '
                    f'download {data_file.url} again') from None
  if not counts:
    raise UserError(f'{path} is empty; delete it and download {data_file.url} again')
  return counts


def _parse_word_counts(path: Path) -> dict[str, int]:
  counts: dict[str, int] = collections.OrderedDict()
  with path.open() as f:
    for line in f:
      word, count = line.split()  # TFF's format: "word count", most frequent first.
      counts[word] = int(count)
  return counts


def _parse_tag_counts(path: Path) -> dict[str, int]:
  with path.open() as f:
    counts = json.load(f)  # TFF's format: {"tag": count, ...}.
  if not isinstance(counts, dict):
    raise ValueError('not a JSON object of tag counts')
  return collections.OrderedDict(
      sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda item: item[1], reverse=True))


def load_word_vocabulary(root: Path, vocab_size: int) -> list[str]:
  """The `vocab_size` most frequent StackOverflow words (fewer if the file has fewer)."""
  counts = _vocabulary(
      root, WORD_COUNTS,
      lambda: tff.simulation.datasets.stackoverflow.load_word_counts(
          cache_dir=str(root), vocab_size=vocab_size),
      _parse_word_counts)
  return list(counts)[:vocab_size]


def load_tag_vocabulary(root: Path, tag_vocab_size: int) -> list[str]:
  """The `tag_vocab_size` most frequent StackOverflow tags (fewer if the file has fewer)."""
  counts = _vocabulary(
      root, TAG_COUNTS,
      lambda: tff.simulation.datasets.stackoverflow.load_tag_counts(cache_dir=str(root)),
      _parse_tag_counts)
  return list(counts)[:tag_vocab_size]
