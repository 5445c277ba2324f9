"""DP queries whose Gaussian noise is reproducible from a seed: `gaussian_fixed`, `gaussian_adaptive`.

TFF 0.87's `DifferentiallyPrivateFactory.gaussian_fixed` / `gaussian_adaptive` take no
seed: tensorflow_privacy's `GaussianSumQuery` draws its noise with a stateful random op,
so two runs with the same `--seed` differ. Fixing that op's seed would be worse: the
worker may rebuild the op for every round (the same noise every round, which an observer
cancels by differencing rounds), and a resumed process would replay the noise from the
start. So the noise here is drawn with stateless ops from a seed that lives in the query's
state, split every round: round t's noise is a pure function of (seed, t), different in
every round, checkpointed with the rest of the server state, so a resumed run draws what
an uninterrupted one would.

These are the same mechanisms as TFF's (same clipping, same noise scale, same adaptive
clip and noisy-count estimate, built with TFF's own `adaptive_clip_noise_params`); only
the source of the Gaussian draws differs, so the accounting in `recipes.privacy` is
unchanged. Security note: whoever knows the seed can recompute the noise, so a published
seed voids the guarantee against that reader. Seeded noise is for simulation and
reproducible research; `noise_seed=None` draws the seed from the OS (`os.urandom`), as a
deployment must.

Hand-written (small subclasses of tensorflow_privacy's queries) because neither TFF nor
tensorflow_privacy 0.9 offers a seeded Gaussian sum query.
"""

from __future__ import annotations

import collections
import os

import dp_accounting
import tensorflow as tf
import tensorflow_privacy as tfp

from core.runtime import import_tff

tff = import_tff()


def os_seed() -> int:
  """A fresh non-negative 63-bit seed from the operating system's entropy."""
  return int.from_bytes(os.urandom(8), 'little') >> 1


def _split(seed: tf.Tensor, num: int) -> tf.Tensor:
  return tf.random.experimental.stateless_split(seed, num=num)


def next_seed(seed: tf.Tensor) -> tf.Tensor:
  """The seed of the next round's draws: the last of a split, never used for noise itself."""
  return _split(seed, 2)[1]


class SeededGaussianSumQuery(tfp.GaussianSumQuery):
  """`tfp.GaussianSumQuery` whose noise comes from a seed in its global state."""

  _GlobalState = collections.namedtuple('_GlobalState', ['l2_norm_clip', 'stddev', 'noise_seed'])

  def __init__(self, l2_norm_clip: float, stddev: float, seed: int) -> None:
    super().__init__(l2_norm_clip, stddev)
    self._seed = int(seed)

  def make_global_state(self, l2_norm_clip, stddev, noise_seed=None):
    """As the parent's, plus the noise seed ([seed, 0] when not given)."""
    if noise_seed is None:
      noise_seed = tf.constant([self._seed, 0], dtype=tf.int64)
    return self._GlobalState(tf.cast(l2_norm_clip, tf.float32), tf.cast(stddev, tf.float32),
                             noise_seed)

  def initial_global_state(self):
    return self.make_global_state(self._l2_norm_clip, self._stddev)

  def get_noised_result(self, sample_state, global_state):
    """Adds N(0, stddev^2) to every coordinate, drawn from the state's seed; advances it."""
    leaves = tf.nest.flatten(sample_state)
    seeds = _split(_split(global_state.noise_seed, 2)[0], max(len(leaves), 1))
    noised = [
        v + tf.cast(tf.random.stateless_normal(tf.shape(v), seed=seeds[i],
                                               stddev=global_state.stddev), v.dtype)
        for i, v in enumerate(leaves)
    ]
    result = tf.nest.pack_sequence_as(sample_state, noised)
    new_state = global_state._replace(noise_seed=next_seed(global_state.noise_seed))
    event = dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip)
    return result, new_state, event


