"""Model-update aggregators for the recipes: typed constructors of `tff.aggregators` factories.

Every constructor returns a TFF aggregation factory, built by composing TFF's own
factories (mean -> clipping -> zeroing, or DP -> zeroing), so it plugs into any
`tff.learning.algorithms` builder as `model_aggregator=`. TFF distinguishes two
kinds, and the builders type-check them:

* weighted (`tff.aggregators.WeightedAggregationFactory`): `next(state, x, w)`;
  needed by `build_weighted_fed_avg`, `build_weighted_fed_prox`, `build_fed_sgd`
  (w = client example counts, or 1 with `ClientWeighting.UNIFORM`);
* unweighted (`tff.aggregators.UnweightedAggregationFactory`): `next(state, x)`;
  needed by `build_unweighted_fed_avg` and `build_unweighted_fed_prox`.

| name            | kind                         | result                                     |
|-----------------|------------------------------|--------------------------------------------|
| mean            | weighted                     | sum_i w_i x_i / sum_i w_i                  |
| unweighted_mean | unweighted                   | (1/n) sum_i x_i                            |
| clipped_mean    | either (`weighted=`)         | mean of clip(x_i), zeroing outliers        |
| dp_fixed        | unweighted                   | (sum_i clip(x_i) + N(0, (zC)^2 I)) / m     |
| dp_adaptive     | unweighted                   | same, C tracking a quantile of ||x_i||     |
| compressed      | either (`weighted=`)         | mean of stochastically quantized values    |
| secure          | either (`weighted=`)         | mean via secure sum of bounded values      |
| median          | unweighted                   | coordinate-wise median                     |
| trimmed_mean    | unweighted                   | coordinate-wise trimmed mean               |

Unweighted factories go into weighted builders through `for_recipe` (TFF's
`as_weighted_aggregator`: client weights are ignored, every client counts once).
That is deliberate for DP (the sensitivity bound needs equal weights) and for the
Byzantine-robust aggregators (weights are self-reported). The only weighted-only
factory is `mean`; unweighted recipes must use `unweighted_mean`.

Measurements: every factory here also reports `client_count` and, next to each
`<what>_count` measurement of TFF's layers (`clipped_count`, `zeroed_count`,
`secure_upper_clipped_count`, ...), the fraction `<what>_fraction` of clients it
concerns. The DP factories add `clip_norm` (the clip used this round) and
`noise_stddev` (standard deviation of the Gaussian noise per coordinate of the
averaged update). In a `tff.learning` process they appear under
`output.metrics['aggregator']`.

No absl flags are defined here, and importing this module changes nothing in the process
(for TFF worker hygiene in your own program, see `core.runtime.enable_worker_hygiene`).
`recipes.aggregator_registry` holds the `--aggregator` names, their options and flags.
"""

from __future__ import annotations

import math
from typing import Any

from core import tff_workers
from core.runtime import import_tff
from recipes import aggregation_measurements
from recipes import robust_aggregation
from recipes import seeded_dp

tff = import_tff()

# A weighted or an unweighted TFF aggregation factory.
Factory = aggregation_measurements.Factory

# TFF's adaptive zeroing (tff.learning.robust_aggregator, `_default_zeroing` in
# learning/model_update_aggregator.py): zero a client whose largest |coordinate|
# exceeds 2 * (0.98-quantile estimate) + 1, the estimate adapting by up to 10x per round.
_ZEROING_INITIAL_ESTIMATE = 10.0
_ZEROING_TARGET_QUANTILE = 0.98
_ZEROING_LEARNING_RATE = math.log(10.0)
_ZEROING_MULTIPLIER = 2.0
_ZEROING_INCREMENT = 1.0

# TFF's secure_aggregator bound for client weights: 2**20 - 1, about a million
# examples per client; a power of 2 minus 1 so integer weights quantize accurately.
DEFAULT_MAX_WEIGHT = float(2**20 - 1)


