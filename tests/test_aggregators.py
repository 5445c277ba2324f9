"""Arithmetic of every aggregator on hand-made client values.

The factories' processes run in TFF's local simulation:
`process.next(state, client_values[, weights])` takes one Python value per client.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest

from core.runtime import import_tff
from recipes import aggregators
from recipes import robust_aggregation

tff = import_tff()

WEIGHT_TYPE = tff.TensorType(np.float32)


def vector_type(dim: int) -> Any:
  return tff.TensorType(np.float32, [dim])


def f32(*values: float) -> np.ndarray:
  return np.array(values, np.float32)


def run_round(
    factory: Any, value_type: Any, values: Sequence[Any], weights: Sequence[float] | None = None
) -> Any:
  """One `next` of the factory's process from its initial state."""
  if aggregators.is_weighted(factory):
    process = factory.create(value_type, WEIGHT_TYPE)
    weights = [1.0] * len(values) if weights is None else weights
    return process.next(process.initialize(), list(values), [np.float32(w) for w in weights])
  assert weights is None, 'an unweighted factory takes no weights'
  process = factory.create(value_type)
  return process.next(process.initialize(), list(values))


@pytest.fixture(scope='module')
def secure_context():
  """TFF's test context: runs secure-sum intrinsics as plain sums (the default context cannot)."""
  with tff.framework.get_context_stack().install(
      tff.backends.test.create_sync_test_cpp_execution_context()
  ):
    yield


# --- means -----------------------------------------------------------------------------------


def test_weighted_mean_is_sum_of_weighted_values_over_sum_of_weights():
  values = [f32(1, 10), f32(2, 20), f32(4, -8)]
  weights = [1.0, 1.0, 2.0]
  # sum w x = (1 + 2 + 8, 10 + 20 - 16) = (11, 14); sum w = 4.
  output = run_round(aggregators.mean(), vector_type(2), values, weights)
  np.testing.assert_allclose(output.result, [2.75, 3.5], rtol=1e-6)
  assert output.measurements['client_count'] == 3


def test_unweighted_mean_ignores_nothing_but_weights():
  output = run_round(aggregators.unweighted_mean(), vector_type(1), [f32(1), f32(2), f32(100)])
  np.testing.assert_allclose(output.result, [103 / 3], rtol=1e-6)


# --- median and trimmed mean -----------------------------------------------------------------


@pytest.mark.parametrize(
    'values, expected',
    [
        ([1.0, 2.0, 100.0], 2.0),  # The outlier does not move the median.
        ([100.0, 1.0, 2.0], 2.0),  # Order of clients is irrelevant.
        ([1.0, 2.0, 4.0, 100.0], 3.0),  # Even count: mean of the two middle values.
        ([5.0], 5.0),
        ([1.0, np.nan, 2.0], 2.0),  # NaN counts as +inf: an outlier like any other.
    ],
)
def test_median_of_scalars(values, expected):
  output = run_round(
      aggregators.median(), tff.TensorType(np.float32), [np.float32(v) for v in values]
  )
  assert output.result == pytest.approx(expected)
  assert output.measurements['client_count'] == len(values)
  assert output.measurements['non_finite_client_count'] == int(np.isnan(values).sum())


def test_median_is_coordinatewise_on_a_structure():
  value_type = tff.to_type([(np.float32, [3]), (np.float32, [2, 2])])
  values = [
      [f32(1, 30, -1), np.array([[0, 1], [2, 3]], np.float32)],
      [f32(2, 10, -2), np.array([[9, 1], [2, 3]], np.float32)],
      [f32(100, 20, -100), np.array([[4, -7], [2, 30]], np.float32)],
  ]
  output = run_round(aggregators.median(), value_type, values)
  np.testing.assert_allclose(output.result[0], [2, 20, -2])
  np.testing.assert_allclose(output.result[1], [[4, 1], [2, 3]])


def test_median_with_no_clients_is_zero():
  output = run_round(aggregators.median(), vector_type(2), [])
  np.testing.assert_array_equal(output.result, [0, 0])
  assert output.measurements['client_count'] == 0


@pytest.mark.parametrize(
    'trim_fraction, expected, trimmed',
    [
        # Coordinate 0: [1, 2, 3, 4, 100]; coordinate 1: [-100, 5, 6, 7, 8].
        (0.0, [22.0, -14.8], 0),  # Plain mean.
        (0.2, [3.0, 6.0], 1),  # k = floor(0.2 * 5) = 1: mean(2, 3, 4), mean(5, 6, 7).
        (0.4, [3.0, 6.0], 2),  # k = 2: the median.
        (0.19, [22.0, -14.8], 0),  # floor(0.95) = 0: nothing trimmed.
    ],
)
def test_trimmed_mean(trim_fraction, expected, trimmed):
  values = [f32(1, 6), f32(100, -100), f32(3, 8), f32(2, 5), f32(4, 7)]
  output = run_round(aggregators.trimmed_mean(trim_fraction=trim_fraction), vector_type(2), values)
  np.testing.assert_allclose(output.result, expected, rtol=1e-6)
  assert output.measurements['trimmed_per_side'] == trimmed


