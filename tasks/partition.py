"""Seeded ways to split a centralized labelled dataset into federated clients.

Each partitioner takes the label array of the whole training set and returns one sorted
array of example indices per client. Every example is assigned to exactly one client and
no client is empty. Pure numpy, so the same seed gives the same clients everywhere.
"""

from __future__ import annotations

import heapq
from typing import Callable

import numpy as np

from core.errors import UserError

PARTITIONS = ('iid', 'shards', 'dirichlet')

ClientIndices = list[np.ndarray]


def _check(labels: np.ndarray, num_clients: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise UserError(f'labels must be a 1-D integer array, got shape {labels.shape} {labels.dtype}')
  if not 1 <= num_clients <= len(labels):
    raise UserError(
        f'num_clients must be between 1 and the number of examples ({len(labels)}), '
        f'got {num_clients}')
  return labels


def _sorted(parts: list[np.ndarray]) -> ClientIndices:
  return [np.sort(part).astype(np.int64) for part in parts]


def iid(labels: np.ndarray, num_clients: int, seed: int) -> ClientIndices:
  """Shuffles the examples and deals them out in near-equal parts (sizes differ by <= 1).

  Args:
    labels: Integer labels of all examples, shape (N,).
    num_clients: Number of clients, 1 <= num_clients <= N.
    seed: Seed of the shuffle.

  Returns:
    One sorted index array per client.

  Raises:
    UserError: If `labels` or `num_clients` is invalid.
  """
  labels = _check(labels, num_clients)
  order = np.random.default_rng(seed).permutation(len(labels))
  return _sorted(np.array_split(order, num_clients))


def _label_pure_shards(
    labels: np.ndarray, num_shards: int, rng: np.random.Generator
) -> list[np.ndarray]:
  """Cuts every label's examples into shards so that no shard mixes two labels.

  Shards are handed to labels one at a time, always to the label whose shards are
  currently largest (the D'Hondt rule), so shard sizes are as equal as label counts allow.
  """
  classes = np.unique(labels)
  members = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
  shards_per_class = {c: 1 for c in classes}
  heap = [(-len(members[c]), c) for c in classes]
  heapq.heapify(heap)
  for _ in range(num_shards - len(classes)):
    _, c = heapq.heappop(heap)
    shards_per_class[c] += 1
    heapq.heappush(heap, (-len(members[c]) / shards_per_class[c], c))
  return [shard for c in classes for shard in np.array_split(members[c], shards_per_class[c])]


def shards(
    labels: np.ndarray, num_clients: int, seed: int, shards_per_client: int = 2
) -> ClientIndices:
  """McMahan et al.'s pathological non-IID split: each client gets a few label-sorted shards.

  From "Communication-Efficient Learning of Deep Networks from Decentralized Data" (2017).
  The examples are sorted by label and cut into `num_clients * shards_per_client` shards;
  each client gets `shards_per_client` random shards. Unlike a blind cut of the sorted
  array, shard boundaries follow label boundaries, so a client holds at most
  `shards_per_client` labels (the paper's intent: "most clients will only have examples of
  two digits"). When there are fewer shards than labels this is impossible, and the sorted
  array is cut into equal contiguous pieces as in the paper.

  Args:
    labels: Integer labels of all examples, shape (N,).
    num_clients: Number of clients.
    seed: Seed of the within-label order and the shard assignment.
    shards_per_client: Shards given to each client.

  Returns:
    One sorted index array per client.

  Raises:
    UserError: If there are fewer examples than shards or an argument is invalid.
  """
  labels = _check(labels, num_clients)
  if shards_per_client < 1:
    raise UserError(f'shards_per_client must be >= 1, got {shards_per_client}')
  num_shards = num_clients * shards_per_client
  if num_shards > len(labels):
    raise UserError(
        f'shards partition needs at least num_clients * {shards_per_client} = {num_shards} '
        f'examples, got {len(labels)}; use fewer clients')
  rng = np.random.default_rng(seed)
  if num_shards >= len(np.unique(labels)):
    shard_list = _label_pure_shards(labels, num_shards, rng)
  else:
    # Random order within each label, then a stable sort by label.
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind='stable')]
    shard_list = np.array_split(order, num_shards)
  assignment = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
  return _sorted([np.concatenate([shard_list[s] for s in row]) for row in assignment])


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float, seed: int,
              min_client_size: int = 1) -> ClientIndices:
  """Label skew from a symmetric Dirichlet prior (Hsu et al., 2019, arXiv:1909.06335).

  For every label, the shares of its examples across the clients are drawn from
  Dir(alpha, ..., alpha): small alpha (e.g. 0.1) gives each client few dominant labels,
  large alpha (e.g. 100) approaches the IID split. Client sizes vary as well.

  A draw may leave clients (almost) empty when alpha is small; those clients are then
  topped up to `min_client_size` with random examples taken from the largest clients,
  which changes the draw as little as possible and always terminates (redrawing until
  no client is small can take forever for small alpha).

  Args:
    labels: Integer labels of all examples, shape (N,).
    num_clients: Number of clients.
    alpha: Concentration of the Dirichlet prior, > 0.
    seed: Seed of the draws.
    min_client_size: Smallest allowed client; num_clients * min_client_size <= N.

  Returns:
    One sorted index array per client.

  Raises:
    UserError: If `alpha` <= 0, the sizes cannot be met, or an argument is invalid.
  """
  labels = _check(labels, num_clients)
  if not alpha > 0:
    raise UserError(f'dirichlet partition needs alpha > 0, got {alpha}')
  if min_client_size < 1 or num_clients * min_client_size > len(labels):
    raise UserError(
        f'min_client_size must be >= 1 and num_clients * min_client_size <= {len(labels)}, '
        f'got {min_client_size}')
  rng = np.random.default_rng(seed)
  parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    shares = rng.dirichlet(np.full(num_clients, alpha))
    cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
    for client, piece in enumerate(np.split(members, cuts)):
      parts[client].append(piece)
  clients = [rng.permutation(np.concatenate(p)) for p in parts]

  # The largest client donates first (the lowest index among equals). A heap of
  # (-size, index) finds it in O(log n) instead of a scan of all clients (minutes for
  # thousands of clients); entries whose size is stale are skipped.
  largest = [(-len(c), i) for i, c in enumerate(clients)]
  heapq.heapify(largest)
  for small in range(num_clients):
    while len(clients[small]) < min_client_size:
      while -largest[0][0] != len(clients[largest[0][1]]):
        heapq.heappop(largest)
      donor = largest[0][1]
      # Donors are shuffled, so taking from the end takes random examples.
      need = min(min_client_size - len(clients[small]), len(clients[donor]) - min_client_size)
      clients[small] = np.concatenate([clients[small], clients[donor][-need:]])
      clients[donor] = clients[donor][:-need]
      for changed in (small, donor):
        heapq.heappush(largest, (-len(clients[changed]), changed))
  return _sorted(clients)


def partition(name: str, labels: np.ndarray, num_clients: int, seed: int,
              alpha: float = 0.5) -> ClientIndices:
  """Dispatches to a partitioner by name.

  Args:
    name: One of `PARTITIONS`.
    labels: Integer labels of all examples, shape (N,).
    num_clients: Number of clients.
    seed: Seed of the partitioner.
    alpha: Dirichlet concentration; used only by `dirichlet`.

  Returns:
    One sorted index array per client.

  Raises:
    UserError: For an unknown name or invalid arguments.
  """
  partitioners: dict[str, Callable[[], ClientIndices]] = {
      'iid': lambda: iid(labels, num_clients, seed),
      'shards': lambda: shards(labels, num_clients, seed),
      'dirichlet': lambda: dirichlet(labels, num_clients, alpha, seed),
  }
  if name not in partitioners:
    raise UserError(f'unknown partition {name!r}; choose one of {", ".join(PARTITIONS)}')
  return partitioners[name]()
