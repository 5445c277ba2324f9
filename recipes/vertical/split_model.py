"""Split learning across feature parties, one of which (the label party) coordinates.

Roles (the README's "Threat model" states them for the whole recipe): party 0 is the label
party. It holds the labels, its own feature columns and bottom model, and it is the
coordinator: it runs the top model and the loss. The other parties (the masking parties)
hold features and their bottom models only. One training step on a minibatch (the same
aligned rows at every party):

1. Every party runs its bottom model on its own columns: embedding e_i.
2. Fusion (`secure_sum.SecureSum` or `PlainSum`) brings the masking parties' embeddings
   to the coordinator as their sum; the coordinator adds its own e_0 in the clear, outside
   the masked sum (adding it inside would hide nothing from itself), so
   S = e_0 + sum_{i>0} e_i.
3. The coordinator runs the top model on S, computes the loss with the labels and updates
   the top model and its own bottom model. It sends dL/dS to every masking party: with sum
   fusion dL/de_i = dL/dS.
4. Each masking party back-propagates dL/dS through its bottom model
   (`tape.gradient(e_i, weights, output_gradients=dL/dS)`) and updates it with its own
   optimizer.

What crosses the wire is recorded in a `transcript.Transcript` when one is given: masked
vectors to the coordinator, dL/dS to each masking party. What each side learns from it:
the coordinator learns S - e_0, the sum of the masking parties' embeddings (never one of
them, as long as there are at least two); every masking party learns dL/dS for every row
of every batch, which depends on the labels (label leakage in split learning, not
protected here), and, because the top model starts with a ReLU, the sign pattern of S
(dL/dS is zero exactly where S <= 0).

Every role's computation is a `tf.function`; values cross between roles as numpy arrays,
as they would cross a network. A party recomputes its forward pass in step 4 rather than
keeping a tape open across the exchange (the bottom models are deterministic, so the
result is the same, and each step stays a self-contained graph).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from recipes.vertical import secure_sum
from recipes.vertical.transcript import Transcript

OptimizerFn = Callable[[], tf.keras.optimizers.Optimizer]


class FeatureParty:
  """A party's bottom model and optimizer; it only ever shares embeddings (via fusion)."""

  def __init__(self, model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer) -> None:
    self.model = model
    spec = tf.TensorSpec([None, model.input_shape[-1]], tf.float32)
    grad_spec = tf.TensorSpec([None, model.output_shape[-1]], tf.float32)

    @tf.function(input_signature=[spec])
    def embed(features: tf.Tensor) -> tf.Tensor:
      return model(features, training=True)

    @tf.function(input_signature=[spec, grad_spec])
    def apply_gradient(features: tf.Tensor, embedding_gradient: tf.Tensor) -> None:
      with tf.GradientTape() as tape:
        embedding = model(features, training=True)
      grads = tape.gradient(embedding, model.trainable_variables, output_gradients=embedding_gradient)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))

    self._embed = embed
    self._apply_gradient = apply_gradient

  def embed(self, features: np.ndarray) -> np.ndarray:
    return self._embed(features).numpy()

  def apply_gradient(self, features: np.ndarray, embedding_gradient: np.ndarray) -> None:
    self._apply_gradient(features, embedding_gradient)