def is_weighted(aggregation_factory: Factory) -> bool:
  """True for a `tff.aggregators.WeightedAggregationFactory`, False for an unweighted one."""
  if isinstance(aggregation_factory, tff.aggregators.WeightedAggregationFactory):
    return True
  if isinstance(aggregation_factory, tff.aggregators.UnweightedAggregationFactory):
    return False
  raise TypeError(f'not a tff.aggregators factory: {aggregation_factory!r}')


def for_recipe(aggregation_factory: Factory, *, weighted: bool) -> Factory:
  """Adapts a factory to a weighted or unweighted learning-algorithm builder.

  An unweighted factory becomes weighted with `tff.aggregators.as_weighted_aggregator`,
  which ignores the client weights (every client counts once). A weighted factory
  cannot become unweighted: there are no weights to give it.

  Args:
    aggregation_factory: A TFF aggregation factory.
    weighted: True for `build_weighted_fed_avg`, `build_fed_sgd` and other builders
      that take a `WeightedAggregationFactory`; False for the unweighted builders.

  Returns:
    A factory of the requested kind.

  Raises:
    TypeError: If `weighted` is False and the factory is weighted.
  """
  if is_weighted(aggregation_factory) == weighted:
    return aggregation_factory
  if weighted:
    return tff.aggregators.as_weighted_aggregator(aggregation_factory)
  raise TypeError('a weighted aggregation factory cannot serve an unweighted learning process')


def install_secure_simulation_context() -> None:
  """Makes TFF's default context able to run `secure` (simulating secure summation).

  TFF's default local C++ context rejects the secure-sum intrinsics; its test
  context rewrites them into plain sums of the same clipped, quantized values, so
  results match a real secure-aggregation deployment. Call it before running any
  computation. On workers started elsewhere (`--tff_worker`), their context keeps
  running the computations, with the same replacement of the secure sums
  (`core.tff_workers.enable_secure_intrinsics`); before, the recipe silently
  switched to a local worker.
  """
  tff_workers.enable_secure_intrinsics()


def _check_positive(value: float, name: str) -> float:
  if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
    raise ValueError(f'{name} must be a positive number, got {value!r}')
  return float(value)


def _check_open_unit(value: float, name: str) -> float:
  if not (isinstance(value, (int, float)) and 0 < value < 1):
    raise ValueError(f'{name} must be in (0, 1), got {value!r}')
  return float(value)


def mean() -> tff.aggregators.WeightedAggregationFactory:
  """Weighted mean: sum_i w_i x_i / sum_i w_i. Weighted (TFF's `MeanFactory`).

  With the default `ClientWeighting.NUM_EXAMPLES` of TFF's builders, w_i is client
  i's number of training examples: this is FedAvg's aggregation.

  Returns:
    A `tff.aggregators.WeightedAggregationFactory`.
  """
  return aggregation_measurements.with_client_fractions(tff.aggregators.MeanFactory())


def unweighted_mean() -> tff.aggregators.UnweightedAggregationFactory:
  """Unweighted mean: (1/n) sum_i x_i over the n clients. Unweighted (`UnweightedMeanFactory`).

  Returns:
    A `tff.aggregators.UnweightedAggregationFactory`.
  """
  return aggregation_measurements.with_client_fractions(tff.aggregators.UnweightedMeanFactory())


def _adaptive_zeroing_norm() -> Any:
  return tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
      initial_estimate=_ZEROING_INITIAL_ESTIMATE,
      target_quantile=_ZEROING_TARGET_QUANTILE,
      learning_rate=_ZEROING_LEARNING_RATE,
      multiplier=_ZEROING_MULTIPLIER,
      increment=_ZEROING_INCREMENT,
  )


def _zeroed(inner: Factory, zeroing_norm: float | None) -> Factory:
  """Wraps `inner` in TFF's zeroing: adaptive if `zeroing_norm` is None, else fixed."""
  norm = (
      _adaptive_zeroing_norm()
      if zeroing_norm is None
      else _check_positive(zeroing_norm, 'zeroing_norm')
  )
  return tff.aggregators.zeroing_factory(norm, inner)


