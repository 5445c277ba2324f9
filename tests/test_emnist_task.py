"""Tests of the EMNIST task on a tiny database in TFF's format (tests/emnist_sqlite.py)."""

import shutil
import sqlite3

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from tasks import create_task
from tasks import emnist
from tests import emnist_sqlite

XY_SPEC = (tf.TensorSpec((28, 28, 1), tf.float32), tf.TensorSpec((), tf.int32))


@pytest.fixture(scope='module')
def written(tmp_path_factory):
  """(cache_dir, contents by split name) of a generated emnist_all.sqlite."""
  cache_dir = tmp_path_factory.mktemp('tff_cache')
  splits = emnist_sqlite.write_emnist_sqlite(cache_dir / 'emnist_all.sqlite')
  return cache_dir, splits


def _all_xy(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
  x, y = dataset.batch(10_000).get_single_element()
  return x.numpy(), y.numpy()


def test_all_characters(written):
  cache_dir, splits = written
  task = create_task('emnist_character', cache_dir=str(cache_dir))
  assert task.num_classes == 62
  assert task.keras_model_fn().name == 'cnn_dropout'
  train = task.train_data
  assert train.client_ids == sorted(splits['all_train'].labels)
  assert len(train.client_ids) == 4
  assert train.element_type_structure == XY_SPEC
  assert task.test_data.element_spec == XY_SPEC
  for client_id in train.client_ids:
    _, labels = _all_xy(train.create_tf_dataset_for_client(client_id))
    np.testing.assert_array_equal(labels, splits['all_train'].labels[client_id])
  # TFF's held-out examples, split by writer: every other writer (sorted) is validation.
  _, test_labels = _all_xy(task.test_data)
  _, validation_labels = _all_xy(task.validation_data)
  assert len(test_labels) + len(validation_labels) == splits['all_test'].num_examples == 24
  assert len(test_labels) == len(validation_labels) == 12  # 2 of the 4 writers each.
  assert max(test_labels.max(), validation_labels.max()) >= 10  # Letters are in.


def test_only_digits(written):
  cache_dir, splits = written
  task = create_task('emnist_character', cache_dir=str(cache_dir), only_digits=True)
  assert task.num_classes == 10
  assert task.train_data.client_ids == sorted(splits['digits_only_train'].labels)
  assert len(task.train_data.client_ids) == 3  # The letters-only writer is not in it.
  _, train_labels = _all_xy(task.train_data.create_tf_dataset_from_all_clients())
  _, test_labels = _all_xy(task.test_data)
  _, validation_labels = _all_xy(task.validation_data)
  assert len(train_labels) == splits['digits_only_train'].num_examples == 12
  assert len(test_labels) + len(validation_labels) == splits['digits_only_test'].num_examples == 12
  assert len(test_labels) > 0 and len(validation_labels) > 0
  assert train_labels.max() < 10 and test_labels.max() < 10


def test_pixels_are_ink_high_like_mnist_digits(written):
  cache_dir, splits = written
  task = create_task('emnist_character', cache_dir=str(cache_dir), only_digits=True)
  client_id = task.train_data.client_ids[0]
  x, _ = _all_xy(task.train_data.create_tf_dataset_for_client(client_id))
  # TFF stores 1.0 for background; after our preprocessing, as in MNIST, ink is high.
  np.testing.assert_allclose(
      x[..., 0], splits['digits_only_train'].images[client_id] / 255.0, atol=1e-6)
  assert x[:, 0, :, :].max() == 0.0  # The border is background.
  assert x.max() == pytest.approx(1.0, abs=0.01)


def test_missing_file_names_the_file_and_where_to_put_it(tmp_path):
  with pytest.raises(UserError, match=f'emnist_all.sqlite not found in {tmp_path}.*--cache_dir'):
    create_task('emnist_character', cache_dir=str(tmp_path))
  assert not (tmp_path / 'emnist_all.sqlite').exists()  # No download was attempted.


def test_default_cache_dir_is_home_tff(monkeypatch, tmp_path):
  monkeypatch.setenv('HOME', str(tmp_path))
  assert emnist.database_path(None) == tmp_path / '.tff' / 'emnist_all.sqlite'
  with pytest.raises(UserError, match=f'not found in {tmp_path / ".tff"}'):
    emnist.load_data()


def _corrupt_copies(written, tmp_path):
  good = written[0] / 'emnist_all.sqlite'
  data = good.read_bytes()
  yield 'random bytes', b'\x00\x17garbage' * 1_000
  yield 'empty', b''
  yield 'truncated', data[:len(data) // 2]
  empty_db = tmp_path / 'empty.sqlite'
  sqlite3.connect(empty_db).execute('CREATE TABLE other (x INTEGER)').connection.commit()
  yield 'no tables', empty_db.read_bytes()


def test_corrupt_files_raise_user_error(written, tmp_path):
  for kind, content in _corrupt_copies(written, tmp_path):
    cache_dir = tmp_path / kind.replace(' ', '_')
    cache_dir.mkdir()
    (cache_dir / 'emnist_all.sqlite').write_bytes(content)
    with pytest.raises(UserError, match='emnist_all.sqlite') as raised:
      create_task('emnist_character', cache_dir=str(cache_dir))
    assert '\n' not in str(raised.value), kind


def test_good_file_still_loads_after_copy(written, tmp_path):
  shutil.copy(written[0] / 'emnist_all.sqlite', tmp_path / 'emnist_all.sqlite')
  task = create_task('emnist_character', cache_dir=str(tmp_path))
  assert len(task.train_data.client_ids) == 4