def test_trimmed_count_rounds_like_exact_arithmetic():
  assert robust_aggregation.trimmed_count(100, 0.29) == 29  # 0.29 * 100 = 28.999999999999996.
  assert robust_aggregation.trimmed_count(10, 0.2) == 2
  assert robust_aggregation.trimmed_count(9, 0.1) == 0


@pytest.mark.parametrize('trim_fraction', [-0.1, 0.5, 0.7, float('nan')])
def test_trimmed_mean_rejects_bad_fraction(trim_fraction):
  with pytest.raises(ValueError, match='trim_fraction'):
    aggregators.trimmed_mean(trim_fraction=trim_fraction)


def test_median_in_weighted_form_ignores_weights():
  factory = aggregators.for_recipe(aggregators.median(), weighted=True)
  output = run_round(
      factory, vector_type(1), [f32(1), f32(2), f32(100)], weights=[1.0, 1.0, 1000.0]
  )
  np.testing.assert_allclose(output.result, [2.0])


# --- clipped_mean: clipping and zeroing --------------------------------------------------------------


def test_fixed_clipping_caps_the_norm():
  factory = aggregators.clipped_mean(weighted=False, clip_norm=1.0, zeroing=False)
  # Norms 10 and 0.5: the first becomes (0.6, 0.8), the second is untouched.
  output = run_round(factory, vector_type(2), [f32(6, 8), f32(0.3, 0.4)])
  np.testing.assert_allclose(output.result, [0.45, 0.6], rtol=1e-6)
  assert output.measurements['clipping_norm'] == pytest.approx(1.0)
  assert output.measurements['clipped_count'] == 1
  assert output.measurements['clipped_fraction'] == pytest.approx(0.5)


def test_fixed_clipping_weighted():
  factory = aggregators.clipped_mean(weighted=True, clip_norm=1.0, zeroing=False)
  output = run_round(factory, vector_type(2), [f32(6, 8), f32(0.3, 0.4)], weights=[1.0, 3.0])
  # (1 * (0.6, 0.8) + 3 * (0.3, 0.4)) / 4.
  np.testing.assert_allclose(output.result, [0.375, 0.5], rtol=1e-6)


def test_fixed_zeroing_zeros_outliers():
  factory = aggregators.clipped_mean(weighted=False, clipping=False, zeroing_norm=50.0)
  output = run_round(factory, vector_type(2), [f32(1, 1), f32(2, 2), f32(1000, 0)])
  # The third client (max |x| = 1000 > 50) counts as zero: (1 + 2 + 0) / 3.
  np.testing.assert_allclose(output.result, [1.0, 1.0], rtol=1e-6)
  assert output.measurements['zeroed_count'] == 1
  assert output.measurements['zeroed_fraction'] == pytest.approx(1 / 3)


def test_default_clipped_mean_adapts_clip_and_zeroes_corrupt_client():
  factory = aggregators.clipped_mean(weighted=False)  # Adaptive clipping and zeroing, as TFF's default.
  process = factory.create(vector_type(2))
  values = [f32(3, 4), f32(6, 8), f32(1e6, 0)]  # Norms 5, 10 and a corrupt client.
  state = process.initialize()
  first = process.next(state, values)
  second = process.next(first.state, values)
  inner = first.measurements['zeroing']
  assert inner['clipping_norm'] == pytest.approx(1.0)  # The initial estimate.
  assert first.measurements['zeroed_count'] == 1
  assert second.measurements['zeroing']['clipping_norm'] > 1.0  # Grows towards the 0.8-quantile.
  assert np.linalg.norm(first.result) <= 1.0 + 1e-6


# --- differential privacy ----------------------------------------------------------------------


def empirical_noise_std(
    noise_multiplier: float, *, clip_norm: float, clients: int, dim: int
) -> tuple[float, Any]:
  factory = aggregators.dp_fixed(
      noise_multiplier=noise_multiplier, clients_per_round=clients, clip_norm=clip_norm
  )
  # All clients send zeros, so the aggregate is pure noise: N(0, (z C)^2) / m per coordinate.
  output = run_round(factory, vector_type(dim), [np.zeros(dim, np.float32)] * clients)
  return float(np.std(output.result)), output.measurements


def test_dp_noise_scales_with_noise_multiplier():
  clip_norm, clients, dim = 100.0, 10, 500
  std_1, measurements_1 = empirical_noise_std(1.0, clip_norm=clip_norm, clients=clients, dim=dim)
  std_2, measurements_2 = empirical_noise_std(2.0, clip_norm=clip_norm, clients=clients, dim=dim)
  assert measurements_1['noise_stddev'] == pytest.approx(1.0 * clip_norm / clients)
  assert measurements_2['noise_stddev'] == pytest.approx(2.0 * clip_norm / clients)
  assert measurements_1['clip_norm'] == pytest.approx(clip_norm)
  # The standard error of a std estimate over 500 draws is ~3%: 15% is about 5 sigma.
  assert std_1 == pytest.approx(10.0, rel=0.15)
  assert std_2 / std_1 == pytest.approx(2.0, rel=0.2)


