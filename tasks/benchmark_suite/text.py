"""Shakespeare next-character, StackOverflow next-word and tag prediction, from TFF's baselines.

* `shakespeare_character`: 715 speaking roles (`shakespeare.sqlite`), TFF's 2-layer LSTM
  (256 units) over sequences of 80 characters (the paper's); headline: accuracy over
  non-padding characters.
* `stackoverflow_word`: 342,477 users (`stackoverflow.sqlite` and the word counts), TFF's
  LSTM (670 units, embedding 96) over a 10,000-word vocabulary, sequences of 20 words;
  headline: accuracy without padding, out-of-vocabulary and end-of-sentence tokens (the
  beginning-of-sentence token is never a target).
* `stackoverflow_tag`: the same users (and the word and tag counts), TFF's logistic
  regression from bag-of-words (10,000 words) to 500 tags; headline: recall@5.

StackOverflow's validation set is a fixed sample of `num_validation_examples` held-out
examples (10,000, as in the paper), read from a seeded random order of the held-out users;
its test set is the test split (all of it unless `num_test_examples`).
"""

from __future__ import annotations

import functools

from core.runtime import import_tff
from tasks.base import ClientSpec
from tasks.base import Task
from tasks.base import TaskMetrics
from tasks.benchmark_suite import common
from tasks.benchmark_suite import files

tff = import_tff()  # Before TFF's submodules below: the project's way in (worker cleanup).
# pylint: disable=g-import-not-at-top,g-bad-import-order
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_models
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_tasks
from tensorflow_federated.python.simulation.baselines.stackoverflow import constants
from tensorflow_federated.python.simulation.baselines.stackoverflow import tag_prediction_tasks
from tensorflow_federated.python.simulation.baselines.stackoverflow import word_prediction_models
from tensorflow_federated.python.simulation.baselines.stackoverflow import word_prediction_preprocessing
from tensorflow_federated.python.simulation.baselines.stackoverflow import word_prediction_tasks
# pylint: enable=g-import-not-at-top,g-bad-import-order

SHAKESPEARE_SEQUENCE_LENGTH = char_prediction_tasks.DEFAULT_SEQUENCE_LENGTH  # 80
STACKOVERFLOW_SEQUENCE_LENGTH = constants.DEFAULT_SEQUENCE_LENGTH  # 20
WORD_VOCAB_SIZE = constants.DEFAULT_WORD_VOCAB_SIZE  # 10,000
TAG_VOCAB_SIZE = constants.DEFAULT_TAG_VOCAB_SIZE  # 500
NUM_VALIDATION_EXAMPLES = 10_000
# Examples per user per round in the paper's StackOverflow runs (google-research/federated
# optimization/docs/hyperparameters.md, `max_elements_per_user`).
STACKOVERFLOW_MAX_EXAMPLES_PER_CLIENT = 1000

SHAKESPEARE_METRICS = TaskMetrics(columns=(('accuracy', 'accuracy'),), headline='accuracy')
WORD_METRICS = TaskMetrics(
    columns=(('accuracy', 'accuracy'),
             ('accuracy_without_out_of_vocab', 'accuracy_no_oov'),
             ('accuracy_without_out_of_vocab_or_end_of_sentence', 'accuracy_no_oov_no_eos')),
    headline='accuracy_no_oov_no_eos')
TAG_METRICS = TaskMetrics(columns=(('precision', 'precision'), ('recall_at_5', 'recall_at_5')),
                          headline='recall_at_5')


def create_shakespeare_character(*, client_spec: ClientSpec, cache_dir: str | None,
                                 sequence_length: int | None,
                                 max_examples_per_client: int | None) -> Task:
  """The Shakespeare next-character task over `shakespeare.sqlite`."""
  sequence_length = SHAKESPEARE_SEQUENCE_LENGTH if sequence_length is None else sequence_length
  root = files.cache_root(cache_dir)
  files.require('shakespeare_character', root, [files.SHAKESPEARE])
  train, test = files.open_client_data(
      root, files.SHAKESPEARE, "TFF's Shakespeare database",
      lambda d: tff.simulation.datasets.shakespeare.load_data(cache_dir=d))
  train_spec, eval_spec = common.tff_client_specs(client_spec, max_examples_per_client)
  baseline = char_prediction_tasks.create_character_prediction_task_from_datasets(
      train_spec, eval_spec, sequence_length, train, test)
  validation_data, test_data = common.split_by_client(test)
  return common.from_baseline(
      name='shakespeare_character', baseline=baseline, validation_data=validation_data,
      test_data=test_data, client_spec=client_spec,
      default_shuffle_buffer=char_prediction_preprocessing.DEFAULT_SHUFFLE_BUFFER_SIZE,
      metrics=SHAKESPEARE_METRICS,
      keras_model_fn=functools.partial(char_prediction_models.create_recurrent_model,
                                       vocab_size=char_prediction_tasks.VOCAB_LENGTH,
                                       sequence_length=sequence_length),
      num_classes=char_prediction_tasks.VOCAB_LENGTH,
      description=(f'federated Shakespeare, {len(train.client_ids)} speaking roles, '
                   f'sequences of {sequence_length} characters'),
      model_name='2-layer LSTM 256 (TFF baseline)')


