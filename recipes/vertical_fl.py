"""Vertical federated learning: PSI-aligned rows, split training with secure aggregation.

Parties hold different feature columns of overlapping people. They align their rows by
private set intersection, train a split model whose coordinator sees only the (masked)
sum of the parties' embeddings, and compare it with a centralized and a
label-party-only model on the same held-out rows.

Roles (README, "Threat model"): party 0 holds the labels and is the coordinator (top
model, loss); it adds its own embedding in the clear and receives the others' embeddings
as a pairwise-masked sum, so `--secure_aggregation` needs at least two other parties.
`--seed` decides every random choice of the run (IDs and data split, batch order, model
initialization); the cryptography draws from os.urandom and does not change the metrics.

  python -m recipes.vertical_fl --task=digits --num_parties=4
  python -m recipes.vertical_fl --task=breast_cancer --secure_aggregation=false

Writes metrics.csv (per-epoch curves), summary.json and curves.png to
`--root_output_dir/--experiment_name`.
"""

from __future__ import annotations

import os

# Before TensorFlow loads: keep its C++ start-up chatter out of the output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import dataclasses  # noqa: E402
import datetime  # noqa: E402
import pathlib  # noqa: E402
from typing import Sequence  # noqa: E402

from absl import flags  # noqa: E402
import tqdm  # noqa: E402

from core import outputs  # noqa: E402
from core.errors import UserError  # noqa: E402
from recipes import cli  # noqa: E402
from recipes.vertical import data  # noqa: E402
# Imports TensorFlow, at the top on purpose: imported after absl's app.run has started, TF
# 2.14 creates its eager context too early (an `app.call_after_init` hook in
# tensorflow/python/distribute/combinations.py runs at once) and Keras then builds graph-mode
# placeholders, so tf.keras.Sequential fails.
from recipes.vertical import experiment  # noqa: E402
from recipes.vertical import metrics  # noqa: E402
from recipes.vertical import provenance  # noqa: E402
from recipes.vertical import secure_sum  # noqa: E402

# Task and parties.
_TASK = flags.DEFINE_enum('task', 'digits', list(data.TASKS), 'Dataset split across the parties.')
_NUM_PARTIES = flags.DEFINE_integer(
    'num_parties', None, 'Feature parties (party 0 also holds the labels and coordinates); default: '
    '4 for digits, 3 for breast_cancer (one per feature group).', lower_bound=2, upper_bound=4)
_OVERLAP = flags.DEFINE_float('overlap', 0.9, 'Fraction of people held by every party, in (0, 1].',
                              lower_bound=0.0, upper_bound=1.0)
_TEST_FRACTION = flags.DEFINE_float('test_fraction', 0.25,
                                    'Fraction of aligned rows held out, in (0, 1).',
                                    lower_bound=0.0, upper_bound=1.0)

# Protection.
_SECURE_AGGREGATION = flags.DEFINE_bool(
    'secure_aggregation', True, 'Mask the non-label parties\' embeddings pairwise so the coordinator '
    '(the label party) sees only their sum; needs --num_parties>=3. false sends them in the clear '
    '(to measure the cost).')

# Training (the same for the vertical model and both baselines).
_EPOCHS = flags.DEFINE_integer('epochs', 25, 'Passes over the aligned training rows.', lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Rows per minibatch.', lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 0.002, 'Adam learning rate, in (0, 1].',
                                    lower_bound=0.0, upper_bound=1.0)
_HIDDEN_UNITS = flags.DEFINE_integer('hidden_units', 64, 'Hidden units of each bottom model.',
                                     lower_bound=1)
_EMBEDDING_DIM = flags.DEFINE_integer('embedding_dim', 32, 'Embedding size sent by each party.',
                                      lower_bound=1)
_SEED = flags.DEFINE_integer(
    'seed', 0, 'Decides every random choice: IDs and who holds which row, the train/test split, '
    'model initialization, batch order (not the cryptographic keys and shuffles, which never '
    'change the metrics).', lower_bound=0, upper_bound=2**32 - 1)

# Outputs.
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar over the epochs.')
_EXPERIMENT_NAME = flags.DEFINE_string('experiment_name', None,
                                       'Output subdirectory; default: vertical_fl-<task>-<time>.')
_ROOT_OUTPUT_DIR = flags.DEFINE_string('root_output_dir', 'runs', 'Where experiment directories go.')


def validate_flags() -> None:
  """Checks what absl's bounds cannot express, before anything slow happens.

  Raises:
    UserError: For the first flag value (or combination) that cannot work.
  """
  if not 0 < _OVERLAP.value <= 1:
    raise UserError(f'--overlap must be in (0, 1], got {_OVERLAP.value}')
  if not 0 < _TEST_FRACTION.value < 1:
    raise UserError(f'--test_fraction must be in (0, 1), got {_TEST_FRACTION.value}')
  if not 0 < _LEARNING_RATE.value <= 1:
    raise UserError(f'--learning_rate must be in (0, 1], got {_LEARNING_RATE.value}')
  max_parties = data.default_num_parties(_TASK.value)  # Raises for an unknown task.
  num_parties = _NUM_PARTIES.value or max_parties
  if num_parties > max_parties:
    raise UserError(f'task {_TASK.value!r} has {max_parties} feature groups, so it can be split '
                    f'across 2 to {max_parties} parties, not {num_parties}')
  experiment.check_roles(num_parties, _SECURE_AGGREGATION.value)
  name = _EXPERIMENT_NAME.value
  if name is not None and (not name.strip() or '/' in name or name in ('.', '..')):
    raise UserError(f'--experiment_name must be a plain directory name (no "/"), got {name!r}')
  if not _ROOT_OUTPUT_DIR.value.strip():
    raise UserError('--root_output_dir must not be empty')


