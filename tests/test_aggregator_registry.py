"""The aggregator registry: validation, factory kinds, flags derived from the specs, runs in tff.learning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from core.errors import UserError
from core.runtime import import_tff
from recipes import aggregator_registry
from recipes import aggregators
from recipes import privacy

tff = import_tff()

build = aggregator_registry.build_aggregator
SPECS = aggregator_registry.SPECS


# --- factory kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize('name', SPECS)
def test_weighted_recipe_gets_weighted_factory(name):
  factory = build(name, weighted=True, clients_per_round=10, **SPECS[name].example)
  assert isinstance(factory, tff.aggregators.WeightedAggregationFactory)


@pytest.mark.parametrize('name', SPECS)
def test_unweighted_recipe_gets_unweighted_factory(name):
  factory = build(name, weighted=False, clients_per_round=10, **SPECS[name].example)
  assert isinstance(factory, tff.aggregators.UnweightedAggregationFactory)


@pytest.mark.parametrize('name', SPECS)
@pytest.mark.parametrize('weighted', [True, False])
def test_spec_weighting_is_what_the_builder_makes(name, weighted):
  # `recipe`: the factory's own kind follows the recipe; `unweighted`: always unweighted
  # (`for_recipe` then makes every client count once on a weighted recipe).
  spec = SPECS[name]
  request = aggregator_registry.Request(name=name, weighted=weighted, clients_per_round=10,
                                        options=dict(spec.example))
  assert aggregators.is_weighted(spec.build(request)) == (weighted and spec.weighting == 'recipe')


@pytest.mark.parametrize('name', SPECS)
def test_option_ranges_are_checked_for_every_aggregator_that_takes_them(name):
  spec = SPECS[name]
  for option in spec.options:
    kind = aggregator_registry.OPTIONS[option].kind
    if kind in ('bool', 'enum'):
      continue  # No out-of-range value.
    with pytest.raises(UserError, match=f'--{option} must be'):
      build(name, weighted=True, clients_per_round=10, **{**spec.example, option: -1.0})


def test_options_apply_to_exactly_the_specs_that_list_them():
  for option in aggregator_registry.OPTIONS:
    takers = aggregator_registry.names_taking(option)
    assert takers, f'--{option} applies to no aggregator'
  assert aggregator_registry.names_taking('noise_multiplier') == ('dp_fixed', 'dp_adaptive')
  assert aggregator_registry.names_taking('trim_fraction') == ('trimmed_mean',)


def test_readme_table_lists_every_aggregator():
  readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
  for name in SPECS:
    assert f'| `{name}` |' in readme, name


def test_old_name_robust_is_refused_with_the_new_name():
  with pytest.raises(UserError, match='--aggregator=robust is now called clipped_mean') as error:
    build('robust', weighted=True, clients_per_round=10)
  assert '\n' not in str(error.value)


# --- validation ------------------------------------------------------------------------------------


_DP_OK = dict(noise_multiplier=1.0, clip_norm=1.0)


@pytest.mark.parametrize(
    'name, options, message',
    [
        ('krum', {}, 'unknown --aggregator=krum'),
        # Options that do not apply to the aggregator.
        ('mean', dict(noise_multiplier=1.0), '--noise_multiplier only applies to --aggregator=dp_'),
        ('clipped_mean', dict(target_epsilon=3.0), '--target_epsilon only applies to'),
        ('median', dict(trim_fraction=0.1), '--trim_fraction only applies to .*trimmed_mean'),
        ('mean', dict(quantization_bits=4), '--quantization_bits only applies to .*compressed'),
        ('clipped_mean', dict(secure_bound=1.0), '--secure_bound only applies to --aggregator=secure'),
        ('dp_fixed', dict(_DP_OK, adaptive_clipping=True), 'dp_adaptive always adapts'),
        ('unweighted_mean', dict(clip_norm=1.0), '--clip_norm only applies to'),
        # Values out of range, or missing.
        ('trimmed_mean', dict(trim_fraction=0.5), r'--trim_fraction must be in \[0, 0.5\)'),
        ('trimmed_mean', dict(trim_fraction=-0.1), r'--trim_fraction must be in \[0, 0.5\)'),
        ('trimmed_mean', dict(trim_fraction=0.05), 'trims nothing with 10 clients per round'),
        ('dp_fixed', dict(clip_norm=1.0), 'needs exactly one of --noise_multiplier and --target_'),
        ('dp_fixed', dict(_DP_OK, target_epsilon=2.0), 'exactly one of'),
        ('dp_fixed', dict(noise_multiplier=1.0), 'dp_fixed needs --clip_norm'),
        ('dp_fixed', dict(_DP_OK, noise_multiplier=-1.0), '--noise_multiplier must be >= 0'),
        ('dp_fixed', dict(_DP_OK, clip_norm=0.0), '--clip_norm must be a positive number'),
        ('dp_adaptive', dict(noise_multiplier=1.0), 'needs more than 10 clients per round'),
        ('dp_adaptive', dict(noise_multiplier=0.5, target_delta=2.0), r'--target_delta must be in'),
        ('dp_fixed', dict(clip_norm=1.0, target_epsilon=1.0), '--target_epsilon needs the number'),
        ('clipped_mean', dict(clip_norm=1.0, target_quantile=0.5), '--target_quantile needs adaptive'),
        ('clipped_mean', dict(target_quantile=1.5), r'--target_quantile must be in \(0, 1\)'),
        ('compressed', dict(quantization_bits=0), r'--quantization_bits must be an integer in'),
        ('secure', {}, '--aggregator=secure needs --secure_bound'),
        ('secure', dict(secure_bound=-1.0), '--secure_bound must be a positive number'),
    ],
)
def test_invalid_combinations_fail_with_one_line(name, options, message):
  with pytest.raises(UserError, match=message) as error:
    build(name, weighted=True, clients_per_round=10, **options)
  assert '\n' not in str(error.value)


def test_mean_follows_the_recipe_weighting():
  assert aggregators.is_weighted(build('mean', weighted=True, clients_per_round=10))
  assert not aggregators.is_weighted(build('mean', weighted=False, clients_per_round=10))


def test_clients_per_round_must_be_positive():
  with pytest.raises(UserError, match='clients per round'):
    build('mean', weighted=True, clients_per_round=0)


def test_target_epsilon_picks_the_noise_multiplier():
  options = dict(
      clients_per_round=10, num_clients=1000, total_rounds=100, target_epsilon=2.0, target_delta=1e-5
  )
  expected = privacy.noise_multiplier_for_epsilon(
      target_epsilon=2.0, sampling_rate=0.01, rounds=100, delta=1e-5
  )
  spent = privacy.epsilon_spent(noise_multiplier=expected, sampling_rate=0.01, rounds=100,
                                delta=1e-5)
  assert spent == pytest.approx(2.0, rel=1e-3) and spent <= 2.0
  factory = build('dp_fixed', weighted=False, clip_norm=1.0, **options)
  assert isinstance(factory, tff.aggregators.UnweightedAggregationFactory)


# --- absl flags ------------------------------------------------------------------------------------


def test_flags_feed_build_aggregator():
  aggregator_registry.define_aggregator_flags()
  aggregator_registry.define_aggregator_flags()  # Idempotent.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  assert flags.FLAGS['aggregator'].default == 'mean'
  help_text = flags.FLAGS['aggregator'].help
  for name, spec in SPECS.items():  # --help is derived from the specs.
    assert f'{name}: {spec.summary}' in help_text
  assert flags.FLAGS['trim_fraction'].help.startswith('trimmed_mean: ')
  common = dict(clients_per_round=10, num_clients=100, total_rounds=10)
  with flagsaver.flagsaver(aggregator='trimmed_mean', trim_fraction=0.2):
    factory = aggregator_registry.aggregator_from_flags(weighted=False, **common)
    assert isinstance(factory, tff.aggregators.UnweightedAggregationFactory)
  with flagsaver.flagsaver(aggregator='dp_fixed', noise_multiplier=1.0, clip_norm=0.5):
    factory = aggregator_registry.aggregator_from_flags(weighted=True, **common)
    assert isinstance(factory, tff.aggregators.WeightedAggregationFactory)
  with flagsaver.flagsaver(aggregator='median', noise_multiplier=1.0):
    with pytest.raises(UserError, match='--noise_multiplier only applies'):
      aggregator_registry.aggregator_from_flags(weighted=True, **common)
  with flagsaver.flagsaver(aggregator='mean'):  # The recipe's own mean, either kind.
    factory = aggregator_registry.aggregator_from_flags(weighted=False, **common)
    assert isinstance(factory, tff.aggregators.UnweightedAggregationFactory)


def test_library_modules_define_no_flags():
  # Users import the factories into their own programs: only define_aggregator_flags()
  # (in recipes.aggregator_registry) may add absl flags.
  defining_modules = set(flags.FLAGS.flags_by_module_dict())
  for module in ('recipes.aggregators', 'recipes.robust_aggregation', 'recipes.privacy'):
    assert module not in defining_modules


# --- inside tff.learning builders ------------------------------------------------------------------

_INPUT_SPEC = (tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None, 1], tf.float32))


def _model_fn() -> Any:
  keras_model = tf.keras.Sequential([tf.keras.layers.Input(shape=(2,)), tf.keras.layers.Dense(1)])
  return tff.learning.models.from_keras_model(
      keras_model, input_spec=_INPUT_SPEC, loss=tf.keras.losses.MeanSquaredError()
  )


def _client_data() -> list[tf.data.Dataset]:
  rng = np.random.default_rng(0)
  return [
      tf.data.Dataset.from_tensor_slices(
          (rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=(4, 1)).astype(np.float32))
      ).batch(2)
      for _ in range(3)
  ]


@pytest.fixture(scope='module')
def secure_context():
  """TFF's test context: runs secure-sum intrinsics as plain sums (the default context cannot)."""
  context = tff.backends.test.create_sync_test_cpp_execution_context()
  with tff.framework.get_context_stack().install(context):
    yield