def _stackoverflow(root, task: str, needs: list[files.DataFile], num_validation_examples,
                   num_test_examples):
  files.require(task, root, [files.STACKOVERFLOW, *needs])
  train, heldout, test = files.open_client_data(
      root, files.STACKOVERFLOW, "TFF's StackOverflow database",
      lambda d: tff.simulation.datasets.stackoverflow.load_data(cache_dir=d))
  validation_data = common.sampled_clients(
      heldout, NUM_VALIDATION_EXAMPLES if num_validation_examples is None
      else num_validation_examples)
  test_data = common.merged_clients(test, test.client_ids, num_test_examples)
  return train, heldout, test, validation_data, test_data


def create_stackoverflow_word(
    *, client_spec: ClientSpec, cache_dir: str | None, sequence_length: int | None,
    vocab_size: int | None, num_out_of_vocab_buckets: int | None,
    num_validation_examples: int | None, num_test_examples: int | None,
    max_examples_per_client: int | None) -> Task:
  """The StackOverflow next-word task over `stackoverflow.sqlite` and the word counts."""
  sequence_length = STACKOVERFLOW_SEQUENCE_LENGTH if sequence_length is None else sequence_length
  vocab_size = WORD_VOCAB_SIZE if vocab_size is None else vocab_size
  buckets = 1 if num_out_of_vocab_buckets is None else num_out_of_vocab_buckets
  if max_examples_per_client is None:
    max_examples_per_client = STACKOVERFLOW_MAX_EXAMPLES_PER_CLIENT
  root = files.cache_root(cache_dir)
  train, heldout, test, validation_data, test_data = _stackoverflow(
      root, 'stackoverflow_word', [files.WORD_COUNTS], num_validation_examples, num_test_examples)
  vocab = files.load_word_vocabulary(root, vocab_size)
  train_spec, eval_spec = common.tff_client_specs(client_spec, max_examples_per_client)
  baseline = word_prediction_tasks.create_word_prediction_task_from_datasets(
      train_spec, eval_spec, sequence_length, vocab, buckets, train, test, heldout)
  special = word_prediction_preprocessing.get_special_tokens(len(vocab), buckets)
  extended_vocab_size = len(vocab) + special.get_number_of_special_tokens()
  return common.from_baseline(
      name='stackoverflow_word', baseline=baseline, validation_data=validation_data,
      test_data=test_data, client_spec=client_spec,
      default_shuffle_buffer=constants.DEFAULT_SHUFFLE_BUFFER_SIZE,
      metrics=WORD_METRICS,
      keras_model_fn=functools.partial(word_prediction_models.create_recurrent_model,
                                       vocab_size=extended_vocab_size),
      num_classes=extended_vocab_size,
      description=(f'federated StackOverflow next word, {len(train.client_ids)} users, '
                   f'{len(vocab)}-word vocabulary, sequences of {sequence_length}'),
      model_name='LSTM 670 (TFF baseline)')


def create_stackoverflow_tag(
    *, client_spec: ClientSpec, cache_dir: str | None, vocab_size: int | None,
    tag_vocab_size: int | None, num_validation_examples: int | None,
    num_test_examples: int | None, max_examples_per_client: int | None) -> Task:
  """The StackOverflow tag-prediction task over `stackoverflow.sqlite`, word and tag counts."""
  vocab_size = WORD_VOCAB_SIZE if vocab_size is None else vocab_size
  tag_vocab_size = TAG_VOCAB_SIZE if tag_vocab_size is None else tag_vocab_size
  if max_examples_per_client is None:
    max_examples_per_client = STACKOVERFLOW_MAX_EXAMPLES_PER_CLIENT
  root = files.cache_root(cache_dir)
  train, heldout, test, validation_data, test_data = _stackoverflow(
      root, 'stackoverflow_tag', [files.WORD_COUNTS, files.TAG_COUNTS], num_validation_examples,
      num_test_examples)
  words = files.load_word_vocabulary(root, vocab_size)
  tags = files.load_tag_vocabulary(root, tag_vocab_size)
  train_spec, eval_spec = common.tff_client_specs(client_spec, max_examples_per_client)
  baseline = tag_prediction_tasks.create_tag_prediction_task_from_datasets(
      train_spec, eval_spec, words, tags, train, test, heldout)
  return common.from_baseline(
      name='stackoverflow_tag', baseline=baseline, validation_data=validation_data,
      test_data=test_data, client_spec=client_spec,
      default_shuffle_buffer=constants.DEFAULT_SHUFFLE_BUFFER_SIZE,
      metrics=TAG_METRICS,
      # TFF's own builder of the baseline's model (module-private in TFF 0.87).
      keras_model_fn=functools.partial(tag_prediction_tasks._build_logistic_regression_model,  # pylint: disable=protected-access
                                       input_size=len(words), output_size=len(tags)),
      num_classes=len(tags),
      description=(f'federated StackOverflow tag prediction, {len(train.client_ids)} users, '
                   f'{len(words)} words -> {len(tags)} tags'),
      model_name='logistic regression (TFF baseline)')
