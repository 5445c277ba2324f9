"""Extra measurements for TFF aggregation factories: client fractions and DP noise.

TFF's factories report counts (clients clipped, zeroed, clipped by secure sum) and
little about differential-privacy noise. The wrappers here add, without touching
the aggregation itself:

* `with_client_fractions`: `client_count` and, next to every `<what>_count`,
  `<what>_fraction` = count / client_count (comparable across cohort sizes);
* `with_dp_noise`: the clip norm used this round and the resulting noise
  standard deviation of a Gaussian DP mean.

Each wrapper runs the inner process unchanged, counts the participating clients
with one extra `tff.federated_sum` of ones, and maps a TensorFlow function over
(state before the round, inner measurements, client count) to build the new
measurements at the server.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from typing import Any, Union

import numpy as np
import tensorflow as tf

from core.runtime import import_tff

tff = import_tff()

Factory = Union[
    tff.aggregators.WeightedAggregationFactory, tff.aggregators.UnweightedAggregationFactory
]

# Builds, from (state type, measurements type), a TF computation
# (state, measurements, client_count) -> measurements.
_ExtendFnBuilder = Callable[[Any, Any], Any]


def _extended_process(
    inner: Any, value_type: Any, weight_type: Any | None, build_extend_fn: _ExtendFnBuilder
) -> Any:
  """Wraps `inner` (an AggregationProcess) so its measurements pass through extend_fn."""
  state_type = inner.state_type.member
  measurements_type = inner.next.type_signature.result.measurements.member
  extend_fn = build_extend_fn(state_type, measurements_type)

  @tff.tensorflow.computation(value_type)
  def one(value):
    del value  # Only counts the client.
    return tf.constant(1, tf.int32)

  def extend(state, value, output):
    client_count = tff.federated_sum(tff.federated_map(one, value))
    measurements = tff.federated_map(extend_fn, (state, output.measurements, client_count))
    return tff.templates.MeasuredProcessOutput(
        state=output.state, result=output.result, measurements=measurements
    )

  if weight_type is None:

    @tff.federated_computation(inner.state_type, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      return extend(state, value, inner.next(state, value))

  else:

    @tff.federated_computation(
        inner.state_type,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS),
    )
    def next_fn(state, value, weight):
      return extend(state, value, inner.next(state, value, weight))

  return tff.templates.AggregationProcess(inner.initialize, next_fn)


class _UnweightedExtended(tff.aggregators.UnweightedAggregationFactory):

  def __init__(self, inner: Any, build_extend_fn: _ExtendFnBuilder) -> None:
    self._inner = inner
    self._build_extend_fn = build_extend_fn

  def create(self, value_type: Any) -> Any:
    return _extended_process(
        self._inner.create(value_type), value_type, None, self._build_extend_fn
    )


class _WeightedExtended(tff.aggregators.WeightedAggregationFactory):

  def __init__(self, inner: Any, build_extend_fn: _ExtendFnBuilder) -> None:
    self._inner = inner
    self._build_extend_fn = build_extend_fn

  def create(self, value_type: Any, weight_type: Any) -> Any:
    process = self._inner.create(value_type, weight_type)
    return _extended_process(process, value_type, weight_type, self._build_extend_fn)


def _extend_measurements(inner: Factory, build_extend_fn: _ExtendFnBuilder) -> Factory:
  if isinstance(inner, tff.aggregators.WeightedAggregationFactory):
    return _WeightedExtended(inner, build_extend_fn)
  return _UnweightedExtended(inner, build_extend_fn)


def _add_fractions(measurements: Any, client_count: tf.Tensor) -> Any:
  """Copies nested measurements, adding `<what>_fraction` after each scalar `<what>_count`."""
  if not isinstance(measurements, Mapping):
    return measurements
  denominator = tf.cast(tf.maximum(client_count, 1), tf.float32)
  result = collections.OrderedDict()
  for key, value in measurements.items():
    result[key] = _add_fractions(value, client_count)
    if (
        key.endswith('_count')
        and key != 'client_count'
        and tf.is_tensor(value)
        and value.shape.rank == 0
        and f'{key[:-len("_count")]}_fraction' not in measurements
    ):
      result[f'{key[:-len("_count")]}_fraction'] = tf.cast(value, tf.float32) / denominator
  return result


def _build_fraction_fn(state_type: Any, measurements_type: Any) -> Any:

  @tff.tensorflow.computation(state_type, measurements_type, np.int32)
  def add_client_fractions(state, measurements, client_count):
    del state  # Unused.
    extended = _add_fractions(measurements, client_count)
    if not isinstance(extended, Mapping):  # E.g. MeanFactory's empty measurements.
      extended = collections.OrderedDict()
    extended.setdefault('client_count', client_count)
    return extended

  return add_client_fractions


def with_client_fractions(aggregation_factory: Factory) -> Factory:
  """Adds `client_count`, and `<what>_fraction = <what>_count / client_count` measurements.

  TFF's clipping, zeroing and secure-sum layers report how many clients they
  clipped or zeroed; a fraction is what compares across runs with different
  numbers of clients per round.

  Args:
    aggregation_factory: A weighted or unweighted TFF aggregation factory.

  Returns:
    A factory of the same kind with the extra measurements (top-level
    `client_count`, int32; each fraction float32, next to its count).
  """
  return _extend_measurements(aggregation_factory, _build_fraction_fn)


def _build_dp_noise_fn(state_type: Any, measurements_type: Any) -> Any:

  @tff.tensorflow.computation(state_type, measurements_type, np.int32)
  def add_noise_measurements(state, measurements, client_count):
    del client_count  # Unused.
    # `state` is TFF's DPAggregatorState *before* this round, i.e. the query state
    # whose clip and noise this round used: NormalizedQuery(numerator, denominator)
    # whose numerator is a GaussianSumQuery (fixed clip) or a
    # QuantileAdaptiveClipSumQuery holding one (`sum_state`).
    query_state = state.query_state
    gaussian_state = query_state.numerator_state
    if hasattr(gaussian_state, 'sum_state'):
      gaussian_state = gaussian_state.sum_state
    extended = collections.OrderedDict(measurements)
    extended['clip_norm'] = gaussian_state.l2_norm_clip
    # Noise N(0, stddev^2) is added to the clipped sum, which is then divided by
    # the expected number of clients per round.
    extended['noise_stddev'] = gaussian_state.stddev / query_state.denominator
    return extended

  return add_noise_measurements


def with_dp_noise(dp_factory: tff.aggregators.UnweightedAggregationFactory) -> Factory:
  """Adds `clip_norm` and `noise_stddev` to a Gaussian `DifferentiallyPrivateFactory`.

  Both are read from the DP query state the round started with: `clip_norm` is
  the L2 clip C applied this round, `noise_stddev` = stddev / m, the standard
  deviation of the Gaussian noise per coordinate of the averaged update (TFF
  adds N(0, stddev^2) to the clipped sum and divides by m, the expected number
  of clients per round). Works for `gaussian_fixed` (stddev = z C) and
  `gaussian_adaptive` (stddev = z_v C_t).

  Args:
    dp_factory: From `tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed`
      or `.gaussian_adaptive`.

  Returns:
    An unweighted factory with the two extra measurements.
  """
  return _extend_measurements(dp_factory, _build_dp_noise_fn)
