"""Privacy accounting for DP-FedAvg: (epsilon, delta) of repeated, Poisson-sampled Gaussian rounds.

Mechanism (what `recipes.dp_fed_avg` runs). Each round every client joins the cohort
independently with probability q = clients_per_round / num_clients (Poisson sampling:
the cohort size varies, and an empty cohort is a round without an update), and the server
releases the mean of the cohort's clipped updates plus Gaussian noise of standard
deviation z * C / m (noise multiplier z, clip C, m = clients_per_round the *expected*
cohort, a fixed denominator; see `recipes.aggregators.dp_fixed`). One client's whole data
changes the noised sum by at most C, so a round is the Poisson-subsampled Gaussian
mechanism at the user level, and T rounds compose to
`SelfComposed(PoissonSampled(q, Gaussian(z)), T)`.

Accounting. `dp_accounting`'s RDP accountant (Mironov 2017; Mironov, Talwar, Zhang 2019,
https://arxiv.org/abs/1908.10530) turns that event into the smallest epsilon with
P[loss > epsilon] <= delta over its grid of Renyi orders, under the add-or-remove-one
neighbouring relation (datasets differ by one client's presence), the relation for which
the Poisson-subsampled Gaussian analysis holds (McMahan et al. 2018,
https://arxiv.org/abs/1710.06963). This accounting is exact for the sampling the recipe
performs; it would be optimistic (about 2x at 20 of 100 clients) for fixed-size cohorts,
which is why the DP recipe samples by Poisson and not the other recipes' fixed cohorts.

For `dp_adaptive`, z is TFF's *effective* noise multiplier, which already covers the
privatized clip estimate, so the same accounting applies.

What epsilon does not cover: the training metrics that clients report unnoised (loss,
accuracy, example counts: `NOT_COVERED`), the cohort sizes, and federated evaluation;
the outputs mark them. delta defaults to N^-1.1 < 1/N; with populations of a few hundred
clients no choice of delta gives a meaningful user-level guarantee (`small_population_note`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import dp_accounting

from core.errors import UserError

# Bracket for the noise-multiplier search: epsilon(z) falls monotonically in z.
_MAX_NOISE_MULTIPLIER = 1e4
_NOISE_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class PrivacyGuarantee:
  """An (epsilon, delta)-DP statement about a DP-FedAvg run, user (client) level."""

  epsilon: float
  delta: float
  noise_multiplier: float
  sampling_rate: float
  rounds: int


def _validate(*, sampling_rate: float, rounds: int, delta: float) -> None:
  if not (isinstance(sampling_rate, (int, float)) and 0 < sampling_rate <= 1):
    raise UserError(
        f'sampling rate clients_per_round/num_clients must be in (0, 1], got {sampling_rate!r}'
    )
  if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
    raise UserError(f'rounds must be a positive integer, got {rounds!r}')
  if not (isinstance(delta, (int, float)) and 0 < delta < 1):
    raise UserError(f'delta must be in (0, 1), got {delta!r}')


def _event(noise_multiplier: float, sampling_rate: float, rounds: int) -> dp_accounting.DpEvent:
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          sampling_probability=sampling_rate, event=dp_accounting.GaussianDpEvent(noise_multiplier)
      ),
      rounds,
  )


def epsilon_spent(
    *, noise_multiplier: float, sampling_rate: float, rounds: int, delta: float
) -> float:
  """Epsilon of `rounds` Poisson-sampled Gaussian rounds at the given delta (RDP accountant).

  Args:
    noise_multiplier: z >= 0, noise stddev over clip norm. z = 0 gives infinity.
    sampling_rate: q in (0, 1], clients_per_round / num_clients.
    rounds: T >= 1, rounds run (or planned).
    delta: delta in (0, 1); keep it below 1/num_clients.

  Returns:
    The epsilon such that the T rounds are (epsilon, delta)-DP for each client's
    whole data; `math.inf` when z = 0.

  Raises:
    UserError: For out-of-range arguments.
  """
  _validate(sampling_rate=sampling_rate, rounds=rounds, delta=delta)
  if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier >= 0):
    raise UserError(f'noise multiplier must be >= 0, got {noise_multiplier!r}')
  if noise_multiplier == 0:
    return math.inf
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(_event(float(noise_multiplier), float(sampling_rate), rounds))
  return float(accountant.get_epsilon(delta))


def noise_multiplier_for_epsilon(
    *, target_epsilon: float, sampling_rate: float, rounds: int, delta: float
) -> float:
  """Smallest noise multiplier z whose `epsilon_spent` is at most `target_epsilon`.

  Solved with `dp_accounting.calibrate_dp_mechanism` (Brent's method on
  epsilon(z) - target over z in (0, 1e4]); the result is within 1e-4 of the
  optimum and never exceeds the target.

  Args:
    target_epsilon: epsilon > 0 to reach after `rounds` rounds.
    sampling_rate: q in (0, 1], clients_per_round / num_clients.
    rounds: T >= 1.
    delta: delta in (0, 1).

  Returns:
    The noise multiplier z.

  Raises:
    UserError: For out-of-range arguments, or a target so small that even
      z = 1e4 does not reach it.
  """
  _validate(sampling_rate=sampling_rate, rounds=rounds, delta=delta)
  if not (
      isinstance(target_epsilon, (int, float))
      and math.isfinite(target_epsilon)
      and target_epsilon > 0
  ):
    raise UserError(f'target epsilon must be a positive number, got {target_epsilon!r}')
  smallest = epsilon_spent(
      noise_multiplier=_MAX_NOISE_MULTIPLIER,
      sampling_rate=sampling_rate,
      rounds=rounds,
      delta=delta,
  )
  if smallest > target_epsilon:
    raise UserError(
        f'target epsilon {target_epsilon:g} is out of reach: even noise multiplier '
        f'{_MAX_NOISE_MULTIPLIER:g} gives epsilon {smallest:.3g} over {rounds} rounds; '
        'raise the target, or lower the rounds or the sampling rate'
    )
  return float(
      dp_accounting.calibrate_dp_mechanism(
          dp_accounting.rdp.RdpAccountant,
          lambda z: _event(z, float(sampling_rate), rounds),
          float(target_epsilon),
          float(delta),
          bracket_interval=dp_accounting.ExplicitBracketInterval(1e-6, _MAX_NOISE_MULTIPLIER),
          tol=_NOISE_TOLERANCE,
      )
  )


SAMPLING = 'poisson'
ACCOUNTANT = 'rdp (dp_accounting 0.4.3)'
NEIGHBOURING_RELATION = 'add_or_remove_one (user level: one client\'s whole data)'
# Outputs that clients release without noise: reported, but not covered by epsilon.
NOT_COVERED = ('train_loss', 'train_accuracy', 'train_examples', 'clients',
               'fed_eval_* (federated evaluation)', 'aggregator/client_count')
# Below this population, say that DP is illustrative only (delta ~ 1/N is large).
_SMALL_POPULATION = 1000


def small_population_note(num_clients: int, delta: float) -> str | None:
  """A warning when the population is too small for meaningful user-level DP, else None."""
  if num_clients >= _SMALL_POPULATION:
    return None
  return (f'{num_clients} clients is too small a population for meaningful user-level DP: '
          f'delta = {delta:.2g} allows a failure probability near 1/{num_clients}, and '
          'published DP-FedAvg uses 10^4-10^6 clients; read this epsilon as illustrative')


def epsilon_from_record(record: dict) -> float:
  """Recomputes epsilon from a run's recorded privacy fields (summary.json's `privacy`)."""
  if record.get('sampling') != SAMPLING:
    raise UserError(f'cannot account sampling {record.get("sampling")!r}; expected {SAMPLING}')
  return epsilon_spent(noise_multiplier=record['noise_multiplier'],
                       sampling_rate=record['sampling_rate'], rounds=record['rounds'],
                       delta=record['delta'])


def default_delta(num_clients: int) -> float:
  """delta = num_clients^-1.1: below 1/num_clients, the usual upper limit for delta."""
  if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
    raise UserError(f'num_clients must be a positive integer, got {num_clients!r}')
  return float(num_clients) ** -1.1


def guarantee(
    *,
    clients_per_round: int,
    num_clients: int,
    rounds: int,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    delta: float | None = None,
) -> PrivacyGuarantee:
  """The (epsilon, delta) of a DP-FedAvg run, from a noise multiplier or a target epsilon.

  Exactly one of `noise_multiplier` (epsilon is computed) and `target_epsilon`
  (the noise multiplier is calibrated) must be given.

  Args:
    clients_per_round: m, clients sampled each round.
    num_clients: N, the client population; q = m / N.
    rounds: T.
    noise_multiplier: z, if known.
    target_epsilon: epsilon to calibrate z for, if z is not given.
    delta: delta; None means `default_delta(num_clients)`.

  Returns:
    A `PrivacyGuarantee`.

  Raises:
    UserError: For inconsistent or out-of-range arguments.
  """
  if (noise_multiplier is None) == (target_epsilon is None):
    raise UserError('give exactly one of a noise multiplier and a target epsilon')
  if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
    raise UserError(f'num_clients must be a positive integer, got {num_clients!r}')
  if clients_per_round > num_clients:
    raise UserError(
        f'clients per round ({clients_per_round}) exceed the number of clients ({num_clients})'
    )
  sampling_rate = clients_per_round / num_clients
  delta = default_delta(num_clients) if delta is None else delta
  if noise_multiplier is None:
    noise_multiplier = noise_multiplier_for_epsilon(
        target_epsilon=target_epsilon, sampling_rate=sampling_rate, rounds=rounds, delta=delta
    )
  epsilon = epsilon_spent(
      noise_multiplier=noise_multiplier, sampling_rate=sampling_rate, rounds=rounds, delta=delta
  )
  return PrivacyGuarantee(
      epsilon=epsilon,
      delta=float(delta),
      noise_multiplier=float(noise_multiplier),
      sampling_rate=sampling_rate,
      rounds=rounds,
  )


@functools.lru_cache(maxsize=8)
def calibrated_noise_multiplier(
    *,
    clients_per_round: int,
    num_clients: int,
    rounds: int,
    target_epsilon: float,
    delta: float | None = None,
) -> float:
  """The noise multiplier whose `guarantee` reaches `target_epsilon` after `rounds`.

  Cached: the search takes about a second, and a recipe asks for it twice (the
  aggregator, then the report).

  Args:
    clients_per_round: m, clients sampled each round.
    num_clients: N, the client population.
    rounds: T.
    target_epsilon: The epsilon to reach.
    delta: delta; None means `default_delta(num_clients)`.

  Returns:
    The noise multiplier z.

  Raises:
    UserError: For inconsistent or out-of-range arguments.
  """
  return guarantee(clients_per_round=clients_per_round, num_clients=num_clients, rounds=rounds,
                   target_epsilon=target_epsilon, delta=delta).noise_multiplier
