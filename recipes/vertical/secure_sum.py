"""Secure sum of the non-label parties' embeddings with pairwise additive masks.

Roles (see the README's "Threat model"): the label party is also the coordinator; it runs
the top model and adds its *own* embedding to the sum in the clear, outside the masking.
Only the other parties (the masking parties, at least two) take part in the secure sum.

Each pair of masking parties (i, j), i < j, agrees on a 32-byte key by X25519 key
agreement followed by HKDF-SHA256 (Bonawitz et al., CCS 2017, without the dropout
recovery: in vertical learning every party must be present for every batch anyway).
For round r, the key drives ChaCha20 to a mask m_ij(r) of the embedding's shape. Party i
sends

    y_i = q(e_i) + sum_{j > i} m_ij(r) - sum_{j < i} m_ji(r)   (mod 2^64),

and the coordinator adds the y_i: each mask appears once with + and once with -, so the
sum is exactly sum_i q(e_i). A single y_i is uniformly random to anyone without the pair
keys. What this protects and what it does not (semi-honest parties):
* the coordinator learns the sum of the masking parties' embeddings, never one of them;
  with a single masking party the "sum" would be that party's embedding, so
  `SecureSum` refuses fewer than two;
* a masking party must never reuse a round's masks: two vectors masked under the same
  round differ by e - e', exactly. `MaskingParty.mask` refuses a round number it has
  used, and one that goes backwards;
* public keys travel through the coordinator unauthenticated: a coordinator that swapped
  them (an active attack) could read every embedding. Fine for semi-honest parties only;
  a deployment would sign the keys or exchange them out of band;
* no collusion between the coordinator and a masking party (together they remove that
  party's masks and learn the sum of the others).

Why fixed point: float masks cancel only approximately (rounding depends on the order of
additions and the masks' magnitude swamps the embedding's low bits). Integers in the ring
Z_(2^64) cancel exactly, so embeddings are encoded as q(e) = round(e * 2^fraction_bits)
in two's complement. The sum of n encodings must not wrap around: each value must satisfy
|e| < 2^(62 - fraction_bits) / n, so the true sum stays below 2^62 in magnitude; `decode_sum`
rejects a sum outside that range (a wrap-around, a missing or tampered vector: those give
uniformly random words, each outside the range with probability 1/2). The decoded sum
differs from the float sum only by the rounding, at most n * 2^-(fraction_bits + 1) per entry.

Hand-written because no installed library offers secure aggregation outside TFF's
federated (horizontal) computations; the primitives (X25519, HKDF, ChaCha20) come from
`cryptography`.
"""

from __future__ import annotations

import os
from typing import Protocol, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
import numpy as np

from recipes.vertical.transcript import Transcript

DEFAULT_FRACTION_BITS = 24
# Honest sums stay below 2^62 in magnitude; the ring holds 2^63.
_SUM_BITS = 62
COORDINATOR = 'coordinator'


class FixedPointRangeError(ValueError):
  """A value cannot be encoded, or a decoded sum is outside the range honest inputs give."""


class RoundReuseError(ValueError):
  """A masking party was asked to mask under a round number it already used (or an older one)."""


def value_limit(num_parties: int, fraction_bits: int = DEFAULT_FRACTION_BITS) -> float:
  """Largest magnitude (exclusive) one of `num_parties` summed values may have."""
  return 2.0**(_SUM_BITS - fraction_bits) / num_parties


def encode(values: np.ndarray, fraction_bits: int = DEFAULT_FRACTION_BITS, *,
           num_parties: int = 1) -> np.ndarray:
  """Floats -> fixed point in Z_(2^64) (uint64 holding two's complement).

  Args:
    values: The floats.
    fraction_bits: Bits after the binary point.
    num_parties: How many such encodings will be summed: the range shrinks with it, so
      the sum cannot wrap around.

  Raises:
    FixedPointRangeError: A value is not finite or |value| >= `value_limit(num_parties)`.
  """
  values = np.asarray(values, dtype=np.float64)
  limit = value_limit(num_parties, fraction_bits)
  if not np.all(np.isfinite(values)) or np.any(np.abs(values) >= limit):
    raise FixedPointRangeError(
        f'cannot encode values outside (-{limit:g}, {limit:g}) in fixed point for a sum of '
        f'{num_parties}')
  return np.rint(values * 2.0**fraction_bits).astype(np.int64).view(np.uint64)