def clipped_mean(
    *,
    weighted: bool = True,
    clipping: bool = True,
    clip_norm: float | None = None,
    adaptive: bool = False,
    target_quantile: float = 0.8,
    clip_learning_rate: float = 0.2,
    zeroing: bool = True,
    zeroing_norm: float | None = None,
) -> Factory:
  """Mean of L2-clipped client values, zeroing outliers. Weighted or unweighted (`weighted=`).

  What TFF calls `tff.learning.robust_aggregator` (and this project called `robust` until
  it was renamed, to keep it apart from the Byzantine-robust `median` and `trimmed_mean`).
  Composition (TFF factories, inside out): mean -> L2 clipping -> zeroing.

  * Clipping: x_i <- x_i * min(1, C / ||x_i||_2). C is fixed at `clip_norm`, or,
    when `adaptive` is set or `clip_norm` is None, tracks the `target_quantile` of
    the clients' update norms (geometric update C <- C * exp(-lr * (b - q)), b the
    fraction of unclipped clients; Andrew et al. 2021,
    https://arxiv.org/abs/1905.03871, without noise) starting from `clip_norm`
    (default 1.0). The defaults match `tff.learning.robust_aggregator`.
  * Zeroing: a client with ||x_i||_inf > Z is replaced by 0 (its weight still
    counts in a weighted mean). Z is fixed at `zeroing_norm`, or, if None,
    TFF's adaptive Z = 2 * (0.98-quantile of ||x_i||_inf) + 1, against corrupted
    updates.

  Measurements: `zeroing_norm`, `zeroed_count`, `zeroed_fraction`, and nested
  under `zeroing`: `clipping_norm`, `clipped_count`, `clipped_fraction`; plus
  `client_count`. (Without zeroing the clipping ones are at the top.)

  Args:
    weighted: Weighted (sum w_i x_i / sum w_i) or unweighted mean after clipping.
    clipping: Whether to clip in L2 norm.
    clip_norm: Fixed clip norm C; with `adaptive`, the initial estimate. None means
      adaptive, starting from 1.0.
    adaptive: Track the clip norm even though `clip_norm` is given.
    target_quantile: Quantile q of client norms that the adaptive clip tracks.
    clip_learning_rate: Learning rate of the adaptive clip (geometric).
    zeroing: Whether to zero out clients with huge values.
    zeroing_norm: Fixed L-infinity zeroing threshold; None means adaptive.

  Returns:
    A `WeightedAggregationFactory` if `weighted`, else an `UnweightedAggregationFactory`.

  Raises:
    ValueError: For a non-positive norm or learning rate, a quantile outside (0, 1),
      or clipping (zeroing) options with clipping (zeroing) turned off.
  """
  if not clipping and (clip_norm is not None or adaptive):
    raise ValueError('clip_norm and adaptive configure clipping; they need clipping=True')
  if not zeroing and zeroing_norm is not None:
    raise ValueError('zeroing_norm configures zeroing; it needs zeroing=True')
  aggregation_factory = (
      tff.aggregators.MeanFactory() if weighted else tff.aggregators.UnweightedMeanFactory()
  )
  if clipping:
    if adaptive or clip_norm is None:
      norm = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
          initial_estimate=1.0 if clip_norm is None else _check_positive(clip_norm, 'clip_norm'),
          target_quantile=_check_open_unit(target_quantile, 'target_quantile'),
          learning_rate=_check_positive(clip_learning_rate, 'clip_learning_rate'),
      )
    else:
      norm = _check_positive(clip_norm, 'clip_norm')
    aggregation_factory = tff.aggregators.clipping_factory(norm, aggregation_factory)
  if zeroing:
    aggregation_factory = _zeroed(aggregation_factory, zeroing_norm)
  return aggregation_measurements.with_client_fractions(aggregation_factory)


def _dp_with_measurements(
    dp_factory: Any, zeroing: bool
) -> tff.aggregators.UnweightedAggregationFactory:
  aggregation_factory = aggregation_measurements.with_dp_noise(dp_factory)
  if zeroing:
    aggregation_factory = _zeroed(aggregation_factory, None)
  return aggregation_measurements.with_client_fractions(aggregation_factory)