def test_dp_clips_each_client():
  factory = aggregators.dp_fixed(noise_multiplier=0.0, clients_per_round=2, clip_norm=1.0)
  output = run_round(factory, vector_type(2), [f32(6, 8), f32(0, 0)])
  # (clip(6, 8) + 0) / m = (0.6, 0.8) / 2.
  np.testing.assert_allclose(output.result, [0.3, 0.4], rtol=1e-5)


def test_dp_adaptive_reports_clip_and_noise():
  factory = aggregators.dp_adaptive(
      noise_multiplier=0.5, clients_per_round=10, initial_clip_norm=0.1
  )
  output = run_round(factory, vector_type(3), [f32(1, 0, 0)] * 10)
  assert output.measurements['clip_norm'] == pytest.approx(0.1)
  # TFF raises the update noise to z_v = (z^-2 - (2 * 0.05 * m)^-2)^-1/2 = (4 - 1)^-1/2.
  assert output.measurements['noise_stddev'] == pytest.approx(3**-0.5 * 0.1 / 10, rel=1e-5)
  # Every norm (1.0) is above the clip: the clip grows for the next round.
  assert output.measurements['dp_query_metrics']['clip'] > 0.1


def test_dp_adaptive_rejects_noise_its_count_query_cannot_match():
  with pytest.raises(ValueError, match='clipped_count_stddev'):
    aggregators.dp_adaptive(noise_multiplier=1.0, clients_per_round=10)


# --- compression -------------------------------------------------------------------------------


@pytest.mark.parametrize('bits', [2, 4, 8])
def test_quantization_error_within_one_step(bits):
  rng = np.random.default_rng(bits)
  values = [rng.normal(scale=scale, size=64).astype(np.float32) for scale in (0.5, 1.0, 2.0)]
  factory = aggregators.compressed(quantization_bits=bits, threshold=0, weighted=False)
  output = run_round(factory, vector_type(64), values)
  exact = np.mean(values, axis=0)
  # Stochastic rounding moves each coordinate by less than one step s_i = range_i / (2^b - 1).
  step = max(float(v.max() - v.min()) for v in values) / (2**bits - 1)
  error = np.abs(output.result - exact)
  assert error.max() <= step + 1e-5
  assert error.max() > 0  # Quantization did happen.


def test_small_tensors_are_not_quantized():
  values = [f32(0.1234567, -3.5), f32(2.5, 0.0)]
  output = run_round(
      aggregators.compressed(quantization_bits=1, threshold=20000),
      vector_type(2),
      values,
      [1.0, 3.0],
  )
  np.testing.assert_allclose(output.result, (values[0] + 3 * values[1]) / 4, rtol=1e-6)


def test_compressed_rejects_bad_bits():
  with pytest.raises(ValueError, match='quantization_bits'):
    aggregators.compressed(quantization_bits=17)


# --- secure aggregation --------------------------------------------------------------------------


def test_secure_sum_equals_the_sum(secure_context):
  del secure_context
  values = [f32(1.5, -2.0, 0.25), f32(3.0, 4.0, -9.0), f32(-0.5, 0.0, 9.5)]
  output = run_round(aggregators.secure(bound=10.0, weighted=False), vector_type(3), values)
  # Mean of the secure sum over n = 3; 32-bit quantization of [-10, 10] is ~5e-9 per client.
  np.testing.assert_allclose(output.result * 3, np.sum(values, axis=0), atol=1e-5)
  mean_measurements = output.measurements['mean_value']
  assert mean_measurements['secure_upper_threshold'] == pytest.approx(10.0)
  assert mean_measurements['secure_upper_clipped_count'] == 0


def test_secure_clips_into_bounds(secure_context):
  del secure_context
  output = run_round(
      aggregators.secure(bound=10.0, weighted=False), vector_type(1), [f32(-50), f32(4)]
  )
  np.testing.assert_allclose(output.result, [(-10 + 4) / 2], atol=1e-5)
  assert output.measurements['mean_value']['secure_lower_clipped_count'] == 1
  assert output.measurements['mean_value']['secure_lower_clipped_fraction'] == pytest.approx(0.5)


def test_secure_weighted_mean(secure_context):
  del secure_context
  values = [f32(1.0, -2.0), f32(3.0, 4.0)]
  factory = aggregators.secure(bound=5.0, weighted=True, max_weight=100.0)
  output = run_round(factory, vector_type(2), values, weights=[1.0, 3.0])
  np.testing.assert_allclose(output.result, [2.5, 2.5], atol=1e-4)


# --- factory kinds -------------------------------------------------------------------------------


def test_factory_kinds_and_adapting_them_to_a_recipe():
  assert aggregators.is_weighted(aggregators.mean())
  for unweighted in (
      aggregators.unweighted_mean(),
      aggregators.median(),
      aggregators.trimmed_mean(trim_fraction=0.1),
  ):
    assert not aggregators.is_weighted(unweighted)
  with pytest.raises(TypeError):
    aggregators.for_recipe(aggregators.mean(), weighted=False)
  assert aggregators.is_weighted(
      aggregators.for_recipe(aggregators.median(), weighted=True))