def decode(encoded: np.ndarray, fraction_bits: int = DEFAULT_FRACTION_BITS) -> np.ndarray:
  """Fixed point in Z_(2^64) -> floats (the inverse of `encode` up to rounding)."""
  return np.asarray(encoded, dtype=np.uint64).view(np.int64).astype(np.float64) / 2.0**fraction_bits


def decode_sum(total: np.ndarray, fraction_bits: int = DEFAULT_FRACTION_BITS) -> np.ndarray:
  """Decodes a sum of encodings after checking it is in the range honest inputs give.

  Raises:
    FixedPointRangeError: Some entry has magnitude >= 2^62 (in fixed-point units).
  """
  signed = np.asarray(total, dtype=np.uint64).view(np.int64)
  if np.any((signed >= 2**_SUM_BITS) | (signed < -2**_SUM_BITS)):
    raise FixedPointRangeError('the masked sum is out of range: a vector is missing or was '
                               'altered, or the values overflowed')
  return signed.astype(np.float64) / 2.0**fraction_bits


def derive_pair_key(own_key: x25519.X25519PrivateKey, peer_public: bytes, *, pair: tuple[int, int],
                    session: bytes) -> bytes:
  """X25519 agreement + HKDF: the 32-byte mask key both members of `pair` derive alike."""
  shared = own_key.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
  low, high = sorted(pair)
  info = f'fedrecipes/vertical/secure-sum/pair/{low}-{high}'.encode()
  return HKDF(algorithm=hashes.SHA256(), length=32, salt=session, info=info).derive(shared)


def pair_mask(key: bytes, round_number: int, shape: Sequence[int]) -> np.ndarray:
  """The mask of one pair for one round: ChaCha20 keystream read as uint64s.

  cryptography's 16-byte ChaCha20 nonce is a 4-byte block counter (starting at 0) followed
  by the 12-byte nonce, here the round number: one key never reuses a keystream as long as
  round numbers are not reused (`MaskingParty` enforces it).
  """
  count = int(np.prod(shape, dtype=np.int64))
  nonce = b'\0' * 4 + round_number.to_bytes(12, 'little')
  keystream = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(b'\0' * (8 * count))
  return np.frombuffer(keystream, dtype='<u8').reshape(shape)


class MaskingParty:
  """One masking party's side of secure aggregation: its key pair, pair keys, last round."""

  def __init__(self, index: int) -> None:
    self.index = index
    self._private_key = x25519.X25519PrivateKey.generate()
    self.pair_keys: dict[int, bytes] = {}
    self.last_round = 0  # Rounds start at 1.

  @property
  def public_key(self) -> bytes:
    return self._private_key.public_key().public_bytes_raw()

  def agree(self, public_keys: Sequence[bytes], session: bytes) -> None:
    """Derives a key with every other party from their public keys (index = party)."""
    self.pair_keys = {
        peer: derive_pair_key(self._private_key, public, pair=(self.index, peer), session=session)
        for peer, public in enumerate(public_keys) if peer != self.index
    }

  def mask(self, embedding: np.ndarray, round_number: int, fraction_bits: int) -> np.ndarray:
    """Returns q(embedding) + masks to higher parties - masks from lower parties (mod 2^64).

    Raises:
      RoundReuseError: `round_number` is not larger than every round masked before.
      FixedPointRangeError: The embedding is outside the range a sum of all parties allows.
    """
    if round_number <= self.last_round:
      raise RoundReuseError(f'party {self.index} already masked round {self.last_round}; '
                            f'refusing round {round_number} (reused masks reveal e - e\')')
    masked = encode(embedding, fraction_bits, num_parties=len(self.pair_keys) + 1)
    self.last_round = round_number
    # uint64 arithmetic in numpy wraps around: exactly addition modulo 2^64.
    for peer, key in self.pair_keys.items():
      mask = pair_mask(key, round_number, masked.shape)
      masked = masked + mask if peer > self.index else masked - mask
    return masked


