"""Tests for pairwise-masked secure summation of embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.vertical import secure_sum


def _embeddings(num_parties: int, seed: int, shape: tuple[int, ...] = (16, 8)) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.normal(scale=3.0, size=shape).astype(np.float32) for _ in range(num_parties)]


@pytest.mark.parametrize('num_parties', [2, 3, 4])
def test_masked_sum_equals_plain_sum(num_parties: int) -> None:
  embeddings = _embeddings(num_parties, seed=num_parties)
  fusion = secure_sum.SecureSum(num_parties)
  masked = fusion.mask_all(embeddings)
  total = fusion.combine(masked)
  # Exactly the sum of the fixed-point encodings: the masks cancel in Z_2^64.
  expected_fixed_point = secure_sum.decode(np.sum([secure_sum.encode(e) for e in embeddings], axis=0))
  np.testing.assert_array_equal(total, expected_fixed_point)
  # And the float sum up to the rounding of each encoding (half a unit in the last place).
  plain = secure_sum.PlainSum()(embeddings)
  half_unit = 2.0**-(secure_sum.DEFAULT_FRACTION_BITS + 1)
  np.testing.assert_allclose(total, plain, rtol=0, atol=num_parties * half_unit)


def test_masked_sum_is_exact_for_representable_values() -> None:
  rng = np.random.default_rng(0)
  unit = 2.0**-secure_sum.DEFAULT_FRACTION_BITS
  embeddings = [rng.integers(-2**30, 2**30, size=(4, 5)) * unit for _ in range(3)]
  np.testing.assert_array_equal(secure_sum.SecureSum(3)(embeddings), np.sum(embeddings, axis=0))


def test_single_masked_embedding_hides_the_true_one_and_changes_every_round() -> None:
  embeddings = _embeddings(3, seed=1)
  fusion = secure_sum.SecureSum(3)
  first_round = fusion.mask_all(embeddings)
  second_round = fusion.mask_all(embeddings)  # Same embeddings, next round.
  for party in range(3):
    encoded = secure_sum.encode(embeddings[party])
    assert np.mean(first_round[party] == encoded) < 0.01
    assert np.mean(first_round[party] != second_round[party]) > 0.99
    # Decoded as if it were an embedding, it is noise of magnitude ~2^63 / 2^24, not ~3.
    assert np.median(np.abs(secure_sum.decode(first_round[party]))) > 1e9
  # Both rounds still sum correctly.
  np.testing.assert_array_equal(fusion.combine(first_round), fusion.combine(second_round))


def test_pair_keys_agree_and_differ_between_pairs() -> None:
  fusion = secure_sum.SecureSum(4)
  keys = {}
  for party in fusion.parties:
    assert sorted(party.pair_keys) == [p for p in range(4) if p != party.index]
    for peer, key in party.pair_keys.items():
      assert key == fusion.parties[peer].pair_keys[party.index]
      keys[frozenset((party.index, peer))] = key
  assert len(set(keys.values())) == 6  # One distinct key per pair.


def test_masks_are_deterministic_per_key_and_round() -> None:
  key = bytes(range(32))
  round_5 = secure_sum.pair_mask(key, 5, (3, 4))
  np.testing.assert_array_equal(round_5, secure_sum.pair_mask(key, 5, (3, 4)))
  assert not np.array_equal(round_5, secure_sum.pair_mask(key, 6, (3, 4)))


def test_encode_decode_round_trip_and_range() -> None:
  values = np.array([[-1.5, 0.0, 2.0**-24, 1234.5678]])
  np.testing.assert_allclose(secure_sum.decode(secure_sum.encode(values)), values, atol=2.0**-25)
  with pytest.raises(ValueError, match='cannot encode'):
    secure_sum.encode(np.array([2.0**40]))
  with pytest.raises(ValueError, match='cannot encode'):
    secure_sum.encode(np.array([np.nan]))