# Each aggregator's example options; 3 clients per round here, so trim one of three.
_OPTIONS = {name: {**spec.example, **({'trim_fraction': 0.34} if name == 'trimmed_mean' else {})}
            for name, spec in SPECS.items()}

# Each aggregator once, through its natural builder or the as_weighted_aggregator
# path, plus FedSGD; with the measurement path it must report under metrics['aggregator'].
# An aggregator not listed here runs through build_weighted_fed_avg (derived from SPECS).
_MEASURED = [
    ('mean', 'weighted_fed_avg', ('client_count',)),
    ('unweighted_mean', 'unweighted_fed_avg', ('client_count',)),
    ('clipped_mean', 'weighted_fed_avg', ('zeroing', 'clipped_fraction')),
    ('clipped_mean', 'unweighted_fed_avg', ('zeroed_fraction',)),
    ('dp_fixed', 'unweighted_fed_avg', ('noise_stddev',)),
    ('dp_adaptive', 'weighted_fed_avg', ('clip_norm',)),
    ('compressed', 'unweighted_fed_avg', ('client_count',)),
    ('secure', 'weighted_fed_avg', ('mean_value', 'secure_upper_clipped_fraction')),
    ('median', 'weighted_fed_avg', ('non_finite_client_count',)),
    ('trimmed_mean', 'fed_sgd', ('trimmed_per_side',)),
]
_BUILDS = _MEASURED + [(name, 'weighted_fed_avg', ('client_count',)) for name in SPECS
                       if name not in {measured[0] for measured in _MEASURED}]


