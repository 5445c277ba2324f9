"""One vertical-FL experiment: PSI alignment, split training, baselines, held-out metrics.

Shared by the binary (`recipes/vertical_fl.py`) and the benchmark
(`scripts/bench_vertical.py`), so both measure exactly the same pipeline.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from core.errors import UserError
from recipes.vertical import baselines
from recipes.vertical import data
from recipes.vertical import metrics
from recipes.vertical import models
from recipes.vertical import psi
from recipes.vertical import secure_sum
from recipes.vertical import split_model
from recipes.vertical.transcript import Transcript

MODEL_NAMES = ('vertical', 'centralized', 'label_party_only')

# Called after each vertical epoch with (epoch, train loss, test accuracy).
EpochCallback = Callable[[int, float, float], None]


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run. Defaults meet the accuracy targets on both tasks."""

  task: str = 'digits'
  num_parties: int | None = None  # None: the task's default (`data.default_num_parties`).
  overlap: float = 0.9
  secure_aggregation: bool = True
  epochs: int = 25
  batch_size: int = 64
  learning_rate: float = 0.002
  hidden_units: int = 64
  embedding_dim: int = 32
  test_fraction: float = 0.25
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Aligned:
  """The data after PSI: per-party tables, the protocol's outcome, the aligned split."""

  config: Config
  dataset: data.VerticalDataset
  psi_result: psi.PsiResult
  split: data.AlignedSplit

  def psi_summary(self) -> dict[str, Any]:
    """Set sizes, intersection size, time and traffic of the PSI, for logs and summaries."""
    return {
        'set_sizes': dict(self.psi_result.set_sizes),
        'intersection_size': self.psi_result.intersection_size,
        'seconds': self.psi_result.seconds,
        'messages': len(self.psi_result.transcript.messages),
        'bytes': self.psi_result.transcript.num_bytes,
    }


@dataclasses.dataclass(frozen=True)
class Result:
  """The three trained models and their held-out metrics."""

  aligned: Aligned
  trained: Mapping[str, baselines.TrainedModel]  # MODEL_NAMES -> trained model
  metrics: Mapping[str, Mapping[str, float]]  # MODEL_NAMES -> metric -> value


def _optimizer_fn(config: Config) -> Callable[[], tf.keras.optimizers.Optimizer]:
  return lambda: tf.keras.optimizers.Adam(config.learning_rate)


def check_roles(num_parties: int, secure_aggregation: bool) -> None:
  """Refuses secure aggregation that would protect nothing (see the README's threat model).

  Raises:
    UserError: Secure aggregation with fewer than two parties besides the label party.
  """
  if secure_aggregation and num_parties - 1 < 2:
    raise UserError(
        f'--secure_aggregation needs at least two parties besides the label party, got '
        f'--num_parties={num_parties}: the label party coordinates, so it would learn the other '
        "party's embedding exactly; use --num_parties=3 or more, or --secure_aggregation=false")


def make_fusion(num_masking_parties: int, *, secure: bool,
                transcript: Transcript | None = None) -> secure_sum.Fusion:
  """Secure (pairwise-masked) or plain sum of the non-label parties' embeddings."""
  if secure:
    return secure_sum.SecureSum(num_masking_parties, transcript=transcript)
  return secure_sum.PlainSum(transcript)


