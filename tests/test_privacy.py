"""Privacy accounting for DP-FedAvg (RDP accountant on Poisson-sampled Gaussian rounds)."""

from __future__ import annotations

import math

import dp_accounting
import pytest

from core.errors import UserError
from recipes import privacy


def test_published_reference_value():
  # tensorflow_privacy's compute_dp_sgd_privacy test case "Test0": N = 60000, batch 150,
  # z = 1.3, 15 epochs (6000 steps, q = 0.0025), delta = 1e-5 -> epsilon 0.7242234026109595.
  epsilon = privacy.epsilon_spent(
      noise_multiplier=1.3, sampling_rate=150 / 60000, rounds=6000, delta=1e-5
  )
  assert epsilon == pytest.approx(0.7242234026109595, rel=1e-6)


def test_matches_dp_accounting_directly():
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(
      dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), count=500
  )
  expected = accountant.get_epsilon(1e-6)
  assert privacy.epsilon_spent(
      noise_multiplier=1.1, sampling_rate=0.01, rounds=500, delta=1e-6
  ) == pytest.approx(expected)


def test_full_participation_is_close_to_the_gaussian_rdp_bound():
  # q = 1: RDP of T Gaussian rounds is T * alpha / (2 z^2), so
  # epsilon = min_alpha T alpha / (2 z^2) + log(1/delta) / (alpha - 1); at the continuous
  # optimum that is about T / (2 z^2) + sqrt(2 T log(1/delta)) / z. The accountant, on a grid
  # of orders and with a slightly tighter conversion, lands within a few percent.
  z, rounds, delta = 5.0, 10, 1e-5
  bound = rounds / (2 * z * z) + math.sqrt(2 * rounds * math.log(1 / delta)) / z
  epsilon = privacy.epsilon_spent(noise_multiplier=z, sampling_rate=1.0, rounds=rounds, delta=delta)
  assert 0.8 * bound < epsilon <= bound * 1.01


def test_epsilon_grows_with_rounds_and_sampling_and_falls_with_noise():
  def eps(z=1.0, q=0.01, rounds=100, delta=1e-5):
    return privacy.epsilon_spent(noise_multiplier=z, sampling_rate=q, rounds=rounds, delta=delta)

  by_rounds = [eps(rounds=t) for t in (1, 10, 100, 1000)]
  assert by_rounds == sorted(by_rounds) and len(set(by_rounds)) == 4
  by_noise = [eps(z=z) for z in (0.6, 0.8, 1.0, 2.0, 4.0)]
  assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == 5
  assert eps(q=0.001) < eps(q=0.01) < eps(q=0.1)
  assert eps(delta=1e-3) < eps(delta=1e-7)


def test_zero_noise_is_no_privacy():
  assert (
      privacy.epsilon_spent(noise_multiplier=0.0, sampling_rate=0.1, rounds=3, delta=1e-5)
      == math.inf
  )


@pytest.mark.parametrize('target_epsilon', [0.5, 2.0, 8.0])
def test_noise_multiplier_for_epsilon_round_trips(target_epsilon):
  common = dict(sampling_rate=10 / 3400, rounds=1500, delta=1e-5)
  z = privacy.noise_multiplier_for_epsilon(target_epsilon=target_epsilon, **common)
  achieved = privacy.epsilon_spent(noise_multiplier=z, **common)
  assert achieved <= target_epsilon  # Never weaker than asked ...
  assert achieved == pytest.approx(target_epsilon, rel=1e-3)  # ... and not much stronger.
  # 1e-4 less noise would overshoot the target.
  assert privacy.epsilon_spent(noise_multiplier=z - 1e-3, **common) > target_epsilon


def test_guarantee_from_either_side():
  by_noise = privacy.guarantee(
      clients_per_round=10, num_clients=1000, rounds=200, noise_multiplier=1.0, delta=1e-5
  )
  by_target = privacy.guarantee(
      clients_per_round=10,
      num_clients=1000,
      rounds=200,
      target_epsilon=by_noise.epsilon,
      delta=1e-5,
  )
  assert by_target.noise_multiplier == pytest.approx(1.0, abs=1e-3)
  assert by_noise.sampling_rate == pytest.approx(0.01)
  assert by_noise.rounds == 200


def test_default_delta_is_below_one_over_population():
  assert privacy.default_delta(1000) == pytest.approx(1000**-1.1)
  assert privacy.default_delta(1000) < 1 / 1000
  assert privacy.guarantee(
      clients_per_round=5, num_clients=100, rounds=3, noise_multiplier=1.0
  ).delta == pytest.approx(100**-1.1)


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(noise_multiplier=1.0, sampling_rate=0.0, rounds=10, delta=1e-5), 'sampling rate'),
        (dict(noise_multiplier=1.0, sampling_rate=1.5, rounds=10, delta=1e-5), 'sampling rate'),
        (dict(noise_multiplier=1.0, sampling_rate=0.1, rounds=0, delta=1e-5), 'rounds'),
        (dict(noise_multiplier=1.0, sampling_rate=0.1, rounds=10, delta=0.0), 'delta'),
        (dict(noise_multiplier=1.0, sampling_rate=0.1, rounds=10, delta=1.0), 'delta'),
        (dict(noise_multiplier=-1.0, sampling_rate=0.1, rounds=10, delta=1e-5), 'noise multiplier'),
    ],
)
def test_epsilon_spent_rejects_bad_input(kwargs, message):
  with pytest.raises(UserError, match=message):
    privacy.epsilon_spent(**kwargs)