class SeededQuantileAdaptiveClipSumQuery(tfp.QuantileAdaptiveClipSumQuery):
  """`tfp.QuantileAdaptiveClipSumQuery` with both of its noises drawn from seeds in its state."""

  def __init__(self, *, initial_l2_norm_clip: float, noise_multiplier: float,
               target_unclipped_quantile: float, learning_rate: float,
               clipped_count_stddev: float, expected_num_records: float, seed: int) -> None:
    super().__init__(initial_l2_norm_clip, noise_multiplier, target_unclipped_quantile,
                     learning_rate, clipped_count_stddev, expected_num_records,
                     geometric_update=True)
    # The same queries as the parent builds, with seeded noise (two independent streams).
    self._sum_query = SeededGaussianSumQuery(
        initial_l2_norm_clip, noise_multiplier * initial_l2_norm_clip, seed=seed)
    estimator = self._quantile_estimator_query
    estimator._below_estimate_query = tfp.NormalizedQuery(  # pylint: disable=protected-access
        SeededGaussianSumQuery(l2_norm_clip=0.5, stddev=clipped_count_stddev,
                               seed=(seed + 1) % 2**63),
        denominator=expected_num_records)

  def get_noised_result(self, sample_state, global_state):
    result, new_state, event = super().get_noised_result(sample_state, global_state)
    # The parent rebuilds the sum query's state for the new clip, which would reset the
    # seed (the same noise next round): carry the advanced seed over.
    advanced = next_seed(global_state.sum_state.noise_seed)
    new_state = new_state._replace(sum_state=new_state.sum_state._replace(noise_seed=advanced))
    return result, new_state, event


def gaussian_fixed(*, noise_multiplier: float, clients_per_round: float, clip: float,
                   noise_seed: int | None) -> tff.aggregators.DifferentiallyPrivateFactory:
  """As `tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed`, with seeded noise.

  Args:
    noise_multiplier: z >= 0.
    clients_per_round: Expected clients per round (the mean's fixed denominator).
    clip: L2 clip C > 0.
    noise_seed: Seed of the noise; None draws one from the OS (see the module docstring).
  """
  seed = os_seed() if noise_seed is None else noise_seed
  query = tfp.NormalizedQuery(
      SeededGaussianSumQuery(l2_norm_clip=clip, stddev=clip * noise_multiplier, seed=seed),
      denominator=float(clients_per_round))
  return tff.aggregators.DifferentiallyPrivateFactory(query)


def gaussian_adaptive(*, noise_multiplier: float, clients_per_round: float,
                      initial_l2_norm_clip: float, target_unclipped_quantile: float,
                      learning_rate: float, clipped_count_stddev: float | None,
                      noise_seed: int | None) -> tff.aggregators.DifferentiallyPrivateFactory:
  """As `DifferentiallyPrivateFactory.gaussian_adaptive` (geometric updates), with seeded noise.

  `noise_multiplier` is the effective z of both releases together; TFF's own
  `adaptive_clip_noise_params` splits it into the value noise and the count noise.
  """
  seed = os_seed() if noise_seed is None else noise_seed
  value_noise_multiplier, clipped_count_stddev = _adaptive_clip_noise_params(
      noise_multiplier, float(clients_per_round), clipped_count_stddev)
  query = SeededQuantileAdaptiveClipSumQuery(
      initial_l2_norm_clip=initial_l2_norm_clip, noise_multiplier=value_noise_multiplier,
      target_unclipped_quantile=target_unclipped_quantile, learning_rate=learning_rate,
      clipped_count_stddev=clipped_count_stddev, expected_num_records=float(clients_per_round),
      seed=seed)
  return tff.aggregators.DifferentiallyPrivateFactory(
      tfp.NormalizedQuery(query, denominator=float(clients_per_round)))


def _adaptive_clip_noise_params(noise_multiplier: float, clients_per_round: float,
                                clipped_count_stddev: float | None) -> tuple[float, float]:
  from tensorflow_federated.python.aggregators import differential_privacy  # pylint: disable=g-import-not-at-top
  return differential_privacy.adaptive_clip_noise_params(
      noise_multiplier, clients_per_round, clipped_count_stddev)
