"""`create_task`: the one way recipes turn a task name and options into a `Task`."""

from __future__ import annotations

import functools

import tensorflow as tf

from core.errors import UserError
from tasks import emnist
from tasks import mnist_digits
from tasks import models
from tasks import synthetic
from tasks.base import ClientSpec
from tasks.base import Task

TASKS = ('mnist_digits', 'emnist_character', 'synthetic')
DEFAULT_MODELS = {'mnist_digits': 'cnn', 'emnist_character': 'cnn_dropout', 'synthetic': 'tiny'}

DEFAULT_NUM_CLIENTS = 100
DEFAULT_PARTITION = 'shards'
DEFAULT_ALPHA = 0.5

# Options beyond model/client_spec/seed, and the tasks they mean something for. EMNIST is
# partitioned by its writers, so the split options only apply to the simulated splits.
_SPLIT_OPTIONS = frozenset({'num_clients', 'partition', 'alpha'})
_APPLICABLE_OPTIONS = {
    'mnist_digits': _SPLIT_OPTIONS,
    'synthetic': _SPLIT_OPTIONS,
    'emnist_character': frozenset({'cache_dir', 'only_digits'}),
}


def _check_options(name: str, given: dict[str, object], partition: str) -> None:
  """Rejects options that were given but do nothing for this task (the one place this is checked)."""
  unused = sorted(set(given) - _APPLICABLE_OPTIONS[name])
  if unused:
    # Named as the recipes' flags are (--num_clients=...), which is how most users set them.
    settings = ', '.join(f'--{option}={given[option]!r}' for option in unused)
    raise UserError(f'{settings} does not apply to task {name!r} '
                    f'(its options: {", ".join(sorted(_APPLICABLE_OPTIONS[name]))})')
  if 'alpha' in given and partition != 'dirichlet':
    raise UserError(f'--alpha applies only to partition=\'dirichlet\', not {partition!r}')


def create_task(
    name: str,
    *,
    model: str | None = None,
    client_spec: ClientSpec = ClientSpec(),
    num_clients: int | None = None,
    partition: str | None = None,
    alpha: float | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    only_digits: bool | None = None,
) -> Task:
  """Builds a task: federated training data, a central test set and a model builder.

  Args:
    name: One of `TASKS`: `mnist_digits` (10,000 bundled MNIST digits split into
      simulated clients), `emnist_character` (federated EMNIST by writer, needs
      `emnist_all.sqlite`), `synthetic` (tiny generated quadrant images, 4 classes).
    model: One of `tasks.models.MODELS`; None picks `DEFAULT_MODELS[name]`.
    client_spec: How clients iterate their data each round.
    num_clients: Clients to split the data into (`mnist_digits`, `synthetic`; default
      `DEFAULT_NUM_CLIENTS`).
    partition: A `tasks.partition.PARTITIONS` name (`mnist_digits`, `synthetic`; default
      `DEFAULT_PARTITION`).
    alpha: Dirichlet concentration, only with `partition='dirichlet'` (default
      `DEFAULT_ALPHA`).
    seed: Seed of the split or the generated data; ignored by `emnist_character`, whose
      data is fixed.
    cache_dir: Directory holding `emnist_all.sqlite` (`emnist_character`; default ~/.tff).
    only_digits: The 10-class digits-only EMNIST (`emnist_character`; default False).

  An option given (not None) for a task it does not apply to is an error, even at its
  default value: the recipes pass exactly the flags the user set.

  Returns:
    A `Task` whose datasets yield `(x, y)`: x float32 (28, 28, 1) in [0, 1] with
    background 0, y an int32 label; its `keras_model_fn` builds models that output logits.

  Raises:
    UserError: For an unknown task or model, an option that does not apply to the task,
      invalid split arguments, or missing or corrupt data.
  """
  if name not in TASKS:
    raise UserError(f'unknown task {name!r}; choose one of {", ".join(TASKS)}')
  model = DEFAULT_MODELS[name] if model is None else model
  if model not in models.MODELS:
    raise UserError(f'unknown model {model!r}; choose one of {", ".join(models.MODELS)}')
  given = {option: value for option, value in (
      ('num_clients', num_clients), ('partition', partition), ('alpha', alpha),
      ('cache_dir', cache_dir), ('only_digits', only_digits)) if value is not None}
  partition = DEFAULT_PARTITION if partition is None else partition
  _check_options(name, given, partition)
  num_clients = DEFAULT_NUM_CLIENTS if num_clients is None else num_clients
  alpha = DEFAULT_ALPHA if alpha is None else alpha
  only_digits = bool(only_digits)

  split = f'{num_clients} clients, {partition} partition' + (
      f' (alpha={alpha})' if partition == 'dirichlet' else '')
  if name == 'mnist_digits':
    train_data, validation_data, test_data = mnist_digits.load_data(
        num_clients=num_clients, partition=partition, alpha=alpha, seed=seed)
    num_classes = mnist_digits.NUM_CLASSES
    description = (f'MNIST digits (npm mnist@1.1.0, 7,000 train / 1,000 validation / '
                   f'2,000 test), {split}')
  elif name == 'synthetic':
    train_data, test_data = synthetic.load_data(
        num_clients=num_clients, partition=partition, alpha=alpha, seed=seed)
    # Generated apart from both, from its own stream of the seed.
    validation_data = tf.data.Dataset.from_tensor_slices(synthetic.examples(
        tf.constant([seed, synthetic.VALIDATION_STREAM], tf.int64), 256))
    num_classes = synthetic.NUM_CLASSES
    description = f'synthetic bright-quadrant images (4 classes), {split}'
  else:
    train_data, validation_data, test_data = emnist.load_data(
        only_digits=only_digits, cache_dir=cache_dir)
    num_classes = emnist.NUM_CLASSES_DIGITS if only_digits else emnist.NUM_CLASSES_ALL
    description = (f'federated EMNIST{"-10 digits" if only_digits else "-62 characters"}, '
                   f'{len(train_data.client_ids)} writers')
  return Task(
      name=name,
      train_data=train_data,
      test_data=test_data,
      validation_data=validation_data,
      keras_model_fn=functools.partial(models.build_model, model, num_classes),
      num_classes=num_classes,
      client_spec=client_spec,
      description=f'{description}; model {model}',
      model_name=model,
  )
