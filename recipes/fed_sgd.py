"""FederatedSGD (McMahan et al., 2017): clients send gradients, the server steps its optimizer.

Each sampled client computes the gradient of its loss on its local data (by default the
whole local dataset as one batch) at the current server model; the server takes the
example-weighted mean of the gradients and applies one step of `--server_optimizer`.

Example:
  python -m recipes.fed_sgd --task=mnist_digits --server_learning_rate=0.2 --total_rounds=300
"""

from core.runtime import import_tff
from recipes import cli
from recipes import experiment

tff = import_tff()

experiment.define_flags(
    client_optimizer=False, server_learning_rate=0.1, client_batch_size=-1, weighting=False)


def build_process(setup: experiment.Setup) -> tff.learning.templates.LearningProcess:
  """FedSGD with the flags' server optimizer and aggregator (example-weighted)."""
  return tff.learning.algorithms.build_fed_sgd(setup.task.model_fn, **setup.builder_args())


def main(argv: list[str]) -> None:
  del argv
  # One gradient per client per round: local epochs are meaningless here.
  experiment.run('fed_sgd', build_process, weighted=True,
                 not_applicable=('client_epochs_per_round',))


validate_flags = experiment.validate_flags  # Run right after parsing (tests/flag_walker.py too).


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
