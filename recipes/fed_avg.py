"""FederatedAveraging (McMahan et al., 2017), weighted or uniform.

Each round the sampled clients run `--client_epochs_per_round` epochs of local SGD from the
server model and send back their model deltas; the server averages the deltas and applies
them with its optimizer (plain SGD with learning rate 1.0 = replace the model by the average).

  --weighting=num_examples  FederatedWeightedAveraging: mean weighted by client example counts
  --weighting=uniform       FederatedAveraging: the plain mean of client models

Example:
  python -m recipes.fed_avg --task=mnist_digits --partition=shards --clients_per_round=10 \
      --client_epochs_per_round=1 --client_learning_rate=0.05 --total_rounds=200
"""

from core.runtime import import_tff
from recipes import cli
from recipes import experiment

tff = import_tff()

experiment.define_flags()


def build_process(setup: experiment.Setup) -> tff.learning.templates.LearningProcess:
  """FedAvg with the flags' optimizers and aggregator, weighted or uniform."""
  builder = (tff.learning.algorithms.build_weighted_fed_avg if setup.weighted
             else tff.learning.algorithms.build_unweighted_fed_avg)
  return builder(setup.task.model_fn, **setup.builder_args())


def main(argv: list[str]) -> None:
  del argv
  experiment.run('fed_avg', build_process)


validate_flags = experiment.validate_flags  # Run right after parsing (tests/flag_walker.py too).


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