def _metrics_table(scores: dict[str, dict[str, float]]) -> str:
  header = f'{"model":<18}' + ''.join(f'{name:>11}' for name in metrics.METRIC_NAMES)
  rows = [f'{model:<18}' + ''.join(f'{values[name]:>11.4f}' for name in metrics.METRIC_NAMES)
          for model, values in scores.items()]
  return '\n'.join([header, *rows])


def _print_alignment(aligned: experiment.Aligned) -> None:
  psi_info = aligned.psi_summary()
  sizes = ', '.join(f'{party} {size}' for party, size in psi_info['set_sizes'].items())
  print(f'PSI: {sizes} IDs -> {psi_info["intersection_size"]} common in {psi_info["seconds"]:.2f} s '
        f'({psi_info["messages"]} messages, {psi_info["bytes"] / 1e3:.0f} kB, no raw IDs)')
  print(f'Rows: {len(aligned.split.train_labels)} train / {len(aligned.split.test_labels)} test; '
        f'secure aggregation: {"on" if aligned.config.secure_aggregation else "off"}', flush=True)


def _train_with_progress(aligned: experiment.Aligned) -> experiment.Result:
  epochs = aligned.config.epochs
  with tqdm.tqdm(total=epochs, desc='vertical model', unit='epoch', disable=not _PROGRESS.value) as bar:

    def on_epoch(epoch: int, loss: float, accuracy: float) -> None:
      bar.set_postfix(loss=f'{loss:.4f}', test_accuracy=f'{accuracy:.4f}')
      bar.update()
      if epoch == epochs:
        bar.close()
        print('Training the baselines (centralized, label-party-only)...', flush=True)

    return experiment.train_and_evaluate(aligned, on_epoch=on_epoch)


def _write_outputs(result: experiment.Result, out: pathlib.Path, name: str) -> None:
  """metrics.csv (curves per epoch), summary.json (metrics, PSI, config), curves.png."""
  aligned, config = result.aligned, result.aligned.config
  epochs = list(range(1, config.epochs + 1))
  outputs.write_csv(out / 'metrics.csv', [
      {'epoch': epoch, **{f'{model}_{key}': round(getattr(trained, key)[epoch - 1], 6)
                          for model, trained in result.trained.items()
                          for key in ('train_loss', 'test_accuracy')}}
      for epoch in epochs
  ])
  outputs.write_json(out / 'summary.json', {
      'seed': config.seed,
      'git_commit': provenance.git_commit(),
      'config': dataclasses.asdict(config) | {'experiment_name': name},
      'task': aligned.dataset.description,
      'parties': {party.name: {'ids': len(party.ids), 'features': len(party.feature_names),
                               'holds_labels': party.labels is not None}
                  for party in aligned.dataset.parties},
      'psi': aligned.psi_summary(),
      'secure_aggregation': {
          'enabled': config.secure_aggregation,
          'scheme': 'pairwise additive masks (X25519 + HKDF-SHA256 keys, ChaCha20 masks) over Z_2^64 '
                    'among the non-label parties; the label party (coordinator) adds its own '
                    'embedding in the clear',
          'fixed_point_fraction_bits': secure_sum.DEFAULT_FRACTION_BITS,
      },
      'rows': {'train': len(aligned.split.train_labels), 'test': len(aligned.split.test_labels)},
      'models': {model: {**scores, 'train_seconds': result.trained[model].train_seconds}
                 for model, scores in result.metrics.items()},
  })
  accuracy = {model: (epochs, trained.test_accuracy) for model, trained in result.trained.items()}
  loss = {model: (epochs, trained.train_loss) for model, trained in result.trained.items()}
  outputs.plot_curves(accuracy, out / 'curves.png', xlabel='epoch', ylabel='test accuracy',
                      title=f'Vertical FL on {config.task}, {config.num_parties} parties',
                      panels=[('train loss', loss)])


def main(argv: Sequence[str]) -> None:
  del argv
  config = experiment.Config(
      task=_TASK.value, num_parties=_NUM_PARTIES.value or data.default_num_parties(_TASK.value),
      overlap=_OVERLAP.value, test_fraction=_TEST_FRACTION.value,
      secure_aggregation=_SECURE_AGGREGATION.value, epochs=_EPOCHS.value,
      batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
      hidden_units=_HIDDEN_UNITS.value, embedding_dim=_EMBEDDING_DIM.value, seed=_SEED.value)
  name = _EXPERIMENT_NAME.value or (
      f'vertical_fl-{config.task}-{datetime.datetime.now().strftime("%Y%m%d-%H%M%S")}')
  out = pathlib.Path(_ROOT_OUTPUT_DIR.value).expanduser() / name
  if (out / 'metrics.csv').exists():  # Like the other recipes: never overwrite a run.
    raise UserError(f'{out} already holds a run; choose another --experiment_name')

  aligned = experiment.align(config)
  _print_alignment(aligned)
  result = _train_with_progress(aligned)
  print(_metrics_table(result.metrics))
  _write_outputs(result, outputs.experiment_dir(_ROOT_OUTPUT_DIR.value, name), name)
  print(f'Outputs: {out}')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
