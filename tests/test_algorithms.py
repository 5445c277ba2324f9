"""Algorithm arithmetic through the recipes' own `build_process` functions.

* FedAvg: after one round from zero weights, the server model equals the example-weighted
  (or, with --weighting=uniform, the plain) mean of the client models, computed by hand.
* FedSGD equals FedAvg with one full-batch local SGD step when server_lr_sgd = client_lr *
  server_lr_avg (a known equivalence).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from core.runtime import import_tff
from recipes import experiment
from recipes import fed_avg
from recipes import fed_sgd
from recipes import optimizers
from tasks import models
from tasks.base import ClientSpec
from tasks.base import Task
from tasks.in_memory import client_data_from_arrays

tff = import_tff()

NUM_CLASSES = 3
CLIENT_SIZES = (2, 5, 9)  # Imbalanced, so weighted and uniform means differ.


def _task() -> tuple[Task, np.ndarray, np.ndarray, list[np.ndarray]]:
  rng = np.random.default_rng(7)
  n = sum(CLIENT_SIZES)
  x = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32)
  y = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
  bounds = np.cumsum((0,) + CLIENT_SIZES)
  indices = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(CLIENT_SIZES))]
  return Task(
      name='hand', train_data=client_data_from_arrays(x, y, indices),
      test_data=tf.data.Dataset.from_tensor_slices((x, y)),
      keras_model_fn=lambda: models.build_model('tiny', NUM_CLASSES), num_classes=NUM_CLASSES,
      # One full-batch step per client, in a fixed order.
      client_spec=ClientSpec(num_epochs=1, batch_size=-1, shuffle_buffer_size=0),
  ), x, y, indices


def _setup(task: Task, *, weighted: bool, client_lr: float | None, server_lr: float) -> experiment.Setup:
  return experiment.Setup(
      task=task, weighted=weighted,
      client_optimizer=optimizers.build_optimizer('sgd', client_lr) if client_lr else None,
      server_optimizer=optimizers.build_optimizer('sgd', server_lr),
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
      _aggregator_fn=lambda w: (tff.aggregators.MeanFactory() if w
                                else tff.aggregators.UnweightedMeanFactory()),
  )


def _one_round(process, task: Task, initial: list[np.ndarray] | None = None):
  state = process.initialize()
  if initial is not None:
    weights = process.get_model_weights(state)
    weights = tff.learning.models.ModelWeights(trainable=initial, non_trainable=weights.non_trainable)
    state = process.set_model_weights(state, weights)
  data = [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c))
          for c in task.train_data.client_ids]
  return [np.asarray(w) for w in process.get_model_weights(process.next(state, data).state).trainable]


def _softmax_regression_step(x: np.ndarray, y: np.ndarray, lr: float) -> list[np.ndarray]:
  """One full-batch SGD step of softmax regression from zero weights, by hand.

  At zero weights every class has probability 1/C, so the mean cross-entropy gradient is
  dW = X^T (1/C - onehot(y)) / n and db = mean(1/C - onehot(y)).
  """
  flat = x.reshape(len(x), -1).astype(np.float64)
  residual = 1.0 / NUM_CLASSES - np.eye(NUM_CLASSES)[y]
  return [-lr * flat.T @ residual / len(x), -lr * residual.mean(axis=0)]


@pytest.mark.parametrize('weighting', ['num_examples', 'uniform'])
def test_fed_avg_server_model_is_the_hand_computed_mean(weighting: str) -> None:
  task, x, y, indices = _task()
  lr = 0.5
  weighted = weighting == 'num_examples'
  process = fed_avg.build_process(_setup(task, weighted=weighted, client_lr=lr, server_lr=1.0))
  zeros = [np.zeros((784, NUM_CLASSES), np.float32), np.zeros(NUM_CLASSES, np.float32)]
  result = _one_round(process, task, zeros)

  client_models = [_softmax_regression_step(x[i], y[i], lr) for i in indices]
  weights = np.array(CLIENT_SIZES, float) if weighted else np.ones(len(CLIENT_SIZES))
  expected = [sum(w * m[k] for w, m in zip(weights, client_models)) / weights.sum() for k in (0, 1)]
  other = [sum(m[k] for m in client_models) / len(client_models) if weighted else
           sum(n * m[k] for n, m in zip(CLIENT_SIZES, client_models)) / sum(CLIENT_SIZES)
           for k in (0, 1)]
  for got, want, not_want in zip(result, expected, other):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.abs(got - not_want).max() > 1e-3  # The two weightings are distinguishable.


def test_fed_sgd_equals_fed_avg_with_one_full_batch_step() -> None:
  task, *_ = _task()
  client_lr, server_lr_avg = 0.1, 2.0
  initial = [np.asarray(w) for w in task.keras_model_fn().trainable_weights]
  avg = fed_avg.build_process(
      _setup(task, weighted=True, client_lr=client_lr, server_lr=server_lr_avg))
  sgd = fed_sgd.build_process(
      _setup(task, weighted=True, client_lr=None, server_lr=client_lr * server_lr_avg))
  for a, s in zip(_one_round(avg, task, initial), _one_round(sgd, task, initial)):
    np.testing.assert_allclose(a, s, rtol=1e-4, atol=1e-6)
  # And the step is real: the model moved.
  assert any(np.abs(a - i).max() > 1e-4 for a, i in zip(_one_round(avg, task, initial), initial))
