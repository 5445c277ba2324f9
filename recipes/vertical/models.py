"""Keras models of the split network and of the baselines, all from one family.

Vertical model: each party's bottom model maps its columns to an embedding,
`Dense(hidden_units, relu) -> Dense(embedding_dim)`; the coordinator's top model maps the
sum of the embeddings to logits, `ReLU -> Dense(num_classes)`. Summing per-party linear
outputs equals one linear layer over all columns with a block-structured input layer, so
the baselines use the same layers on one feature matrix: the centralized model with
`num_parties * hidden_units` hidden units (the width of all bottoms together), the
label-party-only model with `hidden_units` (the width of its own bottom).
"""

from __future__ import annotations

import tensorflow as tf


def _bottom_layers(hidden_units: int, embedding_dim: int) -> list[tf.keras.layers.Layer]:
  return [
      tf.keras.layers.Dense(hidden_units, activation='relu'),
      tf.keras.layers.Dense(embedding_dim),
  ]


def _top_layers(num_classes: int) -> list[tf.keras.layers.Layer]:
  return [tf.keras.layers.ReLU(), tf.keras.layers.Dense(num_classes)]


def build_bottom_model(input_dim: int, *, hidden_units: int, embedding_dim: int,
                       name: str = 'bottom') -> tf.keras.Model:
  """A feature party's model: its columns -> an embedding of size `embedding_dim`."""
  return tf.keras.Sequential(
      [tf.keras.Input((input_dim,)), *_bottom_layers(hidden_units, embedding_dim)], name=name)


def build_top_model(embedding_dim: int, *, num_classes: int, name: str = 'top') -> tf.keras.Model:
  """The coordinator's model: the fused (summed) embedding -> class logits."""
  return tf.keras.Sequential([tf.keras.Input((embedding_dim,)), *_top_layers(num_classes)], name=name)


def build_single_party_model(input_dim: int, *, hidden_units: int, embedding_dim: int, num_classes: int,
                             name: str) -> tf.keras.Model:
  """Bottom and top layers in one model, for features held in one place (the baselines)."""
  layers = [*_bottom_layers(hidden_units, embedding_dim), *_top_layers(num_classes)]
  return tf.keras.Sequential([tf.keras.Input((input_dim,)), *layers], name=name)
