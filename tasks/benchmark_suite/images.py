"""EMNIST autoencoder and CIFAR-100 image classification, from TFF's baseline tasks.

* `emnist_autoencoder`: federated EMNIST (3,400 writers; `emnist_all.sqlite`), TFF's
  bottleneck autoencoder (dense 1000-500-250-30-250-500-1000-784, sigmoid) trained on
  mean squared error; headline metric: mean squared error (lower is better).
* `cifar100_image`: federated CIFAR-100 (500 training clients of 100 images, Pachinko
  allocation; `cifar100.sqlite`), ResNet-18 with group normalization on centre crops
  (default 24x24, the paper's); headline metric: accuracy.
"""

from __future__ import annotations

import functools

from core.runtime import import_tff
from tasks.base import ClientSpec
from tasks.base import Task
from tasks.base import TaskMetrics
from tasks.benchmark_suite import common
from tasks.benchmark_suite import files

tff = import_tff()  # Before TFF's submodules below: the project's way in (worker cleanup).
# pylint: disable=g-import-not-at-top,g-bad-import-order
from tensorflow_federated.python.simulation.baselines.cifar100 import image_classification_tasks
from tensorflow_federated.python.simulation.baselines.cifar100 import image_classification_preprocessing
from tensorflow_federated.python.simulation.baselines.emnist import autoencoder_tasks
from tensorflow_federated.python.simulation.baselines.emnist import emnist_models
from tensorflow_federated.python.simulation.baselines.emnist import emnist_preprocessing
from tensorflow_federated.python.simulation.models import resnet_models
# pylint: enable=g-import-not-at-top,g-bad-import-order

DEFAULT_CROP_SIZE = image_classification_tasks.DEFAULT_CROP_HEIGHT  # 24, as in the paper.
CIFAR100_CLASSES = 100
AUTOENCODER_METRICS = TaskMetrics(
    columns=(('mean_squared_error', 'mean_squared_error'),
             ('mean_absolute_error', 'mean_absolute_error')),
    headline='mean_squared_error', higher_is_better=False)


def create_emnist_autoencoder(*, client_spec: ClientSpec, cache_dir: str | None,
                              only_digits: bool, max_examples_per_client: int | None) -> Task:
  """The EMNIST autoencoder task over `emnist_all.sqlite` (see the module docstring)."""
  root = files.cache_root(cache_dir)
  files.require('emnist_autoencoder', root, [files.EMNIST])
  train, test = files.open_client_data(
      root, files.EMNIST, "TFF's EMNIST database",
      lambda d: tff.simulation.datasets.emnist.load_data(only_digits=only_digits, cache_dir=d))
  train_spec, eval_spec = common.tff_client_specs(client_spec, max_examples_per_client)
  baseline = autoencoder_tasks.create_autoencoder_task_from_datasets(
      train_spec, eval_spec, train, test)
  validation_data, test_data = common.split_by_client(test)
  return common.from_baseline(
      name='emnist_autoencoder', baseline=baseline, validation_data=validation_data,
      test_data=test_data, client_spec=client_spec,
      default_shuffle_buffer=emnist_preprocessing.MAX_CLIENT_DATASET_SIZE,
      metrics=AUTOENCODER_METRICS, keras_model_fn=emnist_models.create_autoencoder_model,
      num_classes=28 * 28,
      description=(f'federated EMNIST{"-10 digits" if only_digits else ""} autoencoder, '
                   f'{len(train.client_ids)} writers'),
      model_name='bottleneck autoencoder (TFF baseline)')


def create_cifar100_image(*, client_spec: ClientSpec, cache_dir: str | None,
                          crop_size: int | None, max_examples_per_client: int | None) -> Task:
  """The CIFAR-100 image classification task over `cifar100.sqlite` (see the module docstring)."""
  crop_size = DEFAULT_CROP_SIZE if crop_size is None else crop_size
  root = files.cache_root(cache_dir)
  files.require('cifar100_image', root, [files.CIFAR100])
  train, test = files.open_client_data(
      root, files.CIFAR100, "TFF's CIFAR-100 database",
      lambda d: tff.simulation.datasets.cifar100.load_data(cache_dir=d))
  train_spec, eval_spec = common.tff_client_specs(client_spec, max_examples_per_client)
  baseline = image_classification_tasks.create_image_classification_task_with_datasets(
      train_spec, eval_spec, model_id='resnet18', crop_height=crop_size, crop_width=crop_size,
      distort_train_images=False, train_data=train, test_data=test)
  validation_data, test_data = common.split_by_client(test)
  return common.from_baseline(
      name='cifar100_image', baseline=baseline, validation_data=validation_data,
      test_data=test_data, client_spec=client_spec,
      default_shuffle_buffer=image_classification_preprocessing.NUM_EXAMPLES_PER_CLIENT,
      metrics=TaskMetrics(),
      keras_model_fn=functools.partial(resnet_models.create_resnet18,
                                       input_shape=(crop_size, crop_size, 3),
                                       num_classes=CIFAR100_CLASSES),
      num_classes=CIFAR100_CLASSES,
      description=(f'federated CIFAR-100, {len(train.client_ids)} clients, '
                   f'{crop_size}x{crop_size} crops'),
      model_name='resnet18 (group norm, TFF baseline)')
