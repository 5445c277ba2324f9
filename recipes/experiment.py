"""Shared recipe plumbing: the common flag groups, and flags -> task, optimizers, aggregator, run.

A recipe binary defines only its own flags and a `build_process(setup)` function; this
module does everything else:

    experiment.define_flags()
    def build_process(setup: experiment.Setup) -> tff.learning.templates.LearningProcess: ...
    def main(argv): experiment.run('fed_avg', build_process)
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Callable

from absl import flags

import tasks
from recipes import aggregator_flags
from recipes import optimizers
from recipes import outputs
from recipes import runtime
from recipes import training_loop
from recipes.errors import UserError
from recipes.runtime import import_tff
from tasks.partition import PARTITIONS

tff = import_tff()

FLAGS = flags.FLAGS

# Flags that only steer a run (not what is learned): they may change on --resume.
_RUN_CONTROL_FLAGS = frozenset({
    'total_rounds', 'rounds_per_eval', 'rounds_per_checkpoint', 'target_accuracy', 'resume',
    'progress', 'experiment_name', 'root_output_dir', 'tff_worker',
})
_LOOPS = {
    'dataset_iterator': tff.learning.LoopImplementation.DATASET_ITERATOR,
    'dataset_reduce': tff.learning.LoopImplementation.DATASET_REDUCE,
}


def define_flags(
    *,
    client_optimizer: bool = True,
    client_learning_rate: float = 0.05,
    server_optimizer: str = 'sgd',
    server_learning_rate: float = 1.0,
    client_batch_size: int = 20,
    weighting: bool = True,
) -> None:
  """Defines the flag groups every recipe shares; arguments set recipe-specific defaults.

  Args:
    client_optimizer: Whether clients run an optimizer (False for FedSGD).
    client_learning_rate: Default client learning rate.
    server_optimizer: Default server optimizer.
    server_learning_rate: Default server learning rate.
    client_batch_size: Default local batch size (-1 = the client's whole dataset).
    weighting: Whether the recipe offers `--weighting` (example-weighted or uniform mean).
  """
  if 'task' in FLAGS:
    # Already defined (two recipe modules imported into one process, as in tests): only
    # the defaults differ between recipes.
    defaults = {'client_batch_size': client_batch_size, 'server_optimizer': server_optimizer,
                'server_learning_rate': server_learning_rate}
    if client_optimizer and 'client_learning_rate' in FLAGS:
      defaults['client_learning_rate'] = client_learning_rate
    for name, value in defaults.items():
      FLAGS.set_default(name, value)
    return
  if weighting:
    flags.DEFINE_enum(
        'weighting', 'num_examples', ['num_examples', 'uniform'],
        'num_examples: weight client updates by their example counts (FederatedWeightedAveraging); '
        'uniform: plain mean of client updates (FederatedAveraging).')
  # Task and data.
  flags.DEFINE_enum('task', 'mnist_digits', list(tasks.TASKS), 'Federated task (dataset + model).')
  flags.DEFINE_string('model', None, 'Model architecture; default: the task\'s own default.')
  flags.DEFINE_integer('num_clients', 100, 'mnist_digits/synthetic: number of clients to partition into.')
  flags.DEFINE_enum('partition', 'shards', list(PARTITIONS),
                    'mnist_digits: how examples are split among clients (iid, shards = 2 labels '
                    'per client as in McMahan et al., dirichlet = label skew set by --alpha).')
  flags.DEFINE_float('alpha', 0.5, 'Dirichlet concentration for --partition=dirichlet (smaller = more skew).')
  flags.DEFINE_string('cache_dir', None, 'emnist_character: directory holding emnist_all.sqlite (default ~/.tff).')
  flags.DEFINE_bool('only_digits', False, 'emnist_character: the 10-digit subset instead of 62 classes.')
  # Local training.
  flags.DEFINE_integer('client_epochs_per_round', 1, 'Local epochs per round.')
  flags.DEFINE_integer('client_batch_size', client_batch_size, 'Local batch size; -1 = whole client dataset.')
  flags.DEFINE_integer('max_batches_per_client', None, 'Cap on local batches per round (default: no cap).')
  if client_optimizer:
    optimizers.define_optimizer_flags('client', learning_rate=client_learning_rate)
  optimizers.define_optimizer_flags(
      'server', optimizer=server_optimizer, learning_rate=server_learning_rate)
  # Training loop.
  flags.DEFINE_integer('clients_per_round', 10, 'Clients sampled per round.')
  flags.DEFINE_integer('total_rounds', 100, 'Round budget.')
  flags.DEFINE_integer('rounds_per_eval', 5, 'Evaluate on the test set every this many rounds.')
  flags.DEFINE_integer('rounds_per_checkpoint', 10, 'Checkpoint the server state every this many rounds.')
  flags.DEFINE_float('target_accuracy', None, 'Stop once test accuracy reaches this (0-1); the summary records the round.')
  flags.DEFINE_integer('seed', 0, 'Seeds the partition, client sampling and model initialisation.')
  flags.DEFINE_enum('loop_implementation', 'dataset_iterator', list(_LOOPS),
                    'Client loop (dataset_iterator is faster on CPU).')
  flags.DEFINE_string('tff_worker', None,
                      'host:port of a TFF C++ worker started elsewhere (python -m '
                      'scripts.start_worker --port=N) that runs the computations; default: a '
                      'worker on this machine, started and stopped by the recipe.')
  # Outputs.
  flags.DEFINE_string('experiment_name', None, 'Name of the run directory; default: <recipe>-<task>-<time>.')
  flags.DEFINE_string('root_output_dir', 'runs', 'Parent directory of experiment directories.')
  flags.DEFINE_bool('resume', False, 'Continue the run in --experiment_name from its last checkpoint.')
  flags.DEFINE_bool('progress', True, 'Show a progress bar.')
  aggregator_flags.define_aggregator_flags()


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a recipe's `build_process` assembles into a `tff.learning` process.

  Attributes:
    task: The task (`training_loop.for_learning_process`); `task.model_fn` is the model
      function. Its Keras models start from zeros: the training loop puts random initial
      weights into the process's first state.
    weighted: Whether client updates are weighted by example counts.
    client_optimizer: Client optimizer (None for recipes without one, e.g. FedSGD).
    server_optimizer: Server optimizer.
    loop_implementation: Client training loop implementation.
  """

  task: tasks.Task
  weighted: bool
  client_optimizer: tff.learning.optimizers.Optimizer | None
  server_optimizer: tff.learning.optimizers.Optimizer
  loop_implementation: tff.learning.LoopImplementation
  _aggregator_fn: Callable[[bool], Any]

  def aggregator(self) -> Any:
    """The `--aggregator` factory: weighted if `self.weighted`, else unweighted."""
    return self._aggregator_fn(self.weighted)

  def builder_args(self) -> dict[str, Any]:
    """Keyword arguments that every `tff.learning.algorithms` builder of the FedAvg family
    (fed_avg, fed_prox, fed_sgd) takes: optimizers, aggregator, client loop."""
    args = {
        'server_optimizer_fn': self.server_optimizer,
        'model_aggregator': self.aggregator(),
        'loop_implementation': self.loop_implementation,
    }
    if self.client_optimizer is not None:
      args['client_optimizer_fn'] = self.client_optimizer
    return args


def _validate_common_flags() -> None:
  positive = ('num_clients', 'client_epochs_per_round', 'clients_per_round', 'total_rounds',
              'rounds_per_eval', 'rounds_per_checkpoint')
  for name in positive:
    if FLAGS[name].value < 1:
      raise UserError(f'--{name} must be at least 1, got {FLAGS[name].value}')
  if FLAGS.client_batch_size == 0 or FLAGS.client_batch_size < -1:
    raise UserError(f'--client_batch_size must be positive or -1 (whole dataset), got {FLAGS.client_batch_size}')
  if FLAGS.max_batches_per_client is not None and FLAGS.max_batches_per_client < 1:
    raise UserError('--max_batches_per_client must be at least 1')
  if FLAGS.target_accuracy is not None and not 0 < FLAGS.target_accuracy <= 1:
    raise UserError(f'--target_accuracy must be in (0, 1], got {FLAGS.target_accuracy}')
  if FLAGS.resume and not FLAGS.experiment_name:
    raise UserError('--resume needs the --experiment_name of the run to continue')


def _create_task() -> tasks.Task:
  client_spec = tasks.ClientSpec(
      num_epochs=FLAGS.client_epochs_per_round,
      batch_size=FLAGS.client_batch_size,
      max_elements=FLAGS.max_batches_per_client,
  )
  only_for = {'num_clients': ('mnist_digits', 'synthetic'),
              'partition': ('mnist_digits', 'synthetic'), 'alpha': ('mnist_digits', 'synthetic'), 'cache_dir': ('emnist_character',),
              'only_digits': ('emnist_character',)}
  for name, task_names in only_for.items():
    if FLAGS[name].present and FLAGS.task not in task_names:
      raise UserError(f'--{name} does not apply to --task={FLAGS.task} (only to {"/".join(task_names)})')
  if FLAGS['alpha'].present and FLAGS.partition != 'dirichlet':
    raise UserError('--alpha only applies to --partition=dirichlet')
  return tasks.create_task(
      FLAGS.task, model=FLAGS.model, client_spec=client_spec, num_clients=FLAGS.num_clients,
      partition=FLAGS.partition, alpha=FLAGS.alpha, seed=FLAGS.seed, cache_dir=FLAGS.cache_dir,
      only_digits=FLAGS.only_digits,
  )


def recipe_hparams() -> dict[str, Any]:
  """Every flag defined by this project (recipes.* modules and the binary itself)."""
  hparams = {}
  for module, module_flags in FLAGS.flags_by_module_dict().items():
    if module.startswith(('recipes', '__main__')) or '/recipes/' in module:
      hparams.update({f.name: f.value for f in module_flags})
  return hparams


def _check_resume_matches(out_dir, hparams: dict[str, Any]) -> None:
  path = out_dir / 'hparams.json'
  if not path.exists():
    return
  import json  # pylint: disable=g-import-not-at-top
  saved = json.loads(path.read_text())
  changed = sorted(k for k in hparams if k not in _RUN_CONTROL_FLAGS and k in saved
                   and saved[k] != hparams[k])
  if changed:
    diffs = ', '.join(f'--{k}={hparams[k]} (run has {saved[k]})' for k in changed)
    raise UserError(f'--resume with settings that differ from the saved run: {diffs}')


def run(
    recipe: str,
    build_process: Callable[[Setup], Any],
    *,
    weighted: bool | None = None,
    not_applicable: tuple[str, ...] = (),
    report: Callable[[Setup, dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
  """Builds the task, optimizers and aggregator from flags, then trains and writes outputs.

  Args:
    recipe: The recipe's name (used in the default experiment name and hparams).
    build_process: Assembles the `tff.learning` process from a `Setup`.
    weighted: Whether the recipe weights client updates; None reads `--weighting`.
    not_applicable: Shared flags this recipe ignores: setting one is an error.
    report: Given the setup and the summary, returns recipe-specific results (e.g. privacy
      spent) to add to the summary.

  Returns:
    The run summary (also written to summary.json).
  """
  for name in not_applicable:
    if FLAGS[name].present:
      raise UserError(f'--{name} does not apply to {recipe}')
  _validate_common_flags()
  if FLAGS.tff_worker:
    # Before any computation runs, so that TFF never starts a local worker.
    runtime.use_remote_worker(FLAGS.tff_worker)
  task = _create_task()
  num_clients = len(task.train_data.client_ids)
  if FLAGS.clients_per_round > num_clients:
    raise UserError(f'--clients_per_round={FLAGS.clients_per_round} exceeds the {num_clients} '
                    f'clients of --task={task.name}')

  def aggregator_fn(weighted: bool) -> Any:
    return aggregator_flags.aggregator_from_flags(
        weighted=weighted, clients_per_round=FLAGS.clients_per_round, num_clients=num_clients,
        total_rounds=FLAGS.total_rounds)

  if weighted is None:
    weighted = FLAGS.weighting == 'num_examples'
  setup = Setup(
      task=training_loop.for_learning_process(task),
      weighted=weighted,
      client_optimizer=(optimizers.optimizer_from_flags('client')
                        if 'client_optimizer' in FLAGS else None),
      server_optimizer=optimizers.optimizer_from_flags('server'),
      loop_implementation=_LOOPS[FLAGS.loop_implementation],
      _aggregator_fn=aggregator_fn,
  )
  name = FLAGS.experiment_name or (
      f'{recipe}-{task.name}-{datetime.datetime.now().strftime("%Y%m%d-%H%M%S")}')
  out = outputs.experiment_dir(FLAGS.root_output_dir, name)
  hparams = {'recipe': recipe, **recipe_hparams(), 'model': task.model_name}
  if FLAGS.resume:
    _check_resume_matches(out, hparams)
  process = build_process(setup)
  config = training_loop.LoopConfig(
      total_rounds=FLAGS.total_rounds, clients_per_round=FLAGS.clients_per_round,
      rounds_per_eval=FLAGS.rounds_per_eval, rounds_per_checkpoint=FLAGS.rounds_per_checkpoint,
      target_accuracy=FLAGS.target_accuracy, seed=FLAGS.seed, output_dir=out,
      resume=FLAGS.resume, progress=FLAGS.progress,
  )
  if not FLAGS.resume:
    training_loop.check_fresh_output(out)
  if not (out / 'hparams.json').exists() or not FLAGS.resume:
    outputs.write_json(out / 'hparams.json', hparams)
  where = f', on the TFF worker at {FLAGS.tff_worker}' if FLAGS.tff_worker else ''
  print(f'{recipe}: training on {task.name} ({num_clients} clients, {FLAGS.clients_per_round} per '
        f'round, model {task.model_name}{where}); outputs in {out}', flush=True)
  summary = training_loop.run_training(
      process, task, config, description=recipe,
      initial_weights=training_loop.initial_model_weights(task))
  summary = {'recipe': recipe, **summary}
  if report is not None:
    summary.update(report(setup, summary))
  outputs.write_json(out / 'summary.json', summary)
  _print_summary(summary, out)
  return summary


def _print_summary(summary: dict[str, Any], out) -> None:
  accuracy = summary.get('final_test_accuracy')
  line = (f'{summary["recipe"]} on {summary["task"]}: {summary["status"]} after '
          f'{summary["rounds_completed"]} rounds')
  if accuracy is not None:
    line += f', test accuracy {accuracy:.4f} (best {summary["best_test_accuracy"]:.4f})'
  if summary.get('target_reached_round'):
    line += f'; reached {summary["target_accuracy"]} at round {summary["target_reached_round"]}'
  print(line)
  print(f'outputs: {out} (metrics.csv, metrics.png, summary.json, hparams.json, tensorboard/, checkpoints/)')
