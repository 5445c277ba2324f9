"""Byzantine robustness: FedAvg with 2 of 10 clients per round sending scaled or flipped updates.

Trains FedAvg on `mnist_digits` (100 IID clients, 10 sampled per round, McMahan et al.'s
2NN) once per aggregator (`mean`, `median`, `trimmed_mean`, `robust`) and attack, an
attack being `kind:m` (`--attacks`):

* `none`:          every client sends its honest model delta u_i (the clean run);
* `scale:m`:       each attacker sends +m * u_i, a boosted update (as in model-replacement
                   attacks, it tries to dominate the average);
* `sign_flip:m`:   each attacker sends -m * u_i, the reversed direction (m = 1: the plain
                   sign flip). The mean of 8 honest and 2 flipped deltas of similar size
                   points uphill only when 8 - 2m < 0, i.e. for m > 4.

Exactly `--attackers_per_round` (2) of the `--clients_per_round` (10) sampled clients attack
in every round, chosen by an RNG seeded with (seed, round). Every run uses the same clients
and the same attackers in each round, so runs differ only in aggregator and attack.

How the attack reaches TFF: attackers train honestly, then multiply their update by a
per-client factor *on the client*, before anything is aggregated. `with_update_factors`
wraps TFF's model-delta client work in a `tff.learning.templates.ClientWorkProcess` whose
client data is `OrderedDict(data=<batches>, update_factors=<float32 sequence>)`; the
product of the factor sequence (1 for honest clients) multiplies the update (TFF's client
work accepts only sequences as client data, hence a one-element sequence, not a scalar).
`build_attacked_fed_avg` composes it with TFF's broadcast, the aggregator under test and a
server SGD finalizer (`tff.learning.templates.compose_learning_process`): TFF's unweighted
FedAvg with the client work swapped. The aggregators are `recipes.aggregators`' unweighted
factories, so every client counts once whatever it reports.

  python -m scripts.bench_robustness           # the benchmark: 20 runs, 9 min on 2 busy cores
  python -m scripts.bench_robustness --smoke   # tiny settings, 2 rounds (tests)

Outputs (`--results_dir`, default docs/benchmarks/robustness/): results.json (settings, machine,
load, every run with its accuracy curve), results.csv (one row per run), table.md (the
printed table) and accuracy_vs_rounds.png (a panel per attack, a line per aggregator).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from absl import flags
import numpy as np

import tasks
from core.errors import UserError
from core.runtime import import_tff
from recipes import aggregators
from recipes import cli
from recipes import training_loop
from scripts import bench_common
from tasks.models import MODELS

tff = import_tff()
import tensorflow as tf  # noqa: E402

AGGREGATORS = ('mean', 'median', 'trimmed_mean', 'robust')
ATTACK_KINDS = ('none', 'scale', 'sign_flip')
DEFAULT_ATTACKS = ('none', 'scale:10', 'scale:100', 'sign_flip:1', 'sign_flip:10')


def _define_flags() -> None:
  """Defines this script's flags; only when run as a script, so that tests can import it
  beside the recipes (whose flags share names such as --total_rounds)."""
  global _SMOKE, _AGGREGATORS, _ATTACKS, _TOTAL_ROUNDS, _ROUNDS_PER_EVAL, _CLIENTS_PER_ROUND, _ATTACKERS_PER_ROUND, _TRIM_FRACTION, _NUM_CLIENTS, _PARTITION, _MODEL, _CLIENT_LEARNING_RATE, _CLIENT_BATCH_SIZE, _CLIENT_EPOCHS, _SEED, _RESULTS_DIR
  _SMOKE = flags.DEFINE_bool(
      'smoke', False, 'Tiny settings (2 rounds, softmax model, 2 aggregators x 2 attacks).')
  _AGGREGATORS = flags.DEFINE_list('aggregators', list(AGGREGATORS), f'Subset of {AGGREGATORS}.')
  _ATTACKS = flags.DEFINE_list(
      'attacks', list(DEFAULT_ATTACKS),
      'Attacks as kind:m, kind one of none, scale (attackers send +m * update), sign_flip '
      '(attackers send -m * update).')
  _TOTAL_ROUNDS = flags.DEFINE_integer('total_rounds', 60, 'Rounds per run.', lower_bound=1)
  _ROUNDS_PER_EVAL = flags.DEFINE_integer(
      'rounds_per_eval', 5, 'Evaluate every this many rounds (and at the end).', lower_bound=1)
  _CLIENTS_PER_ROUND = flags.DEFINE_integer('clients_per_round', 10, 'Clients sampled per round.',
                                           lower_bound=1)
  _ATTACKERS_PER_ROUND = flags.DEFINE_integer(
      'attackers_per_round', 2, 'How many of the sampled clients attack, in every round.',
      lower_bound=0)
  _TRIM_FRACTION = flags.DEFINE_float(
      'trim_fraction', 0.2,
      '`trimmed_mean` drops floor(this * clients) values per side (0.2 of 10: 2 per side).',
      lower_bound=0.0, upper_bound=0.5)
  _NUM_CLIENTS = flags.DEFINE_integer('num_clients', 100, 'Clients the training digits go to.',
                                     lower_bound=1)
  _PARTITION = flags.DEFINE_enum('partition', 'iid', ['iid', 'shards', 'dirichlet'], 'Client split.')
  _MODEL = flags.DEFINE_enum('model', '2nn', list(MODELS), 'Model (2nn: fast on CPU).')
  _CLIENT_LEARNING_RATE = flags.DEFINE_float('client_learning_rate', 0.1,
                                              'Client SGD learning rate (> 0).', lower_bound=0.0)
  _CLIENT_BATCH_SIZE = flags.DEFINE_integer('client_batch_size', 20, 'Client batch size.',
                                            lower_bound=1)
  _CLIENT_EPOCHS = flags.DEFINE_integer('client_epochs_per_round', 1, 'Local epochs per round.',
                                        lower_bound=1)
  _SEED = flags.DEFINE_integer('seed', 0, 'Seeds the split, client sampling and the attackers.',
                               lower_bound=0, upper_bound=2**31 - 1)
  _RESULTS_DIR = flags.DEFINE_string('results_dir', 'docs/benchmarks/robustness', 'Where the results go.')

# Drawn from its own stream of the per-round RNG, so that the attackers do not depend on
# how `training_loop.sample_clients` consumes its stream.
_ATTACKER_STREAM = 1
# The server applies the aggregated delta as it is (SGD, learning rate 1): plain FedAvg.
_SERVER_LEARNING_RATE = 1.0


@dataclasses.dataclass(frozen=True)
class Attack:
  """What the attackers send: `update_factor` times their honest update.

  Attributes:
    kind: One of `ATTACK_KINDS`.
    magnitude: m > 0; `scale` multiplies by +m, `sign_flip` by -m (ignored by `none`).
  """

  kind: str
  magnitude: float = 1.0

  @classmethod
  def parse(cls, spec: str) -> 'Attack':
    """Reads `kind` or `kind:m` (e.g. `sign_flip:10`); m defaults to 1.

    Raises:
      UserError: For an unknown kind or a magnitude that is not a positive number.
    """
    kind, _, magnitude = spec.strip().partition(':')
    if kind not in ATTACK_KINDS:
      raise UserError(
          f'unknown attack {kind!r} in --attacks; choose from {", ".join(ATTACK_KINDS)}')
    if kind == 'none':
      if magnitude:
        raise UserError(f'attack none takes no magnitude, got {spec!r}')
      return cls(kind)
    try:
      value = float(magnitude or 1.0)
    except ValueError:
      value = math.nan
    if not (math.isfinite(value) and value > 0):
      raise UserError(f'attack {spec!r}: the magnitude after ":" must be a positive number')
    return cls(kind, value)

  @property
  def update_factor(self) -> float:
    """What an attacker multiplies its update by (1: honest)."""
    return {'none': 1.0, 'scale': self.magnitude, 'sign_flip': -self.magnitude}[self.kind]

  @property
  def name(self) -> str:
    """`none`, or e.g. `scale:100`, `sign_flip:1` (the `--attacks` spelling)."""
    return 'none' if self.kind == 'none' else f'{self.kind}:{self.magnitude:g}'

  @property
  def label(self) -> str:
    """For tables and plots: `no attack`, `scale x100`, `sign flip x-1`."""
    if self.kind == 'none':
      return 'no attack'
    return f'{self.kind.replace("_", " ")} x{self.update_factor:g}'


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that defines one benchmark (written to results.json)."""

  aggregators: tuple[str, ...]
  attacks: tuple[Attack, ...]
  total_rounds: int
  rounds_per_eval: int
  clients_per_round: int
  attackers_per_round: int
  trim_fraction: float
  num_clients: int
  partition: str
  model: str
  client_learning_rate: float
  client_batch_size: int
  client_epochs_per_round: int
  seed: int
  smoke: bool = False