class Fusion(Protocol):
  """Brings the masking parties' embeddings to the coordinator as one sum."""

  secure: bool

  def __call__(self, embeddings: Sequence[np.ndarray]) -> np.ndarray:
    ...


def _party_name(index: int) -> str:
  # Masking party k is recipe party k + 1: party 0 is the label party (the coordinator).
  return f'party{index + 1}'


class PlainSum:
  """Unprotected sum fusion (`--secure_aggregation=false`): the coordinator sees each embedding."""

  secure = False

  def __init__(self, transcript: Transcript | None = None) -> None:
    self.transcript = transcript

  def __call__(self, embeddings: Sequence[np.ndarray]) -> np.ndarray:
    received = [np.asarray(e, dtype=np.float64) for e in embeddings]
    if self.transcript is not None:
      for index, value in enumerate(received):
        self.transcript.send(_party_name(index), COORDINATOR, 'embedding (plain)', [value.tobytes()])
    return np.sum(received, axis=0)


class SecureSum:
  """Sum fusion through pairwise masks; the coordinator learns only the (fixed-point) sum.

  The simulation runs all parties in one process, but keeps their roles apart: each
  `MaskingParty` masks its own embedding with its own keys, and `combine` (the
  coordinator) touches only masked vectors. Each call is a new round with fresh masks.
  """

  secure = True

  def __init__(self, num_parties: int, *, fraction_bits: int = DEFAULT_FRACTION_BITS,
               session: bytes | None = None, transcript: Transcript | None = None) -> None:
    """Sets up the masking parties and their pair keys.

    Args:
      num_parties: Masking parties (the parties other than the label party), at least 2.
      fraction_bits: Fixed-point precision.
      session: Salt binding the pair keys to this run; fresh random bytes if None.
      transcript: Records the public keys and every masked vector sent to the coordinator.

    Raises:
      ValueError: Fewer than two masking parties.
    """
    if num_parties < 2:
      raise ValueError('secure aggregation needs at least two masking parties: with one, '
                       'the coordinator would receive that party\'s embedding')
    self.fraction_bits = fraction_bits
    self.transcript = transcript
    self.parties = [MaskingParty(index) for index in range(num_parties)]
    # The public keys travel through the coordinator, unauthenticated (semi-honest model);
    # the session salt binds the pair keys to this run.
    session = os.urandom(16) if session is None else session
    public_keys = [party.public_key for party in self.parties]
    if transcript is not None:
      for index, key in enumerate(public_keys):
        transcript.send(_party_name(index), COORDINATOR, 'X25519 public key', [key])
    for party in self.parties:
      party.agree(public_keys, session)
    self.round_number = 0

  def mask_all(self, embeddings: Sequence[np.ndarray]) -> list[np.ndarray]:
    """What the parties send for the next round: one masked vector each."""
    if len(embeddings) != len(self.parties):
      raise ValueError(f'expected {len(self.parties)} embeddings, got {len(embeddings)}')
    self.round_number += 1
    masked = [party.mask(embedding, self.round_number, self.fraction_bits)
              for party, embedding in zip(self.parties, embeddings)]
    if self.transcript is not None:
      for index, vector in enumerate(masked):
        self.transcript.send(_party_name(index), COORDINATOR, 'masked embedding', [vector.tobytes()])
    return masked

  def combine(self, masked: Sequence[np.ndarray]) -> np.ndarray:
    """The coordinator's step: adds the masked vectors (mod 2^64) and decodes the sum.

    Raises:
      ValueError: A vector is missing.
      FixedPointRangeError: The sum is out of range (a vector altered, or an overflow).
    """
    if len(masked) != len(self.parties):
      raise ValueError(f'expected {len(self.parties)} masked vectors, got {len(masked)}')
    total = masked[0]
    for vector in masked[1:]:
      total = total + vector
    return decode_sum(total, self.fraction_bits)

  def __call__(self, embeddings: Sequence[np.ndarray]) -> np.ndarray:
    return self.combine(self.mask_all(embeddings))