class Coordinator:
  """The label party's top model, loss and optimizer (its bottom model is a `FeatureParty`)."""

  def __init__(self, model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer) -> None:
    self.model = model
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fused_spec = tf.TensorSpec([None, model.input_shape[-1]], tf.float32)

    @tf.function(input_signature=[fused_spec, tf.TensorSpec([None], tf.int32)])
    def train_step(fused: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
      with tf.GradientTape() as tape:
        tape.watch(fused)
        loss = loss_fn(labels, model(fused, training=True))
      top_grads, fused_grad = tape.gradient(loss, [model.trainable_variables, fused])
      optimizer.apply_gradients(zip(top_grads, model.trainable_variables))
      return loss, fused_grad

    @tf.function(input_signature=[fused_spec])
    def probabilities(fused: tf.Tensor) -> tf.Tensor:
      return tf.nn.softmax(model(fused, training=False))

    self._train_step = train_step
    self._probabilities = probabilities

  def train_step(self, fused: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Updates the top model; returns the batch loss and dL/d(fused) to send to the parties."""
    loss, fused_grad = self._train_step(fused.astype(np.float32), labels.astype(np.int32))
    return float(loss), fused_grad.numpy()

  def probabilities(self, fused: np.ndarray) -> np.ndarray:
    return self._probabilities(fused.astype(np.float32)).numpy()


class SplitModel:
  """The label party (coordinator) + masking parties + fusion, trained on aligned rows."""

  def __init__(self, *, bottom_models: Sequence[tf.keras.Model], top_model: tf.keras.Model,
               fusion: secure_sum.Fusion, optimizer_fn: OptimizerFn,
               transcript: Transcript | None = None) -> None:
    """Builds the roles.

    Args:
      bottom_models: One per party, all with the same embedding size; the first is the
        label party's (the coordinator's own).
      top_model: The coordinator's model over the fused embedding.
      fusion: How the other parties' embeddings reach the coordinator (`SecureSum` or
        `PlainSum` over `len(bottom_models) - 1` parties).
      optimizer_fn: Makes one fresh optimizer per party and one for the top model.
      transcript: Records the gradients sent back (the fusion records what it sends).
    """
    self.parties = [FeatureParty(model, optimizer_fn()) for model in bottom_models]
    self.coordinator = Coordinator(top_model, optimizer_fn())
    self.fusion = fusion
    self.transcript = transcript

  def _fuse(self, features: Sequence[np.ndarray]) -> np.ndarray:
    """S = e_0 (the coordinator's own, in the clear) + fusion of the others' embeddings."""
    own = self.parties[0].embed(features[0]).astype(np.float64)
    received = self.fusion([party.embed(x) for party, x in zip(self.parties[1:], features[1:])])
    return own + received

  def train_step(self, features: Sequence[np.ndarray], labels: np.ndarray) -> float:
    """One minibatch: forward through fusion, update the top, send gradients back."""
    fused = self._fuse(features)
    loss, fused_grad = self.coordinator.train_step(fused, labels)
    self.parties[0].apply_gradient(features[0], fused_grad)  # Local to the coordinator.
    for index, (party, x) in enumerate(zip(self.parties[1:], features[1:]), start=1):
      if self.transcript is not None:
        (payload,) = self.transcript.send(secure_sum.COORDINATOR, f'party{index}', 'dL/dS',
                                          [fused_grad.tobytes()])
        party.apply_gradient(x, np.frombuffer(payload, dtype=fused_grad.dtype).reshape(fused_grad.shape))
      else:
        party.apply_gradient(x, fused_grad)
    return loss

  def train_epoch(self, features: Sequence[np.ndarray], labels: np.ndarray, *, batch_size: int,
                  rng: np.random.Generator) -> float:
    """One pass over the rows in a shared random order; returns the mean batch loss.

    The order comes from a seed all parties share, so they pick the same rows per batch.
    """
    order = rng.permutation(len(labels))
    losses = []
    for start in range(0, len(order), batch_size):
      batch = order[start:start + batch_size]
      losses.append(self.train_step([x[batch] for x in features], labels[batch]))
    return float(np.mean(losses))

  def predict_proba(self, features: Sequence[np.ndarray], *, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities; embeddings reach the coordinator through the same fusion."""
    rows = len(features[0])
    outputs = []
    for batch in range(math.ceil(rows / batch_size)):
      rows_slice = slice(batch * batch_size, (batch + 1) * batch_size)
      outputs.append(self.coordinator.probabilities(self._fuse([x[rows_slice] for x in features])))
    return np.concatenate(outputs)