@pytest.mark.parametrize('name, builder, measurement_path', _BUILDS)
def test_aggregator_runs_in_learning_process(name, builder, measurement_path, secure_context):
  del secure_context  # Needed by 'secure', harmless for the others.
  optimizer = tff.learning.optimizers.build_sgdm(0.1)
  weighted = builder != 'unweighted_fed_avg'
  factory = build(name, weighted=weighted, clients_per_round=3, **_OPTIONS.get(name, {}))
  if builder == 'weighted_fed_avg':
    process = tff.learning.algorithms.build_weighted_fed_avg(
        _model_fn, optimizer, model_aggregator=factory
    )
  elif builder == 'unweighted_fed_avg':
    process = tff.learning.algorithms.build_unweighted_fed_avg(
        _model_fn, optimizer, model_aggregator=factory
    )
  else:
    process = tff.learning.algorithms.build_fed_sgd(_model_fn, model_aggregator=factory)
  output = process.next(process.initialize(), _client_data())
  measurements = output.metrics['aggregator']
  assert measurements['client_count'] == 3
  leaf = measurements
  for key in measurement_path:
    leaf = leaf[key]
  assert np.isfinite(leaf)
  trainable = process.get_model_weights(output.state).trainable
  assert all(np.all(np.isfinite(w)) for w in trainable)
