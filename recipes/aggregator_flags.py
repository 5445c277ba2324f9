"""Command-line selection of the model aggregator: `--aggregator=...` and its options.

Two layers:

* `build_aggregator(name, *, weighted, clients_per_round, ...)`: pure Python, no
  flags. Checks that the options fit the aggregator and the recipe, raising a
  one-line `UserError` otherwise, and returns a TFF factory of the kind the recipe's
  builder needs (`weighted=True` for `build_weighted_fed_avg`/`build_fed_sgd`,
  False for `build_unweighted_fed_avg`).
* `define_aggregator_flags()` + `aggregator_from_flags(...)`: the absl flags and
  the call that reads them into `build_aggregator`.

Policy for weighting (see `recipes.aggregators`): `mean`, `robust`, `compressed`
and `secure` follow the recipe (`mean` is the example-weighted mean on weighted
recipes and the plain mean on unweighted ones); `unweighted_mean`, `dp_*`, `median` and `trimmed_mean` are unweighted and,
on a weighted recipe, ignore the client weights (every client counts once), which
is what DP and Byzantine robustness need.

Policy for options: an option that does not apply to the chosen aggregator is an
error, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable
from typing import Any

from absl import flags
from absl import logging

from recipes import aggregators
from recipes import privacy
from recipes import robust_aggregation
from recipes.errors import UserError

_DP = ('dp_fixed', 'dp_adaptive')

# Which aggregators each option applies to (the flag is an error elsewhere).
_APPLIES_TO: dict[str, tuple[str, ...]] = {
    'clip_norm': ('robust', *_DP),
    'adaptive_clipping': ('robust',),
    'target_quantile': ('robust', 'dp_adaptive'),
    'noise_multiplier': _DP,
    'target_epsilon': _DP,
    'target_delta': _DP,
    'quantization_bits': ('compressed',),
    'secure_bound': ('secure',),
    'trim_fraction': ('trimmed_mean',),
}

DEFAULT_QUANTIZATION_BITS = 8
DEFAULT_TRIM_FRACTION = 0.1
DEFAULT_DP_INITIAL_CLIP_NORM = 0.1  # TFF's gaussian_adaptive default.


def _check_applicable(request: _Request) -> None:
  """Raises UserError for the first option set that does not apply to the aggregator."""
  name = request.name
  for option, allowed in _APPLIES_TO.items():
    value = getattr(request, option)
    if value is None or value is False:
      continue
    if name not in allowed:
      extra = ' (dp_adaptive always adapts its clip)' if option == 'adaptive_clipping' else ''
      raise UserError(
          f'--{option} only applies to --aggregator={" or ".join(allowed)}{extra}; '
          f'drop it or change --aggregator (now {name})'
      )


def _positive(value: float, flag: str) -> float:
  if not (math.isfinite(value) and value > 0):
    raise UserError(f'--{flag} must be a positive number, got {value:g}')
  return float(value)


def _open_unit(value: float, flag: str) -> float:
  if not 0 < value < 1:
    raise UserError(f'--{flag} must be in (0, 1), got {value:g}')
  return float(value)


@dataclasses.dataclass(frozen=True)
class _Request:
  """What the recipe knows plus the user's aggregator options (None: default)."""

  name: str
  weighted: bool
  clients_per_round: int
  num_clients: int | None = None
  total_rounds: int | None = None
  clip_norm: float | None = None
  adaptive_clipping: bool = False
  target_quantile: float | None = None
  noise_multiplier: float | None = None
  target_epsilon: float | None = None
  target_delta: float | None = None
  quantization_bits: int | None = None
  secure_bound: float | None = None
  trim_fraction: float | None = None
  noise_seed: int | None = None


