"""Vertically partitioned tables from scikit-learn datasets, and row alignment after PSI.

A table's feature columns form named groups that a real organisation would hold together
(the pixel rows of a digit image; the mean / standard-error / worst measurements of a
breast-cancer biopsy). Parties get contiguous runs of groups, so "party 0 holds the top
quarter of each digit" rather than a random scatter of pixels. Party 0 is the label party:
it also holds the labels (and, in training, coordinates: see `split_model`).

IDs: each person (dataset row) gets a customer ID. A fraction `overlap` of the people are
customers of every party; each other person is a customer of exactly one party, which holds
that row's features under the same ID. Every party lists its IDs in its own random order.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np
from sklearn import datasets as sklearn_datasets
from sklearn import preprocessing

from core.errors import UserError

LABEL_PARTY = 0


@dataclasses.dataclass(frozen=True)
class PartyTable:
  """What one party holds: its IDs, its feature columns for those IDs, maybe the labels.

  Raises:
    UserError: The number of IDs, feature rows and labels disagree.
  """

  name: str
  ids: Sequence[str]
  features: np.ndarray
  feature_names: Sequence[str]
  labels: np.ndarray | None = None

  def __post_init__(self) -> None:
    if np.ndim(self.features) != 2:
      raise UserError(f'party {self.name!r}: features must be a table (rows x columns), '
                      f'got shape {np.shape(self.features)}')
    rows = np.shape(self.features)[0]
    if len(self.ids) != rows:
      raise UserError(f'party {self.name!r} has {len(self.ids)} IDs but {rows} feature rows; '
                      'every feature row needs exactly one ID')
    if self.labels is not None and len(self.labels) != rows:
      raise UserError(f'party {self.name!r} has {len(self.labels)} labels but {rows} feature rows')
    if len(self.feature_names) != np.shape(self.features)[1]:
      raise ValueError(f'party {self.name!r}: {len(self.feature_names)} feature names for '
                       f'{np.shape(self.features)[1]} columns')


@dataclasses.dataclass(frozen=True)
class VerticalDataset:
  """A task split across parties; `parties[LABEL_PARTY]` holds the labels."""

  task: str
  description: str
  class_names: Sequence[str]
  parties: Sequence[PartyTable]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class _Table:
  features: np.ndarray
  labels: np.ndarray
  feature_names: Sequence[str]
  groups: Sequence[tuple[str, np.ndarray]]  # (group name, column indices)
  class_names: Sequence[str]
  description: str


def _breast_cancer() -> _Table:
  bunch = sklearn_datasets.load_breast_cancer()
  names = list(bunch.feature_names)
  # Columns 0-9 are means, 10-19 standard errors, 20-29 worst values of 10 measurements.
  groups = [(kind, np.arange(10 * g, 10 * g + 10)) for g, kind in enumerate(('mean', 'error', 'worst'))]
  # sklearn encodes malignant as 0; recode so the positive class (1) is malignant.
  return _Table(bunch.data, 1 - bunch.target, names, groups, ('benign', 'malignant'),
                'Breast cancer Wisconsin (569 biopsies, 30 features in 3 groups), malignant vs benign')


def _digits() -> _Table:
  bunch = sklearn_datasets.load_digits()
  names = [f'pixel_{r}_{c}' for r in range(8) for c in range(8)]
  groups = [(f'pixel row {r}', np.arange(8 * r, 8 * r + 8)) for r in range(8)]
  return _Table(bunch.data, bunch.target, names, groups, tuple(str(d) for d in range(10)),
                'Handwritten digits (1,797 images of 8x8 pixels, split by pixel rows), 10 classes')


TASKS: Mapping[str, Callable[[], _Table]] = {'breast_cancer': _breast_cancer, 'digits': _digits}

# One party per feature group, at most 4: breast_cancer's mean / error / worst groups, and
# digits in quarters (two pixel rows each).
_DEFAULT_NUM_PARTIES: Mapping[str, int] = {'breast_cancer': 3, 'digits': 4}


def _check_task(task: str) -> None:
  if task not in TASKS:
    raise UserError(f'unknown task {task!r}; choose one of: {", ".join(TASKS)}')


def default_num_parties(task: str) -> int:
  """The number of parties a task is split into unless told otherwise."""
  _check_task(task)
  return _DEFAULT_NUM_PARTIES[task]


def _customer_ids(count: int, rng: np.random.Generator) -> list[str]:
  return [f'cust-{value:08x}' for value in rng.choice(2**32, size=count, replace=False)]


def load(task: str, *, num_parties: int, overlap: float, seed: int) -> VerticalDataset:
  """Splits a scikit-learn dataset across `num_parties` parties with their own ID lists.

  Args:
    task: A key of `TASKS`.
    num_parties: Number of feature parties; party 0 also holds the labels.
    overlap: Fraction of people (dataset rows) that every party holds, in (0, 1].
    seed: Seeds the IDs, who holds which non-shared row, and each party's row order.

  Returns:
    The per-party tables.

  Raises:
    UserError: Unknown task, more parties than the task has feature groups, or an
      overlap outside (0, 1].
  """
  _check_task(task)
  table = TASKS[task]()
  if not 2 <= num_parties <= len(table.groups):
    raise UserError(f'task {task!r} has {len(table.groups)} feature groups, so it can be split '
                    f'across 2 to {len(table.groups)} parties, not {num_parties}')
  if not 0 < overlap <= 1:
    raise UserError(f'overlap must be in (0, 1], got {overlap}')
  rng = np.random.default_rng(seed)
  people = len(table.labels)
  ids = _customer_ids(people, rng)
  shared = np.zeros(people, dtype=bool)
  shared[rng.permutation(people)[:round(overlap * people)]] = True
  only_party = rng.integers(num_parties, size=people)
  parties = []
  for index, group_band in enumerate(np.array_split(np.arange(len(table.groups)), num_parties)):
    columns = np.concatenate([table.groups[g][1] for g in group_band])
    rows = rng.permutation(np.flatnonzero(shared | (only_party == index)))
    parties.append(PartyTable(
        name=f'party{index}',
        ids=[ids[row] for row in rows],
        features=table.features[np.ix_(rows, columns)].astype(np.float32),
        feature_names=[table.feature_names[c] for c in columns],
        labels=table.labels[rows] if index == LABEL_PARTY else None,
    ))
  return VerticalDataset(task, table.description, table.class_names, parties)


@dataclasses.dataclass(frozen=True)
class AlignedSplit:
  """Aligned rows after PSI, split into train and test; features standardized per party."""

  train_features: Sequence[np.ndarray]
  test_features: Sequence[np.ndarray]
  train_labels: np.ndarray
  test_labels: np.ndarray


def align_and_split(dataset: VerticalDataset, rows: Mapping[str, np.ndarray], *, test_fraction: float,
                    seed: int) -> AlignedSplit:
  """Lines up every party's rows in the joint PSI order, then splits train/test.

  The split is a seeded permutation of the aligned positions, so every party computes it
  alike without exchanging anything. Each party standardizes its own columns with the
  mean and deviation of its own training rows.

  Args:
    dataset: The per-party tables.
    rows: Party name -> local row indices in the joint order (from PSI).
    test_fraction: Fraction of aligned rows held out, in (0, 1).
    seed: Seeds the split.

  Returns:
    Per-party train/test features and the label party's train/test labels.

  Raises:
    UserError: Too few aligned rows for a train and a test part.
  """
  count = len(rows[dataset.parties[LABEL_PARTY].name])
  num_test = round(test_fraction * count)
  if num_test < 1 or count - num_test < 1:
    raise UserError(f'only {count} aligned rows: too few to hold out {test_fraction:.0%} for '
                    'testing; raise --overlap or change --test_fraction')
  order = np.random.default_rng(seed).permutation(count)
  test, train = order[:num_test], order[num_test:]
  train_features, test_features = [], []
  for party in dataset.parties:
    aligned = party.features[rows[party.name]]
    scaler = preprocessing.StandardScaler().fit(aligned[train])
    train_features.append(scaler.transform(aligned[train]).astype(np.float32))
    test_features.append(scaler.transform(aligned[test]).astype(np.float32))
  labels = dataset.parties[LABEL_PARTY].labels[rows[dataset.parties[LABEL_PARTY].name]]
  return AlignedSplit(train_features, test_features, labels[train], labels[test])
