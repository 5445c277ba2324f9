"""Byzantine-robust coordinate-wise aggregators (median, trimmed mean) for TFF.

TensorFlow Federated ships means, sums, clipping, zeroing, DP and compression, but
no order-statistic aggregators. This module adds them as real
`tff.aggregators.UnweightedAggregationFactory` implementations, usable anywhere a
TFF factory is (e.g. `model_aggregator=` of `tff.learning.algorithms`).

How it works: order statistics are not decomposable into a sum, so the server
needs every client's value. `create()` builds a `tff.federated_aggregate` whose
accumulator is the stack of all client values (shape `[n, *value_shape]` per
tensor, `n` unknown until run time; the same pattern TFF's
`UnweightedReservoirSamplingFactory` uses, minus the sampling, so no client is
ever dropped), and whose `report` step sorts each coordinate across clients and
reduces it:

* median:       med_j = x_(m)j                       if n = 2m + 1,
                med_j = (x_(m)j + x_(m+1)j) / 2      if n = 2m,
* trimmed mean: tm_j = 1/(n - 2k) * sum_{i=k+1}^{n-k} x_(i)j,  k = floor(beta * n),

where x_(1)j <= ... <= x_(n)j are the n client values of coordinate j sorted and
beta is the trim fraction (Yin et al., 2018, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates", https://arxiv.org/abs/1803.01498).
The median tolerates fewer than n/2 arbitrary clients, the trimmed mean fewer
than k per side.

Costs: the server holds n copies of the update (O(n * d) memory) and sorts each
coordinate (O(d * n log n)); fine for simulations with tens of clients per round.
Not compatible with secure aggregation, by construction.

Both aggregators are unweighted: every client counts once. Client weights (e.g.
example counts) are self-reported, so letting them move an order statistic would
hand a Byzantine client the very influence these aggregators take away. Use
`tff.aggregators.as_weighted_aggregator` to plug them into weighted builders.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np
import tensorflow as tf

from core.runtime import import_tff

tff = import_tff()

_COUNT_DTYPE = np.int32


def _check_value_type(value_type: Any) -> None:
  """Raises TypeError unless `value_type` is a structure of fixed-shape floats."""
  if isinstance(value_type, tff.FederatedType) or not tff.types.is_structure_of_floats(value_type):
    raise TypeError(
        'Coordinate-wise aggregation needs a non-federated structure of float tensors, '
        f'got {value_type}.'
    )
  # Structures must carry their Python container (as tff.learning's model weights
  # do): the stacked values are built and unpacked with tf.nest.
  if not tff.types.contains_only(
      value_type, lambda t: isinstance(t, (tff.TensorType, tff.StructWithPythonType))
  ):
    raise TypeError(
        'Coordinate-wise aggregation needs tensors in Python containers (list, dict, ...), '
        f'got {value_type}.'
    )
  for tensor_type in tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type)):
    if not tensor_type.shape.is_fully_defined():
      raise TypeError(f'Coordinate-wise aggregation needs fully defined shapes, got {value_type}.')


def _stacked_specs(value_type: Any) -> Any:
  """The value structure with a leading, unknown client dimension on every tensor."""
  return tf.nest.map_structure(
      lambda spec: tf.TensorSpec((None, *spec.shape), spec.dtype),
      tff.types.type_to_tf_tensor_specs(value_type),
  )


def _sorted_with_nan_as_inf(stacked: tf.Tensor) -> tf.Tensor:
  # NaN has no place in a sort order; as +inf it is simply the most extreme value,
  # so a minority of clients sending NaN is trimmed (or outvoted) like any outlier.
  stacked = tf.where(tf.math.is_nan(stacked), tf.constant(np.inf, stacked.dtype), stacked)
  return tf.sort(stacked, axis=0)


def coordinatewise_median(stacked: tf.Tensor) -> tf.Tensor:
  """Median over axis 0 (clients) of `stacked`, per coordinate.

  Args:
    stacked: Tensor of shape `[n, ...]`, one row per client, n >= 1.

  Returns:
    Tensor of shape `stacked.shape[1:]`: the middle value of each coordinate, or the
    mean of the two middle values when n is even.
  """
  ordered = _sorted_with_nan_as_inf(stacked)
  n = tf.shape(ordered)[0]
  lower = tf.gather(ordered, (n - 1) // 2, axis=0)
  upper = tf.gather(ordered, n // 2, axis=0)
  return (lower + upper) / tf.constant(2, ordered.dtype)


def coordinatewise_trimmed_mean(stacked: tf.Tensor, trim_fraction: float) -> tf.Tensor:
  """Mean over axis 0 after dropping the k = floor(trim_fraction * n) lowest and highest values.

  Args:
    stacked: Tensor of shape `[n, ...]`, one row per client, n >= 1.
    trim_fraction: Fraction beta in [0, 0.5) to drop from each end, per coordinate.

  Returns:
    Tensor of shape `stacked.shape[1:]`: 1/(n - 2k) * (sum of the middle n - 2k values).
  """
  ordered = _sorted_with_nan_as_inf(stacked)
  n = tf.shape(ordered)[0]
  k = trimmed_per_side(n, trim_fraction)
  # beta < 0.5 guarantees n - 2k >= 1, so the slice is never empty.
  kept = ordered[k : n - k]
  return tf.reduce_mean(kept, axis=0)


# Added before flooring so that e.g. 0.29 * 100 = 28.999999999999996 counts as 29.
_FLOOR_SLACK = 1e-9


def trimmed_count(num_clients: int, trim_fraction: float) -> int:
  """k = floor(trim_fraction * n): values dropped at each end of every coordinate."""
  return math.floor(trim_fraction * num_clients + _FLOOR_SLACK)


def trimmed_per_side(n: tf.Tensor, trim_fraction: float) -> tf.Tensor:
  """`trimmed_count` in TensorFlow, for an int32 client count known only at run time."""
  n = tf.cast(n, tf.float64)  # float64: the same rounding as the Python version.
  return tf.cast(tf.floor(trim_fraction * n + _FLOOR_SLACK), tf.int32)


class CoordinatewiseFactory(tff.aggregators.UnweightedAggregationFactory):
  """Unweighted factory that gathers all client values and reduces each coordinate.

  Use `median_factory()` or `trimmed_mean_factory()` rather than this class.

  The created process has empty state (`()`), returns a value of exactly the input
  type (so `tff.learning` builders accept it), and reports the measurements
  `OrderedDict(client_count, non_finite_client_count[, trimmed_per_side])`:
  the number of client values aggregated, how many of them held a NaN or an
  infinity (those count as extreme values, see the module docstring), and for the
  trimmed mean the k dropped at each end. With no clients the result is zeros.
  """

  def __init__(self, *, trim_fraction: float | None) -> None:
    """Initializes the factory.

    Args:
      trim_fraction: None for the coordinate-wise median; otherwise the trimmed
        mean's fraction beta in [0, 0.5) dropped from each end.

    Raises:
      ValueError: If `trim_fraction` is outside [0, 0.5).
    """
    if trim_fraction is not None and not (
        0.0 <= trim_fraction < 0.5 and math.isfinite(trim_fraction)
    ):
      raise ValueError(f'trim_fraction must be in [0, 0.5), got {trim_fraction}.')
    self._trim_fraction = None if trim_fraction is None else float(trim_fraction)

  @property
  def trim_fraction(self) -> float | None:
    """None for the median, else the trimmed mean's fraction per side."""
    return self._trim_fraction

  def _reduce(self, stacked: tf.Tensor) -> tf.Tensor:
    if self._trim_fraction is None:
      return coordinatewise_median(stacked)
    return coordinatewise_trimmed_mean(stacked, self._trim_fraction)

  def create(self, value_type: Any) -> Any:
    """Creates the `tff.templates.AggregationProcess` for `value_type` at CLIENTS.

    Args:
      value_type: A non-federated structure of float tensors with fixed shapes.

    Returns:
      An aggregation process with `next: <()@SERVER, value_type@CLIENTS> ->
      <state=()@SERVER, result=value_type@SERVER, measurements@SERVER>`.

    Raises:
      TypeError: If `value_type` is not a structure of fixed-shape floats.
    """
    _check_value_type(value_type)
    value_specs = tff.types.type_to_tf_tensor_specs(value_type)
    stacked_specs = _stacked_specs(value_type)

    @tff.tensorflow.computation
    def empty_stack():
      return tf.nest.map_structure(lambda s: tf.zeros((0, *s.shape), s.dtype), value_specs)

    @tff.tensorflow.computation(stacked_specs, value_type)
    def push(stack, value):
      return tf.nest.map_structure(lambda s, v: tf.concat([s, v[tf.newaxis]], axis=0), stack, value)

    @tff.tensorflow.computation(stacked_specs, stacked_specs)
    def concat_stacks(a, b):
      return tf.nest.map_structure(lambda x, y: tf.concat([x, y], axis=0), a, b)

    @tff.tensorflow.computation(stacked_specs)
    def reduce_stack(stack):
      leaves = tf.nest.flatten(stack)
      n = tf.shape(leaves[0])[0]
      result = tf.cond(
          n > 0,
          lambda: tf.nest.map_structure(self._reduce, stack),
          lambda: tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), value_specs),
      )
      # Re-pack into the exact input structure and static shapes: `tff.learning`
      # builders require result type == value type.
      result = tf.nest.pack_sequence_as(
          value_specs,
          [
              tf.ensure_shape(t, s.shape)
              for t, s in zip(tf.nest.flatten(result), tf.nest.flatten(value_specs))
          ],
      )
      non_finite = tf.zeros([n], tf.bool)
      for leaf in leaves:
        flat = tf.reshape(leaf, [n, -1])
        non_finite |= tf.reduce_any(~tf.math.is_finite(flat), axis=1)
      measurements = collections.OrderedDict(
          client_count=tf.cast(n, _COUNT_DTYPE),
          non_finite_client_count=tf.reduce_sum(tf.cast(non_finite, _COUNT_DTYPE)),
      )
      if self._trim_fraction is not None:
        measurements['trimmed_per_side'] = trimmed_per_side(n, self._trim_fraction)
      return result, measurements

    @tff.federated_computation
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(
        init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS)
    )
    def next_fn(state, value):
      result, measurements = tff.federated_aggregate(
          value, zero=empty_stack(), accumulate=push, merge=concat_stacks, report=reduce_stack
      )
      return tff.templates.MeasuredProcessOutput(
          state=state, result=result, measurements=measurements
      )

    return tff.templates.AggregationProcess(init_fn, next_fn)


def median_factory() -> tff.aggregators.UnweightedAggregationFactory:
  """Coordinate-wise median of client values. Unweighted.

  result_j = median_i(x_ij); for an even number of clients, the mean of the two
  middle values. Robust to fewer than half of the clients sending arbitrary values.

  Returns:
    A `tff.aggregators.UnweightedAggregationFactory`.
  """
  return CoordinatewiseFactory(trim_fraction=None)


def trimmed_mean_factory(trim_fraction: float) -> tff.aggregators.UnweightedAggregationFactory:
  """Coordinate-wise trimmed mean of client values. Unweighted.

  For each coordinate j, sort the n client values, drop k = floor(trim_fraction * n)
  from each end, and average the remaining n - 2k. trim_fraction = 0 is the plain
  mean; as trim_fraction -> 0.5 it approaches the median.

  Args:
    trim_fraction: Fraction beta in [0, 0.5) of clients dropped at each end.

  Returns:
    A `tff.aggregators.UnweightedAggregationFactory`.

  Raises:
    ValueError: If `trim_fraction` is outside [0, 0.5).
  """
  return CoordinatewiseFactory(trim_fraction=trim_fraction)
