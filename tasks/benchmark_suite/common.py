"""Turning a TFF baseline task (`tff.simulation.baselines`) into this project's `Task`.

TFF's `create_*_task_from_datasets` builds the preprocessing, the model and its metrics;
this module only adapts them to the training loop:

* client shuffling is seeded: the loop derives a seed per (run seed, round, client), and
  the shuffle runs here, before TFF's preprocessing, which is built with
  `shuffle_buffer_size=1` (no shuffle of its own). TFF shuffles first too, so the order
  of operations (shuffle, repeat, take, map, batch) is TFF's.
* `--max_batches_per_client` caps batches after TFF's preprocessing; TFF's own
  `max_elements` (examples per client, e.g. the paper's 1,000 for StackOverflow) is
  `max_examples_per_client`.
* a full-client batch (`batch_size=-1`, FedSGD) becomes one batch larger than any client.
* validation and test sets are centralized: the examples of a split's clients in a fixed
  order, read lazily from TFF's SQL client data.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from core.runtime import import_tff
from tasks.base import ClientSpec
from tasks.base import Task
from tasks.base import TaskMetrics

tff = import_tff()

# A batch larger than any client's data: a whole client in one batch (FedSGD).
_WHOLE_CLIENT_BATCH = 1_000_000
# Evaluation batches (TFF's defaults are 32-100; a larger batch only runs faster).
EVAL_BATCH_SIZE = 256


def tff_client_specs(client_spec: ClientSpec, max_examples_per_client: int | None) -> tuple[Any, Any]:
  """(train, eval) `tff.simulation.baselines.ClientSpec`s for TFF's preprocessing.

  Neither shuffles: the training shuffle is seeded and applied by `train_preprocess_fn`.
  """
  batch_size = _WHOLE_CLIENT_BATCH if client_spec.batch_size == -1 else client_spec.batch_size
  train = tff.simulation.baselines.ClientSpec(
      num_epochs=client_spec.num_epochs, batch_size=batch_size,
      max_elements=max_examples_per_client, shuffle_buffer_size=1)
  evaluation = tff.simulation.baselines.ClientSpec(
      num_epochs=1, batch_size=EVAL_BATCH_SIZE, shuffle_buffer_size=1)
  return train, evaluation


def merged_clients(client_data: Any, client_ids: Sequence[str],
                   max_examples: int | None = None) -> tf.data.Dataset:
  """The examples of `client_ids` in that order, as one dataset read lazily (optionally capped)."""
  dataset = tf.data.Dataset.from_tensor_slices(list(client_ids)).flat_map(
      client_data.serializable_dataset_fn)
  return dataset.take(max_examples) if max_examples is not None else dataset


def split_by_client(test_data: Any) -> tuple[tf.data.Dataset, tf.data.Dataset]:
  """(validation, test): the held-out clients in sorted order, every other one to each.

  The two share no client; as in `tasks.emnist`, validation steers (early stopping,
  tuning) and test is only reported.
  """
  ids = sorted(test_data.client_ids)
  return merged_clients(test_data, ids[0::2]), merged_clients(test_data, ids[1::2])


def sampled_clients(client_data: Any, max_examples: int | None, seed: int = 0) -> tf.data.Dataset:
  """The examples of the clients in a seeded random order, capped at `max_examples`.

  A sample of a split too big to evaluate whole (StackOverflow's 16M held-out examples)
  that still reads only the clients it needs. The seed is fixed, not the run's: every run
  evaluates on the same examples.
  """
  ids = list(client_data.client_ids)
  order = np.random.default_rng(seed).permutation(len(ids))
  return merged_clients(client_data, [ids[i] for i in order], max_examples)


def from_baseline(
    *,
    name: str,
    baseline: Any,
    validation_data: tf.data.Dataset,
    test_data: tf.data.Dataset,
    client_spec: ClientSpec,
    default_shuffle_buffer: int,
    metrics: TaskMetrics,
    keras_model_fn: Callable[[], tf.keras.Model],
    num_classes: int,
    description: str,
    model_name: str,
) -> Task:
  """A `Task` that trains and evaluates exactly as the TFF baseline task `baseline`.

  Args:
    name: Registry name.
    baseline: A `tff.simulation.baselines.BaselineTask` built with the specs of
      `tff_client_specs(client_spec, ...)`.
    validation_data: Raw (unpreprocessed) validation examples.
    test_data: Raw test examples.
    client_spec: The project's client spec (shuffle buffer, batch cap).
    default_shuffle_buffer: TFF's default shuffle buffer of this task, used when
      `client_spec.shuffle_buffer_size` is None.
    metrics: Which of the baseline model's metrics become columns, and the headline.
    keras_model_fn: TFF's builder of the baseline's Keras model (same architecture).
    num_classes: Output classes (tokens, tags, pixels for the autoencoder).
    description: One line for logs and the README.
    model_name: The model's name.
  """
  datasets = baseline.datasets
  buffer = (default_shuffle_buffer if client_spec.shuffle_buffer_size is None
            else client_spec.shuffle_buffer_size)

  def train_preprocess_fn(dataset: tf.data.Dataset, seed: int | None) -> tf.data.Dataset:
    if buffer > 1:
      dataset = dataset.shuffle(buffer, seed=seed)
    dataset = datasets.train_preprocess_fn(dataset)
    if client_spec.max_elements is not None:
      dataset = dataset.take(client_spec.max_elements)
    return dataset

  return Task(
      name=name,
      train_data=datasets.train_data,
      test_data=test_data,
      validation_data=validation_data,
      keras_model_fn=keras_model_fn,
      num_classes=num_classes,
      client_spec=client_spec,
      description=description,
      model_name=model_name,
      metrics=metrics,
      tff_model_fn=baseline.model_fn,
      train_preprocess_fn=train_preprocess_fn,
      eval_preprocess_fn=datasets.eval_preprocess_fn,
  )
