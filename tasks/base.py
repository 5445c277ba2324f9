"""The `Task` type: everything a recipe needs to know about one federated learning problem."""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

from core.runtime import import_tff

tff = import_tff()

PreprocessFn = Callable[[tf.data.Dataset], tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class ClientSpec:
  """How each client iterates over its local data in one round.

  Attributes:
    num_epochs: Passes over the local data per round.
    batch_size: Local batch size; -1 means the whole local dataset is one batch
      (FedSGD's "full client batch").
    max_elements: If set, caps the number of batches per round.
    shuffle_buffer_size: Shuffle buffer; None means the whole client dataset (at most
      10,000 examples), 0 or 1 disables shuffling.
  """

  num_epochs: int = 1
  batch_size: int = 20
  max_elements: int | None = None
  shuffle_buffer_size: int | None = None


@dataclasses.dataclass(frozen=True)
class Task:
  """A federated dataset, its held-out test set, a model and the client preprocessing.

  Attributes:
    name: Registry name (e.g. `mnist_digits`).
    train_data: Federated training data; each client's dataset yields raw `(x, y)`
      example pairs (x float32 features, y int32 label).
    test_data: Centralized held-out examples with the same element structure; reported
      after training, never used to tune or to stop.
    validation_data: Centralized examples apart from both, for periodic evaluation,
      early stopping and tuning.
    keras_model_fn: Builds a fresh, uncompiled Keras model that outputs logits.
    num_classes: Number of label classes.
    client_spec: How clients batch and iterate their data.
    description: One line for logs and the README.
    model_name: Name of the architecture `keras_model_fn` builds (e.g. `cnn`).
  """

  name: str
  train_data: tff.simulation.datasets.ClientData
  test_data: tf.data.Dataset
  keras_model_fn: Callable[[], tf.keras.Model]
  num_classes: int
  client_spec: ClientSpec = ClientSpec()
  description: str = ''
  model_name: str = ''
  validation_data: tf.data.Dataset | None = None

  def preprocess_train(self, dataset: tf.data.Dataset, seed: int | None = None) -> tf.data.Dataset:
    """Applies the client spec: shuffle, repeat for epochs, batch, cap.

    Args:
      dataset: One client's raw examples.
      seed: Seed of the shuffle (the training loop derives one per seed, round and
        client, so that a run is reproducible and every round shuffles anew); None
        shuffles nondeterministically.
    """
    spec = self.client_spec
    if spec.shuffle_buffer_size is None:
      dataset = dataset.shuffle(10_000, seed=seed)
    elif spec.shuffle_buffer_size > 1:
      dataset = dataset.shuffle(spec.shuffle_buffer_size, seed=seed)
    dataset = dataset.repeat(spec.num_epochs)
    # A whole-dataset batch: no client here holds more than this many examples.
    batch_size = 1_000_000 if spec.batch_size == -1 else spec.batch_size
    dataset = dataset.batch(batch_size)
    if spec.max_elements is not None:
      dataset = dataset.take(spec.max_elements)
    return dataset

  def preprocess_eval(self, dataset: tf.data.Dataset, batch_size: int = 500) -> tf.data.Dataset:
    """Batches centralized evaluation data."""
    return dataset.batch(batch_size)

  @property
  def input_spec(self):
    """Element spec of one preprocessed (batched) client dataset."""
    # TFF asks for this while it traces a model into a graph, where a real client
    # dataset may bring its examples along as constants (tasks/in_memory.py): a
    # one-element dataset of zeros of the same type has the same spec after preprocessing.
    element_spec = self.train_data.element_type_structure
    if all(s.shape.is_fully_defined() for s in tf.nest.flatten(element_spec)):
      dataset = tf.data.Dataset.from_tensors(
          tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), element_spec))
    else:
      dataset = self.train_data.create_tf_dataset_for_client(self.train_data.client_ids[0])
    return self.preprocess_train(dataset).element_spec

  def model_fn(self) -> tff.learning.models.VariableModel:
    """A fresh TFF model for `tff.learning` builders (sparse categorical loss, accuracy)."""
    return tff.learning.models.from_keras_model(
        self.keras_model_fn(),
        input_spec=self.input_spec,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )
