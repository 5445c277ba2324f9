"""Tests of the client partitioners in tasks/partition.py."""

import numpy as np
import pytest

from core.errors import UserError
from tasks import partition as P

# Uneven class sizes (about 200 each, not multiples of the shard size) on purpose.
LABELS = np.random.default_rng(42).integers(0, 10, size=2_000)
NUM_CLASSES = 10


def _run(name: str, labels: np.ndarray = LABELS, num_clients: int = 50, seed: int = 0,
         alpha: float = 0.5) -> list[np.ndarray]:
  return P.partition(name, labels, num_clients, seed, alpha)


def _label_fractions(labels: np.ndarray, clients: list[np.ndarray]) -> np.ndarray:
  counts = np.stack([np.bincount(labels[c], minlength=NUM_CLASSES) for c in clients])
  return counts / counts.sum(axis=1, keepdims=True)


def _mean_total_variation(labels: np.ndarray, clients: list[np.ndarray]) -> float:
  """Average distance between each client's label distribution and the global one."""
  overall = np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
  return float(np.mean(0.5 * np.abs(_label_fractions(labels, clients) - overall).sum(axis=1)))


@pytest.mark.parametrize('name', P.PARTITIONS)
@pytest.mark.parametrize('num_clients', [1, 7, 50, 400])
def test_every_example_assigned_exactly_once(name, num_clients):
  clients = _run(name, num_clients=num_clients, alpha=0.1)
  assert len(clients) == num_clients
  assert all(len(c) >= 1 for c in clients)
  assert sum(len(c) for c in clients) == len(LABELS)
  everything = np.concatenate(clients)
  np.testing.assert_array_equal(np.sort(everything), np.arange(len(LABELS)))
  assert all(c.dtype == np.int64 and np.all(np.diff(c) > 0) for c in clients)


@pytest.mark.parametrize('name', P.PARTITIONS)
def test_seeded_and_deterministic(name):
  first, again, other = _run(name, seed=3), _run(name, seed=3), _run(name, seed=4)
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_iid_balanced_sizes_and_labels():
  clients = _run('iid', num_clients=20)
  sizes = [len(c) for c in clients]
  assert max(sizes) - min(sizes) <= 1
  # About 100 examples each: sampling noise alone gives a distance near 0.12.
  assert _mean_total_variation(LABELS, clients) < 0.2


def test_shards_give_at_most_two_labels_per_client():
  clients = _run('shards', num_clients=50)
  labels_per_client = [len(np.unique(LABELS[c])) for c in clients]
  assert max(labels_per_client) <= 2
  assert labels_per_client.count(2) >= 0.8 * len(clients)
  # 100 shards of about 20 examples: clients of nearly equal size.
  sizes = [len(c) for c in clients]
  assert max(sizes) - min(sizes) <= 8
  assert _mean_total_variation(LABELS, clients) > 0.6


def test_shards_per_client_is_respected():
  clients = P.shards(LABELS, 20, seed=0, shards_per_client=1)
  assert all(len(np.unique(LABELS[c])) == 1 for c in clients)


def test_shards_with_fewer_shards_than_labels_still_covers_everything():
  clients = _run('shards', num_clients=2)  # 4 shards for 10 labels: shards mix labels.
  np.testing.assert_array_equal(np.sort(np.concatenate(clients)), np.arange(len(LABELS)))
  assert sorted(len(c) for c in clients) == [1_000, 1_000]


def test_dirichlet_skew_follows_alpha():
  skewed = _run('dirichlet', num_clients=20, alpha=0.05)
  near_iid = _run('dirichlet', num_clients=20, alpha=1_000.0)
  dominant_skewed = _label_fractions(LABELS, skewed).max(axis=1).mean()
  dominant_iid = _label_fractions(LABELS, near_iid).max(axis=1).mean()
  assert dominant_skewed > 0.6
  assert dominant_iid < 0.25
  assert _mean_total_variation(LABELS, skewed) > 0.6
  assert _mean_total_variation(LABELS, near_iid) < 0.2


def test_dirichlet_never_leaves_clients_below_the_minimum():
  clients = _run('dirichlet', num_clients=400, alpha=0.01)
  assert min(len(c) for c in clients) >= 1
  clients = P.dirichlet(LABELS, 100, alpha=0.01, seed=0, min_client_size=10)
  assert min(len(c) for c in clients) >= 10
  assert sum(len(c) for c in clients) == len(LABELS)


@pytest.mark.parametrize('kwargs, message', [
    (dict(name='iid', num_clients=0), 'num_clients'),
    (dict(name='shards', num_clients=2_001), 'num_clients'),
    (dict(name='shards', num_clients=1_001), 'shards partition needs'),
    (dict(name='dirichlet', alpha=0.0), 'alpha > 0'),
    (dict(name='dirichlet', alpha=-1.0), 'alpha > 0'),
    (dict(name='pathological'), 'unknown partition'),
    (dict(name='iid', labels=LABELS.astype(np.float32)), 'integer'),
    (dict(name='iid', labels=LABELS.reshape(2, -1)), '1-D'),
])
def test_invalid_arguments_raise_user_error(kwargs, message):
  with pytest.raises(UserError, match=message):
    _run(**kwargs)


def test_dirichlet_rejects_impossible_minimum():
  with pytest.raises(UserError, match='min_client_size'):
    P.dirichlet(LABELS, 100, alpha=1.0, seed=0, min_client_size=21)
