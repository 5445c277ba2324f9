"""Tests of the task registry, the bundled MNIST digits, the synthetic task and the models."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from core.runtime import import_tff
from tasks import ClientSpec
from tasks import create_task
from tasks import mnist_digits
from tasks import models
from tasks import TASKS

tff = import_tff()

XY_SPEC = (tf.TensorSpec((28, 28, 1), tf.float32), tf.TensorSpec((), tf.int32))


@pytest.fixture(scope='module')
def mnist_task():
  return create_task('mnist_digits')


def _client_sizes(client_data) -> list[int]:
  return [int(client_data.create_tf_dataset_for_client(c).cardinality())
          for c in client_data.client_ids]


def _labels(dataset: tf.data.Dataset) -> tf.Tensor:
  return dataset.map(lambda x, y: y).batch(100_000).get_single_element()


def test_mnist_digits_defaults(mnist_task):
  assert TASKS == ('mnist_digits', 'emnist_character', 'synthetic')
  assert mnist_task.num_classes == 10
  assert mnist_task.model_name == 'cnn' and mnist_task.keras_model_fn().name == 'cnn'
  train = mnist_task.train_data
  assert train.client_ids == [f'{i:04d}' for i in range(100)]
  assert train.element_type_structure == XY_SPEC
  assert mnist_task.test_data.element_spec == XY_SPEC
  assert sum(_client_sizes(train)) == 7_000
  assert int(mnist_task.test_data.cardinality()) == 2_000
  assert int(mnist_task.validation_data.cardinality()) == 1_000
  assert 'shards' in mnist_task.description and 'cnn' in mnist_task.description


def test_mnist_digits_default_split_is_two_labels_per_client(mnist_task):
  train = mnist_task.train_data
  for client_id in train.client_ids:
    labels = _labels(train.create_tf_dataset_for_client(client_id)).numpy()
    assert 1 <= len(set(labels)) <= 2


def test_mnist_digits_pixels_match_the_npz(mnist_task):
  arrays = mnist_digits.load_arrays()
  x, y = next(iter(mnist_task.test_data.batch(2_000)))
  np.testing.assert_allclose(x.numpy()[..., 0] * 255.0, arrays['test_images'], atol=1e-3)
  np.testing.assert_array_equal(y.numpy(), arrays['test_labels'])
  assert float(tf.reduce_min(x)) == 0.0 and float(tf.reduce_max(x)) == 1.0
  # MNIST convention: background (the border) is 0, ink is high.
  assert float(tf.reduce_max(x[:, 0, :, :])) == 0.0
  assert float(tf.reduce_mean(x[:, 10:18, 10:18, :])) > 0.2


@pytest.mark.parametrize('partition, alpha', [('iid', None), ('dirichlet', 0.1)])
def test_mnist_digits_other_partitions(partition, alpha):
  task = create_task('mnist_digits', num_clients=10, partition=partition, alpha=alpha, seed=1)
  sizes = _client_sizes(task.train_data)
  assert len(sizes) == 10 and sum(sizes) == 7_000 and min(sizes) >= 1
  if partition == 'iid':
    assert set(sizes) == {700}


def test_mnist_digits_validation_is_fixed_stratified_and_apart_from_training():
  labels = mnist_digits.load_arrays()['train_labels']
  held = mnist_digits.validation_indices(labels)
  assert len(held) == 1_000 and len(set(held.tolist())) == 1_000
  np.testing.assert_array_equal(held, mnist_digits.validation_indices(labels))  # Seed-free.
  # Each class's share of the validation set is its share of the training digits (+-1).
  expected = 1_000 * np.bincount(labels) / len(labels)
  assert np.all(np.abs(np.bincount(labels[held]) - expected) < 1)
  # Validation digits are not among any client's: the clients hold the other 7,000.
  train, validation, _ = mnist_digits.load_data(num_clients=10, partition='iid')
  client_images = np.concatenate([np.stack([x.numpy() for x, _ in train.create_tf_dataset_for_client(c)])
                                  for c in train.client_ids])
  validation_images = np.stack([x.numpy() for x, _ in validation])
  client_keys = {img.tobytes() for img in client_images}
  overlap = sum(img.tobytes() in client_keys for img in validation_images)
  # MNIST has a few exact duplicate images; the split itself is by index.
  assert overlap <= 5, overlap


def test_digit_arrays_give_the_clients_exactly_the_digits_the_task_splits():
  # scripts/flower_peer.py (Flower's environment, no TFF) trains on `digit_arrays`: its
  # clients must be fedrecipes' clients, digit for digit.
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tasks import digit_arrays, partition  # pylint: disable=g-import-not-at-top
  (train_x, train_y), (validation_x, _) = digit_arrays.split_training(digit_arrays.load_arrays())
  assert len(train_y) == 7_000 and len(validation_x) == 1_000
  clients = partition.partition('shards', train_y, 10, 3)
  train, validation, _ = mnist_digits.load_data(num_clients=10, partition='shards', seed=3)
  for indices, client_id in zip(clients, train.client_ids):
    x, y = next(iter(train.create_tf_dataset_for_client(client_id).batch(10_000)))
    np.testing.assert_array_equal(y.numpy(), train_y[indices])
    np.testing.assert_array_equal(x.numpy(), train_x[indices])
  np.testing.assert_array_equal(next(iter(validation.batch(1_000)))[0].numpy(), validation_x)
  # And the module stays importable without TensorFlow.
  code = ('import sys, importlib.util; spec = importlib.util.spec_from_file_location("d", "tasks/digit_arrays.py"); '
          'm = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); '
          'assert "tensorflow" not in sys.modules')
  subprocess.run([sys.executable, '-c', code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_mnist_digits_missing_or_corrupt_file(tmp_path):
  with pytest.raises(UserError, match='not found.*convert_mnist.py'):
    mnist_digits.load_data(path=tmp_path / 'absent.npz')
  corrupt = tmp_path / 'corrupt.npz'
  corrupt.write_bytes(b'PK\x03\x04 not really a zip file')
  with pytest.raises(UserError, match='corrupt'):
    mnist_digits.load_data(path=corrupt)
  partial = tmp_path / 'partial.npz'
  np.savez_compressed(partial, train_images=np.zeros((3, 28, 28), np.uint8))
  with pytest.raises(UserError, match='lacks the array'):
    mnist_digits.load_data(path=partial)


@pytest.mark.parametrize('name', models.MODELS)
@pytest.mark.parametrize('num_classes', [10, 62])
def test_models_output_logits(name, num_classes):
  model = models.build_model(name, num_classes)
  outputs = model(tf.random.uniform((3, 28, 28, 1)), training=False)
  assert outputs.shape == (3, num_classes) and outputs.dtype == tf.float32
  # Logits, not probabilities: a softmax output would be positive and sum to 1.
  assert float(tf.reduce_min(outputs)) < 0.0
  assert not np.allclose(tf.reduce_sum(outputs, axis=1), 1.0)
  assert model.layers[-1].get_config()['activation'] == 'linear'


@pytest.mark.parametrize('name, tff_builder', [
    ('cnn_dropout', 'create_conv_dropout_model'),
    ('cnn', 'create_original_fedavg_cnn_model'),
    ('2nn', 'create_two_hidden_layer_model'),
])
def test_models_match_tff_architectures(name, tff_builder):
  emnist_models = tff.simulation.baselines.emnist.emnist_models
  for only_digits, num_classes in ((True, 10), (False, 62)):
    ours = models.build_model(name, num_classes)
    theirs = getattr(emnist_models, tff_builder)(only_digits=only_digits)
    assert ours.count_params() == theirs.count_params()
    assert [l.output_shape for l in ours.layers] == [l.output_shape for l in theirs.layers]


def test_cnn_is_the_mcmahan_cnn():
  assert models.build_model('cnn', 10).count_params() == 1_663_370


def test_unknown_names_raise_user_error():
  with pytest.raises(UserError, match='unknown task'):
    create_task('cifar10')
  with pytest.raises(UserError, match='unknown model'):
    create_task('synthetic', model='resnet')
  with pytest.raises(UserError, match='unknown model'):
    models.build_model('resnet', 10)
  with pytest.raises(UserError, match='unknown partition'):
    create_task('synthetic', partition='pathological')


@pytest.mark.parametrize('name, options, message', [
    ('mnist_digits', dict(only_digits=True), 'only_digits=True does not apply'),
    ('mnist_digits', dict(cache_dir='/tmp'), 'cache_dir'),
    ('synthetic', dict(only_digits=True), 'does not apply'),
    ('emnist_character', dict(num_clients=10), 'num_clients=10 does not apply'),
    ('emnist_character', dict(partition='iid'), 'partition'),
    ('mnist_digits', dict(alpha=0.1), "only to partition='dirichlet'"),
])
def test_options_that_do_not_apply_raise_user_error(name, options, message):
  with pytest.raises(UserError, match=message):
    create_task(name, **options)


def test_synthetic_task_builds_and_is_learnable():
  tf.keras.utils.set_random_seed(0)
  # One local step per client and round, so learning is visible across rounds.
  task = create_task('synthetic', num_clients=4, partition='iid', seed=0,
                     client_spec=ClientSpec(num_epochs=1, batch_size=16))
  assert task.num_classes == 4
  assert task.train_data.client_ids == ['0000', '0001', '0002', '0003']
  assert task.train_data.element_type_structure == XY_SPEC
  assert task.test_data.element_spec == XY_SPEC
  assert create_task('synthetic').keras_model_fn().name == 'tiny'

  process = tff.learning.algorithms.build_weighted_fed_avg(
      task.model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))
  state = process.initialize()
  datasets = [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c))
              for c in task.train_data.client_ids]
  accuracies = []
  for _ in range(4):
    output = process.next(state, datasets)
    state = output.state
    accuracies.append(output.metrics['client_work']['train']['sparse_categorical_accuracy'])
  assert accuracies[-1] > 0.9 and accuracies[-1] > accuracies[0], accuracies

  # Built after the process (a Keras model made before tracing would be invalidated).
  model = task.keras_model_fn()
  process.get_model_weights(state).assign_weights_to(model)
  x, y = next(iter(task.preprocess_eval(task.test_data)))
  test_accuracy = np.mean(np.argmax(model(x), axis=1) == y.numpy())
  assert test_accuracy > 0.9


def test_serializable_dataset_fn_works_when_traced():
  task = create_task('synthetic', num_clients=3, partition='iid')
  train = task.train_data
  eager = _labels(train.create_tf_dataset_for_client('0002'))
  traced = tf.function(lambda client_id: _labels(train.serializable_dataset_fn(client_id)))
  np.testing.assert_array_equal(traced(tf.constant('0002')).numpy(), eager.numpy())
  merged = train.create_tf_dataset_from_all_clients(seed=0)
  assert sum(1 for _ in merged) == sum(_client_sizes(train))