def settings_from_flags() -> Settings:
  """Reads and checks the flags; `--smoke` shrinks the run to a wiring check.

  Raises:
    UserError: For unknown names or inconsistent sizes.
  """
  settings = Settings(
      aggregators=tuple(_AGGREGATORS.value),
      attacks=tuple(Attack.parse(spec) for spec in _ATTACKS.value),
      total_rounds=_TOTAL_ROUNDS.value, rounds_per_eval=_ROUNDS_PER_EVAL.value,
      clients_per_round=_CLIENTS_PER_ROUND.value, attackers_per_round=_ATTACKERS_PER_ROUND.value,
      trim_fraction=_TRIM_FRACTION.value, num_clients=_NUM_CLIENTS.value,
      partition=_PARTITION.value, model=_MODEL.value,
      client_learning_rate=_CLIENT_LEARNING_RATE.value,
      client_batch_size=_CLIENT_BATCH_SIZE.value, client_epochs_per_round=_CLIENT_EPOCHS.value,
      seed=_SEED.value,
  )
  if _SMOKE.value:
    # Keeps 2 attackers among 10 clients (the trim still covers them) and shrinks the rest.
    settings = dataclasses.replace(
        settings, aggregators=('mean', 'median'),
        attacks=(Attack('none'), Attack('sign_flip', 10.0)),
        total_rounds=2, rounds_per_eval=1, num_clients=20, model='tiny', smoke=True)
  for name in settings.aggregators:
    if name not in AGGREGATORS:
      raise UserError(f'unknown aggregator {name!r} in --aggregators; choose from '
                      f'{", ".join(AGGREGATORS)}')
  if len({attack.name for attack in settings.attacks}) != len(settings.attacks):
    raise UserError('--attacks lists an attack twice')
  if 'trimmed_mean' in settings.aggregators and not 0 <= settings.trim_fraction < 0.5:
    raise UserError(f'--trim_fraction must be in [0, 0.5), got {settings.trim_fraction}')
  for name in ('total_rounds', 'rounds_per_eval', 'clients_per_round', 'num_clients',
               'client_batch_size', 'client_epochs_per_round'):
    if getattr(settings, name) < 1:
      raise UserError(f'--{name} must be at least 1, got {getattr(settings, name)}')
  if not 0 <= settings.attackers_per_round < settings.clients_per_round:
    raise UserError('--attackers_per_round must be in [0, --clients_per_round), got '
                    f'{settings.attackers_per_round}')
  if settings.client_learning_rate <= 0:
    raise UserError(f'--client_learning_rate must be positive, got {settings.client_learning_rate}')
  if not _RESULTS_DIR.value.strip():
    raise UserError('--results_dir must not be empty')
  if settings.clients_per_round > settings.num_clients:
    raise UserError(f'--clients_per_round={settings.clients_per_round} exceeds '
                    f'--num_clients={settings.num_clients}')
  return settings


