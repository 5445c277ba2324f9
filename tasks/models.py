"""Keras image classifiers for 28x28x1 inputs that output logits.

The architectures are those of TFF's EMNIST baselines
(`tff.simulation.baselines.emnist.emnist_models`): `cnn_dropout`
(`create_conv_dropout_model`), `cnn` (`create_original_fedavg_cnn_model`, the CNN of
McMahan et al. 2017, 1,663,370 parameters for 10 classes) and `2nn`
(`create_two_hidden_layer_model`). They are rebuilt here instead of imported because
TFF's builders end in a softmax and only offer 10 or 62 classes, while `Task.model_fn`
trains with `SparseCategoricalCrossentropy(from_logits=True)`: applying that loss to
probabilities silently trains a different (badly scaled) objective, and computing the
loss from logits is also the numerically stable choice. Layer for layer, with the same
Glorot-uniform initializers (the Keras default), only the last activation differs.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from core.errors import UserError

INPUT_SHAPE = (28, 28, 1)
MODELS = ('cnn_dropout', 'cnn', '2nn', 'tiny')


def create_conv_dropout_model(num_classes: int) -> tf.keras.Model:
  """Two 3x3 convolutions, max-pooling and dropout, dense 128, dropout (1.2M parameters)."""
  return tf.keras.Sequential([
      tf.keras.Input(shape=INPUT_SHAPE),
      tf.keras.layers.Conv2D(32, kernel_size=(3, 3), activation='relu'),
      tf.keras.layers.Conv2D(64, kernel_size=(3, 3), activation='relu'),
      tf.keras.layers.MaxPool2D(pool_size=(2, 2)),
      tf.keras.layers.Dropout(0.25),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(128, activation='relu'),
      tf.keras.layers.Dropout(0.5),
      tf.keras.layers.Dense(num_classes),
  ], name='cnn_dropout')


def create_original_fedavg_cnn_model(num_classes: int) -> tf.keras.Model:
  """McMahan et al.'s CNN: two 5x5 convolutions (32, 64) with 2x2 max-pooling, dense 512."""
  return tf.keras.Sequential([
      tf.keras.Input(shape=INPUT_SHAPE),
      tf.keras.layers.Conv2D(32, kernel_size=5, padding='same', activation='relu'),
      tf.keras.layers.MaxPooling2D(pool_size=(2, 2), padding='same'),
      tf.keras.layers.Conv2D(64, kernel_size=5, padding='same', activation='relu'),
      tf.keras.layers.MaxPooling2D(pool_size=(2, 2), padding='same'),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(512, activation='relu'),
      tf.keras.layers.Dense(num_classes),
  ], name='cnn')


def create_two_hidden_layer_model(num_classes: int, hidden_units: int = 200) -> tf.keras.Model:
  """McMahan et al.'s "2NN": two fully connected ReLU layers of `hidden_units`."""
  return tf.keras.Sequential([
      tf.keras.Input(shape=INPUT_SHAPE),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(hidden_units, activation='relu'),
      tf.keras.layers.Dense(hidden_units, activation='relu'),
      tf.keras.layers.Dense(num_classes),
  ], name='2nn')


def create_tiny_model(num_classes: int) -> tf.keras.Model:
  """Softmax regression (flatten + one dense layer): for fast wiring tests."""
  return tf.keras.Sequential([
      tf.keras.Input(shape=INPUT_SHAPE),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(num_classes),
  ], name='tiny')


_BUILDERS: dict[str, Callable[[int], tf.keras.Model]] = {
    'cnn_dropout': create_conv_dropout_model,
    'cnn': create_original_fedavg_cnn_model,
    '2nn': create_two_hidden_layer_model,
    'tiny': create_tiny_model,
}


def build_model(name: str, num_classes: int) -> tf.keras.Model:
  """Builds a fresh, uncompiled model mapping float32 (batch, 28, 28, 1) to logits.

  Args:
    name: One of `MODELS`.
    num_classes: Width of the logits.

  Returns:
    A `tf.keras.Model` whose outputs are unnormalized logits (no softmax).

  Raises:
    UserError: If `name` is unknown or `num_classes` < 2.
  """
  if name not in _BUILDERS:
    raise UserError(f'unknown model {name!r}; choose one of {", ".join(MODELS)}')
  if num_classes < 2:
    raise UserError(f'num_classes must be >= 2, got {num_classes}')
  return _BUILDERS[name](num_classes)
