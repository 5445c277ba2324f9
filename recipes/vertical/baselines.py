"""Baselines on the vertical model's split: one Keras model on a single feature matrix.

`centralized`: every party's columns in one place (an upper reference: no federation cost).
`label_party_only`: the label party's own columns (what it could do without partners).
Both train with the same optimizer, epochs and batch size as the vertical model.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A trained model's held-out probabilities and per-epoch curves.

  Attributes:
    probabilities: Test-set class probabilities, shape [test rows, num_classes].
    train_loss: Mean training loss per epoch.
    test_accuracy: Test accuracy after each epoch (for the curves only; no model selection).
    train_seconds: Wall-clock training time, including the per-epoch evaluations.
  """

  probabilities: np.ndarray
  train_loss: Sequence[float]
  test_accuracy: Sequence[float]
  train_seconds: float


def train_keras_model(model: tf.keras.Model, *, optimizer: tf.keras.optimizers.Optimizer,
                      train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                      epochs: int, batch_size: int) -> TrainedModel:
  """Compiles and fits a logits model with cross-entropy; evaluates after each epoch."""
  model.compile(optimizer=optimizer,
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')])
  start = time.perf_counter()
  history = model.fit(*train, validation_data=test, epochs=epochs, batch_size=batch_size, shuffle=True,
                      verbose=0)
  seconds = time.perf_counter() - start
  # Calling the model directly: `predict` would trace a new function for every baseline.
  probabilities = tf.nn.softmax(model(test[0], training=False)).numpy()
  return TrainedModel(probabilities, history.history['loss'], history.history['val_accuracy'], seconds)
