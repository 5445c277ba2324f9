"""Private set intersection (PSI) by commutative Diffie-Hellman blinding over X25519.

The parties learn which IDs they share, and in which order to line up those rows, without
showing each other the IDs they do not share. With a leader L (the label party) and every
other party F (a follower), the protocol of Meadows (1986) / Huberman, Franklin and Hogg
(1999) runs as:

1. L -> F: a*H(x) for each of L's IDs x, in a fresh random order (a: L's secret scalar).
2. F -> L: b*(a*H(x)) for the values of step 1, in the order received; and b*H(y) for each
   of F's IDs y, in a fresh random order (b: F's secret scalar).
3. L computes a*(b*H(y)). Scalar multiplication commutes, so a*b*H(x) == a*b*H(y) exactly
   when x == y: L matches its IDs to positions in F's step-2 list. With several followers
   L keeps the IDs matched by every one of them.
4. L -> F: for each common ID, in the joint row order, the position of its b*H(y) in F's
   step-2 list. F undoes its own shuffle and gets its local row indices.

No message carries a raw ID or an unkeyed hash, only points blinded by a secret scalar and,
in step 4, list positions. Security is against semi-honest parties under the decisional
Diffie-Hellman assumption. What leaks: set sizes; L learns each pairwise intersection (which
of its IDs each follower holds), followers learn only the final intersection. The joint row
order is the common IDs sorted: every party holds those IDs itself, so a canonical order
reveals nothing new, and it keeps runs reproducible whatever the protocol's randomness.

Why X25519 and why the exchange function (hand-written protocol, library primitives):
`cryptography` offers no raw elliptic-curve point arithmetic, but `X25519PrivateKey.exchange`
*is* scalar multiplication on the u-coordinate: X25519(k, u) = u([clamp(k)] P) for the point
P with u-coordinate u, on Curve25519 or on its quadratic twist (the Montgomery ladder accepts
any 32 bytes; both groups have a large prime-order subgroup). Hence X25519(a, X25519(b, u)) ==
X25519(b, X25519(a, u)), which `tests/test_vertical_psi.py` checks. H maps an ID to a u-coordinate
with domain-separated SHA-256. Clamped scalars are multiples of 8, which clears the small-order
component: two IDs collide only if their hashes differ by a small-order point (probability
~2^-250). OpenSSL's X25519 is ~30,000 operations per second per core here; the protocol needs
2(|X| + |Y|) of them, so an `executor` (a process pool) can spread them over cores; in a
deployment each party would use its own machine.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import os
import time
from typing import Iterator, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric import x25519

from recipes.errors import UserError

# Domain separation: the hash used here never equals a plain SHA-256 of an ID.
_HASH_DOMAIN = b'fedrecipes/vertical/psi/v1/hash-to-curve25519:'

# Positions in step-4 messages are sent as little-endian uint32.
_POSITION_DTYPE = np.dtype('<u4')

# Points per executor task: large enough to amortize pickling, small enough to balance
# the load over any number of workers.
_CHUNK_SIZE = 5_000


def hash_to_point(identifier: str) -> bytes:
  """Maps an ID to a Curve25519 u-coordinate (32 bytes) with domain-separated SHA-256."""
  return hashlib.sha256(_HASH_DOMAIN + identifier.encode('utf-8')).digest()


def new_private_key() -> bytes:
  """Returns a fresh random X25519 scalar as 32 raw bytes (clamped inside X25519)."""
  return x25519.X25519PrivateKey.generate().private_bytes_raw()


def blind(private_key: bytes, points: Sequence[bytes]) -> list[bytes]:
  """Multiplies each u-coordinate by the secret scalar: X25519(private_key, point)."""
  exchange = x25519.X25519PrivateKey.from_private_bytes(private_key).exchange
  from_bytes = x25519.X25519PublicKey.from_public_bytes
  return [exchange(from_bytes(point)) for point in points]


@dataclasses.dataclass(frozen=True)
class Message:
  """One transmission: who sent what to whom. The payload is all that crosses the wire."""

  sender: str
  receiver: str
  kind: str
  payload: tuple[bytes, ...]

  @property
  def num_bytes(self) -> int:
    return sum(len(item) for item in self.payload)


class Transcript:
  """Every message of a protocol run, in order, so tests and reports can inspect them."""

  def __init__(self) -> None:
    self.messages: list[Message] = []

  def send(self, sender: str, receiver: str, kind: str, payload: Sequence[bytes]) -> tuple[bytes, ...]:
    """Records a message and returns its payload, as the receiver would get it."""
    message = Message(sender, receiver, kind, tuple(payload))
    self.messages.append(message)
    return message.payload

  def __iter__(self) -> Iterator[Message]:
    return iter(self.messages)

  @property
  def num_bytes(self) -> int:
    return sum(message.num_bytes for message in self.messages)


@dataclasses.dataclass(frozen=True)
class PsiResult:
  """What each party learned: its local row indices of the common IDs, in the joint order.

  Attributes:
    rows: Party name -> indices into that party's own ID list; row t of every party is
      the same person.
    set_sizes: Party name -> number of IDs it brought.
    seconds: Wall-clock time of the protocol (including the cryptography).
    transcript: All messages exchanged.
  """

  rows: Mapping[str, np.ndarray]
  set_sizes: Mapping[str, int]
  seconds: float
  transcript: Transcript

  @property
  def intersection_size(self) -> int:
    return len(next(iter(self.rows.values())))


def secret_permutation(n: int) -> np.ndarray:
  """A uniformly random permutation of range(n) from the OS's cryptographic randomness.

  Sorting 64-bit random keys is ~50x faster than `random.SystemRandom().shuffle` for 100k
  items; a tie (probability ~n^2 / 2^65) only leaves two items in index order.
  """
  return np.argsort(np.frombuffer(os.urandom(8 * n), dtype=np.uint64), kind='stable')


def check_unique_ids(party: str, ids: Sequence[str]) -> None:
  """Raises `UserError` if a party lists an ID twice (PSI and row alignment need a set)."""
  counts = collections.Counter(ids)
  duplicates = [identifier for identifier, count in counts.items() if count > 1]
  if duplicates:
    raise UserError(
        f'party {party!r} lists ID {duplicates[0]!r} more than once ({len(duplicates)} duplicated '
        f'IDs); each party must list every ID once')


class _Blinder:
  """Runs `blind` in this process, or in chunks on an executor (same results either way)."""

  def __init__(self, executor: concurrent.futures.Executor | None) -> None:
    self._executor = executor

  def __call__(self, private_key: bytes, points: Sequence[bytes]) -> list[bytes]:
    if self._executor is None or len(points) <= _CHUNK_SIZE:
      return blind(private_key, points)
    chunks = [points[i:i + _CHUNK_SIZE] for i in range(0, len(points), _CHUNK_SIZE)]
    results = self._executor.map(blind, [private_key] * len(chunks), chunks)
    return [value for chunk in results for value in chunk]


class _Follower:
  """A non-leader party: answers step 1 and decodes step 4. Its key and shuffle stay local."""

  def __init__(self, name: str, ids: Sequence[str], blinder: _Blinder) -> None:
    self.name = name
    self._ids = ids
    self._blind = blinder
    self._key = new_private_key()
    self._order = secret_permutation(len(ids))

  def respond(self, leader_blinded: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Step 2: re-blinds the leader's values (same order) and blinds its own IDs (shuffled)."""
    points = [hash_to_point(self._ids[row]) for row in self._order]
    blinded = self._blind(self._key, list(leader_blinded) + points)
    return blinded[:len(leader_blinded)], blinded[len(leader_blinded):]

  def rows_from_positions(self, message: bytes) -> np.ndarray:
    """Step 4: positions in its step-2 list -> its own row indices."""
    positions = np.frombuffer(message, dtype=_POSITION_DTYPE)
    return self._order[positions].astype(np.int64)