def dp_fixed(
    *, noise_multiplier: float, clients_per_round: int, clip_norm: float, zeroing: bool = False,
    noise_seed: int | None = None,
) -> tff.aggregators.UnweightedAggregationFactory:
  """Gaussian-mechanism DP mean with a fixed clip (DP-FedAvg). Unweighted.

  result = (sum_i clip_C(x_i) + N(0, (z C)^2 I)) / m, with clip_C the L2 clip to
  C = `clip_norm`, z = `noise_multiplier` and m = `clients_per_round` (the
  *expected* number of clients, not the actual one, so that the sensitivity of the
  mean is C / m). McMahan et al. 2018, https://arxiv.org/abs/1710.06963. TFF's
  `DifferentiallyPrivateFactory.gaussian_fixed`. Unweighted because the guarantee
  needs every client's influence bounded by C; use `recipes.privacy` for (epsilon, delta).

  Measurements (besides `client_count`): under `dp_query_metrics` TFF's query
  metrics (none for a fixed clip); `clip_norm` = C; `noise_stddev` = z C / m.

  Args:
    noise_multiplier: z >= 0, noise stddev relative to the clip norm.
    clients_per_round: m > 0, expected clients per round.
    clip_norm: C > 0, the L2 clip norm of each client update.
    zeroing: Also zero out clients with huge values (TFF's adaptive zeroing; its
      threshold estimate is not privatized and is not covered by the accounting).
    noise_seed: Seed of the Gaussian noise (reproducible runs; see `recipes.seeded_dp`:
      whoever knows it can remove the noise); None draws one from the OS.

  Returns:
    A `tff.aggregators.UnweightedAggregationFactory`.

  Raises:
    ValueError: For a negative multiplier or non-positive clients or clip.
  """
  if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier >= 0):
    raise ValueError(f'noise_multiplier must be >= 0, got {noise_multiplier!r}')
  dp_factory = seeded_dp.gaussian_fixed(
      noise_multiplier=float(noise_multiplier),
      clients_per_round=_check_positive(clients_per_round, 'clients_per_round'),
      clip=_check_positive(clip_norm, 'clip_norm'),
      noise_seed=noise_seed,
  )
  return _dp_with_measurements(dp_factory, zeroing)


def dp_adaptive_max_noise_multiplier(
    clients_per_round: float, clipped_count_stddev: float | None = None
) -> float:
  """Largest noise multiplier `dp_adaptive` accepts (exclusive): 2 * clipped_count_stddev.

  TFF splits the privacy budget between the update sum (noise z_v) and the
  count of unclipped clients (noise sigma_b): z^-2 = z_v^-2 + (2 sigma_b)^-2, so
  z must stay below 2 sigma_b, sigma_b defaulting to 0.05 * clients_per_round.
  """
  if clipped_count_stddev is None:
    clipped_count_stddev = 0.05 * clients_per_round
  return 2.0 * clipped_count_stddev


