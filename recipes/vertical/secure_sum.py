"""Secure sum of the parties' embeddings with pairwise additive masks (secure aggregation).

Each pair of feature parties (i, j), i < j, agrees on a 32-byte key by X25519 key
agreement followed by HKDF-SHA256 (Bonawitz et al., CCS 2017, without the dropout
recovery: in vertical learning every party must be present for every batch anyway).
For round r, the key drives ChaCha20 to a mask m_ij(r) of the embedding's shape. Party i
sends

    y_i = q(e_i) + sum_{j > i} m_ij(r) - sum_{j < i} m_ji(r)   (mod 2^64),

and the coordinator adds the y_i: each mask appears once with + and once with -, so the
sum is exactly sum_i q(e_i). A single y_i is uniformly random to anyone without the pair
keys, and a fresh round number gives fresh masks. The coordinator must hold no embedding
of its own (else it could subtract it) and must not collude with a feature party.

Why fixed point: float masks cancel only approximately (rounding depends on the order of
additions and the masks' magnitude swamps the embedding's low bits). Integers in the ring
Z_(2^64) cancel exactly, so embeddings are encoded as q(e) = round(e * 2^fraction_bits)
in two's complement; the decoded sum differs from the float sum only by the rounding,
at most num_parties * 2^-(fraction_bits + 1) per entry.

Hand-written because no installed library offers secure aggregation outside TFF's
federated (horizontal) computations; the primitives (X25519, HKDF, ChaCha20) come from
`cryptography`.
"""

from __future__ import annotations

import os
from typing import Protocol, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DEFAULT_FRACTION_BITS = 24


def encode(values: np.ndarray, fraction_bits: int = DEFAULT_FRACTION_BITS) -> np.ndarray:
  """Floats -> fixed point in Z_(2^64) (uint64 holding two's complement).

  Raises:
    ValueError: A value is not finite or too large for the ring (|x| >= 2^(62 - fraction_bits)).
  """
  values = np.asarray(values, dtype=np.float64)
  limit = 2.0**(62 - fraction_bits)
  if not np.all(np.isfinite(values)) or np.any(np.abs(values) >= limit):
    raise ValueError(f'cannot encode values outside (-{limit:g}, {limit:g}) in fixed point')
  return np.rint(values * 2.0**fraction_bits).astype(np.int64).view(np.uint64)


def decode(encoded: np.ndarray, fraction_bits: int = DEFAULT_FRACTION_BITS) -> np.ndarray:
  """Fixed point in Z_(2^64) -> floats (the inverse of `encode` up to rounding)."""
  return np.asarray(encoded, dtype=np.uint64).view(np.int64).astype(np.float64) / 2.0**fraction_bits


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
  by the 12-byte nonce, here the round number: one key never reuses a keystream.
  """
  count = int(np.prod(shape, dtype=np.int64))
  nonce = b'\0' * 4 + round_number.to_bytes(12, 'little')
  keystream = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(b'\0' * (8 * count))
  return np.frombuffer(keystream, dtype='<u8').reshape(shape)


class MaskingParty:
  """One feature party's side of secure aggregation: its key pair and its pair keys."""

  def __init__(self, index: int) -> None:
    self.index = index
    self._private_key = x25519.X25519PrivateKey.generate()
    self.pair_keys: dict[int, bytes] = {}

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
    """Returns q(embedding) + masks to higher parties - masks from lower parties (mod 2^64)."""
    masked = encode(embedding, fraction_bits)
    # uint64 arithmetic in numpy wraps around: exactly addition modulo 2^64.
    for peer, key in self.pair_keys.items():
      mask = pair_mask(key, round_number, masked.shape)
      masked = masked + mask if peer > self.index else masked - mask
    return masked


class Fusion(Protocol):
  """Combines the parties' embeddings into the one tensor the coordinator may see."""

  secure: bool

  def __call__(self, embeddings: Sequence[np.ndarray]) -> np.ndarray:
    ...


class PlainSum:
  """Unprotected sum fusion (`--secure_aggregation=false`): the coordinator sees each embedding."""

  secure = False

  def __call__(self, embeddings: Sequence[np.ndarray]) -> np.ndarray:
    return np.sum([np.asarray(e, dtype=np.float64) for e in embeddings], axis=0)


class SecureSum:
  """Sum fusion through pairwise masks; the coordinator learns only the (fixed-point) sum.

  The simulation runs all parties in one process, but keeps their roles apart: each
  `MaskingParty` masks its own embedding with its own keys, and `combine` (the
  coordinator) touches only masked vectors. Each call is a new round with fresh masks.
  """

  secure = True

  def __init__(self, num_parties: int, *, fraction_bits: int = DEFAULT_FRACTION_BITS,
               session: bytes | None = None) -> None:
    if num_parties < 2:
      raise ValueError('secure aggregation needs at least two feature parties')
    self.fraction_bits = fraction_bits
    self.parties = [MaskingParty(index) for index in range(num_parties)]
    # The public keys travel through the coordinator; the session salt binds keys to this run.
    session = os.urandom(16) if session is None else session
    public_keys = [party.public_key for party in self.parties]
    for party in self.parties:
      party.agree(public_keys, session)
    self.round_number = 0

  def mask_all(self, embeddings: Sequence[np.ndarray]) -> list[np.ndarray]:
    """What the parties send for the next round: one masked vector each."""
    if len(embeddings) != len(self.parties):
      raise ValueError(f'expected {len(self.parties)} embeddings, got {len(embeddings)}')
    self.round_number += 1
    return [party.mask(embedding, self.round_number, self.fraction_bits)
            for party, embedding in zip(self.parties, embeddings)]

  def combine(self, masked: Sequence[np.ndarray]) -> np.ndarray:
    """The coordinator's step: adds the masked vectors (mod 2^64) and decodes the sum."""
    total = masked[0]
    for vector in masked[1:]:
      total = total + vector
    return decode(total, self.fraction_bits)

  def __call__(self, embeddings: Sequence[np.ndarray]) -> np.ndarray:
    return self.combine(self.mask_all(embeddings))
