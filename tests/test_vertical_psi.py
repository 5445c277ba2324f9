"""Tests for the X25519 Diffie-Hellman private set intersection."""

from __future__ import annotations

import concurrent.futures
import hashlib
import random

import numpy as np
import pytest

from recipes.errors import UserError
from recipes.vertical import psi


def _random_id_lists(num_parties: int, shared: int, own: int,
                     seed: int) -> tuple[dict[str, list[str]], set[str]]:
  """Parties sharing `shared` IDs, each with `own` more, every list in its own order."""
  rng = random.Random(seed)
  universe = [f'cust-{value:08x}' for value in rng.sample(range(2**32), shared + num_parties * own)]
  common = universe[:shared]
  lists = {}
  for p in range(num_parties):
    ids = common + universe[shared + p * own:shared + (p + 1) * own]
    rng.shuffle(ids)
    lists[f'party{p}'] = ids
  return lists, set(common)


def test_blinding_commutes() -> None:
  a, b = psi.new_private_key(), psi.new_private_key()
  points = [psi.hash_to_point(f'id-{i}') for i in range(200)]
  assert psi.blind(a, psi.blind(b, points)) == psi.blind(b, psi.blind(a, points))
  # And it is not trivially the identity: blinding changes every point.
  assert all(x != y for x, y in zip(points, psi.blind(a, points)))


@pytest.mark.parametrize('num_parties, shared, own, seed', [
    (2, 50, 30, 0),
    (2, 1, 100, 1),
    (3, 120, 40, 2),
    (4, 75, 25, 3),
    (2, 60, 0, 4),  # Equal sets, different orders.
])
def test_returns_exactly_the_intersection_aligned(num_parties: int, shared: int, own: int,
                                                  seed: int) -> None:
  id_lists, common = _random_id_lists(num_parties, shared, own, seed)
  result = psi.private_set_intersection(id_lists)
  aligned = {name: [id_lists[name][row] for row in rows] for name, rows in result.rows.items()}
  assert aligned['party0'] == sorted(common)
  for ids in aligned.values():
    assert ids == aligned['party0']  # Row t is the same ID at every party.
  assert result.intersection_size == shared
  assert result.set_sizes == {name: len(ids) for name, ids in id_lists.items()}


def test_messages_contain_no_raw_id_or_plain_hash() -> None:
  id_lists, _ = _random_id_lists(3, shared=40, own=20, seed=5)
  transcript = psi.Transcript()
  psi.private_set_intersection(id_lists, transcript=transcript)
  assert len(transcript.messages) == 3 * 2 + 2  # 3 per session + one alignment per follower
  secrets = set()
  for ids in id_lists.values():
    for identifier in ids:
      raw = identifier.encode()
      secrets |= {raw, hashlib.sha256(raw).digest(), psi.hash_to_point(identifier)}
  for message in transcript:
    wire = b''.join(message.payload)
    leaked = [secret for secret in secrets if secret in wire]
    assert not leaked, f'{message.kind} from {message.sender} leaks {leaked[:3]}'


def test_blinded_values_are_shuffled_and_fresh_per_run() -> None:
  id_lists, _ = _random_id_lists(2, shared=30, own=10, seed=6)
  first, second = psi.Transcript(), psi.Transcript()
  psi.private_set_intersection(id_lists, transcript=first)
  psi.private_set_intersection(id_lists, transcript=second)
  # Fresh secret scalars: nothing from one run reappears in another.
  assert not set(first.messages[0].payload) & set(second.messages[0].payload)


def test_executor_gives_same_result_as_in_process() -> None:
  id_lists, common = _random_id_lists(2, shared=2_000, own=1_000, seed=7)
  with concurrent.futures.ThreadPoolExecutor(2) as executor:  # Exercises the chunking path.
    result = psi.private_set_intersection(id_lists, executor=executor)
  assert sorted(id_lists['party1'][row] for row in result.rows['party1']) == sorted(common)
  np.testing.assert_array_equal([id_lists['party0'][r] for r in result.rows['party0']],
                                [id_lists['party1'][r] for r in result.rows['party1']])


def test_duplicate_ids_are_a_user_error() -> None:
  with pytest.raises(UserError, match="party 'bank' lists ID 'c2' more than once"):
    psi.private_set_intersection({'shop': ['c1', 'c2'], 'bank': ['c2', 'c3', 'c2']})


def test_empty_intersection_is_a_user_error() -> None:
  with pytest.raises(UserError, match='intersection is empty'):
    psi.private_set_intersection({'shop': ['c1', 'c2'], 'bank': ['c3', 'c4']})


def test_empty_intersection_across_three_parties_is_a_user_error() -> None:
  # Every pair overlaps, but no ID is held by all three.
  with pytest.raises(UserError, match='intersection is empty'):
    psi.private_set_intersection({'a': ['x', 'y'], 'b': ['y', 'z'], 'c': ['z', 'x']})
