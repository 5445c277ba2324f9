"""The harness of the in-process timing benchmarks: overhead, remote, scaling, workers.

Each of them times FedAvg rounds of the recipes' own process inside one Python process.
What they share lives here, once:

* `define_flags` and `settings_from_flags`: the flags of the timed FedAvg configuration
  (population, model, cohort, batch, rounds, warm-up rounds, `--smoke`,
  `--results_dir`), and the tiny configuration that `--smoke` puts in their place
  (`SMOKE_SETTINGS`);
* `create_task`: the IID split that the settings describe;
* `recipe_process`: the process that `recipes/fed_avg.py` builds under its default
  flags (through the public `recipes.experiment.setup_without_flags`), with TFF's plain
  mean;
* `Contender`, `FederatedContender`: something that trains one round on given clients,
  e.g. a learning process on its own execution context (hence its own TFF worker);
* `alternate_rounds`: the warm-up / alternate / time loop. Each round samples clients
  once and every contender trains on them, who goes first rotating round by round, so
  that a burst of load on the shared machine hits all contenders alike and per-round
  ratios stay comparable; the warm-up rounds (tracing, caches) are not kept.

Imports TFF (through `core.runtime.import_tff`); `bench_common`, `bench_timing` and
`local_workers` stay importable without it.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from absl import flags

import tasks
from core import runtime
from core.errors import UserError
from recipes import experiment
from recipes import training_loop
from scripts import bench_common
from scripts import bench_timing
from tasks.models import MODELS

tff = runtime.import_tff()

FLAGS = flags.FLAGS
# The flags that `define_flags` defines belong to the driver that calls it (its `--help`
# lists them), not to this module.
flags.disclaim_key_flags()

# What --smoke runs instead: a wiring check of a few seconds on the synthetic task (16
# examples per client) with the tiny model.
SMOKE_SETTINGS = {'task': 'synthetic', 'model': 'tiny', 'num_clients': 20,
                  'clients_per_round': 2, 'batch_size': 4, 'rounds': 2, 'warmup_rounds': 1}


def define_flags(benchmark: str, *, smoke_help: str, rounds: int, warmup_rounds: int,
                 num_clients: int, num_clients_help: str,
                 rounds_help: str = 'Timed rounds per configuration.', model: str | None = 'cnn',
                 clients_per_round: int | None = 10, batch_size: int | None = 20) -> None:
  """Defines a driver's shared flags, as its own; call once, when the driver is imported.

  `bench_common.define_flags`' (`--smoke`, `--rounds`, `--warmup_rounds`,
  `--results_dir`), then those of the timed FedAvg configuration: `--num_clients` and,
  unless their default is None, `--model`, `--clients_per_round` and `--batch_size`.

  Args:
    benchmark: The benchmark's name: its results folder.
    smoke_help: What `--smoke` shrinks, for `--help`.
    rounds: Default of `--rounds`.
    warmup_rounds: Default of `--warmup_rounds`.
    num_clients: Default population.
    num_clients_help: What the population is, for `--help`.
    rounds_help: Help of `--rounds`.
    model: Default model; None: the driver has no `--model`.
    clients_per_round: Default cohort; None: the driver has no such integer flag.
    batch_size: Default local batch size; None: the driver has no `--batch_size`.
  """
  bench_common.define_flags(benchmark, smoke_help=smoke_help, rounds=rounds,
                            rounds_help=rounds_help, warmup_rounds=warmup_rounds)
  flags.DEFINE_integer('num_clients', num_clients, num_clients_help, lower_bound=1)
  if model is not None:
    flags.DEFINE_enum('model', model, list(MODELS), 'Model.')
  if clients_per_round is not None:
    flags.DEFINE_integer('clients_per_round', clients_per_round, 'Clients per round.',
                         lower_bound=1)
  if batch_size is not None:
    flags.DEFINE_integer('batch_size', batch_size, 'Local batch size.', lower_bound=1)


def validate_flags() -> None:
  """Checks of the shared flags that bounds cannot express (see `recipes.cli.run`)."""
  bench_common.validate_flags()
  if 'clients_per_round' in FLAGS and FLAGS.clients_per_round > FLAGS.num_clients:
    raise UserError(f'--clients_per_round={FLAGS.clients_per_round} exceeds --num_clients='
                    f'{FLAGS.num_clients}')


def settings_from_flags(**fixed: Any) -> dict[str, Any]:
  """The timed configuration of `mnist_digits` from the flags (`SMOKE_SETTINGS` under
  `--smoke`), one local epoch on an IID split, then `fixed`."""
  values = {'task': 'mnist_digits', 'model': FLAGS.model, 'num_clients': FLAGS.num_clients,
            'clients_per_round': FLAGS.clients_per_round, 'batch_size': FLAGS.batch_size,
            'rounds': FLAGS.rounds, 'warmup_rounds': FLAGS.warmup_rounds}
  return bench_common.settings_from_flags(values, SMOKE_SETTINGS, partition='iid',
                                          client_epochs=1, **fixed)


def create_task(settings: Mapping[str, Any]) -> tasks.Task:
  """The task the settings describe: `task` split IID into `num_clients`, one local epoch
  of `batch_size` batches, `model`, `seed` (default 0)."""
  return tasks.create_task(
      settings['task'], model=settings['model'], num_clients=settings['num_clients'],
      partition='iid', seed=settings.get('seed', 0),
      client_spec=tasks.ClientSpec(num_epochs=1, batch_size=settings['batch_size']))


def recipe_process(task: tasks.Task, *,
                   learning_rate: float = 0.05) -> tff.learning.templates.LearningProcess:
  """The process `recipes/fed_avg.py` builds for `task` under its default flags.

  Weighted FedAvg, client SGD at `learning_rate`, server SGD at 1.0, the DATASET_ITERATOR
  loop, built from `training_loop.for_learning_process(task)`: its models start at zero,
  so set `training_loop.initial_model_weights(task)` into its first state
  (`FederatedContender` does). The aggregator is TFF's plain example-weighted
  `MeanFactory`: the recipes' `--aggregator=mean` also measures client fractions, which
  the timings leave out.
  """
  setup = experiment.setup_without_flags(
      task, client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate),
      server_optimizer=tff.learning.optimizers.build_sgdm(1.0),
      aggregator=tff.aggregators.MeanFactory())
  return tff.learning.algorithms.build_weighted_fed_avg(setup.task.model_fn,
                                                        **setup.builder_args())


class Contender:
  """Something that trains one round on given clients; `alternate_rounds` times `round`.

  Attributes:
    name: Its key in the results.
    description: One line for the results.
    worker_pids: TFF workers whose CPU seconds count as its own.
  """

  name = ''
  description = ''
  worker_pids: tuple[int, ...] = ()

  def prepare(self, client_ids: Sequence[str]) -> None:
    """Untimed work before the round on `client_ids` (default: none)."""

  def round(self, client_ids: Sequence[str]) -> None:
    """Trains one round on `client_ids` (timed)."""
    raise NotImplementedError


class FederatedContender(Contender):
  """A learning process trained round by round on its own execution context."""

  def __init__(self, name: str, process: Any,
               datasets: Callable[[list[str]], list[Any]], *,
               context: Any = None, description: str = '', initial_weights: Any = None,
               untimed_datasets: bool = False) -> None:
    """Describes the contender; `start` makes its first state.

    Args:
      name: Its key in the results.
      process: The learning process.
      datasets: Client ids -> their training datasets (e.g. `training_loop.ClientDatasets`).
      context: The TFF execution context to run on; default: the current one.
      description: One line for the results.
      initial_weights: `tff.learning.models.ModelWeights` to put into the first state
        (a process built by `recipe_process` starts at zero).
      untimed_datasets: Build the round's datasets before the clock starts, as the
        recipes cache them, instead of inside the timed round.
    """
    self.name = name
    self.description = description
    self.process = process
    self.datasets = datasets
    self.context = context if context is not None else tff.framework.get_context_stack().current
    self.initial_weights = initial_weights
    self.untimed_datasets = untimed_datasets
    self.state: Any = None
    self.output: Any = None  # The last round's `LearningProcessOutput`.
    self._data: list[Any] | None = None

  def start(self) -> None:
    """Makes the first state on the context, which starts its worker if it has a local
    one; call after every process is built (tracing one disturbs the others' Keras)."""
    tff.framework.set_default_context(self.context)
    known = runtime.worker_pids(os.getpid())
    state = self.process.initialize()
    if self.initial_weights is not None:
      state = self.process.set_model_weights(state, self.initial_weights)
    self.state = state
    worker = bench_timing.new_worker_pid(known)
    self.worker_pids = (worker,) if worker else ()

  def prepare(self, client_ids: Sequence[str]) -> None:
    self._data = self.datasets(list(client_ids)) if self.untimed_datasets else None

  def round(self, client_ids: Sequence[str]) -> None:
    tff.framework.set_default_context(self.context)
    data = self._data if self._data is not None else self.datasets(list(client_ids))
    self.output = self.process.next(self.state, data)
    self.state = self.output.state


def alternate_rounds(
    contenders: Sequence[Contender],
    client_ids: Sequence[str],
    *,
    clients_per_round: int,
    rounds: int,
    warmup_rounds: int,
    seed: int = 0,
    load: bench_common.LoadMonitor | None = None,
) -> dict[str, list[bench_timing.RoundTime]]:
  """Times `rounds` rounds of every contender after `warmup_rounds` untimed ones.

  Every round samples `clients_per_round` of `client_ids` (`training_loop.sample_clients`
  with `seed`, as the recipes sample) and every contender trains on them, who goes
  first rotating round by round. Prints a line per round.

  Returns:
    Contender name -> the timings of its timed rounds.
  """
  times: dict[str, list[bench_timing.RoundTime]] = {c.name: [] for c in contenders}
  total = warmup_rounds + rounds
  for round_num in range(1, total + 1):
    sampled = training_loop.sample_clients(list(client_ids), clients_per_round, seed, round_num)
    for contender in bench_timing.rotate(contenders, round_num):
      contender.prepare(sampled)
      _, elapsed = bench_timing.timed(lambda: contender.round(sampled), contender.worker_pids)  # pylint: disable=cell-var-from-loop
      if round_num > warmup_rounds:
        times[contender.name].append(elapsed)
    if load is not None:
      load.sample()
    print(f'round {round_num}/{total}: ' + ', '.join(
        f'{name} {t[-1].wall:.3f} s' for name, t in times.items() if t), flush=True)
  return times