class _Leader:
  """The leader: blinds its IDs per follower, matches, and decides the joint row order."""

  def __init__(self, name: str, ids: Sequence[str], blinder: _Blinder) -> None:
    self.name = name
    self._ids = ids
    self._blind = blinder
    self._points = [hash_to_point(identifier) for identifier in ids]
    # Per follower: leader row -> position in that follower's step-2 list of b*H(y).
    self.matches: dict[str, dict[int, int]] = {}

  def run_session(self, follower: _Follower, transcript: Transcript) -> None:
    """Steps 1-3 with one follower, under fresh randomness."""
    key = new_private_key()
    order = secret_permutation(len(self._ids)).tolist()
    step1 = transcript.send(self.name, follower.name, 'a*H(leader ids), shuffled',
                            self._blind(key, [self._points[row] for row in order]))
    reblinded, follower_blinded = follower.respond(step1)
    reblinded = transcript.send(follower.name, self.name, 'b*a*H(leader ids), same order', reblinded)
    follower_blinded = transcript.send(follower.name, self.name, 'b*H(follower ids), shuffled',
                                       follower_blinded)
    position_of = {value: position for position, value in enumerate(self._blind(key, follower_blinded))}
    self.matches[follower.name] = {
        order[t]: position_of[value] for t, value in enumerate(reblinded) if value in position_of
    }

  def common_rows(self) -> list[int]:
    """Leader rows matched by every follower, in the joint order (sorted by ID)."""
    common = set.intersection(*(set(matched) for matched in self.matches.values()))
    return sorted(common, key=lambda row: self._ids[row])


