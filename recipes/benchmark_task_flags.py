"""Flags of the benchmark-suite tasks (tasks/benchmark_suite): one per task option.

Each defaults to None, meaning the paper's setting for the chosen task (Reddi et al.,
2021; see `tasks.benchmark_suite.SuiteOptions`). Setting one that does not apply to
`--task` is an error, like every other task flag: `recipes.experiment` passes the flags
the user set to `tasks.create_task`, which checks them (the one place that does).
"""

from __future__ import annotations

from absl import flags


FLAGS = flags.FLAGS

# flag name -> (help, lower bound, upper bound)
_FLAGS = {
    'sequence_length': ('shakespeare_character: characters per sequence (default 80); '
                        'stackoverflow_word: words per sentence (default 20).', 1, None),
    'vocab_size': ('stackoverflow_word / stackoverflow_tag: the most frequent words kept in '
                   'the vocabulary (default 10000).', 1, None),
    'tag_vocab_size': ('stackoverflow_tag: the most frequent tags predicted (default 500).', 1, None),
    'num_out_of_vocab_buckets': ('stackoverflow_word: out-of-vocabulary token ids (default 1).',
                                 1, None),
    'crop_size': ('cifar100_image: side of the centre crop, 1-32 (default 24).', 1, 32),
    'num_validation_examples': ('stackoverflow_word / stackoverflow_tag: held-out examples in '
                                'the validation set (default 10000).', 1, None),
    'num_test_examples': ('stackoverflow_word / stackoverflow_tag: test examples evaluated '
                          '(default: the whole test split).', 1, None),
    'max_examples_per_client': ('Benchmark-suite tasks: examples a client uses per round '
                                '(default: 1000 for StackOverflow as in the paper, all for '
                                'the others).', 1, None),
}


def define_flags() -> None:
  """Defines the suite's task flags (once per process)."""
  for name, (help_text, lower, upper) in _FLAGS.items():
    if name not in FLAGS:
      flags.DEFINE_integer(name, None, help_text, lower_bound=lower, upper_bound=upper)


def names() -> tuple[str, ...]:
  """The flags' names, which are the option names of `tasks.create_task`."""
  return tuple(_FLAGS)
