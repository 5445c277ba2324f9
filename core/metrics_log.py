"""Per-round metrics: flattening TFF's nested metrics, and a resumable CSV log."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def flatten_metrics(metrics: Any, prefix: str = '') -> dict[str, float]:
  """Flattens nested mappings of scalars into {'a/b/c': float}; non-scalars are skipped."""
  flat: dict[str, float] = {}
  if isinstance(metrics, Mapping):
    for key, value in metrics.items():
      flat.update(flatten_metrics(value, f'{prefix}{key}/'))
    return flat
  if hasattr(metrics, '_asdict'):  # namedtuples
    return flatten_metrics(metrics._asdict(), prefix)
  array = np.asarray(metrics)
  if array.shape == () and np.issubdtype(array.dtype, np.number) or array.dtype == bool:
    if array.shape == ():
      flat[prefix.rstrip('/')] = float(array)
  return flat


def training_row(round_num: int, metrics: Mapping[str, Any]) -> dict[str, float]:
  """Picks the columns a researcher reads from one `LearningProcess.next` metrics output.

  Train loss/accuracy/examples come from `client_work/train`; aggregator measurements
  (clip norms, zeroed fraction, noise, ...) are kept under `aggregator/...`.
  """
  flat = flatten_metrics(metrics)
  row: dict[str, float] = {'round': round_num}
  renames = {
      'client_work/train/loss': 'train_loss',
      'client_work/train/sparse_categorical_accuracy': 'train_accuracy',
      'client_work/train/num_examples': 'train_examples',
  }
  for source, column in renames.items():
    if source in flat:
      row[column] = flat[source]
  row.update({k: v for k, v in flat.items() if k.startswith('aggregator/')})
  return row


class MetricsCsv:
  """An append-only CSV of per-round rows that a resumed run can rewind.

  Rows are appended and flushed as each round ends, so a killed run keeps every finished
  round. `rewind(last_round)` drops rows after the checkpoint a resumed run restarts from,
  so the final file has each round exactly once.
  """

  def __init__(self, path: str | os.PathLike[str], leading_columns: list[str]) -> None:
    """Opens (does not truncate) the log.

    Args:
      path: CSV file path.
      leading_columns: Columns always present, first. Further columns are those of the
        first appended row (e.g. aggregator measurements); an existing file keeps its header.
    """
    self.path = Path(path)
    self.columns: list[str] = list(leading_columns)
    if self.path.exists() and self.path.stat().st_size:
      with open(self.path, newline='') as f:
        self.columns = next(csv.reader(f), self.columns)

  def rows(self) -> list[dict[str, str]]:
    """Returns the rows on disk."""
    if not self.path.exists():
      return []
    with open(self.path, newline='') as f:
      return list(csv.DictReader(f))

  def rewind(self, last_round: int) -> int:
    """Keeps rounds 1..last_round (none for 0): the first complete row of each, in order.

    Rows after `last_round`, and a row cut short by a kill (missing trailing fields), are
    dropped, so the file holds each round at most once.

    Returns:
      The number of rounds kept (less than `last_round` if rows are missing).
    """
    kept: list[dict[str, str]] = []
    for row in self.rows():
      if None in row.values() or None in row:  # Cut short, or a line that ran into another.
        continue
      try:
        round_num = int(float(row.get('round') or 'nan'))
      except ValueError:
        continue
      if round_num == len(kept) + 1 and round_num <= last_round:
        kept.append(row)
    tmp = self.path.with_suffix('.csv.tmp')
    with open(tmp, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction='ignore')
      writer.writeheader()
      writer.writerows(kept)
    os.replace(tmp, self.path)
    return len(kept)

  def append(self, row: Mapping[str, Any]) -> None:
    """Appends one row; columns outside the header are dropped, missing ones left blank."""
    new_file = not self.path.exists() or self.path.stat().st_size == 0
    if new_file:
      self.columns += [k for k in row if k not in self.columns]
    with open(self.path, 'a', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction='ignore')
      if new_file:
        writer.writeheader()
      writer.writerow({k: _format(v) for k, v in row.items()})


def _format(value: Any) -> Any:
  if isinstance(value, float):
    return int(value) if value.is_integer() and abs(value) < 2**53 else f'{value:.6g}'
  return value
