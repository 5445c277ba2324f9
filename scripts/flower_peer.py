"""The Flower apps of the peer benchmark: FedAvg on `mnist_digits` as fedrecipes runs it.

Runs in the Flower environment (`.venv-flower`: Flower 1.42, TensorFlow 2.18+ with Keras 3),
so nothing here imports TensorFlow Federated. Everything that defines the experiment is
the same as in `python -m recipes.fed_avg --task=mnist_digits --model=cnn`:

* data: `tasks/data/mnist_digits.npz` through `tasks/digit_arrays.py` itself: the same 7,000
  training digits (the fixed 1,000 validation digits held out), pixels scaled to [0, 1];
* split: `tasks/partition.py` itself, with the same name, client count and seed;
* model: McMahan et al.'s CNN, layer for layer as `tasks.models.create_original_fedavg_cnn_model`
  (logits; Glorot-uniform initialisation, the Keras default);
* clients: local SGD with the same learning rate, batch size and epochs, shuffled;
* server: the example-weighted mean of the client models (Flower's `FedAvg`, which is TFF's
  weighted FedAvg with server SGD at learning rate 1).

This module must be importable by the Ray workers (not `__main__`): Ray pickles the
functions of `__main__` by value for every client call, which would hand each call a fresh,
empty data cache. Data and the compiled Keras model are made once per worker process (a
Ray actor) and reused by every client call it serves: the client sets the server weights,
trains, and replies. (Flower's TensorFlow example builds and compiles a new model in every
call instead; Keras then traces its train step again each time, which costs more than the
training itself at this size: `--rebuild_model` of scripts/bench_flower.py measures that.)
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

# Numpy only: neither imports TensorFlow Federated (tests/test_layers.py).
from tasks import digit_arrays
from tasks import partition as partition_lib

ROOT = Path(__file__).resolve().parents[1]
DATA_PATH = ROOT / 'tasks' / 'data' / 'mnist_digits.npz'
NUM_CLASSES = 10


@functools.cache
def client_datasets(num_clients: int, partition: str, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
  """(x, y) of every client, in the order of fedrecipes' client ids; cached per process."""
  (x, y), _ = digit_arrays.split_training(digit_arrays.load_arrays(DATA_PATH))
  clients = partition_lib.partition(partition, y, num_clients, seed)
  return tuple((x[indices], y[indices]) for indices in clients)


@functools.cache
def test_dataset() -> tuple[np.ndarray, np.ndarray]:
  """The 2,000 held-out digits."""
  arrays = digit_arrays.load_arrays(DATA_PATH)
  return digit_arrays.to_model_inputs(arrays['test_images'], arrays['test_labels'])


def build_cnn():
  """McMahan et al.'s CNN in Keras 3, as `tasks.models.create_original_fedavg_cnn_model`."""
  import keras  # pylint: disable=g-import-not-at-top
  return keras.Sequential([
      keras.Input(shape=(28, 28, 1)),
      keras.layers.Conv2D(32, kernel_size=5, padding='same', activation='relu'),
      keras.layers.MaxPooling2D(pool_size=(2, 2), padding='same'),
      keras.layers.Conv2D(64, kernel_size=5, padding='same', activation='relu'),
      keras.layers.MaxPooling2D(pool_size=(2, 2), padding='same'),
      keras.layers.Flatten(),
      keras.layers.Dense(512, activation='relu'),
      keras.layers.Dense(NUM_CLASSES),
  ], name='cnn')


def _compiled_cnn(learning_rate: float):
  """A fresh CNN compiled for local SGD (sparse categorical cross-entropy on logits)."""
  import keras  # pylint: disable=g-import-not-at-top
  model = build_cnn()
  model.compile(
      optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=['accuracy'],
  )
  return model


@functools.cache
def _cached_cnn(learning_rate: float):
  """One compiled CNN per worker process and learning rate (its traced train step is reused)."""
  return _compiled_cnn(learning_rate)


client_app = ClientApp()