def train_vertical(split: data.AlignedSplit, config: Config, *, num_classes: int,
                   on_epoch: EpochCallback | None = None,
                   transcript: Transcript | None = None) -> baselines.TrainedModel:
  """Trains the split model (bottoms at the parties, top at the label party/coordinator).

  Args:
    split: The aligned rows; party 0 (`data.LABEL_PARTY`) is the label party.
    config: The run's settings (`seed` decides the initialization and the batch order).
    num_classes: Classes of the task.
    on_epoch: Called after each epoch.
    transcript: Records every message of the training (masked vectors, dL/dS).

  Raises:
    UserError: Secure aggregation with too few parties (`check_roles`), or training
      diverged (a non-finite loss, or embeddings too large for the fixed-point sum).
  """
  check_roles(len(split.train_features), config.secure_aggregation)
  tf.keras.utils.set_random_seed(config.seed)
  model = split_model.SplitModel(
      bottom_models=[
          models.build_bottom_model(x.shape[1], hidden_units=config.hidden_units,
                                    embedding_dim=config.embedding_dim, name=f'bottom_party{i}')
          for i, x in enumerate(split.train_features)
      ],
      top_model=models.build_top_model(config.embedding_dim, num_classes=num_classes),
      fusion=make_fusion(len(split.train_features) - 1, secure=config.secure_aggregation,
                         transcript=transcript),
      optimizer_fn=_optimizer_fn(config),
      transcript=transcript,
  )
  rng = np.random.default_rng(config.seed)
  losses, accuracies = [], []
  start = time.perf_counter()
  for epoch in range(1, config.epochs + 1):
    try:
      losses.append(model.train_epoch(split.train_features, split.train_labels,
                                      batch_size=config.batch_size, rng=rng))
      probabilities = model.predict_proba(split.test_features)
    except secure_sum.FixedPointRangeError as e:
      raise UserError(f'training diverged in epoch {epoch} ({e}); lower --learning_rate') from e
    if not np.isfinite(losses[-1]):
      raise UserError(f'training diverged in epoch {epoch} (loss {losses[-1]}); '
                      'lower --learning_rate')
    accuracies.append(float(np.mean(probabilities.argmax(axis=1) == split.test_labels)))
    if on_epoch is not None:
      on_epoch(epoch, losses[-1], accuracies[-1])
  seconds = time.perf_counter() - start
  return baselines.TrainedModel(probabilities, losses, accuracies, seconds)


def train_in_one_place(split: data.AlignedSplit, config: Config, *, parties: Sequence[int],
                       num_classes: int, name: str) -> baselines.TrainedModel:
  """Trains a baseline on the columns of `parties` held in one place.

  Same hyperparameters as the vertical model; the hidden layer is as wide as those
  parties' bottom models together.
  """
  train_x = np.concatenate([split.train_features[p] for p in parties], axis=1)
  test_x = np.concatenate([split.test_features[p] for p in parties], axis=1)
  tf.keras.utils.set_random_seed(config.seed)
  model = models.build_single_party_model(
      train_x.shape[1], hidden_units=config.hidden_units * len(parties),
      embedding_dim=config.embedding_dim, num_classes=num_classes, name=name)
  return baselines.train_keras_model(
      model, optimizer=_optimizer_fn(config)(), train=(train_x, split.train_labels),
      test=(test_x, split.test_labels), epochs=config.epochs, batch_size=config.batch_size)


def align(config: Config) -> Aligned:
  """Loads and splits the task across parties, aligns rows by PSI, splits train/test.

  Args:
    config: The run's settings; `num_parties=None` takes the task's default.

  Raises:
    UserError: Bad task or split options, duplicate IDs, an empty intersection.
  """
  if config.num_parties is None:
    config = dataclasses.replace(config, num_parties=data.default_num_parties(config.task))
  check_roles(config.num_parties, config.secure_aggregation)
  dataset = data.load(config.task, num_parties=config.num_parties, overlap=config.overlap,
                      seed=config.seed)
  # A few thousand IDs: the PSI takes well under a second in this process.
  psi_result = psi.private_set_intersection({party.name: party.ids for party in dataset.parties})
  split = data.align_and_split(dataset, psi_result.rows, test_fraction=config.test_fraction,
                               seed=config.seed)
  return Aligned(config, dataset, psi_result, split)


def train_and_evaluate(aligned: Aligned, *, on_epoch: EpochCallback | None = None) -> Result:
  """Trains the vertical model and both baselines on the aligned split; scores them."""
  config, split, num_classes = aligned.config, aligned.split, aligned.dataset.num_classes
  trained = {
      'vertical': train_vertical(split, config, num_classes=num_classes, on_epoch=on_epoch),
      'centralized': train_in_one_place(split, config, parties=range(len(split.train_features)),
                                        num_classes=num_classes, name='centralized'),
      'label_party_only': train_in_one_place(split, config, parties=[data.LABEL_PARTY],
                                             num_classes=num_classes, name='label_party_only'),
  }
  scores = {name: metrics.classification_metrics(split.test_labels, model.probabilities)
            for name, model in trained.items()}
  return Result(aligned, trained, scores)


def run(config: Config, *, on_epoch: EpochCallback | None = None) -> Result:
  """`align`, then `train_and_evaluate`."""
  return train_and_evaluate(align(config), on_epoch=on_epoch)