def _noise_multiplier(request: _Request) -> float:
  """The DP noise multiplier: given, or calibrated to --target_epsilon."""
  if (request.noise_multiplier is None) == (request.target_epsilon is None):
    raise UserError(
        f'--aggregator={request.name} needs exactly one of --noise_multiplier and --target_epsilon'
    )
  if request.target_delta is not None and not 0 < request.target_delta < 1:
    raise UserError(f'--target_delta must be in (0, 1), got {request.target_delta:g}')
  if request.noise_multiplier is not None:
    if not request.noise_multiplier >= 0:
      raise UserError(f'--noise_multiplier must be >= 0, got {request.noise_multiplier:g}')
    return float(request.noise_multiplier)
  if request.num_clients is None or request.total_rounds is None:
    raise UserError(
        '--target_epsilon needs the number of clients and of rounds; this recipe does not know them'
    )
  return _calibrated_noise_multiplier(
      request.clients_per_round,
      request.num_clients,
      request.total_rounds,
      request.target_epsilon,
      request.target_delta,
  )


@functools.lru_cache(maxsize=8)
def _calibrated_noise_multiplier(
    clients_per_round: int,
    num_clients: int,
    total_rounds: int,
    target_epsilon: float,
    target_delta: float | None,
) -> float:
  # Cached: the search takes about a second, and a recipe asks twice (factory, report).
  return privacy.guarantee(
      clients_per_round=clients_per_round,
      num_clients=num_clients,
      rounds=total_rounds,
      target_epsilon=target_epsilon,
      delta=target_delta,
  ).noise_multiplier


# One builder per aggregator: option defaults and checks specific to it.


def _build_robust(request: _Request) -> aggregators.Factory:
  adaptive = request.adaptive_clipping or request.clip_norm is None
  if request.target_quantile is not None and not adaptive:
    raise UserError(
        '--target_quantile needs adaptive clipping: add --adaptive_clipping or drop --clip_norm'
    )
  return aggregators.robust(
      weighted=request.weighted,
      clip_norm=request.clip_norm,
      adaptive=adaptive,
      target_quantile=0.8 if request.target_quantile is None else request.target_quantile,
  )


def _build_dp_fixed(request: _Request) -> aggregators.Factory:
  noise_multiplier = _noise_multiplier(request)
  if request.clip_norm is None:
    raise UserError('--aggregator=dp_fixed needs --clip_norm (or use --aggregator=dp_adaptive)')
  return aggregators.dp_fixed(
      noise_multiplier=noise_multiplier,
      clients_per_round=request.clients_per_round,
      clip_norm=request.clip_norm,
      noise_seed=request.noise_seed,
  )


def _build_dp_adaptive(request: _Request) -> aggregators.Factory:
  z = _noise_multiplier(request)
  if z > 0 and z >= aggregators.dp_adaptive_max_noise_multiplier(request.clients_per_round):
    raise UserError(
        f'--aggregator=dp_adaptive with noise multiplier {z:.3g} needs more than '
        f'{10 * z:.3g} clients per round (TFF noises its clipped-client count with '
        'stddev 0.05 * clients per round); raise the clients per round or use '
        '--aggregator=dp_fixed'
    )
  return aggregators.dp_adaptive(
      noise_multiplier=z,
      clients_per_round=request.clients_per_round,
      initial_clip_norm=(
          DEFAULT_DP_INITIAL_CLIP_NORM if request.clip_norm is None else request.clip_norm
      ),
      target_quantile=0.5 if request.target_quantile is None else request.target_quantile,
      noise_seed=request.noise_seed,
  )


def _build_compressed(request: _Request) -> aggregators.Factory:
  bits = request.quantization_bits
  bits = DEFAULT_QUANTIZATION_BITS if bits is None else bits
  if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
    raise UserError(f'--quantization_bits must be an integer in [1, 16], got {bits!r}')
  return aggregators.compressed(quantization_bits=bits, weighted=request.weighted)


def _build_secure(request: _Request) -> aggregators.Factory:
  if request.secure_bound is None:
    raise UserError(
        '--aggregator=secure needs --secure_bound, the largest |coordinate| of a client update'
    )
  bound = _positive(request.secure_bound, 'secure_bound')
  return aggregators.secure(bound=bound, weighted=request.weighted)


