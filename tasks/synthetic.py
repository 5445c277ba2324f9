"""A seeded, learnable image task of any population size: which quadrant is bright?

Each 28x28x1 image is faint noise with one bright 14x14 quadrant; the label is that
quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right). The classes are
linearly separable, so even softmax regression gets near 100% accuracy within a few
federated rounds, which lets end-to-end tests check that accuracy rises.

Clients are generated, not stored. Client `k`'s examples are a pure function of
`(seed, k)` (TensorFlow's stateless random ops keyed by the pair `[seed, k]`), made when
its dataset is asked for, i.e. when the client is sampled. Nothing is kept per client,
so a population of 10^6 clients costs what one of 10^3 costs; and client `k` holds the
same examples whatever the population size. The held-out test set is keyed by
`[seed, -1]`.

Every client holds `examples_per_client` examples (16 through `create_task`). The
partition options say how a client's labels are drawn, per client and independently of
all other clients (the global label distribution is uniform in expectation):

* `iid`: every label uniform over the 4 classes.
* `shards`: McMahan et al. (2017)'s pathological split, as label-pure shards: the
  client's examples are cut into `SHARDS_PER_CLIENT` = 2 near-equal shards, each of one
  label drawn uniformly; so a client holds at most 2 labels (1 when both draws agree).
* `dirichlet`: Hsu et al. (2019, arXiv:1909.06335): the client's label distribution
  `q ~ Dir(alpha, ..., alpha)`, then its labels i.i.d. from `q`. Small alpha (0.1)
  gives each client one or two dominant labels; large alpha (100) approaches `iid`.

Unlike `mnist_digits`, which partitions a fixed pool of examples (`tasks.partition`),
the clients here share no pool, so these are distributions per client rather than
splits of one dataset; the client sizes do not vary.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from core.errors import UserError
from core.runtime import import_tff
from tasks import numbered_clients
from tasks import partition as partition_lib

tff = import_tff()

NUM_CLASSES = 4
SHARDS_PER_CLIENT = 2
TEST_STREAM = -1  # The second half of the test set's key (clients use 0, 1, ...).
# The validation set's key: another stream no client number can take.
VALIDATION_STREAM = TEST_STREAM - 1
_SIDE = 28
_HALF = _SIDE // 2
# The quadrant (= label) each pixel belongs to.
_QUADRANT_OF_PIXEL = (np.arange(_SIDE)[:, None] // _HALF * 2
                      + np.arange(_SIDE)[None, :] // _HALF).astype(np.int32)
# The smallest positive float32: log() of a uniform draw stays finite.
_TINY = float(np.finfo(np.float32).tiny)


def _labels(key: tf.Tensor, num_examples: int, partition: str, alpha: float) -> tf.Tensor:
  """int32 labels, shape (num_examples,), of one client (see the module docstring)."""
  if partition == 'iid':
    return tf.random.stateless_uniform([num_examples], key, 0, NUM_CLASSES, dtype=tf.int32)
  if partition == 'shards':
    shard_labels = tf.random.stateless_uniform(
        [SHARDS_PER_CLIENT], key, 0, NUM_CLASSES, dtype=tf.int32)
    sizes = [len(s) for s in np.array_split(np.arange(num_examples), SHARDS_PER_CLIENT)]
    return tf.repeat(shard_labels, sizes)
  # Dirichlet shares are normalized Gamma(alpha) draws. A Gamma(alpha) draw for small
  # alpha underflows float32 (to 0, and 0/0 shares); its logarithm does not:
  # Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha) (Marsaglia and Tsang, 2000). The log
  # draws are the logits of the client's label distribution, up to a constant.
  gamma_key, uniform_key, draw_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
  log_gamma = (
      tf.math.log(tf.random.stateless_gamma([NUM_CLASSES], gamma_key, alpha=alpha + 1.0))
      + tf.math.log(tf.random.stateless_uniform([NUM_CLASSES], uniform_key, _TINY, 1.0)) / alpha)
  return tf.cast(
      tf.random.stateless_categorical(log_gamma[tf.newaxis], num_examples, draw_key)[0],
      tf.int32)


def examples(key: Any, num_examples: int, partition: str = 'iid',
             alpha: float = 0.5) -> tuple[tf.Tensor, tf.Tensor]:
  """Generates one client's examples from its key (eagerly, or as graph ops when traced).

  Args:
    key: int64 pair `[seed, client number]` (or `[seed, TEST_STREAM]`).
    num_examples: How many examples.
    partition: How the labels are drawn, a `tasks.partition.PARTITIONS` name.
    alpha: Dirichlet concentration (only for `partition='dirichlet'`).

  Returns:
    `(x, y)`: x float32 (num_examples, 28, 28, 1) in [0, 1] (background low, the bright
    quadrant high), y int32 (num_examples,) in [0, 4).
  """
  key = tf.cast(key, tf.int64)
  label_key, noise_key, brightness_key = tf.unstack(
      tf.random.experimental.stateless_split(key, 3))
  labels = _labels(label_key, num_examples, partition, alpha)
  noise = tf.random.stateless_uniform([num_examples, _SIDE, _SIDE], noise_key, 0.0, 0.3)
  brightness = tf.random.stateless_uniform([num_examples, 1, 1], brightness_key, 0.5, 0.7)
  bright = tf.cast(tf.equal(_QUADRANT_OF_PIXEL[tf.newaxis], labels[:, tf.newaxis, tf.newaxis]),
                   tf.float32)
  images = tf.clip_by_value(noise + brightness * bright, 0.0, 1.0)
  return images[..., tf.newaxis], labels


@functools.lru_cache(maxsize=32)
def _compiled_examples(num_examples: int, partition: str, alpha: float) -> Callable[[tf.Tensor], Any]:
  """`examples` as one compiled graph of the key, shared by tasks with the same settings.

  Eager calls then run one graph instead of a dozen separate ops, traced once.
  """
  return tf.function(lambda key: examples(key, num_examples, partition, alpha),
                     input_signature=[tf.TensorSpec([2], tf.int64)], autograph=False)


def load_data(
    *,
    num_clients: int = 4,
    partition: str = 'iid',
    alpha: float = 0.5,
    seed: int = 0,
    examples_per_client: int = 16,
    num_test_examples: int = 256,
) -> tuple[tff.simulation.datasets.ClientData, tf.data.Dataset]:
  """A population of `num_clients` generated clients and a generated test set.

  Creating it costs the same for any `num_clients`: client datasets are generated when
  asked for (see the module docstring).

  Args:
    num_clients: Number of clients.
    partition: A name from `tasks.partition.PARTITIONS`: how each client's labels are
      drawn (see the module docstring).
    alpha: Dirichlet concentration (only for `partition='dirichlet'`), > 0.
    seed: Seed of the images and labels of every client and of the test set.
    examples_per_client: Training examples of every client.
    num_test_examples: Size of the centralized test set.

  Returns:
    `(train_data, test_data)`, both yielding `(x, y)`: x float32 (28, 28, 1) in [0, 1]
    (background low, the bright quadrant high), y an int32 scalar in [0, 4). Client ids
    are '0000', '0001', ... (more digits for more than 10,000 clients).

  Raises:
    UserError: If a size is not positive or the partition arguments are invalid.
  """
  if min(num_clients, examples_per_client, num_test_examples) < 1:
    raise UserError(
        'synthetic task sizes (clients, examples per client, test examples) must be >= 1')
  if partition not in partition_lib.PARTITIONS:
    raise UserError(
        f'unknown partition {partition!r}; choose one of {", ".join(partition_lib.PARTITIONS)}')
  if partition == 'dirichlet' and not alpha > 0:
    raise UserError(f'dirichlet partition needs alpha > 0, got {alpha}')

  generate = _compiled_examples(examples_per_client, partition, float(alpha))

  def dataset_fn(number: Any) -> tf.data.Dataset:
    if tf.is_tensor(number):  # Traced: the generating ops go into the graph.
      key = tf.stack([tf.constant(seed, tf.int64), tf.cast(number, tf.int64)])
      return tf.data.Dataset.from_tensor_slices(
          examples(key, examples_per_client, partition, alpha))
    return tf.data.Dataset.from_tensor_slices(generate(tf.constant([seed, number], tf.int64)))

  train_data = numbered_clients.NumberedClientData(num_clients, dataset_fn)
  with tf.init_scope():
    test_x, test_y = examples(tf.constant([seed, TEST_STREAM], tf.int64), num_test_examples)
  return train_data, tf.data.Dataset.from_tensor_slices((test_x, test_y))