def dp_adaptive(
    *,
    noise_multiplier: float,
    clients_per_round: int,
    initial_clip_norm: float = 0.1,
    target_quantile: float = 0.5,
    learning_rate: float = 0.2,
    clipped_count_stddev: float | None = None,
    zeroing: bool = False,
    noise_seed: int | None = None,
) -> tff.aggregators.UnweightedAggregationFactory:
  """Gaussian-mechanism DP mean with a clip adapting to a quantile of update norms. Unweighted.

  As `dp_fixed`, but the clip C_t follows the `target_quantile` of client norms
  through a privatized estimate: C_{t+1} = C_t * exp(-lr * (b~ - q)), b~ the noised
  fraction of unclipped clients (Andrew et al. 2021, https://arxiv.org/abs/1905.03871).
  TFF's `DifferentiallyPrivateFactory.gaussian_adaptive`; `noise_multiplier` is the
  effective total z: the update noise z_v satisfies z^-2 = z_v^-2 + (2 sigma_b)^-2,
  so accounting with z covers both releases.

  Measurements (besides `client_count`): `dp_query_metrics/clip` (the clip for the
  *next* round, from TFF), `clip_norm` (C_t, used this round), `noise_stddev`
  (z_v C_t / m, per coordinate of the mean).

  Args:
    noise_multiplier: Effective z >= 0; must be < 2 * clipped_count_stddev.
    clients_per_round: m > 0, expected clients per round.
    initial_clip_norm: C_0 > 0.
    target_quantile: q in (0, 1), the fraction of clients left unclipped.
    learning_rate: Geometric learning rate of the clip (> 0).
    clipped_count_stddev: sigma_b; None means TFF's default 0.05 * clients_per_round.
    zeroing: Also zero out clients with huge values (not covered by the accounting).
    noise_seed: Seed of both Gaussian noises (see `dp_fixed`); None draws one from the OS.

  Returns:
    A `tff.aggregators.UnweightedAggregationFactory`.

  Raises:
    ValueError: For out-of-range arguments, including z >= 2 sigma_b.
  """
  if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier >= 0):
    raise ValueError(f'noise_multiplier must be >= 0, got {noise_multiplier!r}')
  clients_per_round = _check_positive(clients_per_round, 'clients_per_round')
  limit = dp_adaptive_max_noise_multiplier(clients_per_round, clipped_count_stddev)
  if noise_multiplier > 0 and noise_multiplier >= limit:
    raise ValueError(
        f'dp_adaptive needs noise_multiplier < 2 * clipped_count_stddev = {limit:g} '
        f'(default 0.1 * clients_per_round); got {noise_multiplier:g}'
    )
  dp_factory = seeded_dp.gaussian_adaptive(
      noise_multiplier=float(noise_multiplier),
      clients_per_round=clients_per_round,
      initial_l2_norm_clip=_check_positive(initial_clip_norm, 'initial_clip_norm'),
      target_unclipped_quantile=_check_open_unit(target_quantile, 'target_quantile'),
      learning_rate=_check_positive(learning_rate, 'learning_rate'),
      clipped_count_stddev=None if clipped_count_stddev is None else float(clipped_count_stddev),
      noise_seed=noise_seed,
  )
  return _dp_with_measurements(dp_factory, zeroing)


def compressed(
    *, quantization_bits: int = 8, threshold: int = 20000, weighted: bool = True
) -> Factory:
  """Mean of uniformly quantized client values. Weighted or unweighted (`weighted=`).

  Each client tensor t with more than `threshold` elements is sent as
  b = `quantization_bits`-bit integers: t -> min(t) + s * round_stoch((t - min(t)) / s),
  s = (max(t) - min(t)) / (2^b - 1), with unbiased stochastic rounding (Suresh et
  al. 2017, http://proceedings.mlr.press/v70/suresh17a.html); smaller tensors are
  sent exactly. So each coordinate of the (weighted) mean is off by less than
  max_i s_i (weighting happens before quantization and scales s_i by w_i).
  TFF's `EncodedSumFactory.quantize_above_threshold` inside `MeanFactory`.

  Args:
    quantization_bits: b in [1, 16].
    threshold: Tensors with at most this many elements are not quantized (>= 0).
    weighted: Weighted or unweighted mean.

  Returns:
    A `WeightedAggregationFactory` if `weighted`, else an `UnweightedAggregationFactory`.

  Raises:
    ValueError: If `quantization_bits` is outside [1, 16] or `threshold` is negative.
  """
  if not (isinstance(quantization_bits, int) and 1 <= quantization_bits <= 16):
    raise ValueError(f'quantization_bits must be an integer in [1, 16], got {quantization_bits!r}')
  if not (isinstance(threshold, int) and threshold >= 0):
    raise ValueError(f'threshold must be a non-negative integer, got {threshold!r}')
  encoded_sum = tff.aggregators.EncodedSumFactory.quantize_above_threshold(
      quantization_bits=quantization_bits, threshold=threshold
  )
  if weighted:
    return aggregation_measurements.with_client_fractions(tff.aggregators.MeanFactory(encoded_sum))
  return aggregation_measurements.with_client_fractions(
      tff.aggregators.UnweightedMeanFactory(encoded_sum)
  )


