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


def test_a_masking_party_refuses_a_reused_or_older_round() -> None:
  fusion = secure_sum.SecureSum(3)
  party = fusion.parties[1]
  embedding = _embeddings(1, seed=2)[0]
  party.mask(embedding, 5, secure_sum.DEFAULT_FRACTION_BITS)
  # Masking another vector under round 5 would give away the difference of the two.
  with pytest.raises(secure_sum.RoundReuseError, match='refusing round 5'):
    party.mask(embedding * 2, 5, secure_sum.DEFAULT_FRACTION_BITS)
  with pytest.raises(secure_sum.RoundReuseError, match='refusing round 4'):
    party.mask(embedding, 4, secure_sum.DEFAULT_FRACTION_BITS)
  party.mask(embedding, 6, secure_sum.DEFAULT_FRACTION_BITS)  # Forward is fine.


def test_same_round_masks_would_reveal_the_difference() -> None:
  # Why the rule above matters: y - y' = q(e) - q(e') when both use round r's masks.
  fusion = secure_sum.SecureSum(2)
  key = fusion.parties[0].pair_keys[1]
  first, second = _embeddings(2, seed=3)
  y1 = secure_sum.encode(first) + secure_sum.pair_mask(key, 7, first.shape)
  y2 = secure_sum.encode(second) + secure_sum.pair_mask(key, 7, second.shape)
  np.testing.assert_allclose(secure_sum.decode(y1 - y2), first - second, atol=2.0**-23)


@pytest.mark.parametrize('num_parties', [3, 8, 64])
def test_values_whose_sum_would_wrap_around_are_refused(num_parties: int) -> None:
  # Each value is below the old single-value limit 2^(62 - 24), but num_parties of them
  # summed would wrap around 2^63 and decode to garbage.
  value = 2.0**39 / num_parties * 1.2
  embeddings = [np.full((2, 3), value) for _ in range(num_parties)]
  with pytest.raises(secure_sum.FixedPointRangeError, match=f'sum of {num_parties}'):
    secure_sum.SecureSum(num_parties)(embeddings)
  # Just inside the per-party limit, the sum is exact.
  limit = secure_sum.value_limit(num_parties)
  inside = [np.full((2, 3), np.floor(limit * 0.99)) for _ in range(num_parties)]
  np.testing.assert_array_equal(secure_sum.SecureSum(num_parties)(inside),
                                np.sum(inside, axis=0))


def test_decoding_rejects_a_sum_out_of_range() -> None:
  fusion = secure_sum.SecureSum(3)
  embeddings = _embeddings(3, seed=4)
  masked = fusion.mask_all(embeddings)
  # One vector altered (or replaced by another round's): the masks no longer cancel.
  tampered = [masked[0] + np.uint64(1 << 62), *masked[1:]]
  with pytest.raises(secure_sum.FixedPointRangeError, match='out of range'):
    fusion.combine(tampered)
  stale = fusion.mask_all(embeddings)
  with pytest.raises(secure_sum.FixedPointRangeError, match='out of range'):
    fusion.combine([stale[0], *masked[1:]])
  with pytest.raises(ValueError, match='expected 3 masked vectors'):
    fusion.combine(masked[1:])
  # Hand-computed edge: 2^62 - 1 units decodes, 2^62 does not.
  np.testing.assert_array_equal(secure_sum.decode_sum(np.array([2**62 - 1], dtype=np.uint64), 0),
                                [2.0**62 - 1])
  with pytest.raises(secure_sum.FixedPointRangeError):
    secure_sum.decode_sum(np.array([2**62], dtype=np.uint64), 0)


def test_secure_sum_refuses_a_single_masking_party() -> None:
  with pytest.raises(ValueError, match='at least two masking parties'):
    secure_sum.SecureSum(1)