@pytest.mark.parametrize(
    'target_epsilon, message',
    [
        (0.0, 'target epsilon must be a positive number'),
        (-1.0, 'target epsilon must be a positive number'),
        (math.inf, 'target epsilon must be a positive number'),
        (1e-9, 'out of reach'),
    ],
)
def test_impossible_targets(target_epsilon, message):
  with pytest.raises(UserError, match=message) as error:
    privacy.noise_multiplier_for_epsilon(
        target_epsilon=target_epsilon, sampling_rate=1.0, rounds=1000, delta=1e-5
    )
  assert '\n' not in str(error.value)


def test_guarantee_rejects_inconsistent_options():
  with pytest.raises(UserError, match='exactly one'):
    privacy.guarantee(clients_per_round=10, num_clients=100, rounds=5)
  with pytest.raises(UserError, match='exactly one'):
    privacy.guarantee(
        clients_per_round=10, num_clients=100, rounds=5, noise_multiplier=1.0, target_epsilon=1.0
    )
  with pytest.raises(UserError, match='exceed the number of clients'):
    privacy.guarantee(clients_per_round=200, num_clients=100, rounds=5, noise_multiplier=1.0)


# --- The DP recipe end to end: the mechanism it runs is the one it accounts ---------------------

DP_RUN = ('--task=synthetic', '--num_clients=100', '--clients_per_round=20',
          '--aggregator=dp_fixed', '--clip_norm=0.5', '--rounds_per_eval=2', '--progress=false')


def _independent_epsilon(record: dict) -> float:
  """epsilon from the recorded fields with dp_accounting alone (no project code)."""
  assert record['sampling'] == 'poisson'
  assert record['neighbouring_relation'].startswith('add_or_remove_one')
  accountant = dp_accounting.rdp.RdpAccountant(
      neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
  accountant.compose(dp_accounting.PoissonSampledDpEvent(
      record['sampling_rate'], dp_accounting.GaussianDpEvent(record['noise_multiplier'])),
      count=record['rounds'])
  return accountant.get_epsilon(record['delta'])


def test_dp_run_reports_the_epsilon_of_the_sampling_it_performed(tmp_path):
  from tests import helpers  # pylint: disable=g-import-not-at-top
  result = helpers.run_in_host('recipes.dp_fed_avg', *DP_RUN, '--noise_multiplier=1.0',
                              '--total_rounds=6', f'--root_output_dir={tmp_path}',
                              '--experiment_name=dp', check=True)
  record = helpers.read_json(tmp_path / 'dp' / 'summary.json')['privacy']
  assert record['rounds'] == 6 and record['sampling_rate'] == pytest.approx(0.2)
  assert record['epsilon'] == pytest.approx(_independent_epsilon(record), rel=1e-9)
  # Fixed-size cohorts of 20 (replace-one) would cost far more: the report is not that.
  fixed = dp_accounting.rdp.RdpAccountant(
      neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  fixed.compose(dp_accounting.SampledWithoutReplacementDpEvent(
      100, 20, dp_accounting.GaussianDpEvent(1.0)), count=6)
  assert fixed.get_epsilon(record['delta']) > 1.5 * record['epsilon']
  # The cohorts really were Poisson: their sizes vary around 20.
  sizes = [int(r['clients']) for r in helpers.read_rows(tmp_path / 'dp' / 'metrics.csv')]
  assert len(set(sizes)) > 1, sizes
  # The same record is frozen in hparams.json; the unnoised metrics are marked.
  frozen = helpers.read_json(tmp_path / 'dp' / 'hparams.json')['frozen']
  assert frozen['noise_multiplier'] == 1.0 and frozen['delta'] == record['delta']
  assert 'train_loss' in record['not_covered_by_epsilon']
  assert record['delta'] < 1 / 100 and 'too small a population' in record['note']
  assert 'too small a population' in result.stdout


def test_target_epsilon_is_calibrated_once_and_resume_cannot_change_privacy(tmp_path):
  from tests import helpers  # pylint: disable=g-import-not-at-top
  common = (*DP_RUN, '--target_epsilon=5', f'--root_output_dir={tmp_path}',
            '--experiment_name=dp')
  helpers.run_in_host('recipes.dp_fed_avg', *common, '--total_rounds=2', check=True)
  first = helpers.read_json(tmp_path / 'dp' / 'summary.json')['privacy']
  assert first['epsilon'] == pytest.approx(5, rel=1e-3) and first['epsilon'] <= 5
  # Going on past the calibrated rounds keeps z and reports the larger epsilon.
  helpers.run_in_host('recipes.dp_fed_avg', *common, '--total_rounds=4', '--resume', check=True)
  second = helpers.read_json(tmp_path / 'dp' / 'summary.json')['privacy']
  assert second['noise_multiplier'] == first['noise_multiplier']
  assert second['calibrated_for_rounds'] == 2 and second['rounds'] == 4
  assert second['epsilon'] > 5
  assert second['epsilon'] == pytest.approx(_independent_epsilon(second), rel=1e-9)
  # A resume that would change the privacy parameters is refused.
  result = helpers.run_in_host('recipes.dp_fed_avg', *common, '--total_rounds=6', '--resume',
                              '--clip_norm=1.0')
  helpers.assert_one_line_error(result, '--clip_norm=1.0')