def build_aggregator(name: str, settings: Settings) -> tff.aggregators.UnweightedAggregationFactory:
  """The unweighted `recipes.aggregators` factory called `name`.

  `mean` is the unweighted mean: with every client counting once in every aggregator,
  the comparison is about the aggregation rule alone (the IID clients hold 80 digits
  each, so it equals FedAvg's example-weighted mean anyway).
  """
  factories: dict[str, Callable[[], tff.aggregators.UnweightedAggregationFactory]] = {
      'mean': aggregators.unweighted_mean,
      'median': aggregators.median,
      'trimmed_mean': lambda: aggregators.trimmed_mean(trim_fraction=settings.trim_fraction),
      # TFF's robust_aggregator recipe: adaptive L2 clipping, then adaptive zeroing.
      # (`recipes.aggregators.clipped_mean`; this benchmark's results keep the label 'robust').
      'robust': lambda: aggregators.clipped_mean(weighted=False),
  }
  return factories[name]()


def client_data(dataset: tf.data.Dataset, update_factor: float) -> collections.OrderedDict:
  """One client's input to `with_update_factors`: its batches and its update factor."""
  return collections.OrderedDict(
      data=dataset, update_factors=tf.data.Dataset.from_tensors(np.float32(update_factor)))


def with_update_factors(
    client_work: tff.learning.templates.ClientWorkProcess,
) -> tff.learning.templates.ClientWorkProcess:
  """Wraps a client work so that each client multiplies its update by its own factor.

  Client i's data becomes `OrderedDict(data=D_i, update_factors=F_i)`, F_i a sequence of
  float32 scalars. The wrapped work runs on D_i as before and client i then reports
  update (prod F_i) * u_i, with the same weight and training metrics: an honest client
  has F_i = [1.0] (or empty), an attacker e.g. [-10.0]. The multiplication runs at
  CLIENTS, so whatever aggregates the updates sees the attacked values.

  Args:
    client_work: A `ClientWorkProcess` whose client data is a sequence (e.g. from
      `tff.learning.templates.build_model_delta_client_work`).

  Returns:
    A `ClientWorkProcess` with the same state, hyperparameters and measurements.
  """
  state_type, weights_type, data_type = client_work.next.type_signature.parameter
  factors_type = tff.SequenceType(np.float32)
  attacked_data_type = tff.FederatedType(
      tff.StructWithPythonType(
          [('data', data_type.member), ('update_factors', factors_type)],
          collections.OrderedDict),
      tff.CLIENTS)
  result_type = client_work.next.type_signature.result.result.member

  @tff.tensorflow.computation(result_type, factors_type)
  def scale_update(client_result, update_factors):
    factor = update_factors.reduce(tf.constant(1.0), lambda product, f: product * f)
    return tff.learning.templates.ClientResult(
        update=tf.nest.map_structure(lambda u: u * factor, client_result.update),
        update_weight=client_result.update_weight)

  @tff.federated_computation(state_type, weights_type, attacked_data_type)
  def next_fn(state, weights, attacked_data):
    output = client_work.next(state, weights, attacked_data.data)
    result = tff.federated_map(scale_update, (output.result, attacked_data.update_factors))
    return tff.templates.MeasuredProcessOutput(output.state, result, output.measurements)

  return tff.learning.templates.ClientWorkProcess(
      client_work.initialize, next_fn,
      get_hparams_fn=client_work.get_hparams, set_hparams_fn=client_work.set_hparams)