@client_app.train()
def train(message: Message, context: Context) -> Message:
  """Local SGD from the server model on this node's client; replies with the new weights."""
  import keras  # pylint: disable=g-import-not-at-top
  config = message.content['config']
  x, y = client_datasets(int(config['num-clients']), str(config['partition']),
                         int(config['seed']))[int(context.node_config['partition-id'])]
  if config['rebuild-model']:
    keras.backend.clear_session()  # As Flower's TensorFlow example: a new model per call.
    model = _compiled_cnn(float(config['learning-rate']))
  else:
    model = _cached_cnn(float(config['learning-rate']))
  model.set_weights(message.content['arrays'].to_numpy_ndarrays())
  history = model.fit(x, y, batch_size=int(config['batch-size']), epochs=int(config['epochs']),
                      shuffle=True, verbose=0)
  reply = RecordDict({
      'arrays': ArrayRecord(model.get_weights()),
      'metrics': MetricRecord({'train_loss': float(history.history['loss'][-1]),
                               'num-examples': len(x)}),
  })
  return Message(content=reply, reply_to=message)


class TimedFedAvg(FedAvg):
  """Flower's FedAvg that records each round's training time.

  A round runs from sampling the clients (`configure_train`) to the aggregated model
  (`aggregate_train`): sending the model, local training on the clients, receiving and
  averaging the updates. That is what fedrecipes times per round (`process.next` plus
  sampling and the client datasets); evaluation is outside it on both sides.
  """

  def __init__(self, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    self.round_seconds: dict[int, float] = {}
    self._round_started = 0.0

  def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                      grid: Grid):
    self._round_started = time.perf_counter()
    return super().configure_train(server_round, arrays, config, grid)

  def aggregate_train(self, server_round: int, replies):
    result = super().aggregate_train(server_round, replies)
    self.round_seconds[server_round] = time.perf_counter() - self._round_started
    return result


def make_server_app(settings: dict[str, Any], record: dict[str, Any]) -> ServerApp:
  """A ServerApp that runs `settings['total_rounds']` rounds of FedAvg and fills `record`.

  Args:
    settings: num_clients, partition, seed, clients_per_round, client_learning_rate,
      client_batch_size, client_epochs_per_round, total_rounds, rounds_per_eval,
      rebuild_model.
    record: Receives 'round_seconds' {round: s}, 'test_accuracy' {round: accuracy},
      'test_loss' {round: loss}.
  """
  app = ServerApp()

  @app.main()
  def main(grid: Grid, context: Context) -> None:
    del context
    evaluation_model = _compiled_cnn(settings['client_learning_rate'])
    x_test, y_test = test_dataset()
    record.update(test_accuracy={}, test_loss={})

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
      if server_round == 0 or (server_round % settings['rounds_per_eval']
                               and server_round != settings['total_rounds']):
        return None
      evaluation_model.set_weights(arrays.to_numpy_ndarrays())
      loss, accuracy = evaluation_model.evaluate(x_test, y_test, batch_size=500, verbose=0)
      record['test_accuracy'][server_round] = float(accuracy)
      record['test_loss'][server_round] = float(loss)
      return MetricRecord({'test_accuracy': float(accuracy), 'test_loss': float(loss)})

    strategy = TimedFedAvg(
        fraction_train=settings['clients_per_round'] / settings['num_clients'],
        min_train_nodes=settings['clients_per_round'],
        min_available_nodes=settings['num_clients'],
        fraction_evaluate=0.0,  # Centralized evaluation only, as fedrecipes.
    )
    # The same model initialisation on both sides would need the same RNG; both use
    # Glorot-uniform from their own seeds.
    initial = ArrayRecord(build_cnn().get_weights())
    strategy.start(
        grid=grid, initial_arrays=initial, num_rounds=settings['total_rounds'],
        train_config=ConfigRecord({
            'num-clients': settings['num_clients'], 'partition': settings['partition'],
            'seed': settings['seed'], 'learning-rate': settings['client_learning_rate'],
            'batch-size': settings['client_batch_size'],
            'epochs': settings['client_epochs_per_round'],
            'rebuild-model': settings['rebuild_model'],
        }),
        evaluate_fn=evaluate,
    )
    record['round_seconds'] = dict(strategy.round_seconds)

  return app
