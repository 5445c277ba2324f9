"""DP-FedAvg (McMahan et al., 2018): user-level differentially private federated averaging.

Each round, every sampled client's model update is clipped to an L2 norm (fixed with
`--aggregator=dp_fixed --clip_norm=C`, or tracked at a quantile of update norms with
`--aggregator=dp_adaptive`), the server adds Gaussian noise of standard deviation
z * C to the sum and divides by the clients per round. Updates are unweighted: a client's
influence must not depend on how many examples it claims.

Clients are sampled by Poisson sampling (each independently with probability
q = clients_per_round / num_clients), and the run reports the privacy spent, (epsilon,
delta), from an RDP accountant for exactly that mechanism (`recipes/privacy.py`). Give z
with `--noise_multiplier`, or let `--target_epsilon` pick, once at the start, the smallest
z whose guarantee over `--total_rounds` meets it. The privacy parameters are stored with
the run (hparams.json `frozen`): a resume cannot change them.

Example:
  python -m recipes.dp_fed_avg --task=mnist_digits --partition=iid --clients_per_round=20 \
      --aggregator=dp_fixed --clip_norm=0.5 --target_epsilon=8 --total_rounds=100
"""

from typing import Any

from core.errors import UserError
from recipes import aggregator_registry
from recipes import cli
from recipes import experiment
from recipes import fed_avg  # DP-FedAvg is unweighted FedAvg with a DP aggregator.
from recipes import privacy

FLAGS = experiment.FLAGS
DP_AGGREGATORS = aggregator_registry.names_taking('noise_multiplier')  # dp_fixed, dp_adaptive

experiment.define_flags(client_learning_rate=0.05)
FLAGS.set_default('aggregator', 'dp_adaptive')
FLAGS.set_default('noise_multiplier', 0.5)


def _check_flags() -> None:
  if FLAGS.aggregator not in DP_AGGREGATORS:
    raise UserError(f'--aggregator must be {" or ".join(DP_AGGREGATORS)} for dp_fed_avg, not '
                    f'{FLAGS.aggregator} (non-private runs: recipes.fed_avg)')
  if FLAGS['target_epsilon'].present:
    if FLAGS['noise_multiplier'].present:
      raise UserError('give --noise_multiplier or --target_epsilon, not both')
    FLAGS.noise_multiplier = None  # --target_epsilon picks it.


def _frozen_privacy(saved: dict[str, Any] | None, num_clients: int) -> dict[str, Any]:
  """The privacy parameters, fixed once at the start of the run and kept on resume.

  --target_epsilon calibrates z for --total_rounds of the first start; a resume with more
  rounds keeps that z and reports the larger epsilon it then spends.
  """
  if saved is not None:
    return saved
  rate = FLAGS.clients_per_round / num_clients
  delta = privacy.default_delta(num_clients) if FLAGS.target_delta is None else FLAGS.target_delta
  if FLAGS.target_epsilon is not None:
    z = privacy.noise_multiplier_for_epsilon(target_epsilon=FLAGS.target_epsilon,
                                             sampling_rate=rate, rounds=FLAGS.total_rounds,
                                             delta=delta)
  else:
    z = FLAGS.noise_multiplier
  adaptive = FLAGS.aggregator == 'dp_adaptive'
  return {
      'mechanism': 'gaussian, ' + ('adaptive clip' if adaptive else 'fixed clip'),
      'noise_multiplier': float(z),
      'clip_norm': FLAGS.clip_norm,  # The fixed clip, or the adaptive clip's start.
      'target_quantile': FLAGS.target_quantile if adaptive else None,
      'sampling': privacy.SAMPLING,
      'sampling_rate': rate,
      'expected_clients_per_round': FLAGS.clients_per_round,
      'num_clients': num_clients,
      'delta': float(delta),
      'target_epsilon': FLAGS.target_epsilon,
      'calibrated_for_rounds': FLAGS.total_rounds if FLAGS.target_epsilon is not None else None,
      'accountant': privacy.ACCOUNTANT,
      'neighbouring_relation': privacy.NEIGHBOURING_RELATION,
      'noise': FLAGS.dp_noise,
  }


def _privacy_report(frozen: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
  """(epsilon, delta) spent by the rounds actually run (a run can stop early or go on)."""
  rounds = max(summary['rounds_completed'], 1)
  record = {**frozen, 'rounds': rounds}
  record['epsilon'] = privacy.epsilon_from_record(record)
  record['not_covered_by_epsilon'] = list(privacy.NOT_COVERED)
  note = privacy.small_population_note(frozen['num_clients'], frozen['delta'])
  if note:
    record['note'] = note
  calibrated = frozen.get('calibrated_for_rounds')
  past = (f'; past the {calibrated} rounds z was calibrated for (target epsilon '
          f'{frozen["target_epsilon"]:g})' if calibrated and rounds > calibrated else '')
  print(f'privacy: ({record["epsilon"]:.3g}, {record["delta"]:.3g})-DP after {rounds} rounds of '
        f'Poisson sampling (rate {record["sampling_rate"]:.3g}, noise multiplier '
        f'{record["noise_multiplier"]:.4g}, RDP accountant, add/remove one client){past}; not '
        f'covered: the unnoised training metrics ({", ".join(privacy.NOT_COVERED[:4])})')
  if note:
    print(f'privacy: {note}')
  return {'privacy': record}


def main(argv: list[str]) -> None:
  del argv
  _check_flags()
  # Unweighted: example counts would let a client scale its own influence. Poisson
  # sampling: the mechanism that recipes/privacy.py accounts.
  experiment.run('dp_fed_avg', fed_avg.build_process, weighted=False,
                 not_applicable=('weighting',), sampling=privacy.SAMPLING,
                 frozen=_frozen_privacy, report=_privacy_report)


validate_flags = experiment.validate_flags  # Run right after parsing (tests/flag_walker.py too).


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
