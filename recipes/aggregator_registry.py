"""The aggregators that `--aggregator` offers: one `AggregatorSpec` each, and what derives from it.

An aggregator is a factory in `recipes.aggregators` (plain Python, usable without flags)
plus one entry in `SPECS` here, which says

* how to build it from a `Request` (what the recipe knows plus the user's options),
* its weighting: `recipe` (weighted on weighted recipes, unweighted on unweighted ones)
  or `unweighted` (every client counts once, whatever the recipe: DP needs equal
  weights, and Byzantine robustness cannot trust self-reported example counts),
* the option flags it takes (from `OPTIONS`, the one table of option flags),
* an example: the options that make it build on a round of 10 clients.

Everything else is derived from those entries: the `--aggregator` choices and its
`--help`, which aggregators an option flag applies to (an option set for an aggregator
that does not take it is an error, not silently ignored), the range checks of the
option flags (the same check at parse time and in `build_aggregator`), and the tests'
matrix of aggregators x recipes (`tests/recipe_matrix.py`).

Two entry points:

* `build_aggregator(name, *, weighted, clients_per_round, ..., **options)`: no flags.
  Returns a TFF factory of the kind the recipe's builder needs (`weighted=True` for
  `build_weighted_fed_avg`/`build_fed_sgd`, False for `build_unweighted_fed_avg`), or
  raises a one-line `UserError`.
* `define_aggregator_flags()`, `validate_aggregator_flags()`, `aggregator_from_flags(...)`:
  the absl flags, their checks right after parsing, and the call that reads them.

Privacy accounting (calibrating the noise multiplier to `--target_epsilon`) lives in
`recipes.privacy`; this module only asks it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

from absl import flags
from absl import logging

from core.errors import UserError
from recipes import aggregators
from recipes import privacy
from recipes import robust_aggregation

# Defaults of options (None in a `Request` means "not given").
DEFAULT_QUANTIZATION_BITS = 8
DEFAULT_TRIM_FRACTION = 0.1
DEFAULT_DP_INITIAL_CLIP_NORM = 0.1  # TFF's gaussian_adaptive default.
DEFAULT_CLIPPED_MEAN_QUANTILE = 0.8  # tff.learning.robust_aggregator's.
DEFAULT_DP_ADAPTIVE_QUANTILE = 0.5  # TFF's gaussian_adaptive default.

# Old names, refused with a hint (a silent alias would record the old name in hparams.json
# and make a resumed run look changed).
RENAMED = {'robust': 'clipped_mean'}


# ---------------------------------------------------------------------------
# Options: one table; each aggregator spec names the ones it takes.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Option:
  """An option flag of the aggregators, with its range.

  Attributes:
    name: Flag name (and keyword of `build_aggregator`).
    kind: `float`, `int`, `bool` or `enum`.
    help: `--help` text; the aggregators it applies to are added in front.
    default: Flag default (None: the aggregator's own default).
    lower: Lower bound, or None.
    lower_open: Whether `lower` itself is excluded.
    upper: Upper bound, or None.
    upper_open: Whether `upper` itself is excluded.
    choices: The values of an `enum` option.
    flag_only: Read from the flags only, not a keyword of `build_aggregator`.
    hint: Added to the "only applies to" error.
  """

  name: str
  kind: str
  help: str
  default: Any = None
  lower: float | None = None
  lower_open: bool = False
  upper: float | None = None
  upper_open: bool = False
  choices: tuple[str, ...] = ()
  flag_only: bool = False
  hint: str = ''

  def range_text(self) -> str:
    """The accepted values, as the error messages say them."""
    if self.lower is not None and self.upper is not None:
      interval = (f'{"(" if self.lower_open else "["}{self.lower:g}, '
                  f'{self.upper:g}{")" if self.upper_open else "]"}')
      return f'an integer in {interval}' if self.kind == 'int' else f'in {interval}'
    if self.lower == 0 and self.lower_open:
      return 'a positive number'
    return f'>= {self.lower:g}'

  def check(self, value: Any) -> None:
    """Raises a one-line `UserError` if `value` (not None) is outside the range."""
    if self.kind in ('bool', 'enum') or value is None:
      return
    if self.kind == 'int':
      ok = isinstance(value, int) and not isinstance(value, bool)
    else:
      ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (self.lower is None or value > self.lower or (value == self.lower and not self.lower_open))
    ok = ok and (self.upper is None or value < self.upper or (value == self.upper and not self.upper_open))
    if not ok:
      shown = f'{value:g}' if isinstance(value, float) else repr(value)
      raise UserError(f'--{self.name} must be {self.range_text()}, got {shown}')


OPTIONS: dict[str, Option] = {option.name: option for option in (
    Option('clip_norm', 'float',
           'L2 clip norm of client updates. clipped_mean: fixed clip (unset: adaptive from '
           '1.0); dp_fixed: required; dp_adaptive: initial clip (default '
           f'{DEFAULT_DP_INITIAL_CLIP_NORM}).', lower=0.0, lower_open=True),
    Option('adaptive_clipping', 'bool',
           'Track a quantile of client update norms, starting from --clip_norm.',
           default=False, hint=' (dp_adaptive always adapts its clip)'),
    Option('target_quantile', 'float',
           'Quantile of client update norms an adaptive clip tracks (default '
           f'{DEFAULT_CLIPPED_MEAN_QUANTILE} for clipped_mean, {DEFAULT_DP_ADAPTIVE_QUANTILE} for '
           'dp_adaptive).', lower=0.0, lower_open=True, upper=1.0, upper_open=True),
    Option('noise_multiplier', 'float',
           'Gaussian noise stddev relative to the clip norm (or give --target_epsilon).',
           lower=0.0),
    Option('target_epsilon', 'float',
           'Choose, once at the start, the noise multiplier that reaches this epsilon after '
           '--total_rounds.', lower=0.0, lower_open=True),
    Option('target_delta', 'float',
           'delta of the (epsilon, delta) guarantee (default num_clients^-1.1, below '
           '1/num_clients).', lower=0.0, lower_open=True, upper=1.0, upper_open=True),
    Option('quantization_bits', 'int',
           f'Bits per coordinate of quantized updates (default {DEFAULT_QUANTIZATION_BITS}).',
           lower=1, upper=16),
    Option('secure_bound', 'float',
           'Required: bound on |coordinate| of a client update; larger values are clipped.',
           lower=0.0, lower_open=True),
    Option('dp_noise', 'enum',
           'Source of the Gaussian noise. seeded: drawn from a seed derived from --seed, so a '
           'run is reproducible (for simulation: whoever knows the seed can remove the noise); '
           'os: fresh OS entropy (what a deployment needs; runs then differ).',
           default='seeded', choices=('seeded', 'os'), flag_only=True),
    Option('trim_fraction', 'float',
           'Fraction of clients dropped at each end of every coordinate (default '
           f'{DEFAULT_TRIM_FRACTION}).', lower=0.0, upper=0.5, upper_open=True),
)}


# ---------------------------------------------------------------------------
# Specs: one per aggregator.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
  """What a builder gets: what the recipe knows plus the user's options.

  Attributes:
    name: The aggregator's name.
    weighted: Whether the recipe's builder takes a `WeightedAggregationFactory`.
    clients_per_round: Clients sampled each round (the expected number with Poisson).
    num_clients: Client population, if known (needed by `target_epsilon`).
    total_rounds: Rounds of the run, if known (needed by `target_epsilon`).
    noise_seed: DP noise seed (None: from the OS; see `recipes.seeded_dp`).
    options: The options given (None and False values left out), range-checked.
  """

  name: str
  weighted: bool
  clients_per_round: int
  num_clients: int | None = None
  total_rounds: int | None = None
  noise_seed: int | None = None
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def get(self, option: str, default: Any = None) -> Any:
    """The option's value, or `default` if it was not given."""
    return self.options.get(option, default)


@dataclasses.dataclass(frozen=True)
class AggregatorSpec:
  """Everything the command line and the tests need to know about one aggregator.

  Attributes:
    name: The `--aggregator` value.
    summary: What it does, for `--help` (a phrase).
    build: Builds the factory from a `Request`; raises `UserError` for options that do
      not fit (beyond their ranges, which are checked before).
    weighting: `recipe`: the factory is weighted on weighted recipes and unweighted on
      unweighted ones; `unweighted`: always unweighted (on a weighted recipe every client
      counts once).
    options: Names of the `OPTIONS` it takes.
    example: Options that make it build on a round of 10 clients (tests, docs).
    simulates_secure_sum: Needs TFF's secure-sum intrinsics simulated
      (`aggregators.install_secure_simulation_context`), which changes the execution
      context for the rest of the process.
  """

  name: str
  summary: str
  build: Callable[[Request], aggregators.Factory]
  weighting: str = 'recipe'
  options: tuple[str, ...] = ()
  example: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  simulates_secure_sum: bool = False

  def __post_init__(self) -> None:
    assert self.weighting in ('recipe', 'unweighted'), self.weighting
    unknown = set(self.options) - set(OPTIONS)
    assert not unknown, f'{self.name}: unknown options {unknown}'


def _noise_multiplier(request: Request) -> float:
  """The DP noise multiplier: given, or calibrated to --target_epsilon (`recipes.privacy`)."""
  z, target_epsilon = request.get('noise_multiplier'), request.get('target_epsilon')
  if (z is None) == (target_epsilon is None):
    raise UserError(
        f'--aggregator={request.name} needs exactly one of --noise_multiplier and --target_epsilon')
  if z is not None:
    return float(z)
  if request.num_clients is None or request.total_rounds is None:
    raise UserError(
        '--target_epsilon needs the number of clients and of rounds; this recipe does not know them')
  return privacy.calibrated_noise_multiplier(
      clients_per_round=request.clients_per_round, num_clients=request.num_clients,
      rounds=request.total_rounds, target_epsilon=target_epsilon,
      delta=request.get('target_delta'))


def _build_clipped_mean(request: Request) -> aggregators.Factory:
  clip_norm = request.get('clip_norm')
  adaptive = request.get('adaptive_clipping', False) or clip_norm is None
  if request.get('target_quantile') is not None and not adaptive:
    raise UserError(
        '--target_quantile needs adaptive clipping: add --adaptive_clipping or drop --clip_norm')
  return aggregators.clipped_mean(
      weighted=request.weighted, clip_norm=clip_norm, adaptive=adaptive,
      target_quantile=request.get('target_quantile', DEFAULT_CLIPPED_MEAN_QUANTILE))


def _build_dp_fixed(request: Request) -> aggregators.Factory:
  z = _noise_multiplier(request)
  if request.get('clip_norm') is None:
    raise UserError('--aggregator=dp_fixed needs --clip_norm (or use --aggregator=dp_adaptive)')
  return aggregators.dp_fixed(
      noise_multiplier=z, clients_per_round=request.clients_per_round,
      clip_norm=request.get('clip_norm'), noise_seed=request.noise_seed)


def _build_dp_adaptive(request: Request) -> aggregators.Factory:
  z = _noise_multiplier(request)
  if z > 0 and z >= aggregators.dp_adaptive_max_noise_multiplier(request.clients_per_round):
    raise UserError(
        f'--aggregator=dp_adaptive with noise multiplier {z:.3g} needs more than '
        f'{10 * z:.3g} clients per round (TFF noises its clipped-client count with '
        'stddev 0.05 * clients per round); raise the clients per round or use '
        '--aggregator=dp_fixed')
  return aggregators.dp_adaptive(
      noise_multiplier=z, clients_per_round=request.clients_per_round,
      initial_clip_norm=request.get('clip_norm', DEFAULT_DP_INITIAL_CLIP_NORM),
      target_quantile=request.get('target_quantile', DEFAULT_DP_ADAPTIVE_QUANTILE),
      noise_seed=request.noise_seed)


def _build_trimmed_mean(request: Request) -> aggregators.Factory:
  beta = request.get('trim_fraction', DEFAULT_TRIM_FRACTION)
  clients = request.clients_per_round
  if beta > 0 and robust_aggregation.trimmed_count(clients, beta) == 0:
    raise UserError(
        f'--trim_fraction={beta:g} trims nothing with {clients} clients per round '
        f'(floor({beta:g} * {clients}) = 0); use at least {1 / clients:.3g} or more clients')
  return aggregators.trimmed_mean(trim_fraction=beta)


def _build_secure(request: Request) -> aggregators.Factory:
  if request.get('secure_bound') is None:
    raise UserError(
        '--aggregator=secure needs --secure_bound, the largest |coordinate| of a client update')
  return aggregators.secure(bound=request.get('secure_bound'), weighted=request.weighted)


_DP_OPTIONS = ('noise_multiplier', 'target_epsilon', 'target_delta', 'dp_noise')

SPECS: dict[str, AggregatorSpec] = {spec.name: spec for spec in (
    AggregatorSpec(
        'mean', "the recipe's mean (weighted by examples unless --weighting=uniform)",
        lambda request: aggregators.mean() if request.weighted else aggregators.unweighted_mean()),
    AggregatorSpec(
        'unweighted_mean', 'every client counts once',
        lambda request: aggregators.unweighted_mean(), weighting='unweighted'),
    AggregatorSpec(
        'clipped_mean', 'L2 clipping + zeroing of outliers (TFF\'s robust_aggregator)',
        _build_clipped_mean,
        options=('clip_norm', 'adaptive_clipping', 'target_quantile'),
        example={'clip_norm': 1.0}),
    AggregatorSpec(
        'dp_fixed', 'Gaussian differential privacy with a fixed clip', _build_dp_fixed,
        weighting='unweighted', options=('clip_norm', *_DP_OPTIONS),
        example={'clip_norm': 1.0, 'noise_multiplier': 0.1}),
    AggregatorSpec(
        'dp_adaptive', 'Gaussian differential privacy with a quantile-tracked clip',
        _build_dp_adaptive, weighting='unweighted',
        options=('clip_norm', 'target_quantile', *_DP_OPTIONS),
        example={'noise_multiplier': 0.1}),
    AggregatorSpec(
        'compressed', 'quantized updates',
        lambda request: aggregators.compressed(
            quantization_bits=request.get('quantization_bits', DEFAULT_QUANTIZATION_BITS),
            weighted=request.weighted),
        options=('quantization_bits',), example={'quantization_bits': 4}),
    AggregatorSpec(
        'secure', 'secure summation of bounded updates', _build_secure,
        options=('secure_bound',), example={'secure_bound': 1.0}, simulates_secure_sum=True),
    AggregatorSpec(
        'median', 'Byzantine-robust coordinate-wise median',
        lambda request: aggregators.median(), weighting='unweighted'),
    AggregatorSpec(
        'trimmed_mean', 'Byzantine-robust coordinate-wise trimmed mean', _build_trimmed_mean,
        weighting='unweighted', options=('trim_fraction',), example={'trim_fraction': 0.2}),
)}


def names_taking(option: str) -> tuple[str, ...]:
  """The aggregators that take `option` (e.g. `noise_multiplier`: the DP ones)."""
  return tuple(name for name, spec in SPECS.items() if option in spec.options)


def _spec(name: str) -> AggregatorSpec:
  if name in RENAMED:
    raise UserError(f'--aggregator={name} is now called {RENAMED[name]} (L2 clipping + zeroing '
                    'of outliers; the Byzantine-robust ones are median and trimmed_mean)')
  if name not in SPECS:
    raise UserError(f'unknown --aggregator={name}; choose one of {", ".join(SPECS)}')
  return SPECS[name]


def _check_applicable(spec: AggregatorSpec, given: Mapping[str, Any]) -> None:
  """Raises UserError for the first option given that the aggregator does not take."""
  for option in OPTIONS:
    if option in given and option not in spec.options:
      allowed = names_taking(option)
      raise UserError(
          f'--{option} only applies to --aggregator={" or ".join(allowed)}'
          f'{OPTIONS[option].hint}; drop it or change --aggregator (now {spec.name})')


def build_aggregator(
    name: str,
    *,
    weighted: bool,
    clients_per_round: int,
    num_clients: int | None = None,
    total_rounds: int | None = None,
    noise_seed: int | None = None,
    **options: Any,
) -> aggregators.Factory:
  """Builds the aggregator `name` for a recipe, validating every option. No flags involved.

  Options left at None (or False) take the aggregator's default; an option given to an
  aggregator that does not take it is an error.

  Args:
    name: One of `SPECS`.
    weighted: Whether the recipe's builder takes a `WeightedAggregationFactory`.
    clients_per_round: Clients sampled each round (DP normalization, trim check).
    num_clients: Client population; needed with `target_epsilon`.
    total_rounds: Rounds of the run; needed with `target_epsilon`.
    noise_seed: dp_*: seed of the Gaussian noise (None: from the OS; see
      `recipes.seeded_dp`).
    **options: Values of `OPTIONS` (by name, without the flag-only ones); see their
      `--help` for what each means.

  Returns:
    A `WeightedAggregationFactory` if `weighted`, else an `UnweightedAggregationFactory`.

  Raises:
    UserError: With one line saying what does not fit and what to do.
    TypeError: For a keyword that is not an option.
  """
  spec = _spec(name)
  unknown = sorted(set(options) - {o for o, option in OPTIONS.items() if not option.flag_only})
  if unknown:
    raise TypeError(f'build_aggregator() got unexpected options {unknown}')
  given = {option: value for option, value in options.items()
           if value is not None and value is not False}
  _check_applicable(spec, given)
  if (isinstance(clients_per_round, bool) or not isinstance(clients_per_round, int)
      or clients_per_round < 1):
    raise UserError(f'clients per round must be a positive integer, got {clients_per_round!r}')
  for option, value in given.items():
    OPTIONS[option].check(value)
  factory = spec.build(Request(
      name=name, weighted=weighted, clients_per_round=clients_per_round,
      num_clients=num_clients, total_rounds=total_rounds, noise_seed=noise_seed, options=given))
  if weighted and not aggregators.is_weighted(factory):
    logging.info(
        '--aggregator=%s is unweighted: client weights are ignored, every client counts once', name)
  return aggregators.for_recipe(factory, weighted=weighted)


# ---------------------------------------------------------------------------
# absl flags, derived from SPECS and OPTIONS.
# ---------------------------------------------------------------------------


def define_aggregator_flags(*, default_aggregator: str = 'mean') -> None:
  """Defines `--aggregator` and its option flags on `absl.flags.FLAGS`. Idempotent.

  Args:
    default_aggregator: The `--aggregator` default.
  """
  if 'aggregator' in flags.FLAGS:
    return
  flags.DEFINE_enum(
      'aggregator', default_aggregator, [*SPECS, *RENAMED],
      'How the server combines client model updates. '
      + '; '.join(f'{name}: {spec.summary}'
                  + (' (unweighted)' if spec.weighting == 'unweighted' else '')
                  for name, spec in SPECS.items()) + '. '
      + ' '.join(f'{old}: the old name of {new} (refused).' for old, new in RENAMED.items()))
  for option in OPTIONS.values():
    text = f'{" / ".join(names_taking(option.name))}: {option.help}'
    if option.kind in ('float', 'int'):
      text += f' Must be {option.range_text()}.'
    if option.kind == 'float':
      # absl's bounds are closed; open sides are checked by validate_aggregator_flags.
      flags.DEFINE_float(option.name, option.default, text, lower_bound=option.lower,
                         upper_bound=option.upper)
    elif option.kind == 'int':
      flags.DEFINE_integer(option.name, option.default, text, lower_bound=option.lower,
                           upper_bound=option.upper)
    elif option.kind == 'bool':
      flags.DEFINE_bool(option.name, option.default, text)
    else:
      flags.DEFINE_enum(option.name, option.default, list(option.choices), text)


def validate_aggregator_flags() -> None:
  """Checks run right after parsing: the aggregator's name, option ranges, flag-only options.

  Raises:
    UserError: For the first value out of its range.
  """
  values = flags.FLAGS
  spec = _spec(values.aggregator)
  for option in OPTIONS.values():
    option.check(values[option.name].value)
    if option.flag_only and values[option.name].present and option.name not in spec.options:
      raise UserError(f'--{option.name} only applies to '
                      f'--aggregator={" or ".join(names_taking(option.name))}')


def dp_noise_seed(seed: int) -> int | None:
  """The DP noise seed for a run with `--seed=seed`: None (OS entropy) with --dp_noise=os."""
  if flags.FLAGS.dp_noise == 'os':
    return None
  digest = hashlib.sha256(f'{seed}/dp-noise'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') >> 1


def aggregator_from_flags(
    *, weighted: bool, clients_per_round: int, num_clients: int, total_rounds: int,
    noise_multiplier: float | None = None, noise_seed: int | None = None,
) -> aggregators.Factory:
  """`build_aggregator` with the values of the flags from `define_aggregator_flags`.

  With an aggregator that `simulates_secure_sum` (`secure`) this also makes the execution
  context simulate the secure-sum intrinsics (TFF's C++ worker cannot run them), on the
  local worker or on the `--tff_worker`(s): call it before running any TFF computation.

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
  options = {option: flags.FLAGS[option].value
             for option, spec in OPTIONS.items() if not spec.flag_only}
  if noise_multiplier is not None:
    options.update(noise_multiplier=noise_multiplier, target_epsilon=None)
  factory = build_aggregator(
      name, weighted=weighted, clients_per_round=clients_per_round, num_clients=num_clients,
      total_rounds=total_rounds, noise_seed=noise_seed, **options)
  if SPECS[name].simulates_secure_sum:
    aggregators.install_secure_simulation_context()
  return factory
