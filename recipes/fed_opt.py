"""Adaptive federated optimization (Reddi et al., 2021): FedAdam, FedYogi, FedAdagrad, FedAvgM.

FedAvg on the clients; the server treats the mean client delta as a pseudo-gradient and
applies an adaptive optimizer: `--server_optimizer=adam|yogi|adagrad|sgdm` (sgdm = FedAvgM,
with `--server_momentum`). Defaults are the paper's best EMNIST settings for FedAdam
(client lr 10^-1.5, server lr 10^-2.5, epsilon 1e-4).

Example:
  python -m recipes.fed_opt --task=emnist_character --server_optimizer=yogi \
      --client_learning_rate=0.0316 --server_learning_rate=0.00316 --server_epsilon=1e-4
"""

from core.errors import UserError
from recipes import cli
from recipes import experiment
from recipes import fed_avg  # FedOpt is FedAvg with an adaptive server optimizer.

SERVER_OPTIMIZERS = ('adam', 'yogi', 'adagrad', 'sgdm')
experiment.define_flags(
    client_learning_rate=10**-1.5, server_optimizer='adam', server_learning_rate=10**-2.5)
experiment.FLAGS.set_default('server_epsilon', 1e-4)


def main(argv: list[str]) -> None:
  del argv
  if experiment.FLAGS.server_optimizer not in SERVER_OPTIMIZERS:
    raise UserError(f'--server_optimizer must be one of {", ".join(SERVER_OPTIMIZERS)} for fed_opt '
                    '(plain sgd is recipes.fed_avg)')
  experiment.run('fed_opt', fed_avg.build_process)


validate_flags = experiment.validate_flags  # Run right after parsing (tests/flag_walker.py too).


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
