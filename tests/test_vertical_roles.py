"""The roles of the vertical recipe, checked on the messages actually sent.

The label party (party 0) is the coordinator: it adds its own embedding in the clear and
must receive the other parties' embeddings only as a masked sum. These tests read every
recorded message to the coordinator and fail if one of them is (or decodes to) a single
party's embedding.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from recipes.vertical import experiment
from recipes.vertical import models
from recipes.vertical import secure_sum
from recipes.vertical import split_model
from recipes.vertical.transcript import Transcript


def _split_model(num_parties: int, fusion: secure_sum.Fusion,
                 transcript: Transcript) -> split_model.SplitModel:
  tf.keras.utils.set_random_seed(0)
  return split_model.SplitModel(
      bottom_models=[models.build_bottom_model(5, hidden_units=8, embedding_dim=4, name=f'b{i}')
                     for i in range(num_parties)],
      top_model=models.build_top_model(4, num_classes=3),
      fusion=fusion, optimizer_fn=lambda: tf.keras.optimizers.SGD(0.1), transcript=transcript)


def _individual_embeddings_received(transcript: Transcript,
                                    embeddings: list[np.ndarray]) -> list[str]:
  """Messages to the coordinator that carry one party's embedding, plainly or encoded."""
  found = []
  for message in transcript:
    if message.receiver != secure_sum.COORDINATOR or message.kind == 'X25519 public key':
      continue
    (payload,) = message.payload
    candidates = [np.frombuffer(payload, dtype=np.float64),
                  secure_sum.decode(np.frombuffer(payload, dtype=np.uint64))]
    for index, embedding in enumerate(embeddings):
      flat = embedding.astype(np.float64).ravel()
      # Masked bytes read as float64 are random and may be NaN or inf: not a match, no warning.
      with np.errstate(invalid='ignore', over='ignore'):
        matches = any(c.shape == flat.shape and np.allclose(c, flat, atol=1e-4)
                      for c in candidates)
      if matches or embedding.astype(np.float32).tobytes() in payload:
        found.append(f'{message.kind} from {message.sender} is party{index}\'s embedding')
  return found


@pytest.mark.parametrize('num_parties', [3, 4])
def test_coordinator_never_receives_an_individual_embedding(num_parties: int) -> None:
  transcript = Transcript()
  model = _split_model(num_parties, secure_sum.SecureSum(num_parties - 1, transcript=transcript),
                       transcript)
  rng = np.random.default_rng(0)
  features = [rng.normal(size=(16, 5)).astype(np.float32) for _ in range(num_parties)]
  labels = rng.integers(3, size=16)
  # Embeddings of this step, computed before it updates the models.
  embeddings = [party.embed(x) for party, x in zip(model.parties, features)]
  model.train_step(features, labels)
  to_coordinator = [m for m in transcript if m.receiver == secure_sum.COORDINATOR]
  kinds = sorted(m.kind for m in to_coordinator)
  # One public key and one masked vector per non-label party; party 0 sends nothing.
  assert kinds == ['X25519 public key'] * (num_parties - 1) + ['masked embedding'] * (num_parties - 1)
  assert {m.sender for m in to_coordinator} == {f'party{i}' for i in range(1, num_parties)}
  assert not _individual_embeddings_received(transcript, embeddings)
  # What the coordinator can compute is the sum of the others' embeddings.
  masked = [np.frombuffer(m.payload[0], dtype=np.uint64) for m in to_coordinator
            if m.kind == 'masked embedding']
  total = masked[0]
  for vector in masked[1:]:
    total = total + vector
  np.testing.assert_allclose(secure_sum.decode_sum(total), np.sum(embeddings[1:], axis=0).ravel(),
                             atol=1e-5)
  # And every masking party got dL/dS back.
  assert sorted(m.receiver for m in transcript if m.kind == 'dL/dS') == [
      f'party{i}' for i in range(1, num_parties)]


def test_the_check_detects_embeddings_sent_in_the_clear() -> None:
  # The same check on plain fusion finds every non-label embedding: it can fail.
  transcript = Transcript()
  model = _split_model(3, secure_sum.PlainSum(transcript), transcript)
  features = [np.ones((4, 5), np.float32) * i for i in range(3)]
  embeddings = [party.embed(x) for party, x in zip(model.parties, features)]
  model.train_step(features, np.zeros(4, dtype=np.int64))
  assert len(_individual_embeddings_received(transcript, embeddings)) == 2


def test_label_party_embedding_is_added_outside_the_masked_sum() -> None:
  transcript = Transcript()
  fusion = secure_sum.SecureSum(2, transcript=transcript)
  model = _split_model(3, fusion, transcript)
  features = [np.random.default_rng(i).normal(size=(8, 5)).astype(np.float32) for i in range(3)]
  embeddings = [party.embed(x) for party, x in zip(model.parties, features)]
  fused = model._fuse(features)  # pylint: disable=protected-access
  np.testing.assert_allclose(fused, np.sum(embeddings, axis=0), atol=1e-5)
  assert len(fusion.parties) == 2  # Only the two non-label parties mask.


@pytest.mark.parametrize('num_parties', [2])
def test_secure_aggregation_with_one_other_party_is_refused(num_parties: int) -> None:
  with pytest.raises(UserError, match="would learn the other party's embedding"):
    experiment.check_roles(num_parties, secure_aggregation=True)
  experiment.check_roles(num_parties, secure_aggregation=False)
  experiment.check_roles(3, secure_aggregation=True)


@pytest.mark.slow
def test_whole_training_sends_no_embedding_to_the_coordinator() -> None:
  config = experiment.Config(task='breast_cancer', num_parties=3, epochs=1)
  aligned = experiment.align(config)
  transcript = Transcript()
  experiment.train_vertical(aligned.split, config, num_classes=2, transcript=transcript)
  masked = [m for m in transcript if m.kind == 'masked embedding']
  batches = -(-len(aligned.split.train_labels) // config.batch_size)
  test_batches = -(-len(aligned.split.test_labels) // 1024)
  assert len(masked) == 2 * (batches + test_batches)
  assert {m.receiver for m in transcript if m.sender != secure_sum.COORDINATOR} == {
      secure_sum.COORDINATOR}
  # A masked vector decoded as if it were an embedding is noise of size ~2^63 / 2^24.
  for message in masked:
    decoded = secure_sum.decode(np.frombuffer(message.payload[0], dtype=np.uint64))
    assert np.median(np.abs(decoded)) > 1e8, message.sender


def test_diverging_training_is_one_user_error() -> None:
  config = experiment.Config(task='breast_cancer', num_parties=3, epochs=2, learning_rate=1.0,
                             hidden_units=4, embedding_dim=2)
  aligned = experiment.align(config)
  # Inflate the inputs so the embeddings leave the fixed-point range at once.
  split = aligned.split
  huge = type(split)([x * np.float32(1e30) for x in split.train_features],
                     split.test_features, split.train_labels, split.test_labels)
  with pytest.raises(UserError, match='training diverged'):
    experiment.train_vertical(huge, config, num_classes=2)
