"""DP-FedAvg (McMahan et al., 2018): user-level differentially private federated averaging.

Each round, every sampled client's model update is clipped to an L2 norm (fixed with
`--aggregator=dp_fixed --clip_norm=C`, or tracked at a quantile of update norms with
`--aggregator=dp_adaptive`), the server adds Gaussian noise of standard deviation
z * C to the sum and divides by the clients per round. Updates are unweighted: a client's
influence must not depend on how many examples it claims.

The run reports the privacy spent, (epsilon, delta), from an RDP accountant for sampling
rate q = clients_per_round / num_clients, noise multiplier z and the rounds completed.
Give z with `--noise_multiplier`, or let `--target_epsilon` pick the smallest z whose
guarantee over `--total_rounds` meets it.

Example:
  python -m recipes.dp_fed_avg --task=mnist_digits --partition=iid --clients_per_round=20 \
      --aggregator=dp_fixed --clip_norm=0.5 --target_epsilon=8 --total_rounds=100
"""

from typing import Any

from recipes import aggregator_flags
from recipes import cli
from recipes import experiment
from recipes import fed_avg  # DP-FedAvg is unweighted FedAvg with a DP aggregator.
from recipes import privacy
from recipes.errors import UserError

FLAGS = experiment.FLAGS
DP_AGGREGATORS = ('dp_fixed', 'dp_adaptive')

experiment.define_flags(client_learning_rate=0.05)
FLAGS.set_default('aggregator', 'dp_adaptive')
FLAGS.set_default('noise_multiplier', 0.5)


def _check_flags() -> None:
  if FLAGS.aggregator not in DP_AGGREGATORS:
    raise UserError(f'--aggregator must be dp_fixed or dp_adaptive for dp_fed_avg, not '
                    f'{FLAGS.aggregator} (non-private runs: recipes.fed_avg)')
  if FLAGS['target_epsilon'].present:
    if FLAGS['noise_multiplier'].present:
      raise UserError('give --noise_multiplier or --target_epsilon, not both')
    FLAGS.noise_multiplier = None  # --target_epsilon picks it.


def _privacy_report(setup: experiment.Setup, summary: dict[str, Any]) -> dict[str, Any]:
  """The privacy spent by the rounds actually run (a run can stop early at its target)."""
  num_clients = len(setup.task.train_data.client_ids)
  planned = aggregator_flags.privacy_from_flags(
      clients_per_round=FLAGS.clients_per_round, num_clients=num_clients,
      total_rounds=FLAGS.total_rounds)
  spent = privacy.guarantee(
      clients_per_round=FLAGS.clients_per_round, num_clients=num_clients,
      rounds=max(summary['rounds_completed'], 1), noise_multiplier=planned.noise_multiplier,
      delta=planned.delta)
  print(f'privacy: ({spent.epsilon:.3g}, {spent.delta:.3g})-DP after {spent.rounds} rounds '
        f'(noise multiplier {spent.noise_multiplier:.4g}, sampling rate {spent.sampling_rate:.3g}); '
        f'budget for all {FLAGS.total_rounds} rounds: epsilon {planned.epsilon:.3g}')
  return {'privacy': spent.as_dict(), 'privacy_budget_total_rounds': planned.as_dict()}


def main(argv: list[str]) -> None:
  del argv
  _check_flags()
  # Unweighted: example counts would let a client scale its own influence.
  experiment.run('dp_fed_avg', fed_avg.build_process, weighted=False,
                 not_applicable=('weighting',), report=_privacy_report)


if __name__ == '__main__':
  cli.run(main)
