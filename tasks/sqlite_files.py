"""Cheap integrity checks of the SQLite files TFF's dataset loaders read.

A full `PRAGMA integrity_check` reads gigabytes, so only the 100-byte header is checked: the
magic string (not SQLite: a corrupt or partial download) and, where the header's page count is
valid, the file's length (a truncated download). Shared by `tasks.emnist` and
`tasks.benchmark_suite`; imports no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import UserError

_SQLITE_MAGIC = b'SQLite format 3\x00'


def check_sqlite_header(path: Path, redownload: str) -> None:
  """Refuses a file that is not SQLite or is shorter than its header says.

  Args:
    path: The database file (it exists).
    redownload: What the user should do, appended to the message.

  Raises:
    UserError: One line naming the file, the problem and `redownload`.
  """
  with path.open('rb') as f:
    header = f.read(100)
  if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
    raise UserError(f'{path} is not a SQLite database (corrupt or partial download); {redownload}')
  page_size = int.from_bytes(header[16:18], 'big')
  page_size = 65536 if page_size == 1 else page_size  # The header's encoding of 64 KiB.
  page_count = int.from_bytes(header[28:32], 'big')
  # The page count is valid only if the change counter equals "version-valid-for".
  if header[24:28] == header[92:96] and path.stat().st_size < page_size * page_count:
    raise UserError(f'{path} is truncated ({path.stat().st_size} of {page_size * page_count} '
                    f'bytes, an interrupted download?); {redownload}')
