"""Client and server optimizers from flags: one flag group per side, errors for flags that don't apply.

Each side (`client`, `server`) gets `--<side>_optimizer`, `--<side>_learning_rate` and the
hyperparameters of the optimizers it may use (`--<side>_momentum`, `--<side>_beta_1`,
`--<side>_beta_2`, `--<side>_epsilon`). A hyperparameter flag given on the command line
for an optimizer that has no such hyperparameter is an error, not silently ignored.
"""

from __future__ import annotations

from typing import Sequence

from absl import flags

from core.errors import UserError
from core.runtime import import_tff

tff = import_tff()

OPTIMIZERS = ('sgd', 'sgdm', 'adam', 'yogi', 'adagrad')

# Which hyperparameter flags each optimizer reads.
_HYPERPARAMETERS = {
    'sgd': (),
    'sgdm': ('momentum',),
    'adam': ('beta_1', 'beta_2', 'epsilon'),
    'yogi': ('beta_1', 'beta_2', 'epsilon'),
    'adagrad': ('epsilon',),
}


def build_optimizer(
    name: str,
    learning_rate: float,
    *,
    momentum: float = 0.9,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    epsilon: float = 1e-3,
) -> tff.learning.optimizers.Optimizer:
  """Returns a `tff.learning.optimizers` optimizer.

  Args:
    name: One of `OPTIMIZERS`. `sgdm` is SGD with (heavy-ball) momentum; server-side it
      gives FedAvgM. `adam`, `yogi`, `adagrad` give FedAdam, FedYogi, FedAdagrad.
    learning_rate: Step size (> 0).
    momentum: Momentum of `sgdm`.
    beta_1: First-moment decay of adam/yogi.
    beta_2: Second-moment decay of adam/yogi.
    epsilon: Adaptivity (numerical stability) term of adam/yogi/adagrad.

  Raises:
    UserError: Unknown name or out-of-range hyperparameter.
  """
  if learning_rate <= 0:
    raise UserError(f'learning rate must be positive, got {learning_rate}')
  if name == 'sgd':
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate)
  if name == 'sgdm':
    if not 0 <= momentum < 1:
      raise UserError(f'momentum must be in [0, 1), got {momentum}')
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate, momentum=momentum)
  if name in ('adam', 'yogi'):
    if not (0 <= beta_1 < 1 and 0 <= beta_2 < 1 and epsilon > 0):
      raise UserError('beta_1 and beta_2 must be in [0, 1) and epsilon positive')
    builder = (
        tff.learning.optimizers.build_adam if name == 'adam' else tff.learning.optimizers.build_yogi
    )
    return builder(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
  if name == 'adagrad':
    if epsilon <= 0:
      raise UserError(f'epsilon must be positive, got {epsilon}')
    return tff.learning.optimizers.build_adagrad(learning_rate=learning_rate, epsilon=epsilon)
  raise UserError(f'unknown optimizer {name!r}; choose one of {", ".join(OPTIMIZERS)}')


def define_optimizer_flags(
    side: str,
    *,
    optimizer: str = 'sgd',
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    epsilon: float = 1e-3,
    choices: Sequence[str] = OPTIMIZERS,
) -> None:
  """Defines `--<side>_optimizer`, `--<side>_learning_rate` and its hyperparameter flags."""
  flags.DEFINE_enum(f'{side}_optimizer', optimizer, list(choices), f'{side.capitalize()} optimizer.')
  flags.DEFINE_float(f'{side}_learning_rate', learning_rate,
                     f'{side.capitalize()} learning rate (> 0).', lower_bound=0.0)
  flags.DEFINE_float(f'{side}_momentum', momentum, f'Momentum of --{side}_optimizer=sgdm, in [0, 1).',
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_float(f'{side}_beta_1', beta_1, f'beta_1 of --{side}_optimizer=adam|yogi, in [0, 1).',
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_float(f'{side}_beta_2', beta_2, f'beta_2 of --{side}_optimizer=adam|yogi, in [0, 1).',
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_float(
      f'{side}_epsilon', epsilon,
      f'Adaptivity epsilon of --{side}_optimizer=adam|yogi|adagrad (> 0).', lower_bound=0.0)
  _SIDES.append(side)


# The sides whose flags are defined in this process (validated by `validate_optimizer_flags`).
_SIDES: list[str] = []


def validate_optimizer_flags() -> None:
  """Strict bounds that absl's closed `lower_bound`/`upper_bound` cannot express.

  Raises:
    UserError: For the first value out of its range.
  """
  values = flags.FLAGS
  for side in _SIDES:
    if values[f'{side}_learning_rate'].value <= 0:
      raise UserError(f'--{side}_learning_rate must be positive, got {values[f"{side}_learning_rate"].value}')
    for name in ('momentum', 'beta_1', 'beta_2'):
      if values[f'{side}_{name}'].value >= 1:
        raise UserError(f'--{side}_{name} must be in [0, 1), got {values[f"{side}_{name}"].value}')
    if values[f'{side}_epsilon'].value <= 0:
      raise UserError(f'--{side}_epsilon must be positive, got {values[f"{side}_epsilon"].value}')


def optimizer_from_flags(side: str) -> tff.learning.optimizers.Optimizer:
  """Builds the optimizer that `define_optimizer_flags(side)` describes.

  Raises:
    UserError: A hyperparameter flag was set that the chosen optimizer does not use.
  """
  values = flags.FLAGS
  name = values[f'{side}_optimizer'].value
  used = _HYPERPARAMETERS[name]
  for hyperparameter in ('momentum', 'beta_1', 'beta_2', 'epsilon'):
    flag = values[f'{side}_{hyperparameter}']
    if flag.present and hyperparameter not in used:
      users = [n for n, h in _HYPERPARAMETERS.items() if hyperparameter in h]
      raise UserError(
          f'--{side}_{hyperparameter} does not apply to --{side}_optimizer={name}; '
          f'it is used by {"/".join(users)}'
      )
  return build_optimizer(
      name,
      values[f'{side}_learning_rate'].value,
      **{h: values[f'{side}_{h}'].value for h in used},
  )
