"""FedProx (Li et al., 2020): FedAvg whose clients are pulled towards the server model.

Clients minimise loss + (mu / 2) * ||w - w_server||^2 with mu = `--proximal_strength`,
which limits client drift on heterogeneous data; mu = 0 is FedAvg.

Example:
  python -m recipes.fed_prox --task=mnist_digits --partition=dirichlet --alpha=0.1 \
      --proximal_strength=0.01
"""

from absl import flags

from core.runtime import import_tff
from recipes import cli
from recipes import experiment

tff = import_tff()

_PROXIMAL_STRENGTH = flags.DEFINE_float(
    'proximal_strength', 0.01, 'mu of the proximal term (mu/2)||w - w_server||^2, >= 0; 0 = FedAvg.',
    lower_bound=0.0)
experiment.define_flags()


def build_process(setup: experiment.Setup) -> tff.learning.templates.LearningProcess:
  """FedProx, weighted or uniform, with the flags' optimizers and aggregator."""
  builder = (tff.learning.algorithms.build_weighted_fed_prox if setup.weighted
             else tff.learning.algorithms.build_unweighted_fed_prox)
  return builder(setup.task.model_fn, proximal_strength=_PROXIMAL_STRENGTH.value,
                 **setup.builder_args())


def main(argv: list[str]) -> None:
  del argv
  experiment.run('fed_prox', build_process)


validate_flags = experiment.validate_flags  # Run right after parsing (tests/flag_walker.py too).


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