def build_attacked_fed_avg(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    model_aggregator: tff.aggregators.UnweightedAggregationFactory,
    server_optimizer: tff.learning.optimizers.Optimizer | None = None,
) -> tff.learning.templates.LearningProcess:
  """Unweighted FedAvg whose clients may scale their updates (see `with_update_factors`).

  The same composition as `tff.learning.algorithms.build_unweighted_fed_avg` (broadcast,
  model-delta client work, aggregator, optimizer finalizer) with the client work wrapped.
  `next(state, client_data)` takes one `client_data(...)` per sampled client.

  Args:
    model_fn: Builds a fresh `tff.learning.models.VariableModel`.
    client_optimizer: Local optimizer.
    model_aggregator: Aggregates the (possibly attacked) updates; every client counts once.
    server_optimizer: Applies the aggregate; default SGD with learning rate 1.

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  if server_optimizer is None:
    server_optimizer = tff.learning.optimizers.build_sgdm(learning_rate=_SERVER_LEARNING_RATE)

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  weights_type = initial_model_weights_fn.type_signature.result
  honest_work = tff.learning.templates.build_model_delta_client_work(
      model_fn, client_optimizer, tff.learning.ClientWeighting.UNIFORM,
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  # compose_learning_process always passes a weight; the adapter ignores it.
  aggregator = aggregators.for_recipe(model_aggregator, weighted=True).create(
      weights_type.trainable, tff.TensorType(np.float32))
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn,
      tff.learning.templates.build_broadcast_process(weights_type),
      with_update_factors(honest_work),
      aggregator,
      tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type))


def attackers(settings: Settings, round_num: int) -> set[int]:
  """Positions (in the round's sample) of the clients that attack in `round_num`."""
  rng = np.random.default_rng([settings.seed, round_num, _ATTACKER_STREAM])
  return set(rng.choice(settings.clients_per_round, settings.attackers_per_round, replace=False)
             .tolist())


def _weights_are_finite(model_weights: Any) -> bool:
  return all(np.all(np.isfinite(w)) for w in tf.nest.flatten(model_weights.trainable))


def run_attack(
    process: tff.learning.templates.LearningProcess,
    evaluate: Callable[[Any], dict[str, float]],
    task: tasks.Task,
    settings: Settings,
    attack: Attack,
    datasets_for: Callable[[Sequence[str], int], list[tf.data.Dataset]],
    initial_weights: Any,
) -> dict[str, Any]:
  """Trains `process` from `initial_weights` under `attack`; returns its accuracy curve."""
  client_ids = list(task.train_data.client_ids)
  factor = attack.update_factor
  state = process.set_model_weights(process.initialize(), initial_weights)
  # Round 0 is the initial model: a run that never learns stays at its accuracy.
  curve_rounds = [0]
  curve_accuracy = [evaluate(initial_weights)['test_accuracy']]
  started = time.perf_counter()
  train_seconds = 0.0
  diverged_round = None
  for round_num in range(1, settings.total_rounds + 1):
    sampled = training_loop.sample_clients(
        client_ids, settings.clients_per_round, settings.seed, round_num)
    attacking = attackers(settings, round_num)
    data = [client_data(dataset, factor if i in attacking else 1.0)
            for i, dataset in enumerate(datasets_for(sampled, round_num))]
    round_start = time.perf_counter()
    state = process.next(state, data).state
    train_seconds += time.perf_counter() - round_start
    if round_num % settings.rounds_per_eval == 0 or round_num == settings.total_rounds:
      weights = process.get_model_weights(state)
      if diverged_round is None and not _weights_are_finite(weights):
        diverged_round = round_num
      curve_rounds.append(round_num)
      curve_accuracy.append(evaluate(weights)['test_accuracy'])
  return {
      'attack': attack.name,
      'update_factor': factor,
      'rounds': settings.total_rounds,
      'final_test_accuracy': curve_accuracy[-1],
      'best_test_accuracy': max(curve_accuracy),
      # First evaluated round with NaN or infinite weights: from then on the model is lost.
      'diverged_round': diverged_round,
      'wall_seconds': round(time.perf_counter() - started, 2),
      'mean_round_seconds': round(train_seconds / settings.total_rounds, 4),
      'curve_rounds': curve_rounds,
      'curve_test_accuracy': curve_accuracy,
  }


def run_benchmark(settings: Settings) -> list[dict[str, Any]]:
  """Every (aggregator, attack) run; one learning process per aggregator."""
  task = tasks.create_task(
      'mnist_digits', model=settings.model,
      client_spec=tasks.ClientSpec(num_epochs=settings.client_epochs_per_round,
                                   batch_size=settings.client_batch_size),
      num_clients=settings.num_clients, partition=settings.partition, seed=settings.seed)
  datasets_for = training_loop.ClientDatasets(task, seed=settings.seed)

  runs = []
  initial_weights = None
  for name in settings.aggregators:
    build_start = time.perf_counter()
    process = build_attacked_fed_avg(
        task.model_fn,
        client_optimizer=tff.learning.optimizers.build_sgdm(
            learning_rate=settings.client_learning_rate),
        model_aggregator=build_aggregator(name, settings))
    build_seconds = time.perf_counter() - build_start
    if initial_weights is None:
      # Every run starts from this model, drawn from the seed (after a process is built:
      # building one invalidates Keras models made before it, Keras 2).
      initial_weights = training_loop.initial_model_weights(task, settings.seed)
    # After the process: building it invalidates Keras models made before (Keras 2).
    evaluate = training_loop.Evaluator(task, task.test_data, 'test')
    for attack in settings.attacks:
      run = {'aggregator': name, 'build_seconds': round(build_seconds, 2),
             **run_attack(process, evaluate, task, settings, attack, datasets_for,
                          initial_weights)}
      print(f'{name:>12} / {attack.name:<12}: final test accuracy {run["final_test_accuracy"]:.4f} '
            f'({run["wall_seconds"]:.0f} s)', flush=True)
      runs.append(run)
  return runs


def accuracy_table(runs: Sequence[dict[str, Any]], settings: Settings) -> str:
  """Markdown: final test accuracy, one row per aggregator, one column per attack."""
  rows = []
  for name in settings.aggregators:
    row: dict[str, Any] = {'aggregator': name}
    for run in runs:
      if run['aggregator'] == name:
        row[run['attack']] = run['final_test_accuracy']
    rows.append(row)
  columns = [('aggregator', 'aggregator', '')] + [
      (attack.name, attack.label, '.4f') for attack in settings.attacks]
  return bench_common.markdown_table(rows, columns)


def plot(runs: Sequence[dict[str, Any]], settings: Settings, path: Path) -> Path:
  """Test accuracy vs rounds: a panel per attack, a line per aggregator, one accuracy scale."""
  columns = min(3, len(settings.attacks))
  rows = math.ceil(len(settings.attacks) / columns)
  title = (f'FedAvg on mnist_digits ({settings.partition}, {settings.model}): '
           f'{settings.attackers_per_round} of {settings.clients_per_round} clients attack '
           'every round')
  # A shared [0, 1] axis: a collapse to chance (0.1) must look like one in every panel.
  with bench_common.figure(path, title=title, rows=rows, columns=columns,
                           size=(4.5 * columns, 3.4 * rows), sharey=True) as axes:
    for ax, attack in zip(axes.flat, settings.attacks):
      for run in runs:
        if run['attack'] == attack.name:
          ax.plot(run['curve_rounds'], run['curve_test_accuracy'], marker='.',
                  label=run['aggregator'])
      ax.set_title(attack.label, fontsize=10)
      ax.set_ylim(0, 1)
      ax.set_xlabel('round')
      ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
      ax.set_ylabel('test accuracy')
    for ax in axes.flat[len(settings.attacks):]:
      ax.axis('off')
    axes.flat[0].legend(fontsize=8, loc='lower right')
  return path


def main(argv: Sequence[str]) -> None:
  del argv
  settings = settings_from_flags()
  load = bench_common.LoadMonitor()
  started = time.perf_counter()
  runs = run_benchmark(settings)
  wall_seconds = time.perf_counter() - started
  bench_common.publish(
      Path(_RESULTS_DIR.value), benchmark='robustness', settings=dataclasses.asdict(settings),
      rows=runs, table=accuracy_table(runs, settings), load=load,
      title=(f'Final test accuracy after {settings.total_rounds} rounds '
             f'({settings.attackers_per_round} of {settings.clients_per_round} clients attack '
             f'every round; chance = 0.1); {wall_seconds / 60:.1f} min in all:'),
      plot=lambda path: plot(runs, settings, path), plot_name='accuracy_vs_rounds.png',
      extra={'wall_seconds': round(wall_seconds, 1)})


def validate_flags() -> None:
  """All of `settings_from_flags`' checks, right after parsing."""
  settings_from_flags()


if __name__ == '__main__':
  _define_flags()
  cli.run(main, validate=validate_flags)