def _build_trimmed_mean(request: _Request) -> aggregators.Factory:
  beta = DEFAULT_TRIM_FRACTION if request.trim_fraction is None else request.trim_fraction
  if not 0 <= beta < 0.5:
    raise UserError(f'--trim_fraction must be in [0, 0.5), got {beta:g}')
  clients = request.clients_per_round
  if beta > 0 and robust_aggregation.trimmed_count(clients, beta) == 0:
    raise UserError(
        f'--trim_fraction={beta:g} trims nothing with {clients} clients per round '
        f'(floor({beta:g} * {clients}) = 0); use at least {1 / clients:.3g} or more clients'
    )
  return aggregators.trimmed_mean(trim_fraction=beta)


_BUILDERS: dict[str, Callable[[_Request], aggregators.Factory]] = {
    # `mean` is the recipe's own mean: example-weighted on weighted recipes, plain on
    # unweighted ones (e.g. --weighting=uniform), so the default works everywhere.
    'mean': lambda request: aggregators.mean() if request.weighted else aggregators.unweighted_mean(),
    'unweighted_mean': lambda request: aggregators.unweighted_mean(),
    'robust': _build_robust,
    'dp_fixed': _build_dp_fixed,
    'dp_adaptive': _build_dp_adaptive,
    'compressed': _build_compressed,
    'secure': _build_secure,
    'median': lambda request: aggregators.median(),
    'trimmed_mean': _build_trimmed_mean,
}
assert tuple(_BUILDERS) == aggregators.AGGREGATORS


def build_aggregator(
    name: str,
    *,
    weighted: bool,
    clients_per_round: int,
    num_clients: int | None = None,
    total_rounds: int | None = None,
    clip_norm: float | None = None,
    adaptive_clipping: bool = False,
    target_quantile: float | None = None,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    target_delta: float | None = None,
    quantization_bits: int | None = None,
    secure_bound: float | None = None,
    trim_fraction: float | None = None,
    noise_seed: int | None = None,
) -> aggregators.Factory:
  """Builds the aggregator `name` for a recipe, validating every option. No flags involved.

  Options left at None (or False) take the aggregator's default; an option set
  for an aggregator it does not apply to is an error.

  Args:
    name: One of `recipes.aggregators.AGGREGATORS`.
    weighted: Whether the recipe's builder takes a `WeightedAggregationFactory`.
    clients_per_round: Clients sampled each round (DP normalization, trim check).
    num_clients: Client population; needed with `target_epsilon`.
    total_rounds: Rounds of the run; needed with `target_epsilon`.
    clip_norm: robust: fixed L2 clip (None: adaptive from 1.0); dp_fixed: the clip
      (required); dp_adaptive: the initial clip (default 0.1).
    adaptive_clipping: robust: adapt the clip, starting from `clip_norm`.
    target_quantile: Quantile of client norms an adaptive clip tracks (robust
      default 0.8, dp_adaptive 0.5).
    noise_multiplier: DP noise multiplier z (or give `target_epsilon`).
    target_epsilon: DP: calibrate z to reach this epsilon after `total_rounds`.
    target_delta: DP: delta for the calibration (default num_clients^-1.1).
    quantization_bits: compressed: bits per coordinate, in [1, 16] (default 8).
    secure_bound: secure: bound B on each coordinate of a client update (required).
    trim_fraction: trimmed_mean: fraction in [0, 0.5) trimmed at each end (default 0.1).
    noise_seed: dp_*: seed of the Gaussian noise (None: from the OS; see
      `recipes.seeded_dp`).

  Returns:
    A `WeightedAggregationFactory` if `weighted`, else an `UnweightedAggregationFactory`.

  Raises:
    UserError: With one line saying what does not fit and what to do.
  """
  if name not in aggregators.AGGREGATORS:
    raise UserError(
        f'unknown --aggregator={name}; choose one of {", ".join(aggregators.AGGREGATORS)}'
    )
  request = _Request(
      name=name,
      weighted=weighted,
      clients_per_round=clients_per_round,
      num_clients=num_clients,
      total_rounds=total_rounds,
      clip_norm=clip_norm,
      adaptive_clipping=adaptive_clipping,
      target_quantile=target_quantile,
      noise_multiplier=noise_multiplier,
      target_epsilon=target_epsilon,
      target_delta=target_delta,
      quantization_bits=quantization_bits,
      secure_bound=secure_bound,
      trim_fraction=trim_fraction,
      noise_seed=noise_seed,
  )
  _check_applicable(request)
  if (
      isinstance(clients_per_round, bool)
      or not isinstance(clients_per_round, int)
      or clients_per_round < 1
  ):
    raise UserError(f'clients per round must be a positive integer, got {clients_per_round!r}')
  # Shared range checks before the per-aggregator builders see the values.
  if clip_norm is not None:
    request = dataclasses.replace(request, clip_norm=_positive(clip_norm, 'clip_norm'))
  if target_quantile is not None:
    request = dataclasses.replace(
        request, target_quantile=_open_unit(target_quantile, 'target_quantile')
    )

  factory = _BUILDERS[name](request)
  if weighted and not aggregators.is_weighted(factory):
    logging.info(
        '--aggregator=%s is unweighted: client weights are ignored, every client counts once', name
    )
  return aggregators.for_recipe(factory, weighted=weighted)


