"""The cross-device benchmark suite of "Adaptive Federated Optimization" (Reddi et al., ICLR 2021).

Five tasks beside `emnist_character` (tasks/emnist.py), each TFF's own baseline task
(`tff.simulation.baselines`: preprocessing, model, loss and metrics) over TFF's own
loader (`tff.simulation.datasets`), read from the cache directory and never downloaded:

| task                    | data                          | model                       | headline metric |
|-------------------------|-------------------------------|-----------------------------|-----------------|
| `emnist_autoencoder`    | emnist_all.sqlite             | bottleneck autoencoder      | mean squared error (lower is better) |
| `cifar100_image`        | cifar100.sqlite               | ResNet-18, group norm       | accuracy |
| `shakespeare_character` | shakespeare.sqlite            | 2-layer LSTM                | accuracy (no padding) |
| `stackoverflow_word`    | stackoverflow.sqlite, word counts | 1-layer LSTM            | accuracy without pad/OOV/EOS |
| `stackoverflow_tag`     | stackoverflow.sqlite, word and tag counts | logistic regression | recall@5 |

Every task option defaults to the paper's setting (`SuiteOptions`); `DATA_FILES` lists
the files each task reads (`tasks.benchmark_suite.files`).
"""

from __future__ import annotations

import dataclasses

from tasks.base import ClientSpec
from tasks.base import Task
from tasks.benchmark_suite import files
from tasks.benchmark_suite import images
from tasks.benchmark_suite import text

TASKS = ('emnist_autoencoder', 'cifar100_image', 'shakespeare_character', 'stackoverflow_word',
         'stackoverflow_tag')

DATA_FILES = {
    'emnist_autoencoder': (files.EMNIST,),
    'cifar100_image': (files.CIFAR100,),
    'shakespeare_character': (files.SHAKESPEARE,),
    'stackoverflow_word': (files.STACKOVERFLOW, files.WORD_COUNTS),
    'stackoverflow_tag': (files.STACKOVERFLOW, files.WORD_COUNTS, files.TAG_COUNTS),
}


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
  """Task options; None means the task's paper setting (given in brackets).

  Attributes:
    sequence_length: Characters (shakespeare_character [80]) or words (stackoverflow_word
      [20]) per sequence.
    vocab_size: Words in the StackOverflow vocabulary, most frequent first [10,000].
    tag_vocab_size: Tags predicted by stackoverflow_tag, most frequent first [500].
    num_out_of_vocab_buckets: Out-of-vocabulary token ids of stackoverflow_word [1].
    crop_size: Side of the centre crop of cifar100_image, 1-32 [24].
    num_validation_examples: StackOverflow validation examples [10,000].
    num_test_examples: StackOverflow test examples [the whole test split].
    max_examples_per_client: Examples a client uses per round [StackOverflow 1,000;
      other tasks: all].
  """

  sequence_length: int | None = None
  vocab_size: int | None = None
  tag_vocab_size: int | None = None
  num_out_of_vocab_buckets: int | None = None
  crop_size: int | None = None
  num_validation_examples: int | None = None
  num_test_examples: int | None = None
  max_examples_per_client: int | None = None


# Their names, which are also the recipes' flags (recipes/benchmark_task_flags.py).
OPTION_NAMES = tuple(field.name for field in dataclasses.fields(SuiteOptions))

_STACKOVERFLOW_OPTIONS = frozenset({'vocab_size', 'num_validation_examples', 'num_test_examples',
                                    'max_examples_per_client'})
# The options that mean something for each task.
APPLICABLE_OPTIONS = {
    'emnist_autoencoder': frozenset({'max_examples_per_client'}),
    'cifar100_image': frozenset({'crop_size', 'max_examples_per_client'}),
    'shakespeare_character': frozenset({'sequence_length', 'max_examples_per_client'}),
    'stackoverflow_word': _STACKOVERFLOW_OPTIONS | {'sequence_length', 'num_out_of_vocab_buckets'},
    'stackoverflow_tag': _STACKOVERFLOW_OPTIONS | {'tag_vocab_size'},
}


def set_options(options: SuiteOptions) -> dict[str, object]:
  """The options that are set (not None), by name."""
  return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)
          if getattr(options, f.name) is not None}


def create_task(name: str, *, client_spec: ClientSpec = ClientSpec(), cache_dir: str | None = None,
                only_digits: bool = False, options: SuiteOptions = SuiteOptions()) -> Task:
  """Builds one suite task from the files in `cache_dir` (default ~/.tff).

  Args:
    name: One of `TASKS`.
    client_spec: How clients iterate their data each round.
    cache_dir: Directory holding the task's files (`DATA_FILES[name]`).
    only_digits: emnist_autoencoder on the 10-digit subset.
    options: Task options; those that are set must apply to the task.

  Returns:
    A `Task` with TFF's baseline model (`tff_model_fn`), preprocessing and metrics.

  Raises:
    ValueError: For an unknown task or an option that does not apply (the registry
      checks both first and raises `UserError`).
    UserError: For missing, corrupt or wrong-schema files.
  """
  unused = sorted(set(set_options(options)) - APPLICABLE_OPTIONS[name])
  if unused:
    raise ValueError(f'options {unused} do not apply to task {name}')
  o = options
  if name == 'emnist_autoencoder':
    return images.create_emnist_autoencoder(
        client_spec=client_spec, cache_dir=cache_dir, only_digits=only_digits,
        max_examples_per_client=o.max_examples_per_client)
  if name == 'cifar100_image':
    return images.create_cifar100_image(
        client_spec=client_spec, cache_dir=cache_dir, crop_size=o.crop_size,
        max_examples_per_client=o.max_examples_per_client)
  if name == 'shakespeare_character':
    return text.create_shakespeare_character(
        client_spec=client_spec, cache_dir=cache_dir, sequence_length=o.sequence_length,
        max_examples_per_client=o.max_examples_per_client)
  if name == 'stackoverflow_word':
    return text.create_stackoverflow_word(
        client_spec=client_spec, cache_dir=cache_dir, sequence_length=o.sequence_length,
        vocab_size=o.vocab_size, num_out_of_vocab_buckets=o.num_out_of_vocab_buckets,
        num_validation_examples=o.num_validation_examples,
        num_test_examples=o.num_test_examples, max_examples_per_client=o.max_examples_per_client)
  if name == 'stackoverflow_tag':
    return text.create_stackoverflow_tag(
        client_spec=client_spec, cache_dir=cache_dir, vocab_size=o.vocab_size,
        tag_vocab_size=o.tag_vocab_size, num_validation_examples=o.num_validation_examples,
        num_test_examples=o.num_test_examples, max_examples_per_client=o.max_examples_per_client)
  raise ValueError(f'unknown suite task {name!r}; choose one of {", ".join(TASKS)}')
