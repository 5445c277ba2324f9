"""Tests for the X25519 Diffie-Hellman private set intersection and its security claims.

Each claim of the module docstring (and of the README's threat model) has a test here that
fails when the property is broken: secret shuffles, no ID or unkeyed hash on the wire,
every point on the curve (no curve/twist bit), every received message checked.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import random

import numpy as np
import pytest

from core.errors import UserError
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
      secrets |= {raw, identifier.encode('utf-16-le'), psi.hash_to_point(identifier),
                  *(hashlib.new(name, raw).digest()[:16]
                    for name in ('md5', 'sha1', 'sha256', 'sha512', 'blake2b', 'sha3_256'))}
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


def test_secret_permutation_is_not_the_identity_and_differs_between_calls() -> None:
  first, second = psi.secret_permutation(1_000), psi.secret_permutation(1_000)
  np.testing.assert_array_equal(np.sort(first), np.arange(1_000))
  assert np.mean(first == np.arange(1_000)) < 0.05
  assert np.mean(first == second) < 0.05


def _fixed_keys(monkeypatch: pytest.MonkeyPatch) -> bytes:
  """Makes every party use one known scalar, so a test can recompute the blinded values."""
  key = bytes(range(32))
  monkeypatch.setattr(psi, 'new_private_key', lambda: key)
  return key


def _step(transcript: psi.Transcript, start: str) -> tuple[bytes, ...]:
  (message,) = [m for m in transcript if m.kind.startswith(start)]
  return message.payload


def test_both_parties_send_their_lists_in_a_fresh_secret_order(monkeypatch: pytest.MonkeyPatch) -> None:
  key = _fixed_keys(monkeypatch)
  id_lists, _ = _random_id_lists(2, shared=200, own=100, seed=8)
  runs = [psi.Transcript(), psi.Transcript()]
  for transcript in runs:
    psi.private_set_intersection(id_lists, transcript=transcript)
  for start, party in (('a*H', 'party0'), ('b*H', 'party1')):
    in_list_order = psi.blind(key, [psi.hash_to_point(i) for i in id_lists[party]])
    first, second = (_step(transcript, start) for transcript in runs)
    assert sorted(first) == sorted(in_list_order)  # The same values...
    assert np.mean([a == b for a, b in zip(first, in_list_order)]) < 0.05  # ...not in list order,
    assert np.mean([a == b for a, b in zip(first, second)]) < 0.05  # nor in the last run's order.


def test_step4_positions_are_not_the_follower_rows() -> None:
  id_lists, _ = _random_id_lists(2, shared=300, own=50, seed=9)
  positions = []
  for _ in range(2):
    transcript = psi.Transcript()
    result = psi.private_set_intersection(id_lists, transcript=transcript)
    (payload,) = _step(transcript, 'alignment')
    positions.append(np.frombuffer(payload, dtype='<u4'))
    # Positions point into the follower's shuffled list, so they say nothing about its rows.
    assert np.mean(positions[-1] == result.rows['party1']) < 0.05
  assert np.mean(positions[0] == positions[1]) < 0.05


def test_hash_to_point_lands_on_the_curve_for_every_id() -> None:
  ids = [f'cust-{i:08x}' for i in range(2_000)]
  points = [psi.hash_to_point(i) for i in ids]
  assert len(set(points)) == len(ids)
  assert all(psi.curve_or_twist(int.from_bytes(p, 'little')) == 1 for p in points)
  # A plain digest would land on the twist for about half of them: the bit this avoids.
  digests = [hashlib.sha256(i.encode()).digest() for i in ids]
  on_twist = np.mean([psi.curve_or_twist(int.from_bytes(d, 'little') & (2**255 - 1)) == -1
                      for d in digests])
  assert 0.4 < on_twist < 0.6


def _twist_bits(transcript: psi.Transcript) -> list[int]:
  return [psi.curve_or_twist(int.from_bytes(point, 'little'))
          for message in transcript if not message.kind.startswith('alignment')
          for point in message.payload]


def test_no_message_carries_a_curve_or_twist_bit_of_the_ids() -> None:
  # The attack of issue 11: two leader sets of the same size and the same intersection,
  # differing in one ID. If points could lie on the twist, the number of twist points in
  # step 1 would differ between the two; here every point is on the curve, always.
  common = [f'common-{i}' for i in range(100)]
  follower = common + [f'follower-{i}' for i in range(60)]
  counts = []
  for extra in range(8):
    leader = common + [f'leader-{i}' for i in range(40)] + [f'extra-{extra}']
    transcript = psi.Transcript()
    psi.private_set_intersection({'party0': leader, 'party1': follower}, transcript=transcript)
    bits = _twist_bits(transcript)
    assert len(bits) == 2 * len(leader) + len(follower)
    counts.append(sum(bit == 1 for bit in bits))
  assert counts == [2 * 141 + 160] * 8


class _Tampering(psi.Transcript):
  """Alters the first message whose kind starts with `kind`, as a faulty or hostile sender."""

  def __init__(self, kind: str, change) -> None:
    super().__init__()
    self._kind, self._change, self.done = kind, change, False

  def send(self, sender, receiver, kind, payload):
    payload = super().send(sender, receiver, kind, payload)
    if kind.startswith(self._kind) and not self.done:
      self.done = True
      return tuple(self._change(list(payload)))
    return payload


def _positions(change):
  def apply(payload: list[bytes]) -> list[bytes]:
    return [change(np.frombuffer(payload[0], dtype='<u4').copy()).astype('<u4').tobytes()]
  return apply


_TWIST_POINT = next(d for d in (hashlib.sha256(bytes([i])).digest() for i in range(100))
                    if psi.curve_or_twist(int.from_bytes(d, 'little') & (2**255 - 1)) == -1
                    and d[31] < 0x80)


@pytest.mark.parametrize('kind, change, message', [
    ('alignment', _positions(lambda p: np.append(p[:-1], 10**6)), 'past the end'),
    ('alignment', _positions(lambda p: np.append(p[:-1], p[0])), 'repeated'),
    ('alignment', _positions(lambda p: np.concatenate([p, p])), 'positions, but'),
    ('alignment', _positions(lambda p: p[:0]), 'positions, but'),
    ('alignment', lambda payload: [payload[0][:-1]], 'uint32'),
    ('alignment', lambda payload: payload * 2, 'uint32'),
    ('a*H', lambda payload: [_TWIST_POINT] + payload[1:], 'not a valid Curve25519 point'),
    ('a*H', lambda payload: [bytes(payload[0][:31]) + bytes([payload[0][31] | 0x80])] + payload[1:],
     'not a valid Curve25519 point'),
    ('a*H', lambda payload: [bytes(32)] + payload[1:], 'not a valid Curve25519 point'),
    ('a*H', lambda payload: [payload[0][:31]] + payload[1:], 'not a valid Curve25519 point'),
    ('a*H', lambda payload: [payload[1]] + payload[1:], 'repeated'),
    ('a*H', lambda payload: [], 'empty'),
    ('b*a*H', lambda payload: payload[1:], 're-blinded values'),
    ('b*a*H', lambda payload: [_TWIST_POINT] + payload[1:], 'not a valid Curve25519 point'),
    ('b*H', lambda payload: [payload[1]] + payload[1:], 'repeated'),
    ('b*H', lambda payload: [(psi.P + 1).to_bytes(32, 'little')] + payload[1:],
     'not a valid Curve25519 point'),
])
def test_tampered_messages_are_rejected(kind: str, change, message: str) -> None:
  id_lists, _ = _random_id_lists(2, shared=40, own=20, seed=10)
  transcript = _Tampering(kind, change)
  with pytest.raises(psi.ProtocolError, match=message):
    psi.private_set_intersection(id_lists, transcript=transcript)
  assert transcript.done


def test_small_order_points_are_rejected() -> None:
  # u = 0 (the 2-torsion point, Legendre symbol 0) and the other small-order u-coordinates
  # on the curve: blinding them gives all zeros, which must not pass silently.
  small_order = [0, 1, 325606250916557431795983626356110631294008115727848805560023387167927233504,
                 39382357235489614581723060781553021112529911719440698176882885853963445705823]
  for u in small_order:
    with pytest.raises(psi.ProtocolError):
      psi.blind(psi.new_private_key(), [u.to_bytes(32, 'little')], check=True)