# ---------------------------------------------------------------------------
# absl flags.
# ---------------------------------------------------------------------------

_OPTION_FLAGS = tuple(_APPLIES_TO)


def define_aggregator_flags(*, default_aggregator: str = 'mean') -> None:
  """Defines `--aggregator` and its option flags on `absl.flags.FLAGS`. Idempotent.

  Args:
    default_aggregator: The `--aggregator` default.
  """
  if 'aggregator' in flags.FLAGS:
    return
  flags.DEFINE_enum(
      'aggregator',
      default_aggregator,
      list(aggregators.AGGREGATORS),
      'How the server combines client model updates. mean: the recipe\'s mean (weighted by examples unless --weighting=uniform); '
      'unweighted_mean; robust: L2 clipping + zeroing of outliers; dp_fixed / dp_adaptive: '
      'Gaussian differential privacy with a fixed / quantile-tracked clip; compressed: '
      'quantized updates; secure: secure summation of bounded updates; median / trimmed_mean: '
      'Byzantine-robust coordinate-wise statistics (unweighted).',
  )
  flags.DEFINE_float(
      'clip_norm',
      None,
      'L2 clip norm of client updates (> 0). robust: fixed clip (unset: adaptive from 1.0); '
      'dp_fixed: required; dp_adaptive: initial clip (default 0.1).',
      lower_bound=0.0,
  )
  flags.DEFINE_bool(
      'adaptive_clipping',
      False,
      'robust only: track a quantile of client update norms, starting from --clip_norm.',
  )
  flags.DEFINE_float(
      'target_quantile',
      None,
      'Quantile of client update norms an adaptive clip tracks, in (0, 1) '
      '(default 0.8 for robust, 0.5 for dp_adaptive).',
      lower_bound=0.0,
      upper_bound=1.0,
  )
  flags.DEFINE_float(
      'noise_multiplier',
      None,
      'dp_*: Gaussian noise stddev relative to the clip norm, >= 0 (or give --target_epsilon).',
      lower_bound=0.0,
  )
  flags.DEFINE_float(
      'target_epsilon',
      None,
      'dp_*: choose, once at the start, the noise multiplier that reaches this epsilon (> 0) '
      'after --total_rounds.',
      lower_bound=0.0,
  )
  flags.DEFINE_float(
      'target_delta',
      None,
      'dp_*: delta of the (epsilon, delta) guarantee, in (0, 1) (default num_clients^-1.1, '
      'below 1/num_clients).',
      lower_bound=0.0,
      upper_bound=1.0,
  )
  flags.DEFINE_integer(
      'quantization_bits',
      None,
      'compressed: bits per coordinate of quantized updates, 1-16 '
      f'(default {DEFAULT_QUANTIZATION_BITS}).',
      lower_bound=1,
      upper_bound=16,
  )
  flags.DEFINE_float(
      'secure_bound',
      None,
      'secure (required): bound on |coordinate| of a client update (> 0); larger values '
      'are clipped.',
      lower_bound=0.0,
  )
  flags.DEFINE_enum(
      'dp_noise',
      'seeded',
      ['seeded', 'os'],
      'dp_*: source of the Gaussian noise. seeded: drawn from a seed derived from --seed, so '
      'a run is reproducible (for simulation: whoever knows the seed can remove the noise); '
      'os: fresh OS entropy (what a deployment needs; runs then differ).',
  )
  flags.DEFINE_float(
      'trim_fraction',
      None,
      'trimmed_mean: fraction of clients dropped at each end, in [0, 0.5) '
      f'(default {DEFAULT_TRIM_FRACTION}).',
      lower_bound=0.0,
      upper_bound=0.5,
  )