def private_set_intersection(
    id_lists: Mapping[str, Sequence[str]],
    *,
    executor: concurrent.futures.Executor | None = None,
    transcript: Transcript | None = None,
) -> PsiResult:
  """Finds the IDs every party holds, revealing no other ID (see the module docstring).

  Args:
    id_lists: Party name -> that party's IDs, in its own order. The first party leads
      (in the vertical recipe: the label party). At least two parties.
    executor: Runs the X25519 work, e.g. a `ProcessPoolExecutor` (threads do not help:
      the exchange holds the GIL); None runs it in this process. Pass one that is already
      running: starting worker processes takes about a second.
    transcript: Where to record the messages; a fresh one if None.

  Returns:
    Each party's local row indices of the common IDs, aligned: row t is the same ID for
    every party.

  Raises:
    UserError: A party lists an ID twice, or the intersection is empty.
  """
  if len(id_lists) < 2:
    raise ValueError(f'PSI needs at least two parties, got {len(id_lists)}')
  for name, ids in id_lists.items():
    check_unique_ids(name, ids)
  transcript = Transcript() if transcript is None else transcript
  start = time.perf_counter()
  blinder = _Blinder(executor)
  (leader_name, leader_ids), *others = id_lists.items()
  leader = _Leader(leader_name, leader_ids, blinder)
  followers = [_Follower(name, ids, blinder) for name, ids in others]
  for follower in followers:
    leader.run_session(follower, transcript)
  common = leader.common_rows()
  if not common:
    raise UserError(
        f'private set intersection is empty: parties {", ".join(id_lists)} share no ID, so no '
        'row can be aligned; check that they use the same kind of IDs (or raise --overlap)')
  rows = {leader.name: np.asarray(common, dtype=np.int64)}
  for follower in followers:
    matches = leader.matches[follower.name]
    positions = np.asarray([matches[row] for row in common], dtype=_POSITION_DTYPE)
    (message,) = transcript.send(leader.name, follower.name, 'alignment: positions in step-2 list',
                                 [positions.tobytes()])
    rows[follower.name] = follower.rows_from_positions(message)
  return PsiResult(
      rows=rows,
      set_sizes={name: len(ids) for name, ids in id_lists.items()},
      seconds=time.perf_counter() - start,
      transcript=transcript,
  )