def secure(
    *, bound: float, weighted: bool = True, max_weight: float = DEFAULT_MAX_WEIGHT
) -> Factory:
  """Mean computed with TFF's secure sum of bounded values. Weighted or unweighted (`weighted=`).

  The server only sees the sum over clients: each client clips every coordinate
  into [-B, B] (B = `bound`), quantizes it to 32 bits, and the values are added
  with `tff.federated_secure_sum_bitwidth` (Bonawitz et al. 2017). Unweighted:
  result = sum_i clip(x_i) / n, the count also securely summed. Weighted: the
  securely summed value is w_i x_i, so its bound is B * W with W = `max_weight`
  (weights are clipped into [0, W] by their own secure sum): a client with
  |x_ij| <= B and w_i <= W is summed unclipped. Quantization error per client and
  coordinate: about 2 B (W) / 2^32.

  Simulation needs `install_secure_simulation_context()` (TFF's default context
  cannot run the secure-sum intrinsics).

  Measurements (besides `client_count`): under `mean_value`, TFF's
  `secure_upper_threshold`, `secure_lower_threshold`, and the numbers (and
  fractions) of clients with a coordinate clipped: `secure_upper_clipped_count`,
  `secure_lower_clipped_count`. Weighted, the value thresholds reported are B * W.

  Args:
    bound: B > 0, the bound on each coordinate of a client value.
    weighted: Weighted or unweighted mean.
    max_weight: W > 0, the largest client weight (weighted only).

  Returns:
    A `WeightedAggregationFactory` if `weighted`, else an `UnweightedAggregationFactory`.

  Raises:
    ValueError: For a non-positive `bound` or `max_weight`.
  """
  bound = _check_positive(bound, 'bound')
  if weighted:
    max_weight = _check_positive(max_weight, 'max_weight')
    aggregation_factory = tff.aggregators.MeanFactory(
        value_sum_factory=tff.aggregators.SecureSumFactory(bound * max_weight),
        weight_sum_factory=tff.aggregators.SecureSumFactory(
            upper_bound_threshold=max_weight, lower_bound_threshold=0.0
        ),
    )
  else:
    aggregation_factory = tff.aggregators.UnweightedMeanFactory(
        value_sum_factory=tff.aggregators.SecureSumFactory(bound),
        count_sum_factory=tff.aggregators.SecureSumFactory(
            upper_bound_threshold=1, lower_bound_threshold=0
        ),
    )
  return aggregation_measurements.with_client_fractions(aggregation_factory)


def median() -> tff.aggregators.UnweightedAggregationFactory:
  """Coordinate-wise median of client values (Byzantine-robust). Unweighted.

  result_j = median_i x_ij (mean of the two middle values for even n). Tolerates
  fewer than n/2 arbitrary clients. See `recipes.robust_aggregation`.

  Measurements: `client_count`, `non_finite_client_count` (and fraction).

  Returns:
    A `tff.aggregators.UnweightedAggregationFactory`.
  """
  return aggregation_measurements.with_client_fractions(robust_aggregation.median_factory())


def trimmed_mean(*, trim_fraction: float) -> tff.aggregators.UnweightedAggregationFactory:
  """Coordinate-wise trimmed mean (Byzantine-robust). Unweighted.

  Per coordinate, drop the k = floor(beta n) smallest and largest client values
  and average the other n - 2k (beta = `trim_fraction`). See
  `recipes.robust_aggregation`.

  Measurements: `client_count`, `non_finite_client_count` (and fraction),
  `trimmed_per_side` (k).

  Args:
    trim_fraction: beta in [0, 0.5).

  Returns:
    A `tff.aggregators.UnweightedAggregationFactory`.

  Raises:
    ValueError: If `trim_fraction` is outside [0, 0.5).
  """
  return aggregation_measurements.with_client_fractions(
      robust_aggregation.trimmed_mean_factory(trim_fraction)
  )