def validate_aggregator_flags() -> None:
  """Strict bounds of the option flags that absl's closed bounds cannot express.

  Raises:
    UserError: For the first value out of its range.
  """
  values = flags.FLAGS
  if values['dp_noise'].present and values.aggregator not in _DP:
    raise UserError(f'--dp_noise only applies to --aggregator={" or ".join(_DP)}')
  for name in ('clip_norm', 'target_epsilon', 'secure_bound'):
    if values[name].value is not None and values[name].value <= 0:
      raise UserError(f'--{name} must be positive, got {values[name].value:g}')
  for name in ('target_quantile', 'target_delta'):
    value = values[name].value
    if value is not None and not 0 < value < 1:
      raise UserError(f'--{name} must be in (0, 1), got {value:g}')
  if values.trim_fraction is not None and values.trim_fraction >= 0.5:
    raise UserError(f'--trim_fraction must be in [0, 0.5), got {values.trim_fraction:g}')


def dp_noise_seed(seed: int) -> int | None:
  """The DP noise seed for a run with `--seed=seed`: None (OS entropy) with --dp_noise=os."""
  if flags.FLAGS.dp_noise == 'os':
    return None
  digest = hashlib.sha256(f'{seed}/dp-noise'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') >> 1


def _flag_options() -> dict[str, Any]:
  return {option: flags.FLAGS[option].value for option in _OPTION_FLAGS}


def aggregator_from_flags(
    *, weighted: bool, clients_per_round: int, num_clients: int, total_rounds: int,
    noise_multiplier: float | None = None, noise_seed: int | None = None,
) -> aggregators.Factory:
  """`build_aggregator` with the values of the flags from `define_aggregator_flags`.

  With `--aggregator=secure` this also makes the execution context simulate the
  secure-sum intrinsics (TFF's C++ worker cannot run them), on the local worker or
  on the `--tff_worker`(s): call it before running any TFF computation.

  Args:
    weighted: Whether the recipe's builder takes a `WeightedAggregationFactory`.
    clients_per_round: Clients sampled each round.
    num_clients: Client population (privacy accounting).
    total_rounds: Rounds of the run (privacy accounting).
    noise_multiplier: DP: the noise multiplier fixed for the run (e.g. calibrated once
      at its start); replaces --noise_multiplier/--target_epsilon.
    noise_seed: DP: seed of the noise (None: from the OS).

  Returns:
    The aggregation factory.

  Raises:
    UserError: For flags that do not fit together.
  """
  name = flags.FLAGS.aggregator
  options = _flag_options()
  if noise_multiplier is not None:
    options.update(noise_multiplier=noise_multiplier, target_epsilon=None)
  factory = build_aggregator(
      name,
      weighted=weighted,
      clients_per_round=clients_per_round,
      num_clients=num_clients,
      total_rounds=total_rounds,
      noise_seed=noise_seed,
      **options,
  )
  if name == 'secure':
    aggregators.install_secure_simulation_context()
  return factory
